"""The `spec` of a SecurityBaseline: what every selected namespace must hold.

The CRD schema is generated from these models (see `api.crd`). A rule that a
JSON schema can express (types, enums, patterns, lengths) lives in the field
type; a cross-field rule is written twice, as a pydantic validator and as a CEL
`x-kubernetes-validations` entry next to it, and the unit tests prove that the
two agree on the corpus of invalid baselines. A rule the API server cannot
check (CIDR containment, quantity ordering) lives only in the validator; the
operator reports it as `Ready=False, reason=InvalidSpec` and writes nothing.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import timedelta
from enum import StrEnum
from typing import Annotated

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)
from pydantic.config import JsonDict

from baseline_operator.api.base import ApiModel, cel
from baseline_operator.api.fields import (
    CIDR,
    DURATION_PATTERN,
    DNSLabel,
    DNSSubdomain,
    Duration,
    LabelValue,
    PodSecurityVersion,
    Port,
    PortNumber,
    QualifiedName,
    Quantity,
    RegistryPrefix,
    parse_quantity,
)

# ----------------------------------------------------------------------------
# Label selectors (metav1.LabelSelector)


class SelectorOperator(StrEnum):
    IN = "In"
    NOT_IN = "NotIn"
    EXISTS = "Exists"
    DOES_NOT_EXIST = "DoesNotExist"


class LabelSelectorRequirement(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.operator in ['In', 'NotIn'] ? (has(self.values) && size(self.values) > 0)"
                    " : (!has(self.values) || size(self.values) == 0)",
                    "values must be non-empty for In and NotIn, and empty for Exists and"
                    " DoesNotExist",
                    ".values",
                )
            ]
        }
    )

    key: QualifiedName = Field(description="The label key the requirement applies to.")
    operator: SelectorOperator = Field(
        description="How the key relates to the values: In, NotIn, Exists or DoesNotExist."
    )
    values: list[LabelValue] = Field(
        default_factory=list,
        max_length=64,
        description="Label values; non-empty for In and NotIn, empty for Exists and DoesNotExist.",
    )

    @model_validator(mode="after")
    def _values_match_operator(self) -> LabelSelectorRequirement:
        needs_values = self.operator in (SelectorOperator.IN, SelectorOperator.NOT_IN)
        if needs_values and not self.values:
            raise ValueError(f"values must be non-empty for operator {self.operator.value}")
        if not needs_values and self.values:
            raise ValueError(f"values must be empty for operator {self.operator.value}")
        return self


class LabelSelector(ApiModel):
    """A standard Kubernetes label selector; an empty selector selects everything."""

    match_labels: dict[QualifiedName, LabelValue] = Field(
        default_factory=dict,
        max_length=64,
        description="Labels that must all be present with exactly these values.",
    )
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list,
        max_length=32,
        description="Requirements that must all hold.",
    )


# ----------------------------------------------------------------------------
# Pod Security Admission


class PodSecurityLevel(StrEnum):
    PRIVILEGED = "privileged"
    BASELINE = "baseline"
    RESTRICTED = "restricted"


_PSA_MODES = ("enforce", "audit", "warn")


class PodSecurity(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    f"!has(self.{mode}Version) || has(self.{mode})",
                    f"{mode}Version needs {mode}: a version without a level means nothing",
                    f".{mode}Version",
                )
                for mode in _PSA_MODES
            ]
        }
    )

    enforce: PodSecurityLevel | None = Field(
        default=None,
        description=(
            "Pod Security level that is enforced: pods that violate it are rejected."
            " One of privileged, baseline, restricted."
        ),
    )
    enforce_version: PodSecurityVersion | None = Field(
        default=None,
        description="Version of the enforced level's rules: latest or v1.N. Omitted means latest.",
    )
    audit: PodSecurityLevel | None = Field(
        default=None,
        description="Pod Security level whose violations are recorded in the audit log.",
    )
    audit_version: PodSecurityVersion | None = Field(
        default=None, description="Version of the audited level's rules: latest or v1.N."
    )
    warn: PodSecurityLevel | None = Field(
        default=None,
        description="Pod Security level whose violations are returned to the client as warnings.",
    )
    warn_version: PodSecurityVersion | None = Field(
        default=None, description="Version of the warned level's rules: latest or v1.N."
    )

    @model_validator(mode="after")
    def _versions_need_levels(self) -> PodSecurity:
        for mode in _PSA_MODES:
            if getattr(self, f"{mode}_version") is not None and getattr(self, mode) is None:
                raise ValueError(f"{mode}Version needs {mode}: a version without a level")
        return self


# ----------------------------------------------------------------------------
# Network policy


class IPBlock(ApiModel):
    cidr: CIDR = Field(description="The allowed range, e.g. 10.0.0.0/8 or 2001:db8::/32.")
    except_: list[CIDR] = Field(
        default_factory=list,
        alias="except",
        max_length=32,
        description="Ranges inside cidr that are not allowed.",
    )

    @model_validator(mode="after")
    def _excepts_inside_cidr(self) -> IPBlock:
        outer = ipaddress.ip_network(self.cidr)
        for inner_text in self.except_:
            inner = ipaddress.ip_network(inner_text)
            if inner.version != outer.version or not inner.subnet_of(outer):  # type: ignore[arg-type]
                raise ValueError(f"except entry {inner_text} is not inside cidr {self.cidr}")
        return self


class NetworkPeer(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.podSelector) || has(self.namespaceSelector) || has(self.ipBlock)",
                    "a peer needs podSelector, namespaceSelector or ipBlock",
                ),
                cel(
                    "!has(self.ipBlock)"
                    " || (!has(self.podSelector) && !has(self.namespaceSelector))",
                    "ipBlock cannot be combined with podSelector or namespaceSelector",
                ),
            ]
        }
    )

    pod_selector: LabelSelector | None = Field(
        default=None,
        description=(
            "Pods that may talk, in the namespace itself or, with namespaceSelector,"
            " in the selected namespaces."
        ),
    )
    namespace_selector: LabelSelector | None = Field(
        default=None, description="Namespaces whose pods may talk ({} selects all namespaces)."
    )
    ip_block: IPBlock | None = Field(
        default=None, description="An IP range (outside the cluster, as a rule) that may talk."
    )

    @model_validator(mode="after")
    def _one_kind_of_peer(self) -> NetworkPeer:
        selectors = self.pod_selector is not None or self.namespace_selector is not None
        if not selectors and self.ip_block is None:
            raise ValueError("a peer needs podSelector, namespaceSelector or ipBlock")
        if selectors and self.ip_block is not None:
            raise ValueError("ipBlock cannot be combined with podSelector or namespaceSelector")
        return self


class Protocol(StrEnum):
    TCP = "TCP"
    UDP = "UDP"
    SCTP = "SCTP"


class NetworkPort(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.endPort) || (has(self.port) && type(self.port) == int"
                    " && self.endPort >= self.port)",
                    "endPort needs a numeric port and must not be below it",
                    ".endPort",
                )
            ]
        }
    )

    protocol: Protocol = Field(default=Protocol.TCP, description="TCP, UDP or SCTP.")
    port: Port | None = Field(
        default=None,
        description="A port number (1-65535) or a named container port; omitted means all ports.",
    )
    end_port: PortNumber | None = Field(
        default=None, description="With a numeric port, the last port of a range."
    )

    @model_validator(mode="after")
    def _end_port_follows_port(self) -> NetworkPort:
        if self.end_port is not None and (
            not isinstance(self.port, int) or self.end_port < self.port
        ):
            raise ValueError("endPort needs a numeric port and must not be below it")
        return self


RuleName = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", min_length=1, max_length=63),
]


class IngressRule(ApiModel):
    pod_selector: LabelSelector | None = Field(
        default=None,
        description="Pods of the namespace the rule lets receive this traffic; omitted means all.",
    )
    name: RuleName = Field(
        description="Names the generated NetworkPolicy (<baseline>-ingress-<name>)."
    )
    from_: list[NetworkPeer] = Field(
        default_factory=list,
        alias="from",
        max_length=32,
        description="Who may connect; empty means any source.",
    )
    ports: list[NetworkPort] = Field(
        default_factory=list,
        max_length=32,
        description="Which ports they may reach; empty means every port.",
    )


class EgressRule(ApiModel):
    pod_selector: LabelSelector | None = Field(
        default=None,
        description="Pods of the namespace the rule lets send this traffic; omitted means all.",
    )
    name: RuleName = Field(
        description="Names the generated NetworkPolicy (<baseline>-egress-<name>)."
    )
    to: list[NetworkPeer] = Field(
        default_factory=list,
        max_length=32,
        description="Where pods may connect; empty means any destination.",
    )
    ports: list[NetworkPort] = Field(
        default_factory=list,
        max_length=32,
        description="Which ports they may reach; empty means every port.",
    )


class PolicyType(StrEnum):
    INGRESS = "Ingress"
    EGRESS = "Egress"


class NetworkPolicySection(ApiModel):
    default_deny: list[PolicyType] = Field(
        default_factory=list,
        max_length=2,
        description=(
            "Directions denied to every pod unless another policy allows it:"
            " Ingress, Egress or both."
        ),
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    allow_dns: StrictBool = Field(
        default=False,
        alias="allowDNS",
        description="Allow egress to the cluster DNS (pods labelled k8s-app=kube-dns in "
        "kube-system) on port 53, UDP and TCP.",
    )
    allow_same_namespace: StrictBool = Field(
        default=False,
        description="Allow traffic between pods of the same namespace, in both directions.",
    )
    ingress: list[IngressRule] = Field(
        default_factory=list,
        max_length=64,
        description="Ingress allow rules, one NetworkPolicy each.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    egress: list[EgressRule] = Field(
        default_factory=list,
        max_length=64,
        description="Egress allow rules, one NetworkPolicy each.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )

    @model_validator(mode="after")
    def _unique_names(self) -> NetworkPolicySection:
        _refuse_duplicates("ingress", [rule.name for rule in self.ingress])
        _refuse_duplicates("egress", [rule.name for rule in self.egress])
        _refuse_duplicates("defaultDeny", [str(kind) for kind in self.default_deny])
        return self


# ----------------------------------------------------------------------------
# RBAC

ApiGroup = Annotated[
    str,
    StringConstraints(
        pattern=r"^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)?$",
        max_length=253,
    ),
]
ResourceName = Annotated[
    str,
    StringConstraints(
        pattern=r"^(\*|[a-z0-9][-a-z0-9.]*)(/(\*|[a-z0-9][-a-z0-9.]*))?$",
        min_length=1,
        max_length=253,
    ),
]
Verb = Annotated[str, StringConstraints(pattern=r"^(\*|[a-z]+)$", min_length=1, max_length=63)]


class GrantRisk(StrEnum):
    """A grant above the ceiling of what a baseline may hand out without saying so."""

    # Each is a way a ServiceAccount's Role would let whoever can use the account (anyone
    # with `edit` in the namespace can run a pod as it) reach beyond the namespace's own
    # workloads. A rule that makes one is refused unless it lists it in acknowledgeRisks.
    WILDCARD = "Wildcard"  # "*" in apiGroups, resources (or a subresource) or verbs
    SECRETS = "Secrets"  # any grant on secrets
    SERVICE_ACCOUNT_TOKENS = "ServiceAccountTokens"  # serviceaccounts/token: mint tokens
    POD_EXEC = "PodExec"  # pods/exec, pods/attach, pods/portforward: run in others' pods
    ESCALATE = "Escalate"  # the escalate verb
    BIND = "Bind"  # the bind verb
    IMPERSONATE = "Impersonate"  # the impersonate verb
    RBAC_WRITE = "RBACWrite"  # any verb but get/list/watch in rbac.authorization.k8s.io


RBAC_API_GROUP = "rbac.authorization.k8s.io"
READ_VERBS = ("get", "list", "watch")
POD_EXEC_RESOURCES = ("pods/exec", "pods/attach", "pods/portforward")


def _cel_list(values: tuple[str, ...]) -> str:
    return "[" + ", ".join(f"'{value}'" for value in values) + "]"


# The ceiling, once for the models (a test of the values) and once as CEL (the CRD's copy).
# Both read the same lists; tests/unit/test_rbac_ceiling.py proves the two agree, and that
# the admission policy installed with the operator (manifests/base) holds the same ceiling.
def rule_risks(api_groups: list[str], resources: list[str], verbs: list[str]) -> list[GrantRisk]:
    """The risks a Role rule takes, in GrantRisk order ([] when under the ceiling)."""
    found: list[GrantRisk] = []
    if (
        "*" in api_groups
        or "*" in verbs
        or any(r == "*" or r.startswith("*/") or r.endswith("/*") for r in resources)
    ):
        found.append(GrantRisk.WILDCARD)
    if any(r == "secrets" or r.startswith("secrets/") for r in resources):
        found.append(GrantRisk.SECRETS)
    if "serviceaccounts/token" in resources:
        found.append(GrantRisk.SERVICE_ACCOUNT_TOKENS)
    if any(r in POD_EXEC_RESOURCES for r in resources):
        found.append(GrantRisk.POD_EXEC)
    for verb, risk in (
        ("escalate", GrantRisk.ESCALATE),
        ("bind", GrantRisk.BIND),
        ("impersonate", GrantRisk.IMPERSONATE),
    ):
        if verb in verbs:
            found.append(risk)
    if RBAC_API_GROUP in api_groups and any(v not in READ_VERBS for v in verbs):
        found.append(GrantRisk.RBAC_WRITE)
    return found


def risk_cel(groups: str, resources: str, verbs: str) -> dict[GrantRisk, str]:
    """The same tests in CEL, each true when the rule takes the risk, over three CEL
    expressions that give the rule's apiGroups, resources and verbs as lists."""
    return {
        GrantRisk.WILDCARD: (
            f"{groups}.exists(g, g == '*') || {verbs}.exists(v, v == '*')"
            f" || {resources}.exists(x, x == '*' || x.startsWith('*/') || x.endsWith('/*'))"
        ),
        GrantRisk.SECRETS: f"{resources}.exists(x, x == 'secrets' || x.startsWith('secrets/'))",
        GrantRisk.SERVICE_ACCOUNT_TOKENS: f"{resources}.exists(x, x == 'serviceaccounts/token')",
        GrantRisk.POD_EXEC: f"{resources}.exists(x, x in {_cel_list(POD_EXEC_RESOURCES)})",
        GrantRisk.ESCALATE: f"{verbs}.exists(v, v == 'escalate')",
        GrantRisk.BIND: f"{verbs}.exists(v, v == 'bind')",
        GrantRisk.IMPERSONATE: f"{verbs}.exists(v, v == 'impersonate')",
        GrantRisk.RBAC_WRITE: (
            f"{groups}.exists(g, g == '{RBAC_API_GROUP}')"
            f" && {verbs}.exists(v, !(v in {_cel_list(READ_VERBS)}))"
        ),
    }


_SPEC_RISK_CEL = risk_cel("self.apiGroups", "self.resources", "self.verbs")

_RISK_WORDS: dict[GrantRisk, str] = {
    GrantRisk.WILDCARD: "a wildcard (*) in apiGroups, resources or verbs",
    GrantRisk.SECRETS: "access to secrets",
    GrantRisk.SERVICE_ACCOUNT_TOKENS: "serviceaccounts/token (minting tokens)",
    GrantRisk.POD_EXEC: "pods/exec, pods/attach or pods/portforward",
    GrantRisk.ESCALATE: "the escalate verb",
    GrantRisk.BIND: "the bind verb",
    GrantRisk.IMPERSONATE: "the impersonate verb",
    GrantRisk.RBAC_WRITE: "writes to rbac.authorization.k8s.io objects",
}


def risk_message(risk: GrantRisk) -> str:
    return (
        f"the rule grants {_RISK_WORDS[risk]}, above what a baseline may grant;"
        f" list {risk.value} in acknowledgeRisks to allow it deliberately"
    )


def _ceiling_rule(risk: GrantRisk) -> JsonDict:
    acknowledged = f"(has(self.acknowledgeRisks) && '{risk.value}' in self.acknowledgeRisks)"
    return cel(f"!({_SPEC_RISK_CEL[risk]}) || {acknowledged}", risk_message(risk))


class PolicyRule(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={"x-kubernetes-validations": [_ceiling_rule(risk) for risk in GrantRisk]}
    )

    api_groups: list[ApiGroup] = Field(
        min_length=1,
        max_length=32,
        description='API groups of the resources; "" is the core group.',
    )
    resources: list[ResourceName] = Field(
        min_length=1,
        max_length=64,
        description="Resources (and subresources, as pods/log) the rule grants.",
    )
    verbs: list[Verb] = Field(
        min_length=1, max_length=16, description="Verbs granted, e.g. get, list, watch."
    )
    resource_names: list[DNSSubdomain] = Field(
        default_factory=list,
        max_length=64,
        description="Restricts the rule to these object names; empty means all.",
    )
    acknowledge_risks: list[GrantRisk] = Field(
        default_factory=list,
        max_length=8,
        description=(
            "Grants above the ceiling this rule makes on purpose. Without an entry here, a"
            " rule is refused that grants a wildcard (Wildcard), access to secrets (Secrets),"
            " serviceaccounts/token (ServiceAccountTokens), pods/exec, attach or portforward"
            " (PodExec), the escalate, bind or impersonate verbs (Escalate, Bind,"
            " Impersonate) or any write in rbac.authorization.k8s.io (RBACWrite). The"
            " operator's own admission policy refuses such Roles whatever this says, until"
            " the cluster's administrators widen it (see docs/security.md)."
        ),
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )

    @model_validator(mode="after")
    def _under_the_ceiling(self) -> PolicyRule:
        _refuse_duplicates("acknowledgeRisks", [str(risk) for risk in self.acknowledge_risks])
        for risk in rule_risks(list(self.api_groups), list(self.resources), list(self.verbs)):
            if risk not in self.acknowledge_risks:
                raise ValueError(risk_message(risk))
        return self


class ServiceAccountSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.name != 'default'",
                    "the default ServiceAccount is configured by rbac.defaultServiceAccount",
                    ".name",
                )
            ]
        }
    )

    name: DNSLabel = Field(description="Name of the ServiceAccount in every selected namespace.")
    automount_service_account_token: StrictBool = Field(
        default=False,
        description="Whether pods get this account's API token mounted; off unless they need it.",
    )
    annotations: dict[QualifiedName, Annotated[str, StringConstraints(max_length=4096)]] = Field(
        default_factory=dict,
        max_length=32,
        description="Annotations for the ServiceAccount, e.g. a cloud workload identity binding.",
    )
    rules: list[PolicyRule] = Field(
        default_factory=list,
        max_length=32,
        description=(
            "What the account may do in its namespace (a Role and RoleBinding, both named"
            " <baseline>-sa.<name>). Grants above the ceiling are refused unless"
            " acknowledged (see acknowledgeRisks)."
        ),
    )

    @model_validator(mode="after")
    def _not_default(self) -> ServiceAccountSpec:
        if self.name == "default":
            raise ValueError(
                "the default ServiceAccount is configured by rbac.defaultServiceAccount"
            )
        return self


class SubjectKind(StrEnum):
    USER = "User"
    GROUP = "Group"
    SERVICE_ACCOUNT = "ServiceAccount"


class Subject(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.kind == 'ServiceAccount' || !has(self.namespace)",
                    "only a ServiceAccount subject has a namespace",
                    ".namespace",
                )
            ]
        }
    )

    kind: SubjectKind = Field(description="User, Group or ServiceAccount.")
    name: Annotated[str, StringConstraints(min_length=1, max_length=253)] = Field(
        description="Name of the user, group or ServiceAccount."
    )
    namespace: DNSLabel | None = Field(
        default=None,
        description=(
            "Namespace of a ServiceAccount subject; omitted means the namespace being configured."
        ),
    )

    @model_validator(mode="after")
    def _namespace_only_for_service_accounts(self) -> Subject:
        if self.namespace is not None and self.kind is not SubjectKind.SERVICE_ACCOUNT:
            raise ValueError("only a ServiceAccount subject has a namespace")
        return self


class DefaultServiceAccount(ApiModel):
    automount_service_account_token: StrictBool = Field(
        default=False,
        description="Whether pods that use the namespace's default ServiceAccount get its token.",
    )


class Rbac(ApiModel):
    default_service_account: DefaultServiceAccount | None = Field(
        default=None, description="Settings stamped on every namespace's default ServiceAccount."
    )
    service_accounts: list[ServiceAccountSpec] = Field(
        default_factory=list,
        max_length=32,
        description="ServiceAccounts created in every namespace, each with its own Role.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    admins: list[Subject] = Field(
        default_factory=list,
        max_length=32,
        description="Bound to the ClusterRole admin in every namespace.",
    )
    deployers: list[Subject] = Field(
        default_factory=list,
        max_length=32,
        description=(
            "Bound to a deployer Role: manage workloads, services and config, never RBAC"
            " or Secrets."
        ),
    )
    viewers: list[Subject] = Field(
        default_factory=list,
        max_length=32,
        description="Bound to the ClusterRole view (which cannot read Secrets).",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> Rbac:
        _refuse_duplicates("serviceAccounts", [account.name for account in self.service_accounts])
        return self


# ----------------------------------------------------------------------------
# External secrets (External Secrets Operator)


class SecretStoreKind(StrEnum):
    SECRET_STORE = "SecretStore"
    CLUSTER_SECRET_STORE = "ClusterSecretStore"


class SecretStoreRef(ApiModel):
    name: DNSSubdomain = Field(description="Name of the SecretStore or ClusterSecretStore.")
    kind: SecretStoreKind = Field(
        default=SecretStoreKind.SECRET_STORE,
        description="SecretStore (in the namespace) or ClusterSecretStore.",
    )


RemoteText = Annotated[str, StringConstraints(min_length=1, max_length=512)]


class RemoteRef(ApiModel):
    key: RemoteText = Field(
        description="Key in the external store; {namespace} is replaced by the namespace name."
    )
    property: RemoteText | None = Field(
        default=None, description="A property inside the key's value, e.g. a JSON field."
    )
    version: RemoteText | None = Field(default=None, description="A version of the secret.")


class ExternalSecretData(ApiModel):
    secret_key: Annotated[
        str, StringConstraints(pattern=r"^[-._a-zA-Z0-9]+$", min_length=1, max_length=253)
    ] = Field(description="Key in the generated Secret.")
    remote_ref: RemoteRef = Field(description="Where the value comes from.")


class ExternalSecretSpec(ApiModel):
    name: DNSSubdomain = Field(description="Name of the ExternalSecret and of the Secret it makes.")
    secret_store_ref: SecretStoreRef = Field(description="The store to read from.")
    refresh_interval: Duration = Field(
        default="1h", description="How often the secret is re-read, as a duration (1h, 15m)."
    )
    data: list[ExternalSecretData] = Field(
        min_length=1,
        max_length=64,
        description="Keys of the generated Secret and where each comes from.",
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["secretKey"],
        },
    )

    @model_validator(mode="after")
    def _unique_keys(self) -> ExternalSecretSpec:
        _refuse_duplicates("data", [item.secret_key for item in self.data], key="secretKey")
        return self


# ----------------------------------------------------------------------------
# Resource defaults

ResourceKey = Annotated[
    str,
    StringConstraints(
        pattern=r"^[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?$", min_length=1, max_length=253
    ),
]
ResourceList = dict[ResourceKey, Quantity]


class LimitRangeSpec(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "has(self.default) || has(self.defaultRequest) || has(self.max)"
                    " || has(self.min) || has(self.maxLimitRequestRatio)",
                    "a limitRange needs at least one of default, defaultRequest, max, min,"
                    " maxLimitRequestRatio",
                )
            ]
        }
    )

    default: ResourceList | None = Field(
        default=None,
        max_length=16,
        description="Limits given to containers that set none, e.g. {cpu: 500m, memory: 512Mi}.",
    )
    default_request: ResourceList | None = Field(
        default=None,
        max_length=16,
        description="Requests given to containers that set none.",
    )
    max: ResourceList | None = Field(
        default=None, max_length=16, description="The largest limit a container may set."
    )
    min: ResourceList | None = Field(
        default=None, max_length=16, description="The smallest request a container may set."
    )
    max_limit_request_ratio: ResourceList | None = Field(
        default=None, max_length=16, description="The largest limit/request ratio per resource."
    )

    @model_validator(mode="after")
    def _ordered(self) -> LimitRangeSpec:
        named = {
            "min": self.min,
            "defaultRequest": self.default_request,
            "default": self.default,
            "max": self.max,
        }
        if all(value is None for value in [*named.values(), self.max_limit_request_ratio]):
            raise ValueError(
                "a limitRange needs at least one of default, defaultRequest, max, min,"
                " maxLimitRequestRatio"
            )
        # The API server refuses a LimitRange whose values are out of order; say so early.
        order = ["min", "defaultRequest", "default", "max"]
        for index, lower_name in enumerate(order):
            for upper_name in order[index + 1 :]:
                lower, upper = named[lower_name], named[upper_name]
                if lower is None or upper is None:
                    continue
                for resource in sorted(set(lower) & set(upper)):
                    if parse_quantity(lower[resource]) > parse_quantity(upper[resource]):
                        raise ValueError(
                            f"{lower_name}.{resource} ({lower[resource]}) is greater than"
                            f" {upper_name}.{resource} ({upper[resource]})"
                        )
        return self


class QuotaSpec(ApiModel):
    hard: ResourceList = Field(
        min_length=1,
        max_length=64,
        description='Hard limits for the namespace, e.g. {pods: "50", requests.cpu: "20"}.',
    )


class ResourcesSection(ApiModel):
    limit_range: LimitRangeSpec | None = Field(
        default=None,
        description=(
            "Container defaults and bounds (a LimitRange). A namespace holds one: with"
            " overlapping baselines the higher priority wins."
        ),
    )
    quota: QuotaSpec | None = Field(
        default=None, description="A ResourceQuota; quotas of overlapping baselines all apply."
    )


# ----------------------------------------------------------------------------
# Admission rules (ValidatingAdmissionPolicy)


class ValidationAction(StrEnum):
    DENY = "Deny"
    WARN = "Warn"
    AUDIT = "Audit"


class AdmissionSection(ApiModel):
    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.validationActions) || !('Deny' in self.validationActions"
                    " && 'Warn' in self.validationActions)",
                    "validationActions cannot hold both Deny and Warn",
                    ".validationActions",
                )
            ]
        }
    )

    allowed_registries: list[RegistryPrefix] = Field(
        default_factory=list,
        max_length=32,
        description=(
            "Registries container images may come from; empty allows any. Each entry is"
            " matched on a host (and path) boundary: registry.example.com admits"
            " registry.example.com/... only (not registry.example.com.evil.test/... nor"
            " registry.example.com:5000/...); a port is admitted only when the entry names it"
            " (registry.example.com:5000); ghcr.io/acme admits ghcr.io/acme/... only. An entry"
            " ending with / is a prefix as written. Images are compared as written: busybox is"
            " not docker.io/library/busybox."
        ),
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    required_labels: list[QualifiedName] = Field(
        default_factory=list,
        max_length=16,
        description="Labels every pod (and pod template) must carry.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    deny_privileged: StrictBool = Field(default=False, description="Reject privileged containers.")
    deny_host_namespaces: StrictBool = Field(
        default=False, description="Reject pods that use hostNetwork, hostPID or hostIPC."
    )
    deny_host_path: StrictBool = Field(default=False, description="Reject hostPath volumes.")
    require_resource_requests: StrictBool = Field(
        default=False, description="Reject containers without cpu and memory requests."
    )
    require_run_as_non_root: StrictBool = Field(
        default=False, description="Reject pods that may run as root (runAsNonRoot unset or false)."
    )
    validation_actions: list[ValidationAction] = Field(
        default_factory=lambda: [ValidationAction.DENY],
        min_length=1,
        max_length=3,
        description=(
            "What a violation does: Deny, or Warn and/or Audit while rolling out."
            " Deny and Warn exclude each other."
        ),
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )

    @model_validator(mode="after")
    def _actions_compatible(self) -> AdmissionSection:
        _refuse_duplicates("validationActions", [str(action) for action in self.validation_actions])
        _refuse_duplicates("allowedRegistries", list(self.allowed_registries))
        _refuse_duplicates("requiredLabels", list(self.required_labels))
        actions = set(self.validation_actions)
        if ValidationAction.DENY in actions and ValidationAction.WARN in actions:
            raise ValueError("validationActions cannot hold both Deny and Warn")
        return self

    @property
    def any_rule(self) -> bool:
        return bool(
            self.allowed_registries
            or self.required_labels
            or self.deny_privileged
            or self.deny_host_namespaces
            or self.deny_host_path
            or self.require_resource_requests
            or self.require_run_as_non_root
        )


class WorkloadAuditSection(ApiModel):
    enabled: StrictBool = Field(
        default=False,
        description="Check running pods against the hardening checklist and report findings.",
    )


# ----------------------------------------------------------------------------
# Exceptions (BaselineException objects that name this baseline)

DEFAULT_MAX_EXCEPTION_DURATION = "2160h"  # 90 days
DEFAULT_EXPIRY_WARNING = "168h"  # 7 days
_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|ms|s|m|h)")


def parse_duration(text: str) -> timedelta:
    """A Go duration string (`2160h`, `1h30m`, `90m`) as a timedelta; ValueError otherwise."""
    if not text or not re.fullmatch(r"(?:[0-9]+(?:\.[0-9]+)?(?:ns|us|ms|s|m|h))+", text):
        raise ValueError(f"{text!r} is not a duration (e.g. 2160h, 1h30m)")
    seconds = sum(
        float(number) * _DURATION_UNITS[unit] for number, unit in _DURATION_PART.findall(text)
    )
    return timedelta(seconds=seconds)


def _positive_duration(value: str) -> str:
    if parse_duration(value) <= timedelta(0):
        raise ValueError(f"{value} must be longer than zero")
    return value


PositiveDuration = Annotated[
    Duration,
    AfterValidator(_positive_duration),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": DURATION_PATTERN,
            "maxLength": 32,
            "x-kubernetes-validations": [
                cel("duration(self) > duration('0s')", "the duration must be longer than zero")
            ],
        }
    ),
]


class ExceptionsSection(ApiModel):
    max_duration: PositiveDuration = Field(
        default=DEFAULT_MAX_EXCEPTION_DURATION,
        description=(
            "The longest a BaselineException of this baseline may run: its expires must be at"
            " most this long after its creation, or it is Invalid and waives nothing. A"
            " duration in hours, minutes or seconds (2160h is 90 days)."
        ),
    )
    expiry_warning: PositiveDuration = Field(
        default=DEFAULT_EXPIRY_WARNING,
        description=(
            "How long before an exception expires the operator posts a warning Event on it"
            " and on the baseline (168h is 7 days)."
        ),
    )

    @property
    def max_duration_delta(self) -> timedelta:
        return parse_duration(self.max_duration)

    @property
    def expiry_warning_delta(self) -> timedelta:
        return parse_duration(self.expiry_warning)


# ----------------------------------------------------------------------------
# The spec


class Mode(StrEnum):
    ENFORCE = "Enforce"
    AUDIT = "Audit"


class AdoptPolicy(StrEnum):
    NEVER = "Never"
    IF_IDENTICAL = "IfIdentical"
    FORCE = "Force"


class CleanupPolicy(StrEnum):
    DELETE = "Delete"
    ORPHAN = "Orphan"


class SecurityBaselineSpec(ApiModel):
    namespace_selector: LabelSelector = Field(
        description=(
            "Which namespaces the baseline applies to; {} selects all. kube-system,"
            " kube-public, kube-node-lease and the operator's namespace are never selected."
        )
    )
    exclude_namespaces: list[DNSLabel] = Field(
        default_factory=list,
        max_length=256,
        description="Namespaces never selected, whatever their labels.",
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    priority: StrictInt = Field(
        default=0,
        ge=-1_000_000,
        le=1_000_000,
        description=(
            "Decides what a namespace holds once (its LimitRange, an ExternalSecret or"
            " ServiceAccount name) when baselines overlap: higher wins, ties go to the"
            " name that sorts first."
        ),
    )
    mode: Mode = Field(
        default=Mode.ENFORCE,
        description="Enforce writes the posture; Audit computes and reports, and writes nothing.",
    )
    adopt: AdoptPolicy = Field(
        default=AdoptPolicy.NEVER,
        description=(
            "What to do with an existing object of a wanted name that the operator did not"
            " make: Never (leave it, report Conflicted), IfIdentical (take it over when it"
            " already matches), Force (take it over and overwrite it)."
        ),
    )
    cleanup_policy: CleanupPolicy = Field(
        default=CleanupPolicy.DELETE,
        description=(
            "When the baseline is deleted or a namespace leaves it: Delete removes what it"
            " made, Orphan leaves the objects in place (unmanaged)."
        ),
    )
    pod_security: PodSecurity | None = Field(
        default=None, description="Pod Security Admission labels stamped on every namespace."
    )
    network_policy: NetworkPolicySection | None = Field(
        default=None, description="A default-deny NetworkPolicy and explicit allow rules."
    )
    rbac: Rbac | None = Field(default=None, description="ServiceAccounts, Roles and RoleBindings.")
    external_secrets: list[ExternalSecretSpec] = Field(
        default_factory=list,
        max_length=64,
        description="ExternalSecrets (External Secrets Operator, external-secrets.io/v1).",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    resources: ResourcesSection | None = Field(
        default=None, description="A LimitRange and a ResourceQuota."
    )
    admission: AdmissionSection | None = Field(
        default=None,
        description=(
            "Admission rules enforced by the API server itself (a ValidatingAdmissionPolicy"
            " bound to the selected namespaces), so they hold while the operator is down."
        ),
    )
    workload_audit: WorkloadAuditSection | None = Field(
        default=None, description="Report running pods that break the hardening checklist."
    )
    exceptions: ExceptionsSection | None = Field(
        default=None,
        description=(
            "Limits on the BaselineExceptions that relax this baseline (maxDuration,"
            " expiryWarning); omitted means 90 days and 7 days."
        ),
    )
    protect_generated_objects: StrictBool = Field(
        default=False,
        description=(
            "Refuse edits and deletes of generated objects by anyone but the operator"
            " (a ValidatingAdmissionPolicy)."
        ),
    )

    @model_validator(mode="after")
    def _unique_names(self) -> SecurityBaselineSpec:
        _refuse_duplicates("externalSecrets", [secret.name for secret in self.external_secrets])
        _refuse_duplicates("excludeNamespaces", list(self.exclude_namespaces))
        return self


def _refuse_duplicates(field: str, values: list[str], key: str = "name") -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"{field}: {key} {value!r} appears more than once")
        seen.add(value)


__all__ = [
    "AdmissionSection",
    "AdoptPolicy",
    "CleanupPolicy",
    "DefaultServiceAccount",
    "EgressRule",
    "ExceptionsSection",
    "ExternalSecretData",
    "ExternalSecretSpec",
    "GrantRisk",
    "IPBlock",
    "IngressRule",
    "LabelSelector",
    "LabelSelectorRequirement",
    "LimitRangeSpec",
    "Mode",
    "NetworkPeer",
    "NetworkPolicySection",
    "NetworkPort",
    "PodSecurity",
    "PodSecurityLevel",
    "PolicyRule",
    "PolicyType",
    "Protocol",
    "QuotaSpec",
    "Rbac",
    "RemoteRef",
    "ResourcesSection",
    "SecretStoreKind",
    "SecretStoreRef",
    "SecurityBaselineSpec",
    "SelectorOperator",
    "ServiceAccountSpec",
    "Subject",
    "SubjectKind",
    "ValidationAction",
    "WorkloadAuditSection",
]

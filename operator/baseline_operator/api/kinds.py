"""Plain descriptions of Kubernetes objects: bodies, the kinds the operator reads and writes,
references, and the field manager's name. The bottom layer: the API wrapper (kube) and the
pure core (policy) both use them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from baseline_operator.api.sharing import shared_str

Body = dict[str, Any]

# Who the operator is in managedFields (server-side apply, creates, replaces).
FIELD_MANAGER = "baseline-operator"


@dataclass(frozen=True, order=True)
class Kind:
    """A resource the operator writes: how to address it and how to watch it."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


NAMESPACE = Kind("", "v1", "Namespace", "namespaces", namespaced=False)
SERVICE_ACCOUNT = Kind("", "v1", "ServiceAccount", "serviceaccounts")
LIMIT_RANGE = Kind("", "v1", "LimitRange", "limitranges")
RESOURCE_QUOTA = Kind("", "v1", "ResourceQuota", "resourcequotas")
NETWORK_POLICY = Kind("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies")
ROLE = Kind("rbac.authorization.k8s.io", "v1", "Role", "roles")
ROLE_BINDING = Kind("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings")
EXTERNAL_SECRET = Kind("external-secrets.io", "v1", "ExternalSecret", "externalsecrets")
VALIDATING_ADMISSION_POLICY = Kind(
    "admissionregistration.k8s.io",
    "v1",
    "ValidatingAdmissionPolicy",
    "validatingadmissionpolicies",
    namespaced=False,
)
VALIDATING_ADMISSION_POLICY_BINDING = Kind(
    "admissionregistration.k8s.io",
    "v1",
    "ValidatingAdmissionPolicyBinding",
    "validatingadmissionpolicybindings",
    namespaced=False,
)

# Namespaced kinds the operator generates inside selected namespaces.
NAMESPACED_KINDS: tuple[Kind, ...] = (
    SERVICE_ACCOUNT,
    ROLE,
    ROLE_BINDING,
    NETWORK_POLICY,
    LIMIT_RANGE,
    RESOURCE_QUOTA,
    EXTERNAL_SECRET,
)
# Cluster-scoped kinds generated once per baseline.
CLUSTER_KINDS: tuple[Kind, ...] = (VALIDATING_ADMISSION_POLICY, VALIDATING_ADMISSION_POLICY_BINDING)
ALL_KINDS: tuple[Kind, ...] = (NAMESPACE, *NAMESPACED_KINDS, *CLUSTER_KINDS)

# Kinds the operator reads or writes that are not generated objects.
EVENT = Kind("", "v1", "Event", "events")
LEASE = Kind("coordination.k8s.io", "v1", "Lease", "leases")
POD = Kind("", "v1", "Pod", "pods")
POLICY_REPORT = Kind("wgpolicyk8s.io", "v1alpha2", "PolicyReport", "policyreports")
SECURITY_BASELINE = Kind(
    "security.baseline.dev", "v1alpha1", "SecurityBaseline", "securitybaselines", namespaced=False
)
BASELINE_EXCEPTION = Kind(
    "security.baseline.dev", "v1alpha1", "BaselineException", "baselineexceptions", namespaced=False
)
_BY_API_VERSION_KIND = {
    (kind.api_version, kind.kind): kind
    for kind in (
        *ALL_KINDS,
        EVENT,
        LEASE,
        POD,
        POLICY_REPORT,
        SECURITY_BASELINE,
        BASELINE_EXCEPTION,
    )
}


def kind_of(api_version: str, kind: str) -> Kind:
    return _BY_API_VERSION_KIND[(api_version, kind)]


@dataclass(frozen=True, order=True, slots=True)
class ObjectRef:
    """Where an object lives: its kind, namespace (None when cluster-scoped) and name."""

    kind: Kind
    namespace: str | None
    name: str

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind.kind} {where}{self.name}"

    @classmethod
    def of(cls, body: Body) -> ObjectRef:
        metadata = body.get("metadata") or {}
        namespace = metadata.get("namespace") or None
        return cls(
            kind_of(body["apiVersion"], body["kind"]),
            shared_str(namespace) if namespace else None,
            shared_str(metadata["name"]),
        )

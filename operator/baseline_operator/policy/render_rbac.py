"""ServiceAccounts, Roles and RoleBindings of one baseline in one namespace.

Bodies are returned without namespace and labels; `policy.render` stamps those.
ServiceAccounts keep the name the spec gives, because workloads refer to them
by name; everything else is named after the baseline.
"""

from __future__ import annotations

from typing import Any

from baseline_operator.api.spec import PolicyRule, Rbac, ServiceAccountSpec, Subject, SubjectKind
from baseline_operator.policy.names import object_name
from baseline_operator.policy.objects import ROLE, ROLE_BINDING, SERVICE_ACCOUNT, Body

RBAC_GROUP = ROLE.group
SERVICE_ACCOUNT_ROLE_INFIX = "sa."
DEPLOYER_ROLE_SUFFIX = "deployer"
# RoleBinding suffixes, one per kind of subject list.
BINDING_SUFFIXES = ("admins", "viewers", "deployers")

_MANAGE = ("get", "list", "watch", "create", "update", "patch", "delete")

# What a deployer may do: run workloads and their plumbing. Never RBAC, Secrets,
# ServiceAccounts or pods/exec, each of which would let a deployer raise its own rights.
# (API group, resources, verbs)
DEPLOYER_RULES: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("apps", ("deployments", "statefulsets", "daemonsets", "replicasets"), _MANAGE),
    ("apps", ("deployments/scale", "statefulsets/scale"), ("get", "update", "patch")),
    ("batch", ("jobs", "cronjobs"), _MANAGE),
    ("", ("pods",), ("get", "list", "watch", "delete")),
    ("", ("pods/log",), ("get",)),
    ("", ("services", "configmaps", "persistentvolumeclaims"), _MANAGE),
    ("autoscaling", ("horizontalpodautoscalers",), _MANAGE),
    ("policy", ("poddisruptionbudgets",), _MANAGE),
    ("networking.k8s.io", ("ingresses",), _MANAGE),
)


def service_account_role_name(baseline: str, account: str) -> str:
    """The Role and RoleBinding that grant a declared ServiceAccount its rules:
    `<baseline>-sa.<account>`. The dot, which neither a baseline nor an account name can
    hold, keeps the name apart from every other baseline's: with a dash, account `admins`
    of baseline `x` and the admins binding of baseline `x-sa` were both `x-sa-admins`."""
    return object_name(baseline, f"{SERVICE_ACCOUNT_ROLE_INFIX}{account}")


def render_rbac(baseline: str, rbac: Rbac | None, namespace: str) -> list[Body]:
    if rbac is None:
        return []
    objects: list[Body] = []
    for account in rbac.service_accounts:
        objects.extend(_service_account(baseline, account, namespace))
    # (binding suffix, subjects, kind and name of the role they are bound to)
    bindings = [
        ("admins", rbac.admins, "ClusterRole", "admin"),
        ("viewers", rbac.viewers, "ClusterRole", "view"),
        ("deployers", rbac.deployers, "Role", object_name(baseline, DEPLOYER_ROLE_SUFFIX)),
    ]
    if rbac.deployers:
        deployer_rules = [_deployer_rule(*rule) for rule in DEPLOYER_RULES]
        objects.append(_role(object_name(baseline, DEPLOYER_ROLE_SUFFIX), deployer_rules))
    for suffix, subjects, role_kind, role_name in bindings:
        if subjects:
            wire = [subject_wire(subject, namespace) for subject in subjects]
            objects.append(_role_binding(object_name(baseline, suffix), role_kind, role_name, wire))
    return objects


def _service_account(baseline: str, account: ServiceAccountSpec, namespace: str) -> list[Body]:
    metadata: dict[str, Any] = {"name": account.name}
    if account.annotations:
        metadata["annotations"] = dict(account.annotations)
    objects: list[Body] = [
        {
            "apiVersion": SERVICE_ACCOUNT.api_version,
            "kind": SERVICE_ACCOUNT.kind,
            "metadata": metadata,
            "automountServiceAccountToken": account.automount_service_account_token,
        }
    ]
    if account.rules:
        name = service_account_role_name(baseline, account.name)
        subject = {
            "kind": SubjectKind.SERVICE_ACCOUNT.value,
            "name": account.name,
            "namespace": namespace,
        }
        objects.append(_role(name, [_rule_wire(rule) for rule in account.rules]))
        objects.append(_role_binding(name, "Role", name, [subject]))
    return objects


def _role(name: str, rules: list[dict[str, Any]]) -> Body:
    return {
        "apiVersion": ROLE.api_version,
        "kind": ROLE.kind,
        "metadata": {"name": name},
        "rules": rules,
    }


def _role_binding(
    name: str, role_kind: str, role_name: str, subjects: list[dict[str, Any]]
) -> Body:
    return {
        "apiVersion": ROLE_BINDING.api_version,
        "kind": ROLE_BINDING.kind,
        "metadata": {"name": name},
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": role_kind, "name": role_name},
        "subjects": subjects,
    }


def _rule_wire(rule: PolicyRule) -> dict[str, Any]:
    wire: dict[str, Any] = {
        "apiGroups": list(rule.api_groups),
        "resources": list(rule.resources),
        "verbs": list(rule.verbs),
    }
    if rule.resource_names:
        wire["resourceNames"] = list(rule.resource_names)
    return wire


def _deployer_rule(
    group: str, resources: tuple[str, ...], verbs: tuple[str, ...]
) -> dict[str, Any]:
    return {"apiGroups": [group], "resources": list(resources), "verbs": list(verbs)}


def subject_wire(subject: Subject, namespace: str) -> dict[str, Any]:
    """A RoleBinding subject; a ServiceAccount without a namespace is one of this namespace."""
    if subject.kind is SubjectKind.SERVICE_ACCOUNT:
        return {
            "kind": subject.kind.value,
            "name": subject.name,
            "namespace": subject.namespace or namespace,
        }
    return {"kind": subject.kind.value, "name": subject.name, "apiGroup": RBAC_GROUP}

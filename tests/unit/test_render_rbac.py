"""ServiceAccounts, Roles and RoleBindings rendered from spec.rbac."""

from __future__ import annotations

from typing import Any

from baseline_operator.policy.render import render_namespace_objects
from tests.unit.conftest import by_name, make_baseline

LABELS = {
    "app.kubernetes.io/managed-by": "baseline-operator",
    "security.baseline.dev/baseline": "prod",
}
RBAC = "rbac.authorization.k8s.io"


def _objects(**rbac: Any) -> dict[str, dict[str, Any]]:
    return by_name(render_namespace_objects(make_baseline("prod", rbac=rbac), "shop"))


def _meta(name: str) -> dict[str, Any]:
    return {"name": name, "namespace": "shop", "labels": LABELS}


def test_service_account_with_rules_gets_its_role_and_binding() -> None:
    objects = _objects(
        serviceAccounts=[
            {
                "name": "app-sa",
                "automountServiceAccountToken": True,
                "annotations": {"iam.gke.io/gcp-service-account": "app@example.iam"},
                "rules": [
                    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]},
                    {
                        "apiGroups": [""],
                        "resources": ["configmaps"],
                        "verbs": ["get"],
                        "resourceNames": ["app-config"],
                    },
                ],
            }
        ]
    )
    assert objects == {
        "ServiceAccount app-sa": {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {
                **_meta("app-sa"),
                "annotations": {"iam.gke.io/gcp-service-account": "app@example.iam"},
            },
            "automountServiceAccountToken": True,
        },
        "Role prod-sa.app-sa": {
            "apiVersion": f"{RBAC}/v1",
            "kind": "Role",
            "metadata": _meta("prod-sa.app-sa"),
            "rules": [
                {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]},
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "verbs": ["get"],
                    "resourceNames": ["app-config"],
                },
            ],
        },
        "RoleBinding prod-sa.app-sa": {
            "apiVersion": f"{RBAC}/v1",
            "kind": "RoleBinding",
            "metadata": _meta("prod-sa.app-sa"),
            "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": "prod-sa.app-sa"},
            "subjects": [{"kind": "ServiceAccount", "name": "app-sa", "namespace": "shop"}],
        },
    }


def test_service_account_without_rules_or_annotations_is_just_the_account() -> None:
    objects = _objects(serviceAccounts=[{"name": "batch"}])
    assert objects == {
        "ServiceAccount batch": {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _meta("batch"),
            "automountServiceAccountToken": False,
        }
    }


def test_service_accounts_keep_their_given_name_however_long_the_baseline_name() -> None:
    long_name = "b" * 63
    objects = by_name(
        render_namespace_objects(
            make_baseline(long_name, rbac={"serviceAccounts": [{"name": "app-sa"}]}), "shop"
        )
    )
    assert list(objects) == ["ServiceAccount app-sa"]


def test_admins_and_viewers_are_bound_to_the_cluster_roles() -> None:
    objects = _objects(
        admins=[{"kind": "Group", "name": "team-a-admins"}, {"kind": "User", "name": "alice"}],
        viewers=[
            {"kind": "Group", "name": "team-a"},
            {"kind": "ServiceAccount", "name": "dashboard", "namespace": "monitoring"},
        ],
    )
    assert objects == {
        "RoleBinding prod-admins": {
            "apiVersion": f"{RBAC}/v1",
            "kind": "RoleBinding",
            "metadata": _meta("prod-admins"),
            "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "admin"},
            "subjects": [
                {"kind": "Group", "name": "team-a-admins", "apiGroup": RBAC},
                {"kind": "User", "name": "alice", "apiGroup": RBAC},
            ],
        },
        "RoleBinding prod-viewers": {
            "apiVersion": f"{RBAC}/v1",
            "kind": "RoleBinding",
            "metadata": _meta("prod-viewers"),
            "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "view"},
            "subjects": [
                {"kind": "Group", "name": "team-a", "apiGroup": RBAC},
                {"kind": "ServiceAccount", "name": "dashboard", "namespace": "monitoring"},
            ],
        },
    }


def test_a_service_account_subject_without_namespace_is_one_of_the_target_namespace() -> None:
    objects = _objects(admins=[{"kind": "ServiceAccount", "name": "ci"}])
    assert objects["RoleBinding prod-admins"]["subjects"] == [
        {"kind": "ServiceAccount", "name": "ci", "namespace": "shop"}
    ]


def test_deployers_get_their_own_role_and_binding() -> None:
    objects = _objects(deployers=[{"kind": "Group", "name": "team-a-ci"}])
    assert sorted(objects) == ["Role prod-deployer", "RoleBinding prod-deployers"]
    assert objects["RoleBinding prod-deployers"] == {
        "apiVersion": f"{RBAC}/v1",
        "kind": "RoleBinding",
        "metadata": _meta("prod-deployers"),
        "roleRef": {"apiGroup": RBAC, "kind": "Role", "name": "prod-deployer"},
        "subjects": [{"kind": "Group", "name": "team-a-ci", "apiGroup": RBAC}],
    }
    assert objects["Role prod-deployer"]["metadata"] == _meta("prod-deployer")


def _granted(rules: list[dict[str, Any]]) -> dict[tuple[str, str], set[str]]:
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in rules:
        assert set(rule) == {"apiGroups", "resources", "verbs"}
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


def test_the_deployer_role_manages_workloads_but_never_rbac_secrets_or_exec() -> None:
    rules = _objects(deployers=[{"kind": "Group", "name": "ci"}])["Role prod-deployer"]["rules"]
    granted = _granted(rules)
    manage = {"get", "list", "watch", "create", "update", "patch", "delete"}
    for workload in ("deployments", "statefulsets", "daemonsets", "replicasets"):
        assert granted["apps", workload] == manage
    assert granted["apps", "deployments/scale"] == {"get", "update", "patch"}
    assert granted["batch", "jobs"] == granted["batch", "cronjobs"] == manage
    assert granted["", "pods"] == {"get", "list", "watch", "delete"}
    assert granted["", "pods/log"] == {"get"}
    for resource in ("services", "configmaps", "persistentvolumeclaims"):
        assert granted["", resource] == manage
    assert granted["autoscaling", "horizontalpodautoscalers"] == manage
    assert granted["policy", "poddisruptionbudgets"] == manage
    assert granted["networking.k8s.io", "ingresses"] == manage
    resources = {resource for _, resource in granted}
    for forbidden in ("secrets", "roles", "rolebindings", "serviceaccounts", "pods/exec", "*"):
        assert forbidden not in resources
    assert all("*" not in verbs and "escalate" not in verbs for verbs in granted.values())
    assert all(group not in {"*", "rbac.authorization.k8s.io"} for group, _ in granted)


def test_empty_lists_bind_nothing() -> None:
    assert _objects(admins=[], viewers=[], deployers=[], serviceAccounts=[]) == {}
    assert _objects(defaultServiceAccount={"automountServiceAccountToken": False}) == {}

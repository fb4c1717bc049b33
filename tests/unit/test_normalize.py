"""Essences: every widening edit named in issue 7 is drift; the server's defaults alone are not.

The "served" bodies are what a kube-apiserver 1.36 returns for the operator's applies:
defaults filled in, quantities canonical, bookkeeping in metadata.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest

from baseline_operator.policy.layering import plan_namespace
from baseline_operator.policy.normalize import essence_digest, quantity
from tests.unit.conftest import make_baseline

Body = dict[str, Any]
TEAM = [{"kind": "Group", "name": "team-a"}]
BASELINE = make_baseline(
    "prod",
    networkPolicy={
        "defaultDeny": ["Ingress", "Egress"],
        "allowDNS": True,
        "allowSameNamespace": True,
        "ingress": [
            {
                "name": "from-frontend",
                "from": [{"podSelector": {"matchLabels": {"app": "frontend"}}}],
                "ports": [{"port": 3000}],
            }
        ],
    },
    rbac={
        "admins": TEAM,
        "viewers": [{"kind": "ServiceAccount", "name": "robot"}],
        "serviceAccounts": [
            {"name": "app", "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}
        ],
    },
    resources={
        "limitRange": {"default": {"cpu": "0.5", "memory": "512Mi"}},
        "quota": {"hard": {"pods": "50", "requests.memory": "1024Mi"}},
    },
    externalSecrets=[
        {
            "name": "db",
            "secretStoreRef": {"name": "vault", "kind": "ClusterSecretStore"},
            "data": [{"secretKey": "password", "remoteRef": {"key": "db/password"}}],
        }
    ],
)
DESIRED = {
    f"{item.ref.kind.kind} {item.ref.name}": item.body
    for item in plan_namespace("team-a", [BASELINE]).objects
}


def served(body: Body) -> Body:
    """The body as the API server returns it after the operator's apply."""
    live = copy.deepcopy(body)
    live["metadata"].update(
        uid="7d1c6a4e-2f0b-4c11-9a57-1b2e3f4a5b6c",
        resourceVersion="48213",
        generation=1,
        creationTimestamp="2026-05-04T10:00:00Z",
        annotations={"security.baseline.dev/desired-hash": "0123456789abcdef"},
        managedFields=[
            {
                "manager": "baseline-operator",
                "operation": "Apply",
                "apiVersion": body["apiVersion"],
                "fieldsType": "FieldsV1",
                "fieldsV1": {"f:metadata": {}},
            }
        ],
    )
    kind = body["kind"]
    if kind == "NetworkPolicy":
        for rule in [*live["spec"]["ingress"], *live["spec"]["egress"]]:
            for port in rule.get("ports", []):
                port.setdefault("protocol", "TCP")
    if kind == "RoleBinding":
        for subject in live["subjects"]:
            if subject["kind"] != "ServiceAccount":
                subject.setdefault("apiGroup", "rbac.authorization.k8s.io")
    if kind == "LimitRange":
        for item in live["spec"]["limits"]:
            item["default"] = {"cpu": "500m", "memory": "512Mi"}
            item["defaultRequest"] = {"cpu": "500m", "memory": "512Mi"}
    if kind == "ResourceQuota":
        live["spec"]["hard"] = {"pods": "50", "requests.memory": "1Gi"}
        live["status"] = {"hard": live["spec"]["hard"], "used": {"pods": "3"}}
    if kind == "ExternalSecret":
        spec = live["spec"]
        spec.setdefault("target", {}).update(creationPolicy="Owner", deletionPolicy="Retain")
        for item in spec["data"]:
            item["remoteRef"].update(
                conversionStrategy="Default", decodingStrategy="None", metadataPolicy="None"
            )
        live["status"] = {"refreshTime": "2026-05-04T10:00:01Z"}
    return live


def same(body: Body, live: Body) -> bool:
    return essence_digest(body["kind"], body) == essence_digest(live["kind"], live)


@pytest.mark.parametrize("name", sorted(DESIRED))
def test_server_defaults_alone_are_not_drift(name: str) -> None:
    assert same(DESIRED[name], served(DESIRED[name]))


def _edit(name: str, change: Callable[[Body], None]) -> bool:
    live = served(DESIRED[name])
    change(live)
    return same(DESIRED[name], live)


WIDENING: dict[str, tuple[str, Callable[[Body], None]]] = {
    # Issue 7, item 1: the default deny selects no pod, so nothing is denied.
    "deny-narrowed-to-no-pod": (
        "NetworkPolicy prod-default-deny",
        lambda b: b["spec"].__setitem__("podSelector", {"matchLabels": {"none": "x"}}),
    ),
    "deny-direction-dropped": (
        "NetworkPolicy prod-default-deny",
        lambda b: b["spec"].__setitem__("policyTypes", ["Ingress"]),
    ),
    "allow-all-rule-added": (
        "NetworkPolicy prod-default-deny",
        lambda b: b["spec"].__setitem__("ingress", [{}]),
    ),
    # Issue 7, item 1: the same-namespace peer opened to every namespace.
    "peer-every-namespace": (
        "NetworkPolicy prod-allow-same-namespace",
        lambda b: b["spec"]["ingress"][0]["from"][0].__setitem__("namespaceSelector", {}),
    ),
    "peer-added": (
        "NetworkPolicy prod-ingress-from-frontend",
        lambda b: b["spec"]["ingress"][0]["from"].append({"ipBlock": {"cidr": "0.0.0.0/0"}}),
    ),
    "port-dropped": (
        "NetworkPolicy prod-ingress-from-frontend",
        lambda b: b["spec"]["ingress"][0].pop("ports"),
    ),
    "dns-to-every-namespace": (
        "NetworkPolicy prod-allow-dns",
        lambda b: b["spec"]["egress"][0]["to"][0].pop("namespaceSelector"),
    ),
    "subject-added": (
        "RoleBinding prod-admins",
        lambda b: b["subjects"].append({"kind": "User", "name": "mallory"}),
    ),
    "role-ref-changed": (
        "RoleBinding prod-viewers",
        lambda b: b["roleRef"].__setitem__("name", "edit"),
    ),
    "rule-widened": (
        "Role prod-sa.app",
        lambda b: b["rules"][0].__setitem__("verbs", ["get", "list", "create"]),
    ),
    "rule-added": (
        "Role prod-sa.app",
        lambda b: b["rules"].append(
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}
        ),
    ),
    "quota-raised": (
        "ResourceQuota prod-quota",
        lambda b: b["spec"]["hard"].__setitem__("pods", "500"),
    ),
    "quota-key-added": (
        "ResourceQuota prod-quota",
        lambda b: b["spec"]["hard"].__setitem__("count/jobs.batch", "1000"),
    ),
    "limit-raised": (
        "LimitRange prod-limits",
        lambda b: b["spec"]["limits"][0]["default"].__setitem__("memory", "64Gi"),
    ),
    "token-mounted": (
        "ServiceAccount app",
        lambda b: b.__setitem__("automountServiceAccountToken", True),
    ),
    "cloud-identity-added": (
        "ServiceAccount app",
        lambda b: b["metadata"]["annotations"].__setitem__(
            "eks.amazonaws.com/role-arn", "arn:aws:iam::1:role/admin"
        ),
    ),
    "secret-retargeted": (
        "ExternalSecret db",
        lambda b: b["spec"]["data"][0]["remoteRef"].__setitem__("key", "prod/root"),
    ),
    "baseline-label-removed": (
        "Role prod-sa.app",
        lambda b: b["metadata"]["labels"].pop("security.baseline.dev/baseline"),
    ),
}


@pytest.mark.parametrize("case", sorted(WIDENING))
def test_each_widening_edit_is_drift(case: str) -> None:
    name, change = WIDENING[case]
    assert not _edit(name, change)


@pytest.mark.parametrize(
    ("first", "second"),
    [("500m", "0.5"), ("1Gi", "1024Mi"), ("2", 2), ("1e3", "1k"), ("100Ki", "102400")],
)
def test_quantities_compare_by_value(first: Any, second: Any) -> None:
    assert quantity(first) == quantity(second)


def test_different_quantities_differ() -> None:
    assert quantity("50") != quantity("51")
    assert quantity("1Gi") != quantity("1G")


def test_bookkeeping_and_status_are_not_part_of_the_essence() -> None:
    body = DESIRED["ResourceQuota prod-quota"]
    live = served(body)
    live["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] = "{}"
    live["metadata"]["labels"]["team"] = "a"
    live["status"]["used"] = {"pods": "49"}
    assert same(body, live)


def test_admission_policy_defaults_are_not_drift() -> None:
    baseline = make_baseline(
        "prod", protectGeneratedObjects=True, admission={"denyPrivileged": True}
    )
    from baseline_operator.policy.admission import render_cluster_objects

    for item in render_cluster_objects(baseline, "system:serviceaccount:x:y"):
        live = served(item.body)
        spec = live["spec"]
        if item.ref.kind.kind == "ValidatingAdmissionPolicy":
            spec.setdefault("failurePolicy", "Fail")
            constraints = spec["matchConstraints"]
            constraints.update(namespaceSelector={}, objectSelector={}, matchPolicy="Equivalent")
            for rule in constraints["resourceRules"]:
                rule["scope"] = "*"
        else:
            resources = spec.setdefault("matchResources", {})
            resources.update(namespaceSelector=resources.get("namespaceSelector", {}))
            resources.update(objectSelector={}, matchPolicy="Equivalent")
        assert same(item.body, live), item.ref
        widened = copy.deepcopy(live)
        widened["spec"]["failurePolicy" if "failurePolicy" in spec else "validationActions"] = (
            "Ignore" if "failurePolicy" in spec else ["Audit"]
        )
        assert not same(item.body, widened), item.ref

"""The ValidatingAdmissionPolicies and bindings rendered from spec.admission and
spec.protectGeneratedObjects: which objects, their names, labels and structure.

What the CEL inside them decides is tested in test_admission_cel.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from baseline_operator.api.spec import AdmissionSection
from baseline_operator.policy.admission import render_cluster_objects, workload_rule_expressions
from baseline_operator.policy.checklist import CHECK_IDS
from baseline_operator.policy.objects import (
    VALIDATING_ADMISSION_POLICY,
    VALIDATING_ADMISSION_POLICY_BINDING,
    ObjectRef,
    Ownership,
)
from tests.unit.conftest import by_name, make_baseline

OPERATOR = "system:serviceaccount:baseline-operator-system:baseline-operator"
META_LABELS = {
    "app.kubernetes.io/managed-by": "baseline-operator",
    "security.baseline.dev/baseline": "prod",
}
FULL_ADMISSION = {
    "allowedRegistries": ["registry.example.com/", "ghcr.io/acme/"],
    "requiredLabels": ["app", "team"],
    "denyPrivileged": True,
    "denyHostNamespaces": True,
    "denyHostPath": True,
    "requireResourceRequests": True,
    "requireRunAsNonRoot": True,
}
FLAGS = [
    "denyPrivileged",
    "denyHostNamespaces",
    "denyHostPath",
    "requireResourceRequests",
    "requireRunAsNonRoot",
]


def _objects(**spec: Any) -> dict[str, dict[str, Any]]:
    return by_name(render_cluster_objects(make_baseline("prod", **spec), OPERATOR))


@pytest.mark.parametrize(
    "spec",
    [
        {},
        {"admission": {}},
        {"admission": {"validationActions": ["Warn", "Audit"]}},
        {"admission": {"denyPrivileged": False, "allowedRegistries": []}},
        {"protectGeneratedObjects": False},
    ],
)
def test_nothing_is_rendered_without_a_rule_or_protection(spec: dict[str, Any]) -> None:
    assert render_cluster_objects(make_baseline("prod", **spec), OPERATOR) == []


def test_rules_and_protection_render_two_policies_and_two_bindings() -> None:
    objects = render_cluster_objects(
        make_baseline("prod", admission=FULL_ADMISSION, protectGeneratedObjects=True), OPERATOR
    )
    assert [item.ref for item in objects] == [
        ObjectRef(VALIDATING_ADMISSION_POLICY, None, "prod-protect"),
        ObjectRef(VALIDATING_ADMISSION_POLICY, None, "prod-workload-rules"),
        ObjectRef(VALIDATING_ADMISSION_POLICY_BINDING, None, "prod-protect"),
        ObjectRef(VALIDATING_ADMISSION_POLICY_BINDING, None, "prod-workload-rules"),
    ]
    for item in objects:
        assert item.baseline == "prod"
        assert item.ownership is Ownership.OBJECT
        assert item.body["metadata"] == {"name": item.ref.name, "labels": META_LABELS}
        assert item.body["apiVersion"] == "admissionregistration.k8s.io/v1"


def test_workload_rules_policy_structure() -> None:
    policy = _objects(admission=FULL_ADMISSION)["ValidatingAdmissionPolicy prod-workload-rules"]
    assert policy["kind"] == "ValidatingAdmissionPolicy"
    spec = policy["spec"]
    assert set(spec) == {
        "failurePolicy",
        "matchConstraints",
        "matchConditions",
        "variables",
        "validations",
    }
    assert spec["failurePolicy"] == "Fail"
    operations = ["CREATE", "UPDATE"]
    assert spec["matchConstraints"] == {
        "matchPolicy": "Equivalent",
        "resourceRules": [
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": operations,
                "resources": ["pods", "pods/ephemeralcontainers", "replicationcontrollers"],
            },
            {
                "apiGroups": ["apps"],
                "apiVersions": ["v1"],
                "operations": operations,
                "resources": ["daemonsets", "deployments", "replicasets", "statefulsets"],
            },
            {
                "apiGroups": ["batch"],
                "apiVersions": ["v1"],
                "operations": operations,
                "resources": ["cronjobs", "jobs"],
            },
        ],
    }
    assert [condition["name"] for condition in spec["matchConditions"]] == ["pod-template-changed"]
    assert [variable["name"] for variable in spec["variables"]] == [
        "template",
        "podSpec",
        "podLabels",
        "podSecurity",
        "volumes",
        "appContainers",
        "allContainers",
    ]
    assert [(rule["message"], rule["reason"]) for rule in spec["validations"]] == [
        ("containers must not run privileged", "Forbidden"),
        ("pods must not share the node's network, PID or IPC namespace", "Forbidden"),
        ("hostPath volumes are not allowed", "Forbidden"),
        ("container images must come from registry.example.com/, ghcr.io/acme/", "Forbidden"),
        ("pods and pod templates must carry the labels app, team", "Invalid"),
        ("containers and init containers must request cpu and memory", "Invalid"),
        ("containers must run as non-root (runAsNonRoot: true, runAsUser not 0)", "Forbidden"),
    ]
    for rule in spec["validations"]:
        assert set(rule) == {"expression", "message", "messageExpression", "reason"}
        assert rule["messageExpression"].startswith(f'"{rule["message"]}: " + (')
    assert spec["validations"] == workload_rule_expressions(
        AdmissionSection.model_validate(FULL_ADMISSION)
    )


@pytest.mark.parametrize("actions", [["Deny"], ["Warn", "Audit"], ["Audit"], ["Deny", "Audit"]])
def test_workload_rules_binding_holds_in_namespaces_with_the_applied_label(
    actions: list[str],
) -> None:
    objects = _objects(admission={"denyPrivileged": True, "validationActions": actions})
    assert objects["ValidatingAdmissionPolicyBinding prod-workload-rules"] == {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": "prod-workload-rules", "labels": META_LABELS},
        "spec": {
            "policyName": "prod-workload-rules",
            "validationActions": actions,
            "matchResources": {
                "namespaceSelector": {"matchLabels": {"applied.security.baseline.dev/prod": "true"}}
            },
        },
    }


def test_the_default_validation_action_is_deny() -> None:
    binding = _objects(admission={"denyHostPath": True})[
        "ValidatingAdmissionPolicyBinding prod-workload-rules"
    ]
    assert binding["spec"]["validationActions"] == ["Deny"]


@given(
    flags=st.sets(st.sampled_from(FLAGS)),
    registries=st.lists(st.sampled_from(["a.example/", "b.example/"]), unique=True),
    labels=st.lists(st.sampled_from(["app", "team"]), unique=True),
)
def test_one_validation_per_enabled_rule_in_checklist_order(
    flags: set[str], registries: list[str], labels: list[str]
) -> None:
    admission: dict[str, Any] = dict.fromkeys(flags, True)
    admission |= {"allowedRegistries": registries, "requiredLabels": labels}
    validations = workload_rule_expressions(AdmissionSection.model_validate(admission))
    message_of = {
        "denyPrivileged": ("privileged", "containers must not run privileged"),
        "denyHostNamespaces": ("host-namespaces", "pods must not share the node's"),
        "denyHostPath": ("host-path", "hostPath volumes"),
        "requireResourceRequests": ("resource-requests", "containers and init containers"),
        "requireRunAsNonRoot": ("run-as-non-root", "containers must run as non-root"),
    }
    expected = [message_of[flag] for flag in flags]
    if registries:
        expected.append(("allowed-registries", "container images must come from"))
    if labels:
        expected.append(("required-labels", "pods and pod templates must carry"))
    expected.sort(key=lambda item: CHECK_IDS.index(item[0]))
    assert len(validations) == len(expected)
    for validation, (_, start) in zip(validations, expected, strict=True):
        assert validation["message"].startswith(start)


def test_protect_policy_structure() -> None:
    policy = _objects(protectGeneratedObjects=True)["ValidatingAdmissionPolicy prod-protect"]
    spec = policy["spec"]
    assert set(spec) == {"failurePolicy", "matchConstraints", "matchConditions", "validations"}
    assert spec["failurePolicy"] == "Fail"
    operations = ["CREATE", "UPDATE", "DELETE"]
    assert spec["matchConstraints"] == {
        "matchPolicy": "Equivalent",
        "resourceRules": [
            {
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "operations": operations,
                "resources": ["limitranges", "resourcequotas", "serviceaccounts"],
            },
            {
                "apiGroups": ["external-secrets.io"],
                "apiVersions": ["v1"],
                "operations": operations,
                "resources": ["externalsecrets"],
            },
            {
                "apiGroups": ["networking.k8s.io"],
                "apiVersions": ["v1"],
                "operations": operations,
                "resources": ["networkpolicies"],
            },
            {
                "apiGroups": ["rbac.authorization.k8s.io"],
                "apiVersions": ["v1"],
                "operations": operations,
                "resources": ["rolebindings", "roles"],
            },
        ],
    }
    assert [condition["name"] for condition in spec["matchConditions"]] == ["generated-by-baseline"]
    (validation,) = spec["validations"]
    assert validation["message"] == (
        "objects generated by baseline prod are managed by baseline-operator;"
        " change the SecurityBaseline instead"
    )
    assert validation["reason"] == "Forbidden"


def test_protect_binding_denies_cluster_wide() -> None:
    objects = _objects(protectGeneratedObjects=True)
    assert objects["ValidatingAdmissionPolicyBinding prod-protect"] == {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": "prod-protect", "labels": META_LABELS},
        "spec": {"policyName": "prod-protect", "validationActions": ["Deny"]},
    }


def test_protection_does_not_depend_on_the_admission_section() -> None:
    objects = _objects(
        admission={"denyPrivileged": True, "validationActions": ["Warn"]},
        protectGeneratedObjects=True,
    )
    assert objects["ValidatingAdmissionPolicyBinding prod-protect"]["spec"][
        "validationActions"
    ] == ["Deny"]


def test_names_of_a_longest_baseline_stay_within_63_characters() -> None:
    name = "b" * 63
    baseline = make_baseline(name, admission=FULL_ADMISSION, protectGeneratedObjects=True)
    objects = render_cluster_objects(baseline, OPERATOR)
    policies = {item.ref.name for item in objects if item.ref.kind == VALIDATING_ADMISSION_POLICY}
    assert len(policies) == 2
    for item in objects:
        assert len(item.ref.name) <= 63
        assert item.body["metadata"]["labels"]["security.baseline.dev/baseline"] == name
        if item.ref.kind == VALIDATING_ADMISSION_POLICY_BINDING:
            assert item.body["spec"]["policyName"] == item.ref.name
            assert item.ref.name in policies

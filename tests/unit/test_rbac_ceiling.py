"""The ceiling on what a baseline may grant: the models and the CRD's CEL agree on it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from baseline_operator.api.crd import build_crd
from baseline_operator.api.resource import InvalidBaseline, parse_baseline
from baseline_operator.api.spec import GrantRisk, rule_risks
from baseline_operator.policy.render import render_namespace_objects
from tests.support.crd_schema import validate
from tests.unit.conftest import baseline_body, make_baseline
from tests.unit.test_admission_cel import _evaluate as evaluate_cel

Body = dict[str, Any]

SCHEMA = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]

GROUPS = ["", "apps", "batch", "rbac.authorization.k8s.io", "*", "networking.k8s.io"]
RESOURCES = [
    "pods",
    "pods/log",
    "pods/exec",
    "pods/attach",
    "pods/portforward",
    "pods/*",
    "*/scale",
    "*",
    "secrets",
    "serviceaccounts",
    "serviceaccounts/token",
    "configmaps",
    "roles",
    "rolebindings",
    "deployments",
]
VERBS = ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]
VERBS += ["escalate", "bind", "impersonate", "*"]


def _with_rule(rule: dict[str, Any]) -> dict[str, Any]:
    return baseline_body("b", rbac={"serviceAccounts": [{"name": "app", "rules": [rule]}]})


def _verdicts(rule: dict[str, Any]) -> tuple[bool, bool]:
    """(the models accept it, the CRD schema accepts it)."""
    body = _with_rule(rule)
    try:
        parse_baseline(body)
        models = True
    except InvalidBaseline:
        models = False
    return models, validate(body, SCHEMA) == []


@pytest.mark.parametrize(
    ("rule", "risks"),
    [
        ({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}, []),
        ({"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["create", "patch"]}, []),
        ({"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get"]}, []),
        ({"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get"]}, []),
        (
            {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["roles"], "verbs": ["get"]},
            [],
        ),
        ({"apiGroups": ["*"], "resources": ["pods"], "verbs": ["get"]}, [GrantRisk.WILDCARD]),
        ({"apiGroups": [""], "resources": ["*"], "verbs": ["get"]}, [GrantRisk.WILDCARD]),
        ({"apiGroups": ["apps"], "resources": ["*/scale"], "verbs": ["get"]}, [GrantRisk.WILDCARD]),
        ({"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]}, [GrantRisk.WILDCARD]),
        ({"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}, [GrantRisk.SECRETS]),
        (
            {"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]},
            [GrantRisk.SERVICE_ACCOUNT_TOKENS],
        ),
        ({"apiGroups": [""], "resources": ["pods/attach"], "verbs": ["get"]}, [GrantRisk.POD_EXEC]),
        (
            {"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"]},
            [GrantRisk.IMPERSONATE],
        ),
        (
            {
                "apiGroups": ["rbac.authorization.k8s.io"],
                "resources": ["roles"],
                "verbs": ["bind", "escalate"],
            },
            [GrantRisk.ESCALATE, GrantRisk.BIND, GrantRisk.RBAC_WRITE],
        ),
        (
            {
                "apiGroups": ["rbac.authorization.k8s.io"],
                "resources": ["rolebindings"],
                "verbs": ["delete"],
            },
            [GrantRisk.RBAC_WRITE],
        ),
    ],
)
def test_each_risk_is_named_and_refused_unless_acknowledged(
    rule: dict[str, Any], risks: list[GrantRisk]
) -> None:
    assert rule_risks(rule["apiGroups"], rule["resources"], rule["verbs"]) == risks
    expected = not risks
    assert _verdicts(rule) == (expected, expected)
    acknowledged = {**rule, "acknowledgeRisks": [risk.value for risk in risks]}
    assert _verdicts(acknowledged) == (True, True)
    if len(risks) > 1:
        # Every risk must be acknowledged, not only one of them.
        partly = {**rule, "acknowledgeRisks": [risks[0].value]}
        assert _verdicts(partly) == (False, False)


def test_the_message_says_how_to_acknowledge() -> None:
    body = _with_rule({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]})
    with pytest.raises(InvalidBaseline) as caught:
        parse_baseline(body)
    assert any("list Secrets in acknowledgeRisks" in str(error) for error in caught.value.errors)
    errors = validate(body, SCHEMA)
    assert [where for where, _ in errors] == ["spec.rbac.serviceAccounts[0].rules[0]"]


@settings(max_examples=300, deadline=None)
@given(
    groups=st.lists(st.sampled_from(GROUPS), min_size=1, max_size=3, unique=True),
    resources=st.lists(st.sampled_from(RESOURCES), min_size=1, max_size=3, unique=True),
    verbs=st.lists(st.sampled_from(VERBS), min_size=1, max_size=3, unique=True),
    acknowledged=st.lists(st.sampled_from(list(GrantRisk)), max_size=3, unique=True),
)
def test_the_models_and_the_crd_agree(
    groups: list[str], resources: list[str], verbs: list[str], acknowledged: list[GrantRisk]
) -> None:
    rule: dict[str, Any] = {"apiGroups": groups, "resources": resources, "verbs": verbs}
    if acknowledged:
        rule["acknowledgeRisks"] = [risk.value for risk in acknowledged]
    accepted = set(rule_risks(groups, resources, verbs)) <= set(acknowledged)
    assert _verdicts(rule) == (accepted, accepted)


# ----------------------------------------------------------------------------
# The admission policy installed with the operator (manifests/base/admission-ceiling.yaml)

CEILING_FILE = Path(__file__).parents[2] / "manifests" / "base" / "admission-ceiling.yaml"
OPERATOR = "system:serviceaccount:baseline-operator-system:baseline-operator"


def _ceiling() -> dict[str, Any]:
    documents = list(yaml.safe_load_all(CEILING_FILE.read_text()))
    (policy,) = [d for d in documents if d["kind"] == "ValidatingAdmissionPolicy"]
    return policy


CEILING = _ceiling()


def ceiling_refuses(
    obj: dict[str, Any] | None,
    operation: str = "CREATE",
    username: str = OPERATOR,
    old: dict[str, Any] | None = None,
) -> list[str]:
    """The messages of the failed validations ([] when allowed or not matched), evaluated as
    the API server does: match conditions, variables in order, then each validation."""
    spec = CEILING["spec"]
    target = obj if obj is not None else old
    assert target is not None
    activation: dict[str, Any] = {
        "object": obj,
        "oldObject": old,
        "request": {
            "operation": operation,
            "namespace": target["metadata"].get("namespace", ""),
            "userInfo": {"username": username},
        },
    }
    for condition in spec["matchConditions"]:
        if evaluate_cel(condition["expression"], activation) is not True:
            return []
    variables: dict[str, Any] = {}
    for variable in spec["variables"]:
        variables[variable["name"]] = evaluate_cel(
            variable["expression"], {**activation, "variables": variables}
        )
    activation["variables"] = variables
    refused = []
    for validation in spec["validations"]:
        result = evaluate_cel(validation["expression"], activation)
        assert isinstance(result, bool), validation["expression"]
        if not result:
            refused.append(" ".join(validation["message"].split()))
    return refused


def role(rules: list[dict[str, Any]], namespace: str = "team-a", name: str = "b-sa.app") -> Body:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": name, "namespace": namespace},
        "rules": rules,
    }


def binding(kind: str, name: str, namespace: str = "team-a") -> Body:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "b-admins", "namespace": namespace},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": name},
        "subjects": [{"kind": "Group", "name": "team", "apiGroup": "rbac.authorization.k8s.io"}],
    }


def test_the_policy_is_installed_with_the_operator_and_bound_to_deny() -> None:
    kustomization = yaml.safe_load((CEILING_FILE.parent / "kustomization.yaml").read_text())
    assert CEILING_FILE.name in kustomization["resources"]
    documents = list(yaml.safe_load_all(CEILING_FILE.read_text()))
    (bound,) = [d for d in documents if d["kind"] == "ValidatingAdmissionPolicyBinding"]
    assert bound["spec"] == {
        "policyName": CEILING["metadata"]["name"],
        "validationActions": ["Deny"],
    }
    assert CEILING["spec"]["failurePolicy"] == "Fail"


@settings(max_examples=300, deadline=None)
@given(
    groups=st.lists(st.sampled_from(GROUPS), min_size=1, max_size=3, unique=True),
    resources=st.lists(st.sampled_from(RESOURCES), min_size=1, max_size=3, unique=True),
    verbs=st.lists(st.sampled_from(VERBS), min_size=1, max_size=3, unique=True),
)
def test_the_policy_holds_the_same_ceiling_as_the_crd(
    groups: list[str], resources: list[str], verbs: list[str]
) -> None:
    rule = {"apiGroups": groups, "resources": resources, "verbs": verbs}
    safe = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}
    above = bool(rule_risks(groups, resources, verbs))
    for operation in ("CREATE", "UPDATE"):
        assert bool(ceiling_refuses(role([safe, rule]), operation, old=role([safe]))) is above


def test_the_roles_the_operator_renders_pass() -> None:
    baseline = make_baseline(
        "team-a",
        rbac={
            "deployers": [{"kind": "Group", "name": "ci"}],
            "admins": [{"kind": "Group", "name": "ops"}],
            "viewers": [{"kind": "Group", "name": "all"}],
            "serviceAccounts": [
                {
                    "name": "app",
                    "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
                },
                {
                    "name": "x" * 63,
                    "rules": [
                        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]}
                    ],
                },
            ],
        },
    )
    rendered = [item.body for item in render_namespace_objects(baseline, "shop")]
    assert {body["kind"] for body in rendered} >= {"Role", "RoleBinding", "ServiceAccount"}
    for body in rendered:
        assert ceiling_refuses(body) == [], body["metadata"]["name"]


@pytest.mark.parametrize(
    "namespace", ["kube-system", "kube-public", "kube-node-lease", "baseline-operator-system"]
)
@pytest.mark.parametrize("operation", ["CREATE", "UPDATE", "DELETE"])
def test_nothing_is_written_in_system_namespaces_or_its_own(namespace: str, operation: str) -> None:
    safe = role([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}], namespace)
    policy = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "b-default-deny", "namespace": namespace},
        "spec": {"podSelector": {}},
    }
    for obj in (safe, policy, binding("ClusterRole", "view", namespace)):
        new = None if operation == "DELETE" else obj
        old = None if operation == "CREATE" else obj
        assert ceiling_refuses(new, operation, old=old) == [
            "baseline-operator may not write in kube-system, kube-public, kube-node-lease or"
            " its own namespace"
        ]


@pytest.mark.parametrize(
    ("kind", "name", "allowed"),
    [
        ("ClusterRole", "admin", True),
        ("ClusterRole", "view", True),
        ("ClusterRole", "edit", False),
        ("ClusterRole", "cluster-admin", False),
        ("Role", "team-a-deployer", True),
        ("Role", "team-a-sa.app", True),
        ("Role", "long-baseline-name-sa.some-account-0123-0c9f3e2a", True),
        ("Role", "tenant-owned-role", False),
        ("Role", "deployer", False),
        ("Role", "b-sa.", False),
    ],
)
def test_bindings_refer_only_to_admin_view_or_generated_roles(
    kind: str, name: str, allowed: bool
) -> None:
    assert (ceiling_refuses(binding(kind, name)) == []) is allowed


def test_others_are_not_limited_by_it() -> None:
    wide = role([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}], "kube-system")
    assert ceiling_refuses(wide, username="kubernetes-admin") == []
    assert ceiling_refuses(wide, username=OPERATOR.replace("baseline-operator", "x", 1)) == []
    assert ceiling_refuses(wide) != []


def test_a_wide_role_can_still_be_deleted_by_the_operator() -> None:
    wide = role([{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}])
    assert ceiling_refuses(None, "DELETE", old=wide) == []

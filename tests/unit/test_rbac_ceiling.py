"""The ceiling on what a baseline may grant: the models and the CRD's CEL agree on it."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from baseline_operator.api.crd import build_crd
from baseline_operator.api.resource import InvalidBaseline, parse_baseline
from baseline_operator.api.spec import GrantRisk, rule_risks
from tests.support.crd_schema import validate
from tests.unit.conftest import baseline_body

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

"""One verdict everywhere: admission CEL, the checklist with exceptions, and `audit --exceptions`.

Hypothesis draws a pod (or a workload's pod template), a baseline with every admission
rule, up to three BaselineExceptions (names or a namespace selector, an optional
workload selector, checks, creation and expiry times, sometimes for another baseline
or beyond the baseline's maxDuration), a namespace (name and labels) and a moment. Then:

- the workload-rules policy rendered with the exceptions in force at that moment,
  evaluated as the API server would (tests/unit/test_admission_cel.py's harness, with
  the request's namespace and the Namespace object), refuses exactly the admission
  checks the checklist fails once the exceptions are applied;
- the offline command, given the same files and `--at`, reports the same findings
  with the same result (fail or skip) and the same exception name and expiry.
"""

from __future__ import annotations

import copy
import json
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from baseline_operator.api.exception import format_time, parse_exception
from baseline_operator.api.resource import parse_baseline
from baseline_operator.cli import main
from baseline_operator.policy.admission import render_cluster_objects, workload_rules
from baseline_operator.policy.checklist import (
    ADMISSION_CHECK_IDS,
    CHECK_IDS,
    ChecklistConfig,
    check_object,
    pod_template_of,
)
from baseline_operator.policy.exceptions import active_exceptions, waivers_for
from baseline_operator.policy.objects import VALIDATING_ADMISSION_POLICY
from tests.unit.conftest import baseline_body
from tests.unit.test_admission_cel import (
    _KINDS,
    _PREFIXES,
    ALL_RULES,
    OPERATOR,
    Request,
    _pod_templates,
    _wrapped,
    evaluate_policy,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
NAMESPACES = ["team-a", "team-b"]
# Checks drawn for exceptions: mostly the admission rules, some checklist-only ones.
_WAIVABLE = [*sorted(ADMISSION_CHECK_IDS), "image-tag", "capabilities"]


@st.composite
def _selectors(draw: st.DrawFn, keys: list[str], values: list[str]) -> dict[str, Any]:
    """A LabelSelector over a few keys and values; {} selects everything."""
    selector: dict[str, Any] = {}
    if draw(st.booleans()):
        selector["matchLabels"] = draw(
            st.dictionaries(st.sampled_from(keys), st.sampled_from(values), max_size=1)
        )
    if draw(st.booleans()):
        expressions = []
        for _ in range(draw(st.integers(1, 2))):
            operator = draw(st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist"]))
            expression: dict[str, Any] = {"key": draw(st.sampled_from(keys)), "operator": operator}
            if operator in ("In", "NotIn"):
                expression["values"] = draw(
                    st.lists(st.sampled_from(values), min_size=1, max_size=2, unique=True)
                )
            expressions.append(expression)
        selector["matchExpressions"] = expressions
    return selector


@st.composite
def _exceptions(draw: st.DrawFn, index: int) -> dict[str, Any]:
    created = T0 + timedelta(days=draw(st.integers(0, 10)))
    lifetime = timedelta(days=draw(st.integers(1, 100)), hours=draw(st.integers(0, 23)))
    spec: dict[str, Any] = {
        "baseline": draw(st.sampled_from(["prod", "prod", "prod", "other"])),
        "checks": draw(st.lists(st.sampled_from(_WAIVABLE), min_size=1, max_size=4, unique=True)),
        "reason": "drawn by hypothesis",
        "expires": format_time(created + lifetime),
    }
    if draw(st.booleans()):
        spec["namespaces"] = draw(
            st.lists(st.sampled_from(NAMESPACES), min_size=1, max_size=2, unique=True)
        )
    else:
        spec["namespaceSelector"] = draw(_selectors(["tier"], ["legacy", "new"]))
    if draw(st.booleans()):
        spec["workloadSelector"] = draw(_selectors(["app", "team"], ["x", "y"]))
    elif draw(st.booleans()):
        spec["podSecurity"] = {"enforce": "baseline"}
    return {
        "apiVersion": "security.baseline.dev/v1alpha1",
        "kind": "BaselineException",
        "metadata": {"name": f"e{index}", "creationTimestamp": format_time(created)},
        "spec": spec,
    }


@st.composite
def _cases(draw: st.DrawFn) -> dict[str, Any]:
    registries = draw(st.lists(st.sampled_from(_PREFIXES), unique=True))
    labels = draw(st.lists(st.sampled_from(["app", "team"]), unique=True))
    spec: dict[str, Any] = {
        "admission": {**ALL_RULES, "allowedRegistries": registries, "requiredLabels": labels}
    }
    max_duration = draw(st.sampled_from([None, "720h", "2160h"]))
    if max_duration is not None:
        spec["exceptions"] = {"maxDuration": max_duration}
    namespace = draw(st.sampled_from(NAMESPACES))
    obj = _wrapped(draw(st.sampled_from(_KINDS)), draw(_pod_templates()))
    obj["metadata"]["namespace"] = namespace
    count = draw(st.integers(0, 3))
    return {
        "baseline": baseline_body("prod", **spec),
        "config": ChecklistConfig(tuple(registries), tuple(labels)),
        "exceptions": [draw(_exceptions(index)) for index in range(count)],
        "namespace": namespace,
        "namespace_labels": draw(
            st.dictionaries(st.just("tier"), st.sampled_from(["legacy", "new"]))
        ),
        "object": obj,
        "at": T0 + timedelta(days=draw(st.integers(0, 120)), hours=draw(st.integers(0, 23))),
    }


def _checklist(case: dict[str, Any]) -> list[tuple[str, str | None, str, str | None, str | None]]:
    """(check, container, result, exception, expires) of every finding, exceptions applied."""
    baseline = parse_baseline(case["baseline"])
    exceptions = [parse_exception(item) for item in case["exceptions"]]
    active = active_exceptions(baseline, exceptions, case["at"])
    template = pod_template_of(case["object"])
    assert template is not None
    waivers = waivers_for(
        active, case["namespace"], case["namespace_labels"], template[0].get("labels") or {}
    )
    return [
        (
            finding.check_id,
            finding.container,
            finding.result,
            finding.waived_by.exception if finding.waived_by else None,
            finding.waived_by.expires if finding.waived_by else None,
        )
        for finding in check_object(case["object"], case["config"], waivers)
    ]


def _admission(case: dict[str, Any]) -> set[str]:
    """The checks the workload-rules policy, rendered with the exceptions in force, refuses."""
    baseline = parse_baseline(case["baseline"])
    exceptions = [parse_exception(item) for item in case["exceptions"]]
    active = active_exceptions(baseline, exceptions, case["at"])
    (policy,) = [
        item.body
        for item in render_cluster_objects(baseline, OPERATOR, exceptions=active)
        if item.ref.kind == VALIDATING_ADMISSION_POLICY
    ]
    assert baseline.spec.admission is not None
    check_ids = [rule.check_id for rule in workload_rules(baseline.spec.admission)]
    request = Request(
        "CREATE",
        case["object"],
        namespace=case["namespace"],
        namespace_labels=case["namespace_labels"],
    )
    verdict = evaluate_policy(policy, request)
    assert verdict.matched
    return {check_ids[index] for index in verdict.failed}


def _offline(case: dict[str, Any]) -> list[tuple[str, str | None, str, str | None, str | None]]:
    """The same, from `baseline-operator audit --exceptions DIR --at TIME -o json`."""
    with tempfile.TemporaryDirectory() as directory:
        root = Path(directory)
        (root / "baseline.yaml").write_text(yaml.safe_dump(case["baseline"]))
        (root / "exceptions").mkdir()
        for item in case["exceptions"]:
            path = root / "exceptions" / f"{item['metadata']['name']}.yaml"
            path.write_text(yaml.safe_dump(item))
        namespace: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": case["namespace"]},
        }
        if case["namespace_labels"]:
            namespace["metadata"]["labels"] = case["namespace_labels"]
        (root / "manifests.yaml").write_text(
            yaml.safe_dump_all([case["object"], namespace])  # the Namespace may come last
        )
        result = CliRunner().invoke(
            main,
            [
                "audit",
                "-f",
                str(root / "manifests.yaml"),
                "--baseline",
                str(root / "baseline.yaml"),
                "--exceptions",
                str(root / "exceptions"),
                "--at",
                format_time(case["at"]),
                "--fail-on",
                "never",
                "-o",
                "json",
            ],
        )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    return [
        (
            finding["check"],
            finding["container"],
            finding["result"],
            finding.get("exception", {}).get("name"),
            finding.get("exception", {}).get("expires"),
        )
        for finding in report["findings"]
    ]


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(case=_cases())
def test_admission_checklist_and_offline_audit_agree(case: dict[str, Any]) -> None:
    original = copy.deepcopy(case["object"])
    checklist = _checklist(case)
    failing = {check for check, _, result, _, _ in checklist if result == "fail"}
    assert _admission(case) == failing & ADMISSION_CHECK_IDS
    assert _offline(case) == checklist
    assert case["object"] == original  # nobody changed the input


def _case(**overrides: Any) -> dict[str, Any]:
    """A hand-made case: a root container in team-a, one exception waiving run-as-non-root."""
    obj = _wrapped(
        "Deployment",
        {
            "metadata": {"labels": {"app": "x"}},
            "spec": {"containers": [{"name": "c", "image": "registry.example.com/a:1"}]},
        },
    )
    exception = {
        "apiVersion": "security.baseline.dev/v1alpha1",
        "kind": "BaselineException",
        "metadata": {"name": "legacy", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {
            "baseline": "prod",
            "namespaces": ["team-a"],
            "workloadSelector": {"matchLabels": {"app": "x"}},
            "checks": ["run-as-non-root", "resource-requests"],
            "reason": "legacy",
            "expires": "2026-02-01T00:00:00Z",
        },
    }
    case = {
        "baseline": baseline_body(
            "prod", admission={**ALL_RULES, "allowedRegistries": ["registry.example.com"]}
        ),
        "config": ChecklistConfig(("registry.example.com",), ()),
        "exceptions": [exception],
        "namespace": "team-a",
        "namespace_labels": {},
        "object": obj,
        "at": datetime(2026, 1, 15, tzinfo=UTC),
    }
    case.update(overrides)
    return case


def test_a_covered_workload_is_admitted_while_the_exception_is_in_force_only() -> None:
    case = _case()
    assert _admission(case) == set()
    assert {(c, r, e) for c, _, r, e, _ in _offline(case) if c in ADMISSION_CHECK_IDS} == {
        ("run-as-non-root", "skip", "legacy"),
        ("resource-requests", "skip", "legacy"),
    }
    expired = _case(at=datetime(2026, 2, 1, tzinfo=UTC))
    assert _admission(expired) == {"run-as-non-root", "resource-requests"}
    assert all(result == "fail" for _, _, result, _, _ in _offline(expired))


def test_the_exception_covers_nothing_more() -> None:
    other_namespace = _case(namespace="team-b")
    other_namespace["object"]["metadata"]["namespace"] = "team-b"
    assert _admission(other_namespace) == {"run-as-non-root", "resource-requests"}
    other_workload = _case()
    other_workload["object"]["spec"]["template"]["metadata"]["labels"] = {"app": "y"}
    assert _admission(other_workload) == {"run-as-non-root", "resource-requests"}
    privileged = _case()
    container = privileged["object"]["spec"]["template"]["spec"]["containers"][0]
    container["securityContext"] = {"privileged": True}
    assert _admission(privileged) == {"privileged"}


def test_every_check_id_can_be_waived() -> None:
    for check in CHECK_IDS:
        case = _case()
        case["exceptions"][0]["spec"]["checks"] = [check]
        parse_exception(case["exceptions"][0])

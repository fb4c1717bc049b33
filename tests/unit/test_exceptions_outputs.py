"""Exceptions in the rendered admission policy and in every output of `audit --exceptions`."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from baseline_operator.api.exception import parse_exception
from baseline_operator.api.spec import LabelSelector
from baseline_operator.cli import main
from baseline_operator.policy.admission import render_cluster_objects, selector_cel
from baseline_operator.policy.exceptions import ActiveException
from baseline_operator.policy.objects import VALIDATING_ADMISSION_POLICY
from baseline_operator.policy.select import matches_selector
from tests.unit.conftest import make_baseline
from tests.unit.test_admission_cel import OPERATOR, _evaluate

ROOT = Path(__file__).parents[2]
PROD = make_baseline("prod", admission={"denyHostPath": True, "requireRunAsNonRoot": True})


def _exception(name: str = "x", **spec: Any) -> ActiveException:
    return ActiveException.of(
        parse_exception(
            {
                "apiVersion": "security.baseline.dev/v1alpha1",
                "kind": "BaselineException",
                "metadata": {"name": name},
                "spec": {
                    "baseline": "prod",
                    "namespaces": ["team-a"],
                    "checks": ["host-path"],
                    "reason": "r",
                    "expires": "2026-02-01T00:00:00Z",
                    **spec,
                },
            }
        )
    )


def _policy(*exceptions: ActiveException) -> dict[str, Any]:
    (body,) = [
        item.body
        for item in render_cluster_objects(PROD, OPERATOR, exceptions=exceptions)
        if item.ref.kind == VALIDATING_ADMISSION_POLICY
    ]
    return body


def test_without_exceptions_the_policy_is_what_it_was() -> None:
    assert _policy() == _policy(_exception(checks=["privileged", "image-tag"]))
    assert "request.namespace" not in json.dumps(_policy())


def test_each_waived_rule_names_the_exceptions_that_cover_it() -> None:
    spec = _policy(
        _exception("b", checks=["host-path", "run-as-non-root"]),
        _exception(
            "a",
            namespaces=None,
            namespaceSelector={"matchLabels": {"tier": "legacy"}},
            checks=["host-path"],
        ),
    )["spec"]
    variables = {variable["name"]: variable["expression"] for variable in spec["variables"]}
    assert "variables.namespaceLabels" in variables["exception0"]  # a, by labels
    assert variables["exception1"] == 'request.namespace in ["team-a"]'  # b, by name
    host_path, run_as_non_root = spec["validations"]
    assert host_path["expression"].startswith("variables.exception0 || variables.exception1 || (")
    assert run_as_non_root["expression"].startswith("variables.exception1 || (")


SELECTORS = [
    {},
    {"matchLabels": {"a": "1"}},
    {"matchLabels": {"a": "1", "b": "2"}},
    {"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]},
    {"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]},
    {"matchExpressions": [{"key": "a", "operator": "Exists"}]},
    {"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]},
    {
        "matchLabels": {"b": "2"},
        "matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["2"]}],
    },
]
LABELS = [{}, {"a": "1"}, {"a": "2"}, {"b": "2"}, {"a": "1", "b": "2"}, {"a": "3", "b": "1"}]


@pytest.mark.parametrize("selector", SELECTORS, ids=json.dumps)
def test_selector_cel_is_the_label_selector(selector: dict[str, Any]) -> None:
    model = LabelSelector.model_validate(selector)
    expression = selector_cel(model, "labels")
    for labels in LABELS:
        assert _evaluate(expression, {"labels": labels}) is matches_selector(model, labels)


# ----------------------------------------------------------------------------
# audit --exceptions: every output


BASELINE = textwrap.dedent(
    """\
    apiVersion: security.baseline.dev/v1alpha1
    kind: SecurityBaseline
    metadata: {name: prod}
    spec:
      namespaceSelector: {}
      admission: {denyHostPath: true}
    """
)
EXCEPTION = textwrap.dedent(
    """\
    apiVersion: security.baseline.dev/v1alpha1
    kind: BaselineException
    metadata: {name: agent-logs}
    spec:
      baseline: prod
      namespaceSelector: {matchLabels: {team: observability}}
      checks: [host-path]
      reason: the log agent reads /var/log
      expires: "2026-03-01T00:00:00Z"
    """
)
MANIFESTS = textwrap.dedent(
    """\
    apiVersion: apps/v1
    kind: DaemonSet
    metadata: {name: agent}
    spec:
      template:
        metadata: {labels: {app: agent}}
        spec:
          securityContext: {runAsNonRoot: true}
          containers: [{name: agent, image: "agent:1"}]
          volumes: [{name: logs, hostPath: {path: /var/log}}]
    ---
    apiVersion: v1
    kind: Namespace
    metadata: {name: logging, labels: {team: observability}}
    """
)
AT = "2026-02-01T00:00:00Z"


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "exceptions").mkdir()
    paths = {
        "baseline": tmp_path / "baseline.yaml",
        "exceptions": tmp_path / "exceptions",
        "manifests": tmp_path / "manifests.yaml",
    }
    paths["baseline"].write_text(BASELINE)
    (tmp_path / "exceptions" / "agent-logs.yaml").write_text(EXCEPTION)
    (tmp_path / "exceptions" / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources: [agent-logs.yaml]\n"
    )
    paths["manifests"].write_text(MANIFESTS)
    return {key: str(value) for key, value in paths.items()}


def _audit(files: dict[str, str], *extra: str, at: str = AT) -> Any:
    return CliRunner().invoke(
        main,
        [
            "audit",
            "-f",
            files["manifests"],
            "--baseline",
            files["baseline"],
            "--exceptions",
            files["exceptions"],
            "--namespace",
            "logging",
            "--at",
            at,
            "--fail-on",
            "high",
            *extra,
        ],
    )


def test_json_marks_the_waived_finding_skip_with_the_exception(files: dict[str, str]) -> None:
    result = _audit(files, "-o", "json")
    report = json.loads(result.stdout)
    (skipped,) = [f for f in report["findings"] if f["check"] == "host-path"]
    assert skipped["result"] == "skip"
    assert skipped["exception"] == {"name": "agent-logs", "expires": "2026-03-01T00:00:00Z"}
    assert all(f["result"] == "fail" for f in report["findings"] if f["check"] != "host-path")
    assert report["summary"]["skipped"] == 1
    assert report["summary"]["findings"] == len(report["findings"]) - 1
    # host-path is high: it would fail the run; the other findings here are below high.
    assert result.exit_code == 0, result.output


def test_after_expiry_the_finding_fails_again(files: dict[str, str]) -> None:
    result = _audit(files, "-o", "json", at="2026-03-01T00:00:00Z")
    report = json.loads(result.stdout)
    assert {f["result"] for f in report["findings"]} == {"fail"}
    assert result.exit_code == 1
    assert "BaselineException agent-logs is Expired" in result.stderr


def test_table_has_a_result_column_and_names_the_exception(files: dict[str, str]) -> None:
    lines = _audit(files).stdout.splitlines()
    assert lines[0].split()[:2] == ["RESULT", "SEVERITY"]
    (row,) = [line for line in lines if " host-path " in line]
    assert row.split()[:3] == ["skip", "high", "host-path"]
    assert row.endswith("[skip: exception agent-logs, expires 2026-03-01T00:00:00Z]")
    assert lines[-1].endswith("; 1 skipped by exceptions")


def test_sarif_suppresses_the_waived_result(files: dict[str, str]) -> None:
    log = json.loads(_audit(files, "-o", "sarif").stdout)
    results = log["runs"][0]["results"]
    (waived,) = [r for r in results if "suppressions" in r]
    assert waived["ruleId"] == "host-path"
    assert waived["suppressions"][0]["kind"] == "external"
    assert "agent-logs" in waived["suppressions"][0]["justification"]
    assert waived["properties"]["expires"] == "2026-03-01T00:00:00Z"


def test_a_namespace_the_selector_does_not_match_is_not_covered(files: dict[str, str]) -> None:
    Path(files["manifests"]).write_text(MANIFESTS.replace("team: observability", "team: other"))
    report = json.loads(_audit(files, "-o", "json").stdout)
    assert {f["result"] for f in report["findings"]} == {"fail"}


def test_beyond_max_duration_is_invalid_offline_too(files: dict[str, str]) -> None:
    Path(files["exceptions"], "agent-logs.yaml").write_text(
        EXCEPTION.replace("2026-03-01", "2026-06-01")  # 120 days after --at
    )
    result = _audit(files, "-o", "json")
    assert "is Invalid (BeyondMaxDuration)" in result.stderr
    assert {f["result"] for f in json.loads(result.stdout)["findings"]} == {"fail"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda text: text.replace("  reason: the log agent reads /var/log\n", ""), "spec.reason"),
        (lambda text: text.replace("[host-path]", "[hostPath]"), "spec.checks"),
        (lambda text: text + "---\n" + text, "more than once"),
    ],
)
def test_an_invalid_exception_stops_the_run(
    files: dict[str, str], change: Any, message: str
) -> None:
    path = Path(files["exceptions"], "agent-logs.yaml")
    path.write_text(change(path.read_text()))
    result = _audit(files)
    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stdout == ""


def test_exceptions_need_the_baseline_and_at_must_be_a_time(files: dict[str, str]) -> None:
    runner = CliRunner()
    no_baseline = runner.invoke(
        main, ["audit", "-f", files["manifests"], "--exceptions", files["exceptions"]]
    )
    assert no_baseline.exit_code == 2
    assert "--exceptions needs --baseline" in no_baseline.stderr
    bad_time = _audit(files, at="tomorrow")
    assert bad_time.exit_code == 2
    assert "--at" in bad_time.stderr

"""`audit -o sarif` is valid SARIF 2.1.0 (the official schema says so) and says what it should."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from baseline_operator.offline.audit import SARIF_SCHEMA_URI, run_audit
from baseline_operator.policy.checklist import CHECK_IDS, CHECKS, Severity

ROOT = Path(__file__).parents[2]
SCHEMA = json.loads((ROOT / "tests/schemas/sarif-schema-2.1.0.json").read_text())
MANIFESTS = ROOT / "tests/corpus/manifests"
PODS = ROOT / "tests/corpus/pods"
BASELINE = """\
apiVersion: security.baseline.dev/v1alpha1
kind: SecurityBaseline
metadata: {name: prod}
spec:
  namespaceSelector: {}
  admission:
    allowedRegistries: [registry.example.com/]
    requiredLabels: [app]
"""
LEVELS = {"critical": "error", "high": "error", "medium": "warning", "low": "note"}


def sarif(paths: list[str], baseline: str | None = None, stdin: str = "") -> dict[str, Any]:
    out = io.StringIO()
    run_audit(paths, baseline, "sarif", Severity.HIGH, io.StringIO(stdin), out)
    log: dict[str, Any] = json.loads(out.getvalue())
    return log


def schema_errors(log: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft4Validator(SCHEMA)
    return [f"{list(error.absolute_path)}: {error.message}" for error in validator.iter_errors(log)]


def test_the_schema_copy_is_the_official_one() -> None:
    jsonschema.Draft4Validator.check_schema(SCHEMA)
    assert SCHEMA["id"] == SARIF_SCHEMA_URI
    assert SCHEMA["properties"]["version"]["enum"] == ["2.1.0"]


def test_the_schema_catches_a_broken_log() -> None:
    # The validation below would be worthless if the schema accepted anything.
    log = sarif([str(MANIFESTS)])
    log["runs"][0]["results"][0]["level"] = "critical"
    del log["runs"][0]["tool"]["driver"]["name"]
    assert len(schema_errors(log)) == 2


@pytest.mark.parametrize(
    "inputs",
    [
        [str(MANIFESTS)],
        [str(PODS)],
        [str(MANIFESTS / "job.yaml")],  # no findings at all
    ],
    ids=["manifests", "pods", "clean"],
)
def test_output_is_valid_sarif(inputs: list[str], tmp_path: Path) -> None:
    baseline = tmp_path / "baseline.yaml"
    baseline.write_text(BASELINE)
    for log in (sarif(inputs), sarif(inputs, str(baseline))):
        assert schema_errors(log) == []


def test_stdin_output_is_valid_sarif_without_a_file_location() -> None:
    log = sarif(["-"], stdin=(MANIFESTS / "daemonset.yaml").read_text())
    assert schema_errors(log) == []
    results = log["runs"][0]["results"]
    assert results
    for result in results:
        (location,) = result["locations"]
        assert "physicalLocation" not in location
        assert location["logicalLocations"][0]["fullyQualifiedName"] == (
            "logging/DaemonSet/log-shipper"
        )


def test_one_rule_per_check_with_help_and_level() -> None:
    driver = sarif([str(MANIFESTS / "job.yaml")])["runs"][0]["tool"]["driver"]
    assert driver["name"] == "baseline-operator"
    assert driver["version"]
    rules = driver["rules"]
    assert [rule["id"] for rule in rules] == list(CHECK_IDS)
    for rule in rules:
        check = CHECKS[rule["id"]]
        assert rule["name"] == check.name
        assert rule["shortDescription"]["text"] == check.summary
        assert rule["help"]["text"] == check.remediation
        assert rule["defaultConfiguration"]["level"] == LEVELS[str(check.severity)]
        assert 0 < float(rule["properties"]["security-severity"]) <= 10


def test_security_severity_scores_follow_severity_ranks() -> None:
    rules = sarif([str(MANIFESTS / "job.yaml")])["runs"][0]["tool"]["driver"]["rules"]
    scored = sorted(
        (Severity(rule["properties"]["severity"]), float(rule["properties"]["security-severity"]))
        for rule in rules
    )
    assert [score for _, score in scored] == sorted(score for _, score in scored)


def test_results_point_at_the_rule_the_file_and_the_document() -> None:
    log = sarif([str(MANIFESTS)])
    run = log["runs"][0]
    rules = run["tool"]["driver"]["rules"]
    assert run["results"]
    for result in run["results"]:
        assert rules[result["ruleIndex"]]["id"] == result["ruleId"]
        assert result["level"] in {"error", "warning", "note"}
        (location,) = result["locations"]
        physical = location["physicalLocation"]
        uri = physical["artifactLocation"]["uri"]
        assert uri.startswith(str(MANIFESTS))
        lines = Path(uri).read_text().splitlines()
        # startLine is the first line of the object's document (its first key).
        start = physical["region"]["startLine"]
        assert lines[start - 1].lstrip("- ").split(":")[0] in {"apiVersion", "kind"}
        name = location["logicalLocations"][0]["name"]
        following = "\n".join(lines[start - 1 : start + 12])
        assert f"name: {name}" in following or f'name: "{name}"' in following
        assert name in result["message"]["text"]


def test_result_levels_follow_finding_severity() -> None:
    log = sarif([str(MANIFESTS / "daemonset.yaml")])
    levels = {result["ruleId"]: result["level"] for result in log["runs"][0]["results"]}
    assert levels["privileged"] == "error"
    assert levels["host-path"] == "error"
    assert levels["capabilities"] == "warning"
    assert levels["read-only-root-filesystem"] == "note"


def test_paths_become_uri_references(tmp_path: Path) -> None:
    folder = tmp_path / "with space"
    folder.mkdir()
    (folder / "pod#1.yaml").write_text((PODS / "privileged-container.yaml").read_text())
    log = sarif([str(folder)])
    assert schema_errors(log) == []
    uri = log["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]
    assert uri["uri"].endswith("/with%20space/pod%231.yaml")


def test_unread_input_makes_the_run_unsuccessful_and_says_why(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: a}]}\n"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Pod\n  bad: indentation\n")
    log = sarif([str(good), str(bad)])
    assert schema_errors(log) == []
    (run,) = log["runs"]
    assert run["results"]  # the readable file is still reported
    (invocation,) = run["invocations"]
    assert invocation["executionSuccessful"] is False
    (notification,) = invocation["toolExecutionNotifications"]
    assert notification["level"] == "error"
    assert notification["message"]["text"].startswith(f"{bad}:")
    clean = sarif([str(good)])["runs"][0]["invocations"]
    assert clean == [{"executionSuccessful": True, "toolExecutionNotifications": []}]

"""BaselineException: the API (models and CRD agree), and the one verdict (policy.exceptions)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import celpy
import pytest
import yaml
from click.testing import CliRunner

from baseline_operator.api.crd import CRD_FILES, build_crd, build_exception_crd
from baseline_operator.api.exception import (
    BaselineException,
    CheckId,
    ExceptionState,
    InvalidException,
    parse_exception,
    parse_time,
)
from baseline_operator.api.resource import InvalidBaseline, parse_baseline
from baseline_operator.api.spec import parse_duration
from baseline_operator.cli import main
from baseline_operator.policy.checklist import CHECK_IDS, Waiver
from baseline_operator.policy.exceptions import (
    ActiveException,
    Reason,
    active_exceptions,
    effective_enforce,
    exception_status,
    exceptions_summary,
    expiring_soon,
    judge,
    judge_all,
    next_change,
    relaxed_pod_security,
    waivers_for,
)
from tests.support.corpus import expectations
from tests.support.crd_schema import validate
from tests.unit.conftest import make_baseline

ROOT = Path(__file__).parents[2]
INVALID = sorted((ROOT / "tests/corpus/invalid-exceptions").glob("*.yaml"))
EXAMPLES = ROOT / "manifests/examples/exceptions"
CRDS = ROOT / "crds"
SCHEMA = build_exception_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
BASELINE_SCHEMA = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def body(name: str = "x", created: datetime | None = T0, **spec: Any) -> dict[str, Any]:
    """A BaselineException body (wire keys); by default it waives run-as-non-root in team-a
    for 30 days from T0."""
    metadata: dict[str, Any] = {"name": name, "generation": 1}
    if created is not None:
        metadata["creationTimestamp"] = created.strftime("%Y-%m-%dT%H:%M:%SZ")
    full = {
        "baseline": "prod",
        "namespaces": ["team-a"],
        "checks": ["run-as-non-root"],
        "reason": "legacy image",
        "expires": (T0 + timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **spec,
    }
    for key in [key for key, value in full.items() if value is None]:
        del full[key]
    return {
        "apiVersion": "security.baseline.dev/v1alpha1",
        "kind": "BaselineException",
        "metadata": metadata,
        "spec": full,
    }


def exception(name: str = "x", created: datetime | None = T0, **spec: Any) -> BaselineException:
    return parse_exception(body(name, created, **spec))


PROD = make_baseline("prod", podSecurity={"enforce": "restricted", "warn": "restricted"})


# ----------------------------------------------------------------------------
# The API


def test_the_invalid_corpus_covers_what_the_issue_names() -> None:
    names = {path.stem for path in INVALID}
    assert {
        "missing-reason",
        "missing-expiry",
        "unknown-check",
        "both-namespace-forms",
        "neither-namespace-form",
    } <= names


@pytest.mark.parametrize("path", INVALID, ids=lambda path: path.stem)
def test_models_refuse_invalid_exceptions_naming_the_field(path: Path) -> None:
    expected = expectations(path)
    with pytest.raises(InvalidException) as caught:
        parse_exception(yaml.safe_load(path.read_text()))
    errors = caught.value.errors
    assert any(error.path.startswith(expected["error"]) for error in errors), errors
    if "message" in expected:
        assert any(expected["message"] in str(error) for error in errors), errors


@pytest.mark.parametrize("path", INVALID, ids=lambda path: path.stem)
def test_the_crd_refuses_invalid_exceptions_naming_the_field(path: Path) -> None:
    expected = expectations(path)
    errors = validate(yaml.safe_load(path.read_text()), SCHEMA)
    assert errors, "the CRD schema accepted an invalid exception"
    assert any(where.startswith(expected["error"]) for where, _ in errors), errors
    if "message" in expected:
        assert any(expected["message"] in message for _, message in errors), errors


def _example_exceptions() -> list[dict[str, Any]]:
    return [
        document
        for path in sorted(EXAMPLES.glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
        if document["kind"] == "BaselineException"
    ]


def test_examples_are_valid_everywhere() -> None:
    examples = _example_exceptions()
    assert len(examples) >= 2
    for document in examples:
        parse_exception(document)
        assert validate(document, SCHEMA) == []
    production = parse_baseline(
        yaml.safe_load((ROOT / "manifests/examples/production.yaml").read_text())
    )
    assert {document["spec"]["baseline"] for document in examples} == {production.name}


def test_the_rbac_example_lets_the_security_group_alone_write_exceptions() -> None:
    documents = list(yaml.safe_load_all((EXAMPLES / "rbac.yaml").read_text()))
    roles = {d["metadata"]["name"]: d for d in documents if d["kind"] == "ClusterRole"}
    bindings = [d for d in documents if d["kind"] == "ClusterRoleBinding"]
    writers = {
        name
        for name, role in roles.items()
        for rule in role["rules"]
        if "baselineexceptions" in rule["resources"]
        and set(rule["verbs"]) & {"create", "update", "patch", "delete"}
    }
    assert writers == {"baseline-exceptions-writer"}
    assert "labels" not in roles["baseline-exceptions-writer"]["metadata"]  # not aggregated
    (binding,) = bindings
    assert binding["roleRef"]["name"] == "baseline-exceptions-writer"
    assert binding["subjects"] == [
        {"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "security-team"}
    ]
    reader = roles["baseline-exceptions-reader"]
    assert {verb for rule in reader["rules"] for verb in rule["verbs"]} == {"get", "list", "watch"}
    # Nothing in the operator's own manifests lets anyone else write exceptions.
    for path in (ROOT / "manifests/base").glob("*.yaml"):
        for document in yaml.safe_load_all(path.read_text()):
            if not isinstance(document, dict) or document.get("kind") not in {
                "ClusterRole",
                "Role",
            }:
                continue
            for rule in document.get("rules", []):
                if "baselineexceptions" in rule.get("resources", []):
                    assert not set(rule["verbs"]) & {"create", "update", "patch", "delete"}, path


def test_check_ids_are_the_checklist() -> None:
    assert tuple(CheckId) == CHECK_IDS


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("2026-03-31T00:00:00Z", True),
        ("2026-03-31T00:00:00.5+02:00", True),
        ("2026-03-31t00:00:00z", True),
        ("2026-03-31T00:00:00", False),
        ("2026-03-31", False),
        ("2026-02-30T00:00:00Z", False),  # matches the pattern, is no date
        ("31/03/2026", False),
    ],
)
def test_expires_is_rfc3339_with_a_timezone(text: str, valid: bool) -> None:
    document = body(expires=text)
    if valid:
        parse_exception(document)
    else:
        with pytest.raises(InvalidException):
            parse_exception(document)
    if text != "2026-02-30T00:00:00Z":  # the server's date-time format refuses that one too
        assert (validate(document, SCHEMA) == []) is valid


def test_parse_time_is_utc() -> None:
    assert parse_time("2026-03-31T02:00:00+02:00") == datetime(2026, 3, 31, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("2160h", 90 * 86400), ("1h30m", 5400), ("1.5h", 5400), ("90s", 90), ("500ms", 0.5)],
)
def test_durations_parse_as_go_does(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("value", ["0h", "0s", "90d", "-1h", "", "h"])
def test_max_duration_must_be_a_positive_duration_in_both(value: str) -> None:
    spec = {"exceptions": {"maxDuration": value}}
    with pytest.raises(InvalidBaseline):
        make_baseline("prod", **spec)
    baseline = {
        "apiVersion": "security.baseline.dev/v1alpha1",
        "kind": "SecurityBaseline",
        "metadata": {"name": "prod"},
        "spec": {"namespaceSelector": {}, **spec},
    }
    try:
        refused = validate(baseline, BASELINE_SCHEMA) != []
    except celpy.CELEvalError:  # the pattern refuses it; the server reports both errors
        refused = True
    assert refused


def test_exceptions_section_defaults() -> None:
    crd_section = BASELINE_SCHEMA["properties"]["spec"]["properties"]["exceptions"]
    assert crd_section["properties"]["maxDuration"]["default"] == "2160h"
    assert crd_section["properties"]["expiryWarning"]["default"] == "168h"
    limits = make_baseline("prod", exceptions={"maxDuration": "720h"}).spec.exceptions
    assert limits is not None and limits.max_duration_delta == timedelta(days=30)


def test_the_exception_crd_follows_the_design_and_is_checked_in() -> None:
    crd = build_exception_crd()
    assert crd["metadata"]["name"] == "baselineexceptions.security.baseline.dev"
    spec = crd["spec"]
    assert (spec["group"], spec["scope"]) == ("security.baseline.dev", "Cluster")
    assert spec["names"]["kind"] == "BaselineException"
    assert spec["names"]["shortNames"] == ["sbx"]
    (version,) = spec["versions"]
    assert version["name"] == "v1alpha1"
    assert version["subresources"] == {"status": {}}
    shown = [c["name"] for c in version["additionalPrinterColumns"] if "priority" not in c]
    assert shown == ["Baseline", "Namespaces", "Expires", "State", "Age"]
    result = CliRunner().invoke(main, ["crd", "--kind", "BaselineException"])
    assert result.exit_code == 0
    assert (CRDS / CRD_FILES["BaselineException"]).read_text() == result.output, (
        "crds/ is stale: baseline-operator crd --kind BaselineException"
    )


def test_crd_all_prints_every_crd_as_documents() -> None:
    result = CliRunner().invoke(main, ["crd", "--kind", "all"])
    assert result.exit_code == 0
    documents = list(yaml.safe_load_all(result.output))
    assert [d["spec"]["names"]["kind"] for d in documents] == [
        "BaselineException",  # the order of their files in crds/
        "SecurityBaseline",
    ]
    for document in documents:
        assert (CRDS / CRD_FILES[document["spec"]["names"]["kind"]]).read_text() == (
            "---\n" + yaml.safe_dump(document, sort_keys=False)
        )


def test_the_root_kustomization_installs_both_crds() -> None:
    kustomization = yaml.safe_load((ROOT / "kustomization.yaml").read_text())
    for name in CRD_FILES.values():
        assert f"crds/{name}" in kustomization["resources"]
    patched = {yaml.safe_load(p["patch"])["metadata"]["name"] for p in kustomization["patches"]}
    assert patched == {name.removesuffix(".yaml") for name in CRD_FILES.values()}


def test_exception_schema_is_bounded() -> None:
    def walk(node: dict[str, Any], path: str) -> None:
        if node.get("type") == "array":
            assert "maxItems" in node, path
        if node.get("type") == "string" and "enum" not in node:
            assert "maxLength" in node, path
        for name, child in node.get("properties", {}).items():
            walk(child, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], f"{path}{{}}")

    walk(SCHEMA["properties"]["spec"], "spec")


# ----------------------------------------------------------------------------
# The verdict on one exception


def test_active_until_the_moment_it_expires() -> None:
    item = exception()
    expires = T0 + timedelta(days=30)
    assert judge(item, PROD, T0).state is ExceptionState.ACTIVE
    assert judge(item, PROD, expires - timedelta(seconds=1)).active
    at_expiry = judge(item, PROD, expires)
    assert at_expiry.state is ExceptionState.EXPIRED
    assert at_expiry.reason is Reason.EXPIRED
    assert judge(item, PROD, expires + timedelta(days=400)).state is ExceptionState.EXPIRED


def test_an_unknown_baseline_makes_it_invalid() -> None:
    verdict = judge(exception(), None, T0)
    assert (verdict.state, verdict.reason) == (ExceptionState.INVALID, Reason.BASELINE_NOT_FOUND)
    assert "prod" in verdict.message
    other = make_baseline("other")
    assert judge(exception(), other, T0).reason is Reason.BASELINE_NOT_FOUND  # never another


def test_beyond_max_duration_of_creation_is_invalid_whenever_asked() -> None:
    far = (T0 + timedelta(days=91)).strftime("%Y-%m-%dT%H:%M:%SZ")
    item = exception(expires=far)
    for moment in (T0, T0 + timedelta(days=95)):
        verdict = judge(item, PROD, moment)
        assert (verdict.state, verdict.reason) == (
            ExceptionState.INVALID,
            Reason.BEYOND_MAX_DURATION,
        )
        assert "2160h" in verdict.message
    exactly = exception(expires=(T0 + timedelta(days=90)).strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert judge(exactly, PROD, T0).active
    short = make_baseline("prod", exceptions={"maxDuration": "720h"})
    assert judge(exception(), short, T0).active  # 30 days
    assert judge(item, short, T0).state is ExceptionState.INVALID


def test_without_a_creation_time_the_moment_asked_is_the_creation() -> None:
    item = exception(created=None, expires="2026-06-01T00:00:00Z")
    assert judge(item, PROD, datetime(2026, 5, 1, tzinfo=UTC)).active
    assert judge(item, PROD, datetime(2026, 1, 1, tzinfo=UTC)).reason is Reason.BEYOND_MAX_DURATION
    assert judge(item, PROD, T0, created=datetime(2026, 4, 1, tzinfo=UTC)).active


def test_an_exception_being_deleted_waives_nothing() -> None:
    document = body()
    document["metadata"]["deletionTimestamp"] = "2026-01-02T00:00:00Z"
    verdict = judge(parse_exception(document), PROD, T0)
    assert (verdict.state, verdict.reason) == (ExceptionState.EXPIRED, Reason.DELETING)


def test_active_exceptions_are_the_baselines_own_in_force() -> None:
    items = [
        exception("b"),
        exception("a"),
        exception(
            "expired", expires="2025-12-31T00:00:00Z", created=datetime(2025, 12, 1, tzinfo=UTC)
        ),
        exception("elsewhere", baseline="other"),
    ]
    assert [item.name for item in active_exceptions(PROD, items, T0)] == ["a", "b"]
    verdicts = judge_all({"prod": PROD}, items, T0)
    assert verdicts["elsewhere"].reason is Reason.BASELINE_NOT_FOUND
    assert verdicts["expired"].state is ExceptionState.EXPIRED


# ----------------------------------------------------------------------------
# What is waived


def _active(*items: BaselineException) -> list[ActiveException]:
    return active_exceptions(PROD, items, T0)


def test_waivers_by_namespace_name_and_workload_labels() -> None:
    active = _active(exception(workloadSelector={"matchLabels": {"app": "legacy"}}))
    expires = "2026-01-31T00:00:00Z"
    assert waivers_for(active, "team-a", {}, {"app": "legacy"}) == {
        "run-as-non-root": Waiver("x", expires)
    }
    assert waivers_for(active, "team-a", {}, {"app": "web"}) == {}
    assert waivers_for(active, "team-b", {}, {"app": "legacy"}) == {}


def test_waivers_by_namespace_labels() -> None:
    selector = {"matchExpressions": [{"key": "tier", "operator": "In", "values": ["legacy"]}]}
    active = _active(exception(namespaces=None, namespaceSelector=selector))
    assert set(waivers_for(active, "any", {"tier": "legacy"}, {})) == {"run-as-non-root"}
    assert waivers_for(active, "any", {"tier": "new"}, {}) == {}
    assert waivers_for(active, "team-a", {}, {}) == {}  # the name alone does not match


def test_the_longest_lasting_exception_is_named_then_the_first_by_name() -> None:
    late = (T0 + timedelta(days=60)).strftime("%Y-%m-%dT%H:%M:%SZ")
    active = _active(
        exception("b", checks=["run-as-non-root", "host-path"]),
        exception("a", checks=["run-as-non-root"]),
        exception("c", checks=["host-path"], expires=late),
    )
    waivers = waivers_for(active, "team-a", {}, {})
    assert waivers["run-as-non-root"].exception == "a"
    assert waivers["host-path"] == Waiver("c", late)


def test_pod_security_enforce_is_lowered_never_raised() -> None:
    lowered = _active(exception(checks=None, podSecurity={"enforce": "baseline"}))
    assert effective_enforce("restricted", lowered, "team-a", {}) == "baseline"
    assert effective_enforce("restricted", lowered, "team-b", {}) == "restricted"
    assert effective_enforce("privileged", lowered, "team-a", {}) == "privileged"
    assert effective_enforce(None, lowered, "team-a", {}) is None
    labels = {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest",
        "pod-security.kubernetes.io/warn": "restricted",
        "pod-security.kubernetes.io/audit": "restricted",
    }
    assert relaxed_pod_security(labels, lowered, "team-a", {}) == {
        **labels,
        "pod-security.kubernetes.io/enforce": "baseline",
    }
    assert relaxed_pod_security(labels, [], "team-a", {}) == labels
    # An exception that only waives checks leaves the label alone.
    assert effective_enforce("restricted", _active(exception()), "team-a", {}) == "restricted"


# ----------------------------------------------------------------------------
# Time and status, for the controller


def test_next_change_is_the_next_warning_or_expiry() -> None:
    verdicts = [
        judge(exception("a"), PROD, T0),
        judge(exception("b", expires="2026-01-05T00:00:00Z"), PROD, T0),
    ]
    week = timedelta(days=7)
    # b is already in its warning window: its expiry is next.
    assert next_change(verdicts, T0, week) == datetime(2026, 1, 5, tzinfo=UTC)
    later = T0 + timedelta(days=5)
    verdicts = [judge(exception("a"), PROD, later)]
    assert next_change(verdicts, later, week) == datetime(2026, 1, 24, tzinfo=UTC)
    assert next_change([judge(exception("a"), PROD, T0 + timedelta(days=31))], T0, week) is None
    assert expiring_soon(verdicts[0], datetime(2026, 1, 24, tzinfo=UTC), week)
    assert not expiring_soon(verdicts[0], later, week)


def test_status_has_three_conditions_with_observed_generation() -> None:
    active = judge(exception(), PROD, T0)
    status = exception_status(active, None, T0)
    assert status["state"] == "Active"
    assert status["observedGeneration"] == 1
    assert [(c["type"], c["status"]) for c in status["conditions"]] == [
        ("Active", "True"),
        ("Expired", "False"),
        ("Invalid", "False"),
    ]
    assert all(c["observedGeneration"] == 1 for c in status["conditions"])
    # A later look that changes nothing keeps lastTransitionTime; expiry moves it.
    again = exception_status(active, status, T0 + timedelta(hours=1))
    assert again == status
    expired = judge(exception(), PROD, T0 + timedelta(days=30))
    after = exception_status(expired, status, T0 + timedelta(days=30))
    by_type = {c["type"]: c for c in after["conditions"]}
    assert by_type["Expired"]["status"] == "True"
    assert by_type["Expired"]["lastTransitionTime"] == "2026-01-31T00:00:00Z"
    assert by_type["Active"]["reason"] == "Expired"


def test_summary_counts_active_and_names_the_next_expiry() -> None:
    verdicts = [
        judge(exception("a"), PROD, T0),
        judge(exception("b", expires="2026-01-05T00:00:00Z"), PROD, T0),
        judge(exception("c"), None, T0),
    ]
    assert exceptions_summary(verdicts) == {
        "active": 2,
        "invalid": 1,
        "nextExpiry": "2026-01-05T00:00:00Z",
    }


def test_the_docs_name_what_exists_and_show_the_rbac_example() -> None:
    text = (ROOT / "docs/exceptions.md").read_text()
    for path in set(re.findall(r"\b((?:manifests|crds|docs|tests)/[\w./-]*[\w/])", text)):
        assert (ROOT / path).exists(), path
    assert "stays in force until the operator" in text  # the outage caveat is stated
    (rbac,) = [
        block
        for block in re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)
        if "kind: ClusterRole" in block
    ]
    example = list(yaml.safe_load_all((EXAMPLES / "rbac.yaml").read_text()))
    assert list(yaml.safe_load_all(rbac)) == example[:2]  # the writer role and its binding

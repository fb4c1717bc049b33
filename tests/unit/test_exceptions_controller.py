"""What the controller adds around exceptions, tested pure: Pod Security layering with each
baseline's exceptions, per-pod waivers in the workload audit and its PolicyReport, the
baseline's status.exceptions, and the informer's entries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from baseline_operator.api.exception import format_time, parse_exception
from baseline_operator.controller.exceptions import exception_entry
from baseline_operator.controller.status import _with_removals
from baseline_operator.policy.checklist import ChecklistConfig, Waiver
from baseline_operator.policy.exceptions import ActiveException, waivers_for
from baseline_operator.policy.layering import plan_namespace
from baseline_operator.policy.status import BaselineFacts, build_status
from baseline_operator.policy.workloads import audit_pods, policy_report, workload_status
from tests.support.pods import pod
from tests.unit.conftest import make_baseline

ENFORCE = "pod-security.kubernetes.io/enforce"
AUDIT = "pod-security.kubernetes.io/audit"
WARN = "pod-security.kubernetes.io/warn"
EXPIRES = datetime(2026, 3, 31, tzinfo=UTC)


def active(name: str = "x", *, namespaces: list[str] | None = None, **spec: Any) -> ActiveException:
    body = {
        "apiVersion": "security.baseline.dev/v1alpha1",
        "kind": "BaselineException",
        "metadata": {"name": name},
        "spec": {
            "baseline": "prod",
            "reason": "needed",
            "expires": format_time(EXPIRES),
            **({"namespaces": namespaces} if namespaces is not None else {}),
            **spec,
        },
    }
    if namespaces is None and "namespaceSelector" not in spec:
        body["spec"]["namespaces"] = ["shop"]
    return ActiveException.of(parse_exception(body))


PS = {"podSecurity": {"enforce": "restricted", "audit": "restricted", "warn": "restricted"}}

# ---------------------------------------------------------------------------- Pod Security


def test_without_exceptions_the_plan_is_unchanged() -> None:
    prod = make_baseline("prod", **PS)
    assert plan_namespace("shop", [prod]) == plan_namespace("shop", [prod], exceptions={})


def test_an_exception_lowers_only_enforce_of_its_own_namespace() -> None:
    prod = make_baseline("prod", **PS)
    lowered = {"prod": (active(podSecurity={"enforce": "baseline"}),)}
    labels = plan_namespace("shop", [prod], exceptions=lowered).labels
    assert labels[ENFORCE] == "baseline"
    assert labels[AUDIT] == labels[WARN] == "restricted"
    assert plan_namespace("other", [prod], exceptions=lowered).labels[ENFORCE] == "restricted"


def test_an_exception_by_namespace_labels_reads_the_labels_given() -> None:
    prod = make_baseline("prod", **PS)
    lowered = {
        "prod": (
            active(
                namespaceSelector={"matchLabels": {"legacy": "yes"}},
                podSecurity={"enforce": "privileged"},
            ),
        )
    }
    plan = plan_namespace(
        "shop", [prod], exceptions=lowered, namespace_labels_now={"legacy": "yes"}
    )
    assert plan.labels[ENFORCE] == "privileged"
    plan = plan_namespace("shop", [prod], exceptions=lowered, namespace_labels_now={})
    assert plan.labels[ENFORCE] == "restricted"


def test_a_stricter_overlapping_baseline_still_wins() -> None:
    prod = make_baseline("prod", **PS)
    org = make_baseline("org", podSecurity={"enforce": "baseline"})
    lowered = {"prod": (active(podSecurity={"enforce": "privileged"}),)}
    # prod's own contribution drops to privileged; org's baseline is now the strictest.
    assert plan_namespace("shop", [prod, org], exceptions=lowered).labels[ENFORCE] == "baseline"
    # An exception of org does not touch prod's restricted.
    other = {"org": (active(podSecurity={"enforce": "privileged"}),)}
    assert plan_namespace("shop", [prod, org], exceptions=other).labels[ENFORCE] == "restricted"


def test_an_exception_never_raises_nor_adds_a_level() -> None:
    lax = make_baseline("prod", podSecurity={"enforce": "baseline"})
    stricter = {"prod": (active(podSecurity={"enforce": "restricted"}),)}
    assert plan_namespace("shop", [lax], exceptions=stricter).labels[ENFORCE] == "baseline"
    none = make_baseline("prod")
    lowered = {"prod": (active(podSecurity={"enforce": "privileged"}),)}
    assert ENFORCE not in plan_namespace("shop", [none], exceptions=lowered).labels


# ---------------------------------------------------------------------------- workload audit

CONFIG = ChecklistConfig(("registry.example.com/",), ("app",))


def test_waived_findings_are_skip_and_do_not_count_as_failures() -> None:
    bad = pod("bad", hardened=False, namespace="shop")
    exception = active(checks=["privileged", "image-tag"])

    def waivers(labels: Any) -> Any:
        return waivers_for([exception], "shop", {}, labels)

    plain = audit_pods([bad], CONFIG)
    waived = audit_pods([bad], CONFIG, waivers)
    assert plain.findings == waived.findings + 2
    assert waived.skipped == 2 and plain.skipped == 0
    (report,) = waived.non_compliant
    assert "privileged" not in report.check_ids and "image-tag" not in report.check_ids
    assert plain.key() != waived.key()  # fail -> skip is a change

    totals, listed = workload_status({"shop": waived})
    assert totals == {
        "pods": 1,
        "nonCompliantPods": 1,
        "findings": waived.findings,
        "skipped": 2,
    }
    assert "privileged" not in listed[0]["checks"]


def test_a_pod_whose_every_finding_is_waived_is_not_non_compliant() -> None:
    bad = pod("bad", hardened=False, namespace="shop")
    failing = {finding.check_id for finding in audit_pods([bad], CONFIG).non_compliant[0].findings}
    everything = active(checks=sorted(failing))
    result = audit_pods([bad], CONFIG, lambda labels: waivers_for([everything], "shop", {}, labels))
    assert result.non_compliant == () and len(result.waived) == 1
    assert result.findings == 0 and result.skipped == len(failing)
    report = policy_report("shop", {"prod": result})
    assert report["summary"]["fail"] == 0 and report["summary"]["skip"] == len(failing)


def test_a_workload_selector_waives_only_matching_pods() -> None:
    bad = pod("bad", hardened=False, namespace="shop")
    bad["metadata"]["labels"] = {"app": "legacy"}
    other = pod("other", hardened=False, namespace="shop")
    other["metadata"]["labels"] = {"app": "web"}
    exception = active(checks=["privileged"], workloadSelector={"matchLabels": {"app": "legacy"}})
    result = audit_pods(
        [bad, other], CONFIG, lambda labels: waivers_for([exception], "shop", {}, labels)
    )
    skipped = {r.pod: [f.check_id for f in r.skipped] for r in result.non_compliant}
    assert skipped == {"bad": ["privileged"], "other": []}


def test_the_policy_report_names_the_exception_and_its_expiry_on_skips() -> None:
    bad = pod("bad", hardened=False, namespace="shop")
    result = audit_pods(
        [bad], CONFIG, lambda labels: {"privileged": Waiver("legacy", format_time(EXPIRES))}
    )
    report = policy_report("shop", {"prod": result})
    skips = [r for r in report["results"] if r["result"] == "skip"]
    fails = [r for r in report["results"] if r["result"] == "fail"]
    assert [r["rule"] for r in skips] == ["privileged"]
    assert skips[0]["properties"] == {"exception": "legacy", "expires": "2026-03-31T00:00:00Z"}
    assert all("properties" not in r for r in fails)
    assert report["summary"]["skip"] == 1 and report["summary"]["fail"] == len(fails)
    # Failures come first, so the bound on results never hides one behind a skip.
    assert report["results"][-1]["result"] == "skip"


# ---------------------------------------------------------------------------- status


def test_the_baseline_status_carries_the_exception_counts() -> None:
    summary = {"active": 2, "invalid": 1, "nextExpiry": "2026-03-31T00:00:00Z"}
    status = build_status(
        BaselineFacts(generation=1, audit_mode=False, exceptions=summary), {}, "t"
    )
    assert status["exceptions"] == summary
    assert "exceptions" not in build_status(BaselineFacts(generation=1, audit_mode=False), {}, "t")
    invalid = BaselineFacts(1, False, spec_errors=("bad",), exceptions=summary)
    assert build_status(invalid, {}, "t")["exceptions"] == summary


def test_a_status_patch_removes_nested_fields_no_longer_wanted() -> None:
    current = {"exceptions": {"active": 1, "nextExpiry": "x"}, "kopf": {}, "gone": 1}
    wanted = {"exceptions": {"active": 0}}
    assert _with_removals(current, wanted) == {
        "exceptions": {"active": 0, "nextExpiry": None},
        "gone": None,
    }


# ---------------------------------------------------------------------------- informer entries


def test_an_entry_keeps_the_parsed_exception_and_its_status_apart() -> None:
    created = datetime(2026, 1, 1, tzinfo=UTC)
    raw = {
        "apiVersion": "security.baseline.dev/v1alpha1",
        "kind": "BaselineException",
        "metadata": {
            "name": "x",
            "uid": "u1",
            "generation": 2,
            "resourceVersion": "10",
            "creationTimestamp": format_time(created),
            "managedFields": [{"manager": "kubectl"}],
        },
        "spec": {
            "baseline": "prod",
            "namespaces": ["shop"],
            "checks": ["privileged"],
            "reason": "needed",
            "expires": format_time(created + timedelta(days=1)),
        },
        "status": {"state": "Active"},
    }
    entry = exception_entry(raw)
    assert entry.exception is not None and entry.error == ""
    assert (entry.name, entry.uid, entry.generation, entry.baseline) == ("x", "u1", 2, "prod")
    assert entry.exception.created_at == created
    assert entry.status == {"state": "Active"}
    # A new resourceVersion or status alone is no change of the entry.
    moved = {**raw, "metadata": {**raw["metadata"], "resourceVersion": "11"}, "status": {}}
    assert exception_entry(moved) == entry


def test_an_unreadable_exception_is_kept_with_its_errors() -> None:
    raw = {
        "apiVersion": "security.baseline.dev/v1alpha1",
        "kind": "BaselineException",
        "metadata": {"name": "x", "generation": 1},
        "spec": {"baseline": "prod", "namespaces": ["shop"], "checks": ["privileged"]},
    }
    entry = exception_entry(raw)
    assert entry.exception is None and entry.baseline == "prod"
    assert "reason" in entry.error and "expires" in entry.error


# ---------------------------------------------------------------------------- RBAC


def test_the_operator_reads_exceptions_and_writes_only_their_status() -> None:
    path = Path(__file__).parents[2] / "manifests/base/clusterrole.yaml"
    role = yaml.safe_load(path.read_text())
    granted: dict[str, set[str]] = {}
    for rule in role["rules"]:
        if "security.baseline.dev" not in rule.get("apiGroups", []):
            continue
        for resource in rule["resources"]:
            granted.setdefault(resource, set()).update(rule["verbs"])
    assert granted["baselineexceptions"] == {"get", "list", "watch"}
    assert granted["baselineexceptions/status"] == {"get", "patch"}

"""The posture as controls: what a PolicyReport says of each thing a baseline holds."""

from __future__ import annotations

from baseline_operator.api.resource import parse_baseline
from baseline_operator.policy.controls import FAIL, PASS, SKIP, audit_results, control_results
from baseline_operator.policy.layering import plan_namespace
from baseline_operator.policy.objects import NETWORK_POLICY, ObjectRef
from baseline_operator.policy.workloads import policy_report
from tests.support.cluster import baseline


def test_every_object_and_mode_is_a_control_and_problems_fail() -> None:
    body = baseline(
        podSecurity={"enforce": "restricted", "warn": "restricted"},
        networkPolicy={"defaultDeny": ["Ingress"], "allowDNS": True},
    )
    plan = plan_namespace("team-a", [parse_baseline(body)])
    dns = ObjectRef(NETWORK_POLICY, "team-a", "prod-allow-dns")
    results = control_results(
        "prod",
        [item for item in plan.objects if item.baseline == "prod"],
        {"enforce": "restricted", "warn": "restricted"},
        {dns: "NetworkPolicy team-a/prod-allow-dns exists and was not made by baseline-operator"},
        held_elsewhere=["LimitRange held by org-wide (priority 200)"],
        has_admission=True,
        admission_problem=None,
    )
    by_rule = {(r.rule, r.ref.name if r.ref else None): r for r in results}
    assert by_rule[("pod-security-enforce", None)].result == PASS
    assert by_rule[("pod-security-warn", None)].result == PASS
    assert by_rule[("network-policy", "prod-default-deny")].result == PASS
    deny = by_rule[("network-policy", "prod-default-deny")].wire("team-a")
    assert (
        deny["message"] == f"{ObjectRef(NETWORK_POLICY, 'team-a', 'prod-default-deny')} is in place"
    )
    assert by_rule[("network-policy", "prod-allow-dns")].result == FAIL
    assert "not made by baseline-operator" in by_rule[("network-policy", "prod-allow-dns")].message
    assert by_rule[("held-by-another-baseline", None)].result == SKIP
    assert by_rule[("admission-policies", None)].result == PASS


def test_a_pod_security_level_someone_else_holds_weaker_fails() -> None:
    problem = (
        "namespace team-a: label pod-security.kubernetes.io/enforce=privileged is set by"
        " another field manager, weaker than restricted; not overridden"
    )
    (result,) = control_results("prod", [], {"enforce": "restricted"}, {}, (), [problem])
    assert (result.rule, result.result, result.message) == ("pod-security-enforce", FAIL, problem)


def test_audit_mode_is_skipped_with_what_enforcing_would_do() -> None:
    (result,) = audit_results("staging", "would create 4 objects: ...", compliant=False)
    assert result.result == SKIP
    assert result.message == (
        "Audit mode: nothing is enforced here; enforcing would create 4 objects: ..."
    )


def test_the_report_counts_controls_and_lists_failures_first() -> None:
    results = control_results(
        "prod",
        [],
        {"enforce": "restricted", "audit": "restricted"},
        {},
        ["held elsewhere"],
        ["x label pod-security.kubernetes.io/audit=baseline y"],
    )
    report = policy_report("team-a", {}, [r.wire("team-a") for r in results])
    assert report["summary"] == {"pass": 1, "fail": 1, "warn": 0, "error": 0, "skip": 1}
    assert [r["result"] for r in report["results"]] == [FAIL, PASS, SKIP]
    assert all(r["category"] == "posture" for r in report["results"])

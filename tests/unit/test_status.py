"""Status: counts, conditions that move only on real transitions, bounded reports."""

from __future__ import annotations

from baseline_operator.api.status import MAX_REPORTED, SecurityBaselineStatus
from baseline_operator.policy.status import (
    BaselineFacts,
    Outcome,
    Result,
    build_status,
    set_condition,
)

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T01:00:00Z"


def condition(status: dict, type_: str) -> dict:
    return next(c for c in status["conditions"] if c["type"] == type_)


def test_converged_baseline_is_ready_with_counts() -> None:
    facts = BaselineFacts(
        3,
        False,
        outcomes={
            "a": Outcome(Result.COMPLIANT, 3),
            "b": Outcome(Result.SUPERSEDED, 3, "Superseded", "LimitRange held by org"),
        },
    )
    status = build_status(facts, None, T0)
    assert status["observedGeneration"] == 3
    assert status["namespaces"] == {
        "selected": 2,
        "compliant": 1,
        "drifted": 0,
        "failed": 0,
        "conflicted": 0,
        "superseded": 1,
    }
    ready = condition(status, "Ready")
    assert (ready["status"], ready["reason"], ready["observedGeneration"]) == (
        "True",
        "Converged",
        3,
    )
    assert condition(status, "Conflicted")["reason"] == "Superseded"
    assert condition(status, "Degraded")["status"] == "False"
    SecurityBaselineStatus.model_validate(status)  # the shape the CRD describes


def test_failures_make_it_degraded_and_not_ready() -> None:
    facts = BaselineFacts(
        1, False, outcomes={"a": Outcome(Result.FAILED, 1, "ApplyFailed", "403 Forbidden")}
    )
    status = build_status(facts, None, T0)
    assert condition(status, "Ready")["status"] == "False"
    degraded = condition(status, "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "ApplyFailed")
    assert "403 Forbidden" in degraded["message"]
    assert status["nonCompliant"] == [
        {"namespace": "a", "reason": "ApplyFailed", "message": "403 Forbidden"}
    ]


def test_invalid_spec_keeps_counts_and_says_nothing_was_written() -> None:
    before = build_status(
        BaselineFacts(1, False, outcomes={"a": Outcome(Result.COMPLIANT, 1)}), None, T0
    )
    status = build_status(
        BaselineFacts(2, False, spec_errors=("spec.priority: too big",)), before, T1
    )
    ready = condition(status, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "spec.priority" in ready["message"] and "nothing written" in ready["message"]
    assert status["namespaces"] == before["namespaces"]


def test_last_transition_time_moves_only_on_status_change() -> None:
    first = set_condition([], "Ready", "True", "Converged", "ok", 1, T0)
    same = set_condition(first, "Ready", "True", "Converged", "still ok", 2, T1)
    assert same[0]["lastTransitionTime"] == T0 and same[0]["observedGeneration"] == 2
    flipped = set_condition(same, "Ready", "False", "ApplyFailed", "no", 2, T1)
    assert flipped[0]["lastTransitionTime"] == T1


def test_same_facts_give_the_same_status() -> None:
    facts = BaselineFacts(
        1,
        False,
        outcomes={f"ns-{i}": Outcome(Result.CONFLICTED, 1, "Conflicted", "x") for i in range(50)},
    )
    first = build_status(facts, None, T0)
    assert build_status(facts, first, T1) == first
    assert len(first["nonCompliant"]) == MAX_REPORTED


def test_outcomes_of_an_older_generation_mean_reconciling() -> None:
    facts = BaselineFacts(
        2, False, outcomes={"a": Outcome(Result.COMPLIANT, 1), "b": Outcome(Result.COMPLIANT, 2)}
    )
    ready = condition(build_status(facts, None, T0), "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "Reconciling")


def test_audit_mode_reports_what_would_change() -> None:
    facts = BaselineFacts(
        1, True, outcomes={"a": Outcome(Result.DRIFTED, 1, "WouldChange", "would create X")}
    )
    status = build_status(facts, None, T0)
    assert condition(status, "Ready")["reason"] == "Audited"
    assert status["namespaces"]["drifted"] == 1
    assert status["nonCompliant"][0]["reason"] == "WouldChange"


def test_admission_policy_failure_degrades() -> None:
    facts = BaselineFacts(1, False, cluster_problem="ValidatingAdmissionPolicy x: 422 Invalid")
    degraded = condition(build_status(facts, None, T0), "Degraded")
    assert (degraded["status"], degraded["reason"]) == ("True", "AdmissionPolicyFailed")


def test_psa_preview_is_reported() -> None:
    facts = BaselineFacts(
        1,
        False,
        outcomes={
            "a": Outcome(
                Result.COMPLIANT, 1, psa_warnings=("existing pods violate",), psa_level="restricted"
            )
        },
    )
    status = build_status(facts, None, T0)
    assert status["podSecurityPreview"] == [
        {"namespace": "a", "level": "restricted", "warnings": ["existing pods violate"]}
    ]

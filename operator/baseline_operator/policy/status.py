"""A baseline's status from the outcome in each namespace: counts, conditions, reports.

Conditions follow metav1.Condition: `lastTransitionTime` moves only when the
status of a condition changes (not its reason or message), and every condition
carries the generation it was computed for. The same inputs always give the
same status, so an unchanged cluster leads to no status write.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from baseline_operator.api.status import MAX_REPORTED

READY = "Ready"
DEGRADED = "Degraded"
CONFLICTED = "Conflicted"


class Result(StrEnum):
    COMPLIANT = "Compliant"
    DRIFTED = "Drifted"  # differs; in Audit mode: would change
    FAILED = "Failed"
    CONFLICTED = "Conflicted"
    SUPERSEDED = "Superseded"


# When a namespace is in several states for one baseline, the report names the worst.
_SEVERITY = {
    Result.COMPLIANT: 0,
    Result.SUPERSEDED: 1,
    Result.DRIFTED: 2,
    Result.CONFLICTED: 3,
    Result.FAILED: 4,
}


@dataclass(frozen=True, slots=True)
class Outcome:
    """What reconciling one namespace meant for one baseline."""

    result: Result
    generation: int
    reason: str = ""
    message: str = ""
    # Warnings the API server gave for raising the enforce level (PSA preview).
    psa_warnings: tuple[str, ...] = ()
    psa_level: str | None = None


def worst(outcomes: Sequence[Outcome]) -> Outcome:
    return max(outcomes, key=lambda outcome: _SEVERITY[outcome.result])


@dataclass(frozen=True)
class BaselineFacts:
    """What the status of one baseline is computed from."""

    generation: int
    audit_mode: bool
    spec_errors: tuple[str, ...] = ()
    outcomes: Mapping[str, Outcome] = field(default_factory=dict)
    cluster_problem: str | None = None  # the baseline's admission policies failed to apply
    workloads: Mapping[str, Any] | None = None  # status.workloads, computed elsewhere
    non_compliant_workloads: Sequence[Mapping[str, Any]] = ()
    # The brake on mass removal holds this generation (the message says how to go ahead).
    removal_held: str | None = None
    # status.exceptions: the exceptions that name it (policy.exceptions.exceptions_summary);
    # None when none does.
    exceptions: Mapping[str, Any] | None = None


def build_status(
    facts: BaselineFacts, previous: Mapping[str, Any] | None, now: str
) -> dict[str, Any]:
    """The whole status object (wire form) for a baseline."""
    previous = previous or {}
    conditions = list(previous.get("conditions") or [])
    generation = facts.generation

    if facts.spec_errors:
        shown = "; ".join(facts.spec_errors[:MAX_REPORTED])
        more = len(facts.spec_errors) - MAX_REPORTED
        message = f"invalid spec, nothing written: {shown}" + (
            f" (+{more} more)" if more > 0 else ""
        )
        conditions = set_condition(
            conditions, READY, "False", "InvalidSpec", message, generation, now
        )
        conditions = set_condition(
            conditions,
            DEGRADED,
            "False",
            "InvalidSpec",
            "the operator is waiting for a valid spec",
            generation,
            now,
        )
        status: dict[str, Any] = {
            "observedGeneration": generation,
            "conditions": conditions,
        }
        # Keep the last known counts: the namespaces still hold what was applied before.
        for key in ("namespaces", "nonCompliant", "workloads", "nonCompliantWorkloads"):
            if key in previous:
                status[key] = previous[key]
        if facts.exceptions is not None:
            status["exceptions"] = dict(facts.exceptions)
        return status

    outcomes = facts.outcomes
    counts = dict.fromkeys(Result, 0)
    for outcome in outcomes.values():
        counts[outcome.result] += 1
    selected = len(outcomes)
    stale = sum(1 for outcome in outcomes.values() if outcome.generation != generation)

    conditions = _ready(conditions, facts, counts, selected, stale, now)
    conditions = _degraded(conditions, outcomes, facts.cluster_problem, generation, now)
    conditions = _conflicted(conditions, outcomes, counts, generation, now)

    reports = [
        {
            "namespace": namespace,
            "reason": outcome.reason or outcome.result.value,
            "message": outcome.message[:1024],
        }
        for namespace, outcome in sorted(outcomes.items())
        if outcome.result not in (Result.COMPLIANT,)
    ]
    # Failures first, then conflicts, so the bounded list shows what needs action.
    reports.sort(key=lambda report: -_SEVERITY[outcomes[report["namespace"]].result])
    previews = [
        {
            "namespace": namespace,
            "level": outcome.psa_level or "",
            "warnings": [warning[:1024] for warning in outcome.psa_warnings[:MAX_REPORTED]],
        }
        for namespace, outcome in sorted(outcomes.items())
        if outcome.psa_warnings
    ]
    status = {
        "observedGeneration": generation,
        "conditions": conditions,
        "namespaces": {
            "selected": selected,
            "compliant": counts[Result.COMPLIANT],
            "drifted": counts[Result.DRIFTED],
            "failed": counts[Result.FAILED],
            "conflicted": counts[Result.CONFLICTED],
            "superseded": counts[Result.SUPERSEDED],
        },
        "nonCompliant": reports[:MAX_REPORTED],
    }
    if previews:
        status["podSecurityPreview"] = previews[:MAX_REPORTED]
    if facts.workloads is not None:
        status["workloads"] = dict(facts.workloads)
        status["nonCompliantWorkloads"] = [dict(item) for item in facts.non_compliant_workloads][
            :MAX_REPORTED
        ]
    if facts.exceptions is not None:
        status["exceptions"] = dict(facts.exceptions)
    return status


def _ready(
    conditions: list[dict[str, Any]],
    facts: BaselineFacts,
    counts: Mapping[Result, int],
    selected: int,
    stale: int,
    now: str,
) -> list[dict[str, Any]]:
    generation = facts.generation
    if facts.removal_held:
        return set_condition(
            conditions, READY, "False", "RemovalHeld", facts.removal_held, generation, now
        )
    if stale:
        return set_condition(
            conditions,
            READY,
            "False",
            "Reconciling",
            f"{selected - stale} of {_namespaces(selected)} reconciled for generation {generation}",
            generation,
            now,
        )
    if facts.audit_mode:
        would = counts[Result.DRIFTED]
        message = (
            f"Audit mode: {_namespaces(selected)} selected, {would} would change"
            " (see status.nonCompliant); nothing is written"
        )
        return set_condition(conditions, READY, "True", "Audited", message, generation, now)
    failing = counts[Result.FAILED] + counts[Result.CONFLICTED] + counts[Result.DRIFTED]
    if failing:
        reason = (
            "ApplyFailed"
            if counts[Result.FAILED]
            else ("Conflicted" if counts[Result.CONFLICTED] else "Drifted")
        )
        message = (
            f"{failing} of {_namespaces(selected)} {'does' if failing == 1 else 'do'} not"
            " hold the posture (see status.nonCompliant)"
        )
        return set_condition(conditions, READY, "False", reason, message, generation, now)
    if selected == 0:
        return set_condition(
            conditions,
            READY,
            "True",
            "NoNamespacesSelected",
            "the baseline selects no namespace",
            generation,
            now,
        )
    message = (
        "the 1 namespace selected holds the posture"
        if selected == 1
        else f"all {_namespaces(selected)} selected hold the posture"
    )
    if counts[Result.SUPERSEDED]:
        message += f" ({counts[Result.SUPERSEDED]} with parts held by a higher-priority baseline)"
    return set_condition(conditions, READY, "True", "Converged", message, generation, now)


def _degraded(
    conditions: list[dict[str, Any]],
    outcomes: Mapping[str, Outcome],
    cluster_problem: str | None,
    generation: int,
    now: str,
) -> list[dict[str, Any]]:
    if cluster_problem is not None:
        message = f"admission policies: {cluster_problem}"
        return set_condition(
            conditions, DEGRADED, "True", "AdmissionPolicyFailed", message[:1024], generation, now
        )
    failed = sorted(ns for ns, outcome in outcomes.items() if outcome.result is Result.FAILED)
    if failed:
        first = outcomes[failed[0]]
        message = f"writes failed in {_namespaces(len(failed))}: {failed[0]}: {first.message}"
        return set_condition(
            conditions, DEGRADED, "True", "ApplyFailed", message[:1024], generation, now
        )
    return set_condition(
        conditions, DEGRADED, "False", "AsExpected", "no write failed", generation, now
    )


def _conflicted(
    conditions: list[dict[str, Any]],
    outcomes: Mapping[str, Outcome],
    counts: Mapping[Result, int],
    generation: int,
    now: str,
) -> list[dict[str, Any]]:
    conflicted = sorted(ns for ns, o in outcomes.items() if o.result is Result.CONFLICTED)
    superseded = sorted(ns for ns, o in outcomes.items() if o.result is Result.SUPERSEDED)
    if conflicted:
        first = outcomes[conflicted[0]]
        message = (
            f"{_namespaces(len(conflicted))} {'holds' if len(conflicted) == 1 else 'hold'}"
            " objects the operator did not make:"
            f" {conflicted[0]}: {first.message}"
        )
        return set_condition(
            conditions, CONFLICTED, "True", "ForeignObject", message[:1024], generation, now
        )
    if superseded:
        first = outcomes[superseded[0]]
        message = f"{_namespaces(len(superseded))}: {superseded[0]}: {first.message}"
        return set_condition(
            conditions, CONFLICTED, "True", "Superseded", message[:1024], generation, now
        )
    return set_condition(
        conditions, CONFLICTED, "False", "NoConflicts", "nothing in the way", generation, now
    )


def _namespaces(count: int) -> str:
    return f"{count} namespace" if count == 1 else f"{count} namespaces"


def set_condition(
    conditions: list[dict[str, Any]],
    type_: str,
    status: str,
    reason: str,
    message: str,
    generation: int,
    now: str,
) -> list[dict[str, Any]]:
    """Conditions with one set; lastTransitionTime kept unless the status really changed."""
    result: list[dict[str, Any]] = []
    found = False
    for condition in conditions:
        if condition.get("type") != type_:
            result.append(condition)
            continue
        found = True
        since = condition.get("lastTransitionTime") if condition.get("status") == status else now
        result.append(_condition(type_, status, reason, message, generation, since or now))
    if not found:
        result.append(_condition(type_, status, reason, message, generation, now))
    order = {READY: 0, DEGRADED: 1, CONFLICTED: 2}
    return sorted(result, key=lambda condition: order.get(condition.get("type", ""), 9))


def _condition(
    type_: str, status: str, reason: str, message: str, generation: int, since: str
) -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "observedGeneration": generation,
        "lastTransitionTime": since,
        "reason": reason,
        "message": message,
    }

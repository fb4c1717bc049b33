"""The one verdict on BaselineExceptions: which are in force at a moment, and what they waive.

Pure functions over models and a moment. The admission policy (`policy.admission`),
the in-cluster workload audit, the namespace's Pod Security label and the offline
`audit` command all read this module, so they cannot disagree:

- `judge` says whether one exception is Active, Expired or Invalid at a moment
  (Invalid: its baseline does not exist, or it expires more than the baseline's
  `exceptions.maxDuration` after its creation);
- `active_exceptions` gives a baseline's exceptions in force, compiled;
- `waivers_for` says which checks are waived for a pod in a namespace, and by which
  exception; `relaxed_pod_security` the namespace's Pod Security labels while an
  exception lowers enforce;
- `exception_status`, `next_change` and `expiring_soon` are what the controller
  needs for status, for waking up at the next expiry and for the warning Event.

An exception is in force from its creation until the moment `expires` (excluded).
Nothing in the cluster evaluates expiry by itself: the operator acts on it (and the
admission policy is re-rendered without the exception), so while the operator is
down an expired exception stays in force until it returns.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from baseline_operator.api.exception import (
    BaselineException,
    ExceptionState,
    format_time,
    parse_time,
)
from baseline_operator.api.resource import SecurityBaseline
from baseline_operator.api.spec import (
    DEFAULT_EXPIRY_WARNING,
    DEFAULT_MAX_EXCEPTION_DURATION,
    LabelSelector,
    parse_duration,
)
from baseline_operator.policy.checklist import Waiver
from baseline_operator.policy.podsecurity import level_key, rank
from baseline_operator.policy.select import matches_selector
from baseline_operator.policy.status import set_condition

ACTIVE = "Active"
EXPIRED = "Expired"
INVALID = "Invalid"
CONDITION_TYPES = (ACTIVE, EXPIRED, INVALID)


class Reason(StrEnum):
    """The reason of the condition that is True."""

    IN_FORCE = "InForce"
    EXPIRED = "Expired"
    DELETING = "Deleting"
    BASELINE_NOT_FOUND = "BaselineNotFound"
    BEYOND_MAX_DURATION = "BeyondMaxDuration"
    INVALID_SPEC = "InvalidSpec"


@dataclass(frozen=True)
class ExceptionVerdict:
    """What one exception is at a moment, and why."""

    name: str
    baseline: str
    state: ExceptionState
    reason: Reason
    message: str
    expires: datetime | None  # None only for an exception whose spec could not be read
    generation: int | None = None

    @property
    def active(self) -> bool:
        return self.state is ExceptionState.ACTIVE


def max_duration(baseline: SecurityBaseline) -> timedelta:
    section = baseline.spec.exceptions
    return parse_duration(
        section.max_duration if section is not None else DEFAULT_MAX_EXCEPTION_DURATION
    )


def expiry_warning(baseline: SecurityBaseline | None) -> timedelta:
    section = baseline.spec.exceptions if baseline is not None else None
    return parse_duration(section.expiry_warning if section is not None else DEFAULT_EXPIRY_WARNING)


def judge(
    exception: BaselineException,
    baseline: SecurityBaseline | None,
    now: datetime,
    created: datetime | None = None,
) -> ExceptionVerdict:
    """Active, Expired or Invalid at `now`.

    `baseline` is the SecurityBaseline named by spec.baseline, None when it does not exist
    (the caller knows). `created` overrides metadata.creationTimestamp; without either
    (an exception read from a file, not yet applied) the creation is taken to be `now`,
    which is what the API server would stamp if it were applied at that moment.
    """
    spec = exception.spec
    expires = spec.expires_at
    generation = exception.metadata.generation

    def verdict(state: ExceptionState, reason: Reason, message: str) -> ExceptionVerdict:
        return ExceptionVerdict(
            exception.name, spec.baseline, state, reason, message, expires, generation
        )

    if baseline is None or baseline.name != spec.baseline:
        return verdict(
            ExceptionState.INVALID,
            Reason.BASELINE_NOT_FOUND,
            f"SecurityBaseline {spec.baseline} does not exist; the exception waives nothing",
        )
    created = created or exception.created_at or now
    limit = max_duration(baseline)
    if expires - created > limit:
        section = baseline.spec.exceptions
        written = section.max_duration if section is not None else DEFAULT_MAX_EXCEPTION_DURATION
        return verdict(
            ExceptionState.INVALID,
            Reason.BEYOND_MAX_DURATION,
            f"expires {spec.expires} is more than {written} (the baseline's"
            f" exceptions.maxDuration) after its creation {format_time(created)};"
            " the exception waives nothing",
        )
    if exception.metadata.deletion_timestamp:
        return verdict(ExceptionState.EXPIRED, Reason.DELETING, "the exception is being deleted")
    if now >= expires:
        return verdict(
            ExceptionState.EXPIRED, Reason.EXPIRED, f"the exception expired at {spec.expires}"
        )
    return verdict(ExceptionState.ACTIVE, Reason.IN_FORCE, _in_force_message(exception))


def invalid_spec(
    name: str, baseline: str, message: str, generation: int | None
) -> ExceptionVerdict:
    """The verdict on a body that is not a valid BaselineException (the CRD should have
    refused it; an older CRD or a direct etcd write may not have)."""
    return ExceptionVerdict(
        name, baseline, ExceptionState.INVALID, Reason.INVALID_SPEC, message, None, generation
    )


def _in_force_message(exception: BaselineException) -> str:
    spec = exception.spec
    waived = []
    if spec.checks:
        waived.append("checks " + ", ".join(check.value for check in spec.checks))
    if spec.pod_security is not None:
        waived.append(f"Pod Security enforce {spec.pod_security.enforce.value}")
    where = (
        "namespaces " + ", ".join(spec.namespaces)
        if spec.namespaces is not None
        else "namespaces matching its namespaceSelector"
    )
    return f"waives {' and '.join(waived)} in {where} until {spec.expires}"


# ----------------------------------------------------------------------------
# What is in force


@dataclass(frozen=True)
class ActiveException:
    """An exception in force, reduced to what the verdicts read."""

    name: str
    expires: str  # RFC 3339, as written
    expires_at: datetime
    namespaces: frozenset[str] | None  # by name, or
    namespace_selector: LabelSelector | None  # by labels
    workload_selector: LabelSelector | None  # None: every pod
    checks: frozenset[str]
    enforce: str | None  # the Pod Security enforce level while it is active

    @classmethod
    def of(cls, exception: BaselineException) -> ActiveException:
        spec = exception.spec
        return cls(
            name=exception.name,
            expires=spec.expires,
            expires_at=spec.expires_at,
            namespaces=frozenset(spec.namespaces) if spec.namespaces is not None else None,
            namespace_selector=spec.namespace_selector,
            workload_selector=spec.workload_selector,
            checks=frozenset(check.value for check in spec.checks),
            enforce=spec.pod_security.enforce.value if spec.pod_security is not None else None,
        )

    def covers_namespace(self, namespace: str, labels: Mapping[str, str]) -> bool:
        if self.namespaces is not None:
            return namespace in self.namespaces
        assert self.namespace_selector is not None
        return matches_selector(self.namespace_selector, labels)

    def covers_workload(self, pod_labels: Mapping[str, Any]) -> bool:
        if self.workload_selector is None:
            return True
        return matches_selector(self.workload_selector, pod_labels)

    @property
    def waiver(self) -> Waiver:
        return Waiver(self.name, self.expires)


def active_exceptions(
    baseline: SecurityBaseline,
    exceptions: Iterable[BaselineException],
    now: datetime,
    created: Mapping[str, datetime] | None = None,
) -> list[ActiveException]:
    """The baseline's exceptions in force at `now`, by name. `created` (by exception name)
    overrides metadata.creationTimestamp."""
    found = []
    for exception in exceptions:
        if exception.spec.baseline != baseline.name:
            continue
        when = (created or {}).get(exception.name)
        if judge(exception, baseline, now, when).active:
            found.append(ActiveException.of(exception))
    return sorted(found, key=lambda item: item.name)


def judge_all(
    baselines: Mapping[str, SecurityBaseline],
    exceptions: Iterable[BaselineException],
    now: datetime,
) -> dict[str, ExceptionVerdict]:
    """Every exception's verdict by name; `baselines` are those that exist, by name."""
    return {
        exception.name: judge(exception, baselines.get(exception.spec.baseline), now)
        for exception in exceptions
    }


def _covering(
    active: Iterable[ActiveException],
    namespace: str,
    namespace_labels: Mapping[str, str],
) -> list[ActiveException]:
    return [item for item in active if item.covers_namespace(namespace, namespace_labels)]


def waivers_for(
    active: Iterable[ActiveException],
    namespace: str,
    namespace_labels: Mapping[str, str],
    pod_labels: Mapping[str, Any],
) -> dict[str, Waiver]:
    """Check id -> the exception that waives it for a pod (its labels, or a controller's pod
    template labels) in a namespace. Where several do, the one that lasts longest is named
    (then the first by name)."""
    covering = [
        item
        for item in _covering(active, namespace, namespace_labels)
        if item.checks and item.covers_workload(pod_labels)
    ]
    chosen: dict[str, Waiver] = {}
    for item in sorted(covering, key=lambda item: (-item.expires_at.timestamp(), item.name)):
        for check in item.checks:
            chosen.setdefault(check, item.waiver)
    return chosen


def effective_enforce(
    level: str | None,
    active: Iterable[ActiveException],
    namespace: str,
    namespace_labels: Mapping[str, str],
) -> str | None:
    """The enforce level a baseline stamps on a namespace while its exceptions are in force:
    the most permissive of its own and the levels of the exceptions that cover the
    namespace. An exception never raises a level, and gives none where the baseline sets
    none."""
    if level is None:
        return None
    for item in _covering(active, namespace, namespace_labels):
        if item.enforce is not None and rank(item.enforce) < rank(level):
            level = item.enforce
    return level


def relaxed_pod_security(
    labels: Mapping[str, str],
    active: Iterable[ActiveException],
    namespace: str,
    namespace_labels: Mapping[str, str],
) -> dict[str, str]:
    """A baseline's Pod Security labels for a namespace with its active exceptions applied:
    enforce lowered where an exception says so, audit and warn (and the versions) as they
    are, so that the gap stays visible."""
    relaxed = dict(labels)
    key = level_key("enforce")
    level = effective_enforce(labels.get(key), active, namespace, namespace_labels)
    if level is not None:
        relaxed[key] = level
    return relaxed


# ----------------------------------------------------------------------------
# Time: when to look again, when to warn


def next_change(
    verdicts: Iterable[ExceptionVerdict], now: datetime, warning: timedelta
) -> datetime | None:
    """The next moment after `now` at which an active exception expires or enters its warning
    window: when the operator must look again (None: nothing pending)."""
    moments = []
    for verdict in verdicts:
        if not verdict.active or verdict.expires is None:
            continue
        for moment in (verdict.expires - warning, verdict.expires):
            if moment > now:
                moments.append(moment)
    return min(moments, default=None)


def expiring_soon(verdict: ExceptionVerdict, now: datetime, warning: timedelta) -> bool:
    """Active and within `warning` of its expiry: time for the warning Event."""
    return verdict.active and verdict.expires is not None and verdict.expires - now <= warning


def exceptions_summary(verdicts: Iterable[ExceptionVerdict]) -> dict[str, Any]:
    """For a baseline's status: how many exceptions are active, invalid, and the next expiry."""
    listed = list(verdicts)
    active = [v for v in listed if v.active and v.expires is not None]
    summary: dict[str, Any] = {
        "active": len(active),
        "invalid": sum(1 for v in listed if v.state is ExceptionState.INVALID),
    }
    if active:
        summary["nextExpiry"] = format_time(min(v.expires for v in active if v.expires))
    return summary


def exception_status(
    verdict: ExceptionVerdict, previous: Mapping[str, Any] | None, now: datetime
) -> dict[str, Any]:
    """The exception's status: state, and the three conditions (the verdict's True, the others
    False), each with observedGeneration; lastTransitionTime moves only when a condition's
    status changes."""
    conditions: list[dict[str, Any]] = list((previous or {}).get("conditions") or [])
    stamp = format_time(now)
    generation = verdict.generation or 0
    for kind in CONDITION_TYPES:
        if kind == verdict.state.value:
            conditions = set_condition(
                conditions, kind, "True", verdict.reason.value, verdict.message, generation, stamp
            )
        else:
            conditions = set_condition(
                conditions, kind, "False", verdict.reason.value, verdict.message, generation, stamp
            )
    order = {kind: index for index, kind in enumerate(CONDITION_TYPES)}
    conditions.sort(key=lambda condition: order.get(condition.get("type", ""), len(order)))
    status: dict[str, Any] = {"state": verdict.state.value, "conditions": conditions}
    if verdict.generation is not None:
        status["observedGeneration"] = verdict.generation
    return status


def parse_moment(value: str) -> datetime:
    """`--at` and friends: an RFC 3339 time."""
    return parse_time(value)


__all__ = [
    "ACTIVE",
    "CONDITION_TYPES",
    "EXPIRED",
    "INVALID",
    "ActiveException",
    "ExceptionVerdict",
    "Reason",
    "active_exceptions",
    "effective_enforce",
    "exception_status",
    "exceptions_summary",
    "expiring_soon",
    "expiry_warning",
    "invalid_spec",
    "judge",
    "judge_all",
    "max_duration",
    "next_change",
    "relaxed_pod_security",
    "waivers_for",
]

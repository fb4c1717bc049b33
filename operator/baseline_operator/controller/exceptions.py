"""BaselineExceptions in the cluster: one verdict at a moment, and acting on it in time.

The informer keeps every BaselineException parsed once per change
(`exception_entry`). `ExceptionKeeper.refresh` judges them all at one moment of
one clock (`policy.exceptions`) and keeps, in the view, each baseline's active
set: what the admission policies, the Pod Security labels and the workload audit
read. Whenever a baseline's active set changes (an exception created, changed or
deleted, a baseline changed or deleted, an expiry passing), exactly what it
affects is queued: `cluster/<baseline>`, and the namespaces the baseline selects
(with their workloads).

Nothing in the cluster has a clock: the keeper's timer wakes at the next moment an
exception expires or enters its warning window (`next_change`) and refreshes. At
start, the runtime calls `catch_up` after the caches are listed and before any other
work, so exceptions that expired while the operator was down end at once.

Each exception's status (`exception_status`) is written through its status
subresource when it differs, under the key `("exception", name)`. The Events that go
with it (a warning `expiryWarning` before the expiry, once per exception and
generation, and one at the expiry, on the exception and on its baseline) are posted
only when the stored status does not already say so: a restart does not repeat them.
The warning is recorded in the status as a condition `ExpiringSoon` (True, with the
generation it was posted for).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from baseline_operator.api.exception import (
    BaselineException,
    ExceptionState,
    InvalidException,
    format_time,
    parse_exception,
)
from baseline_operator.api.kinds import BASELINE_EXCEPTION
from baseline_operator.api.resource import SecurityBaseline
from baseline_operator.controller.baselines import plain
from baseline_operator.controller.events import NORMAL, WARNING, EventRecorder
from baseline_operator.controller.keys import STATUS_DEBOUNCE, exception_key, status_key
from baseline_operator.controller.view import ClusterView
from baseline_operator.kube.client import KubeApi
from baseline_operator.policy.exceptions import (
    ActiveException,
    ExceptionVerdict,
    Reason,
    active_exceptions,
    exception_status,
    exceptions_summary,
    expiring_soon,
    expiry_warning,
    invalid_spec,
    judge,
    next_change,
)
from baseline_operator.policy.status import set_condition

log = structlog.get_logger(__name__)

# The condition that records the expiry warning was posted (for its observedGeneration).
EXPIRING_SOON = "ExpiringSoon"
# The timer looks again at least this often (the wall clock may jump), and wakes this much
# after a moment so that the moment has passed by any clock.
MAX_SLEEP = 60.0
TIMER_SLACK = 0.05
_KEPT_METADATA = ("name", "generation", "uid", "creationTimestamp", "deletionTimestamp")


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ExceptionEntry:
    """A BaselineException as last seen: parsed (status aside), or why it cannot be."""

    name: str
    uid: str | None
    generation: int | None
    baseline: str  # spec.baseline as written ("" when it cannot be read)
    exception: BaselineException | None
    error: str = ""
    status: Mapping[str, Any] = field(default_factory=dict, compare=False, hash=False)
    resource_version: str | None = field(default=None, compare=False, hash=False)


def exception_entry(body: Mapping[str, Any]) -> ExceptionEntry:
    raw = plain(body)
    metadata = raw.get("metadata") or {}
    spec = raw.get("spec")
    name = str(metadata.get("name") or "")
    generation = metadata.get("generation")
    generation = int(generation) if isinstance(generation, int) else None
    baseline = spec.get("baseline") if isinstance(spec, dict) else None
    slim = {
        "apiVersion": raw.get("apiVersion"),
        "kind": raw.get("kind"),
        "metadata": {key: metadata[key] for key in _KEPT_METADATA if key in metadata},
        "spec": spec,
    }
    exception: BaselineException | None = None
    error = ""
    try:
        exception = parse_exception(slim)
    except InvalidException as exc:
        error = "; ".join(str(item) for item in exc.errors)
    return ExceptionEntry(
        name=name,
        uid=metadata.get("uid"),
        generation=generation,
        baseline=baseline if isinstance(baseline, str) else "",
        exception=exception,
        error=error,
        status=raw.get("status") or {},
        resource_version=metadata.get("resourceVersion"),
    )


# What, when it changes, means an exception's status (or Events) must be looked at again.
_Mark = tuple[Any, ...]


@dataclass
class ExceptionKeeper:
    view: ClusterView
    kube: KubeApi
    events: EventRecorder
    enqueue: Callable[[Hashable, float], None]
    # Queue everything a baseline's active set affects (its admission policies, the
    # namespaces it selects and their workloads).
    affect: Callable[[str], None]
    clock: Callable[[], datetime] = utc_now

    _verdicts: dict[str, ExceptionVerdict] = field(default_factory=dict, init=False)
    _marks: dict[str, _Mark] = field(default_factory=dict, init=False)
    _summaries: dict[str, dict[str, Any]] = field(default_factory=dict, init=False)
    # The status last written per exception, with the uid it was written for.
    _written: dict[str, tuple[str | None, dict[str, Any]]] = field(default_factory=dict, init=False)
    # When the timer must look again (None: nothing pending).
    next_wake: datetime | None = field(default=None, init=False)
    _poke: asyncio.Event = field(default_factory=asyncio.Event, init=False)

    # ------------------------------------------------------------------ judging

    def _baselines(self) -> dict[str, SecurityBaseline]:
        """The baselines exceptions may apply to: valid, and not being deleted."""
        return {
            name: entry.baseline
            for name, entry in self.view.baselines().items()
            if entry.baseline is not None and not entry.deleting
        }

    def refresh(self) -> set[str]:
        """Judge every exception now; queue what changed. The baselines whose active set
        changed."""
        now = self.clock()
        entries = self.view.exceptions()
        baselines = self._baselines()
        verdicts: dict[str, ExceptionVerdict] = {}
        named: dict[str, list[BaselineException]] = {}
        for name, entry in entries.items():
            if entry.exception is None:
                verdicts[name] = invalid_spec(name, entry.baseline, entry.error, entry.generation)
                continue
            verdicts[name] = judge(entry.exception, baselines.get(entry.baseline), now)
            named.setdefault(entry.baseline, []).append(entry.exception)

        active: dict[str, tuple[ActiveException, ...]] = {}
        for baseline_name, exceptions in named.items():
            baseline = baselines.get(baseline_name)
            if baseline is not None:
                found = tuple(active_exceptions(baseline, exceptions, now))
                if found:
                    active[baseline_name] = found
        before = self.view.active_sets()
        changed = {
            name for name in set(before) | set(active) if before.get(name) != active.get(name)
        }
        self.view.set_active(active)

        by_baseline: dict[str, list[ExceptionVerdict]] = {}
        for verdict in verdicts.values():
            by_baseline.setdefault(verdict.baseline, []).append(verdict)
        summaries = {name: exceptions_summary(listed) for name, listed in by_baseline.items()}
        for name in set(summaries) | set(self._summaries):
            if summaries.get(name) != self._summaries.get(name):
                self.enqueue(status_key(name), STATUS_DEBOUNCE)
        self._summaries = summaries

        marks = {
            name: self._mark(verdict, baselines.get(verdict.baseline), now)
            for name, verdict in verdicts.items()
        }
        for name, mark in marks.items():
            if self._marks.get(name) != mark:
                self.enqueue(exception_key(name), 0.0)
        self._verdicts, self._marks = verdicts, marks

        moments = [
            moment
            for name, listed in by_baseline.items()
            if (moment := next_change(listed, now, expiry_warning(baselines.get(name)))) is not None
        ]
        wake = min(moments, default=None)
        if wake != self.next_wake:
            self.next_wake = wake
            self._poke.set()
        for name in sorted(changed):
            log.info(
                "exceptions in force changed",
                baseline=name,
                active=[item.name for item in active.get(name, ())],
            )
            self.affect(name)
        return changed

    @staticmethod
    def _mark(verdict: ExceptionVerdict, baseline: SecurityBaseline | None, now: datetime) -> _Mark:
        soon = expiring_soon(verdict, now, expiry_warning(baseline))
        return (verdict.state, verdict.reason, verdict.generation, verdict.expires, soon)

    def verdict(self, name: str) -> ExceptionVerdict | None:
        return self._verdicts.get(name)

    def summary_of(self, baseline: str) -> dict[str, Any] | None:
        """status.exceptions of a baseline; None when no exception names it."""
        summary = self._summaries.get(baseline)
        return dict(summary) if summary is not None else None

    def catch_up(self) -> None:
        """At start, after the caches are listed: judge everything now and queue, before any
        other work, what every exception touches and every exception's status."""
        self.refresh()
        names = sorted({entry.baseline for entry in self.view.exceptions().values()})
        for name in names:
            if name in self.view.baselines():
                self.affect(name)
        for name in sorted(self.view.exceptions()):
            self.enqueue(exception_key(name), 0.0)

    def forget(self, name: str) -> None:
        self._written.pop(name, None)

    # ------------------------------------------------------------------ the timer

    def wake(self) -> None:
        """Look again now (the clock moved, in tests)."""
        self._poke.set()

    async def run_timer(self) -> None:
        while True:
            self._poke.clear()
            self.refresh()
            wake = self.next_wake
            delay = MAX_SLEEP
            if wake is not None:
                left = (wake - self.clock()).total_seconds()
                delay = min(MAX_SLEEP, max(left, 0.0) + TIMER_SLACK)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), delay)

    # ------------------------------------------------------------------ status and Events

    async def write(self, name: str) -> None:
        entry = self.view.exceptions().get(name)
        if entry is None:
            self.forget(name)
            return
        verdict = self._verdicts.get(name)
        if verdict is None or verdict.generation != entry.generation:
            self.refresh()
            verdict = self._verdicts.get(name)
            if verdict is None:
                return
        now = self.clock()
        written = self._written.get(name)
        stored = dict(entry.status)
        previous = written[1] if written is not None and written[0] == entry.uid else stored
        baseline_entry = self.view.baselines().get(verdict.baseline)
        baseline = baseline_entry.baseline if baseline_entry is not None else None
        warning = expiry_warning(baseline)

        status = exception_status(verdict, previous, now)
        news: list[tuple[str, str, str]] = []
        conditions = [c for c in status["conditions"] if c.get("type") != EXPIRING_SOON]
        if expiring_soon(verdict, now, warning) and verdict.expires is not None:
            message = (
                f"BaselineException {name} expires at {format_time(verdict.expires)}"
                f" (in {_left(verdict.expires - now)}); baseline {verdict.baseline} applies in"
                " full after that"
            )
            if _warned_generation(previous) != verdict.generation:
                news.append((WARNING, "ExpiryWarning", message))
            kept = [c for c in status["conditions"] if c.get("type") == EXPIRING_SOON]
            conditions = set_condition(
                [*conditions, *kept],
                EXPIRING_SOON,
                "True",
                "ExpiryWarning",
                message,
                verdict.generation or 0,
                format_time(now),
            )
        status["conditions"] = conditions
        if (
            verdict.state is ExceptionState.EXPIRED
            and verdict.reason is Reason.EXPIRED
            and previous.get("state") != ExceptionState.EXPIRED.value
        ):
            news.append(
                (
                    WARNING,
                    "Expired",
                    f"BaselineException {name} expired at"
                    f" {format_time(verdict.expires) if verdict.expires else '?'}; baseline"
                    f" {verdict.baseline} applies in full again",
                )
            )
        if status != stored and (written is None or status != written[1]):
            await self.kube.patch_status(BASELINE_EXCEPTION, name, _with_removals(stored, status))
            self._written[name] = (entry.uid, status)
            log.info("exception status written", exception=name, state=status.get("state"))
        for type_, reason, message in news:
            self.events.on_exception(name, entry.uid, type_, reason, message)
            if baseline_entry is not None:
                self.events.on_baseline(
                    verdict.baseline, baseline_entry.uid, type_, reason, message
                )
        if verdict.state is ExceptionState.INVALID and previous.get("state") != "Invalid":
            self.events.on_exception(
                name, entry.uid, WARNING, verdict.reason.value, verdict.message
            )
        elif verdict.active and previous.get("state") not in (None, "Active"):
            self.events.on_exception(name, entry.uid, NORMAL, "Active", verdict.message)


def _warned_generation(status: Mapping[str, Any]) -> int | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == EXPIRING_SOON and condition.get("status") == "True":
            generation = condition.get("observedGeneration")
            return generation if isinstance(generation, int) else None
    return None


def _left(delta: Any) -> str:
    seconds = max(int(delta.total_seconds()), 0)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d{hours}h"
    if hours:
        return f"{hours}h{minutes}m"
    if minutes:
        return f"{minutes}m{seconds}s"
    return f"{seconds}s"


def _with_removals(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch that also removes status fields the new status no longer has."""
    patch: dict[str, Any] = dict(wanted)
    for key in current:
        if key not in wanted:
            patch[key] = None
    return patch

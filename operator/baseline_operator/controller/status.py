"""What each baseline's status says, and the Events that go with it.

The reconcilers record an outcome per baseline and namespace (and a problem with a
baseline's cluster-scoped objects); this module turns them into the baseline's
status (computed purely by policy.status, written only when it differs) and posts
the Events a person reading `kubectl describe` needs: a namespace that failed or
conflicted (once, not again after a restart when the status already says it), a
Pod Security preview, and the baseline becoming Ready or invalid.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from baseline_operator.api.resource import SecurityBaseline
from baseline_operator.api.status import MAX_REPORTED
from baseline_operator.controller.baselines import BaselineEntry
from baseline_operator.controller.events import NORMAL, WARNING, EventRecorder
from baseline_operator.controller.keys import STATUS_DEBOUNCE, status_key
from baseline_operator.controller.view import ClusterView
from baseline_operator.kube.client import KubeApi
from baseline_operator.policy.diff import ApplyReason, NamespaceChanges, NamespaceState
from baseline_operator.policy.objects import NAMESPACE, SECURITY_BASELINE, ObjectRef
from baseline_operator.policy.select import selects
from baseline_operator.policy.status import BaselineFacts, Outcome, Result, build_status

Workloads = tuple[dict[str, int], list[dict[str, Any]]]


@dataclass
class StatusKeeper:
    view: ClusterView
    kube: KubeApi
    events: EventRecorder
    enqueue: Callable[[Hashable, float], None]
    operator_namespace: str
    now: Callable[[], str]
    # status.workloads and status.nonCompliantWorkloads of a baseline, if it audits workloads
    workloads_of: Callable[[str], Workloads | None] = lambda _: None
    # What the brake on mass removal holds of a baseline, if anything (a message)
    removal_held: Callable[[str], str | None] = lambda _: None
    # status.exceptions of a baseline (policy.exceptions.exceptions_summary), if any names it
    exceptions_of: Callable[[str], Mapping[str, Any] | None] = lambda _: None

    # outcome of each baseline in each namespace it selects
    outcomes: dict[str, dict[str, Outcome]] = field(default_factory=dict)
    # a problem with a baseline's cluster-scoped objects (admission policies)
    cluster_problems: dict[str, str] = field(default_factory=dict)
    _written_status: dict[str, dict[str, Any]] = field(default_factory=dict)

    def outcomes_of(self, baseline: str) -> dict[str, Outcome]:
        return dict(self.outcomes.get(baseline, {}))

    def forget_baseline(self, baseline: str) -> None:
        self.outcomes.pop(baseline, None)
        self.cluster_problems.pop(baseline, None)
        self._written_status.pop(baseline, None)

    def cluster_problem(self, baseline: str, problem: str | None) -> None:
        if self.cluster_problems.get(baseline) == problem:
            return
        if problem is None:
            self.cluster_problems.pop(baseline, None)
        else:
            self.cluster_problems[baseline] = problem
        self.enqueue(status_key(baseline), STATUS_DEBOUNCE)

    async def report_namespace(
        self,
        state: NamespaceState,
        changes: NamespaceChanges,
        failures: Mapping[ObjectRef, Any],
        results: Mapping[str, Outcome],
    ) -> None:
        done = [item for item in changes.applies if item.desired.ref not in failures]
        created = [i for i in done if i.reason is ApplyReason.CREATE]
        repaired = [i for i in done if i.reason is ApplyReason.UPDATE]
        adopted = [i for i in done if i.reason is ApplyReason.ADOPT]
        deleted = [d for d in changes.deletes if d.ref not in failures]
        parts = []
        if created:
            parts.append(f"created {_names(i.desired.ref for i in created)}")
        if repaired:
            parts.append(f"updated {_names(i.desired.ref for i in repaired)}")
        if adopted:
            parts.append(f"adopted {_names(i.desired.ref for i in adopted)}")
        if deleted:
            parts.append(f"deleted {_names(d.ref for d in deleted)}")
        labels_ok = (
            changes.labels is not None and ObjectRef(NAMESPACE, None, state.name) not in failures
        )
        if labels_ok:
            parts.append("set the operator's namespace labels")
        if parts:
            reason = "Repaired" if repaired and not created else "Applied"
            self.events.on_namespace(state.name, state.uid, NORMAL, reason, "; ".join(parts))
        for baseline, outcome in sorted(results.items()):
            before = self.outcomes.get(baseline, {}).get(state.name)
            known = _report(before) if before else self._reported_in_status(baseline, state.name)
            now = _report(outcome)
            news = known is None or known.problem != now.problem
            if news and outcome.result in (Result.FAILED, Result.CONFLICTED):
                kind = "ApplyFailed" if outcome.result is Result.FAILED else "Conflict"
                message = f"baseline {baseline}: {outcome.message}"
                self.events.on_namespace(state.name, state.uid, WARNING, kind, message)
                entry = self.view.baselines().get(baseline)
                self.events.on_baseline(
                    baseline,
                    entry.uid if entry else None,
                    WARNING,
                    kind,
                    f"namespace {state.name}: {outcome.message}",
                )
            if outcome.psa_warnings and (known is None or known.warnings != now.warnings):
                self.events.on_namespace(
                    state.name,
                    state.uid,
                    WARNING,
                    "PodSecurityPreview",
                    f"enforce level {outcome.psa_level} would reject running pods: "
                    + " | ".join(outcome.psa_warnings),
                )

    def _reported_in_status(self, baseline: str, namespace: str) -> Report | None:
        """What the stored status already says of a namespace: after a restart, that is not
        news to post again."""
        entry = self.view.baselines().get(baseline)
        if entry is None:
            return None
        reports = [
            r for r in entry.status.get("nonCompliant") or [] if r.get("namespace") == namespace
        ]
        previews = [
            p
            for p in entry.status.get("podSecurityPreview") or []
            if p.get("namespace") == namespace
        ]
        if not reports and not previews:
            return None
        problem = (
            (str(reports[0].get("reason", "")), str(reports[0].get("message", "")))
            if reports
            else ("", "")
        )
        warnings = tuple(previews[0].get("warnings") or ()) if previews else ()
        return Report(problem, warnings)

    def record(self, namespace: str, results: Mapping[str, Outcome]) -> None:
        """The outcome of each baseline in a namespace (none: the namespace left them all)."""
        for baseline in set(self.outcomes) | set(results):
            per_namespace = self.outcomes.setdefault(baseline, {})
            before = per_namespace.get(namespace)
            after = results.get(baseline)
            if after is None:
                per_namespace.pop(namespace, None)
            else:
                per_namespace[namespace] = after
            if not per_namespace:
                self.outcomes.pop(baseline, None)
            if before != after:
                self.enqueue(status_key(baseline), STATUS_DEBOUNCE)

    # ------------------------------------------------------------------ status

    async def write_status(self, name: str) -> None:
        entry = self.view.baselines().get(name)
        if entry is None:
            self.forget_baseline(name)
            return
        held = self.removal_held(name)
        if entry.deleting and held is None:
            return
        if not entry.deleting and entry.baseline is not None and self._unreconciled(entry.baseline):
            return  # a selected namespace has no outcome yet; recording it brings us back
        previous = self._written_status.get(name) or dict(entry.status)
        workloads = self.workloads_of(name)
        facts = BaselineFacts(
            generation=entry.generation,
            audit_mode=entry.audit_mode,
            spec_errors=entry.errors,
            outcomes=dict(self.outcomes.get(name, {})) if entry.valid else {},
            cluster_problem=self.cluster_problems.get(name),
            workloads=workloads[0] if workloads else None,
            non_compliant_workloads=workloads[1] if workloads else (),
            removal_held=held,
            exceptions=self.exceptions_of(name),
        )
        status = build_status(facts, previous, self.now())
        if status == _comparable(entry.status) or status == self._written_status.get(name):
            return
        await self.kube.patch_status(SECURITY_BASELINE, name, _with_removals(entry.status, status))
        self._written_status[name] = status
        await self._report_transitions(entry, previous, status)

    def _unreconciled(self, baseline: SecurityBaseline) -> bool:
        """Whether a namespace the baseline selects has not been reconciled since the start."""
        known = self.outcomes.get(baseline.name, {})
        for name in self.view.namespace_names():
            if name in known:
                continue
            state = self.view.namespace(name)
            if state is None or state.terminating:
                continue
            if selects(baseline, name, state.labels, self.operator_namespace):
                return True
        return False

    async def _report_transitions(
        self, entry: BaselineEntry, previous: Mapping[str, Any], status: Mapping[str, Any]
    ) -> None:
        ready_before = _condition(previous, "Ready")
        ready_now = _condition(status, "Ready")
        if ready_now is None or (
            ready_before is not None
            and (ready_before.get("status"), ready_before.get("reason"))
            == (ready_now.get("status"), ready_now.get("reason"))
        ):
            return
        if ready_now.get("reason") in ("InvalidSpec", "RemovalHeld"):
            self.events.on_baseline(
                entry.name,
                entry.uid,
                WARNING,
                str(ready_now["reason"]),
                str(ready_now.get("message")),
            )
        elif ready_now.get("status") == "True" and ready_now.get("reason") in (
            "Converged",
            "Audited",
        ):
            self.events.on_baseline(
                entry.name,
                entry.uid,
                NORMAL,
                str(ready_now["reason"]),
                str(ready_now.get("message")),
            )


@dataclass(frozen=True)
class Report:
    """An outcome as status reports it (reason and message, preview warnings; bounded), so
    that one kept in memory and one read back after a restart compare like with like."""

    problem: tuple[str, str]
    warnings: tuple[str, ...]


def _report(outcome: Outcome) -> Report:
    problem = (outcome.reason or outcome.result.value, outcome.message[:1024])
    warnings = tuple(warning[:1024] for warning in outcome.psa_warnings[:MAX_REPORTED])
    return Report(problem, warnings)


def _names(refs: Any) -> str:
    return shortened(sorted(str(ref) for ref in refs), 8)


def shortened(items: Sequence[str], most: int) -> str:
    shown = ", ".join(items[:most])
    return shown + (f" (+{len(items) - most} more)" if len(items) > most else "")


def _condition(status: Mapping[str, Any], type_: str) -> Mapping[str, Any] | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == type_:
            return condition  # type: ignore[no-any-return]
    return None


def _comparable(status: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in status.items() if not key.startswith("kopf")}


def _with_removals(current: Mapping[str, Any], wanted: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch that also removes status fields the new status no longer has (at any
    depth: a merge patch merges nested objects, so a field left out is not removed)."""
    patch: dict[str, Any] = {}
    for key, value in wanted.items():
        old = current.get(key)
        if isinstance(value, Mapping) and isinstance(old, Mapping):
            patch[key] = _with_removals(old, value)
        else:
            patch[key] = value
    for key in current:
        if key not in wanted and not key.startswith("kopf"):
            patch[key] = None
    return patch

"""The service behind every trigger: reconcile one namespace, one baseline's cluster
objects, or one baseline's status.

Each method reads what the watches know (ClusterView), asks the pure core what
must change, makes only those writes, and records the outcome. Handlers never
do more than put keys on the queue that leads here.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from baseline_operator.api.resource import SecurityBaseline
from baseline_operator.api.status import MAX_REPORTED
from baseline_operator.controller.cache import BaselineEntry, ClusterView
from baseline_operator.controller.events import NORMAL, WARNING, EventRecorder
from baseline_operator.kube.client import ApiError, KubeApi
from baseline_operator.policy.admission import render_cluster_objects
from baseline_operator.policy.diff import (
    Apply,
    ApplyReason,
    Conflict,
    Delete,
    NamespaceChanges,
    NamespaceState,
    OwnerState,
    desired_namespace_labels,
    diff_namespace,
    diff_objects,
)
from baseline_operator.policy.layering import NamespacePlan, plan_namespace
from baseline_operator.policy.names import APPLIED_PREFIX
from baseline_operator.policy.objects import NAMESPACE, SECURITY_BASELINE, ObjectRef
from baseline_operator.policy.podsecurity import PSA_PREFIX, enforce_raised, level_key
from baseline_operator.policy.select import selects
from baseline_operator.policy.status import BaselineFacts, Outcome, Result, build_status

log = structlog.get_logger(__name__)

NamespaceKey = tuple[str, str]


def namespace_key(name: str) -> NamespaceKey:
    return ("namespace", name)


def cluster_key(baseline: str) -> NamespaceKey:
    return ("cluster", baseline)


def status_key(baseline: str) -> NamespaceKey:
    return ("status", baseline)


# How long a status waits for more namespaces to finish before it is written.
STATUS_DEBOUNCE = 1.0


@dataclass
class Reconciler:
    view: ClusterView
    kube: KubeApi
    events: EventRecorder
    enqueue: Callable[[Hashable, float], None]
    operator_namespace: str
    operator_username: str
    now: Callable[[], str]

    # outcome of each baseline in each namespace it selects
    outcomes: dict[str, dict[str, Outcome]] = field(default_factory=dict)
    # a problem with a baseline's cluster-scoped objects (admission policies)
    cluster_problems: dict[str, str] = field(default_factory=dict)
    _written_status: dict[str, dict[str, Any]] = field(default_factory=dict)
    _previews: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[str, ...]] = field(
        default_factory=dict
    )
    # status.workloads and status.nonCompliantWorkloads of a baseline, if it audits workloads
    workloads_of: Callable[[str], tuple[dict[str, int], list[dict[str, Any]]] | None] = lambda _: (
        None
    )
    # the enforce level last raised in each namespace, and the API server's warnings then
    _raised: dict[str, tuple[str | None, tuple[str, ...]]] = field(default_factory=dict)
    # how many times each namespace was reconciled (for logs and tests)
    reconciled: Counter[str] = field(default_factory=Counter)

    async def process(self, key: Hashable) -> None:
        match key:
            case ("namespace", str(name)):
                await self.reconcile_namespace(name)
            case ("cluster", str(name)):
                await self.reconcile_cluster(name)
            case ("status", str(name)):
                await self.write_status(name)
            case _:
                raise ValueError(f"unknown work key {key!r}")

    # ------------------------------------------------------------------ a namespace

    async def reconcile_namespace(self, name: str) -> None:
        self.reconciled[name] += 1
        state = self.view.namespace(name)
        if state is None or state.terminating:
            self._record(name, {})
            self._raised.pop(name, None)
            if state is None:
                self.view.writes.forget_namespace(name)
            return
        entries = self.view.baselines()
        selecting = {
            entry.name: entry
            for entry in entries.values()
            if entry.baseline is not None
            and not entry.deleting
            and selects(entry.baseline, name, state.labels, self.operator_namespace)
        }
        enforce = [e.baseline for e in selecting.values() if e.baseline and not e.audit_mode]
        owners = {
            entry.name: _owner_state(entry, entry.name in selecting) for entry in entries.values()
        }
        plan = plan_namespace(name, enforce)
        observed = self.view.objects_in(name)
        changes = diff_namespace(plan.labels, plan.objects, state, observed, owners)

        preview: tuple[str, ...] = ()
        enforced = plan.labels.get(level_key("enforce"))
        if changes.labels is not None and enforce_raised(state.labels, changes.labels):
            preview = await self._preview(name, changes.labels)
            self._raised[name] = (enforced, preview)
        elif name in self._raised and self._raised[name][0] == enforced:
            # The warnings of the last raise stay in the report while that level holds.
            preview = self._raised[name][1]
        else:
            self._raised.pop(name, None)
        failures = await self._execute(state, changes)

        results: dict[str, Outcome] = {}
        for baseline in enforce:
            results[baseline.name] = self._enforce_outcome(
                baseline, selecting[baseline.name].generation, plan, changes, failures, preview
            )
        for entry in selecting.values():
            if entry.audit_mode and entry.baseline is not None:
                results[entry.name] = await self._audit_outcome(
                    entry, enforce, state, observed, owners
                )
        if changes.writes:
            log.info(
                "namespace reconciled",
                namespace=name,
                applied=len(changes.applies),
                deleted=len(changes.deletes),
                labels=changes.labels is not None,
                conflicts=len(changes.conflicts),
                failed=len(failures),
            )
        await self._report_namespace(state, changes, failures, results)
        self._record(name, results)
        if any(not _unserved(error) for error in failures.values()):
            # The queue retries with backoff; a kind the server does not serve waits for the
            # next resync instead (installing its CRD also triggers nothing else).
            raise RetryLater(f"namespace {name}: {len(failures)} writes failed")

    async def _execute(
        self, state: NamespaceState, changes: NamespaceChanges
    ) -> dict[ObjectRef, str]:
        """Make the writes; return the failures by object (the namespace itself for labels)."""
        failures: dict[ObjectRef, str] = {}
        await asyncio.gather(
            *(self._apply(item, failures) for item in changes.applies),
            *(self._delete(item, failures) for item in changes.deletes),
        )
        if changes.labels is not None:
            ref = ObjectRef(NAMESPACE, None, state.name)
            before = self.view.watched_version(ref)
            metadata: dict[str, Any] = {"name": state.name}
            if changes.labels:
                metadata["labels"] = changes.labels
            body = {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata}
            try:
                answer = await self.kube.apply(body)
            except ApiError as exc:
                failures[ref] = f"{ref}: {exc}"
            else:
                self.view.writes.record(ref, before, answer.body)
        return failures

    async def _apply(self, item: Apply, failures: dict[ObjectRef, str]) -> None:
        """One server-side apply, remembered until the watch shows it; failures collected."""
        before = self.view.watched_version(item.desired.ref)
        try:
            answer = await self.kube.apply(item.body)
        except ApiError as exc:
            failures[item.desired.ref] = _explain(item.desired.ref, exc)
            return
        self.view.writes.record(item.desired.ref, before, answer.body)

    async def _delete(self, item: Delete, failures: dict[ObjectRef, str]) -> None:
        """One delete with a uid precondition; a replaced object (409) is looked at again."""
        before = self.view.watched_version(item.ref)
        try:
            await self.kube.delete(item.ref, item.uid)
        except ApiError as exc:
            if not exc.conflict:
                failures[item.ref] = f"{item.ref}: {exc}"
            return
        self.view.writes.record(item.ref, before, None)

    async def _preview(self, namespace: str, labels: Mapping[str, str]) -> tuple[str, ...]:
        """The API server's warnings about running pods the new enforce level would reject."""
        cache_key = (namespace, tuple(sorted(labels.items())))
        if cache_key in self._previews:
            return self._previews[cache_key]
        body = {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace, "labels": dict(labels)},
        }
        try:
            answer = await self.kube.apply(body, dry_run=True)
        except ApiError as exc:
            log.info("pod security preview failed", namespace=namespace, error=str(exc))
            return ()
        warnings = tuple(answer.warnings)
        self._previews[cache_key] = warnings
        return warnings

    def _enforce_outcome(
        self,
        baseline: SecurityBaseline,
        generation: int,
        plan: NamespacePlan,
        changes: NamespaceChanges,
        failures: Mapping[ObjectRef, str],
        preview: tuple[str, ...],
    ) -> Outcome:
        name = baseline.name
        mine = {a.desired.ref for a in changes.applies if a.desired.baseline in (name, None)}
        mine |= {d.ref for d in changes.deletes if d.baseline == name}
        mine.add(ObjectRef(NAMESPACE, None, plan.namespace))
        failed = sorted((ref, error) for ref, error in failures.items() if ref in mine)
        psa_level = plan.labels.get(level_key("enforce"))
        warnings = (
            preview if baseline.spec.pod_security and baseline.spec.pod_security.enforce else ()
        )
        if failed:
            _, error = failed[0]
            more = f" (+{len(failed) - 1} more)" if len(failed) > 1 else ""
            return Outcome(
                Result.FAILED,
                generation,
                "ApplyFailed",
                f"{error}{more}",
                warnings,
                psa_level,
            )
        conflicts = [c for c in changes.conflicts if c.baseline == name]
        if conflicts:
            more = f" (+{len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
            return Outcome(
                Result.CONFLICTED,
                generation,
                "Conflicted",
                conflicts[0].message + more,
                warnings,
                psa_level,
            )
        lost = [s for s in plan.superseded if s.baseline == name]
        if lost:
            message = "; ".join(s.message for s in lost)
            return Outcome(
                Result.SUPERSEDED, generation, "Superseded", message, warnings, psa_level
            )
        return Outcome(Result.COMPLIANT, generation, "", "", warnings, psa_level)

    async def _audit_outcome(
        self,
        entry: BaselineEntry,
        enforce: Sequence[SecurityBaseline],
        state: NamespaceState,
        observed: Mapping[ObjectRef, Any],
        owners: Mapping[str, OwnerState],
    ) -> Outcome:
        """What this Audit-mode baseline would change here if it were enforced."""
        assert entry.baseline is not None
        name = entry.name
        as_if = dict(owners)
        as_if[name] = OwnerState(
            adopt=entry.baseline.spec.adopt,
            cleanup=entry.baseline.spec.cleanup_policy,
            active=True,
        )
        plan = plan_namespace(state.name, [*enforce, entry.baseline])
        changes = diff_namespace(plan.labels, plan.objects, state, observed, as_if)
        by_verb: dict[str, list[str]] = {}
        for item in changes.applies:
            if item.desired.baseline == name:
                verb = "create" if item.reason is ApplyReason.CREATE else str(item.reason)
                by_verb.setdefault(verb, []).append(
                    f"{item.desired.ref.kind.kind} {item.desired.ref.name}"
                )
        wanted = desired_namespace_labels(plan.labels, state, as_if)
        label_changes = sorted(
            f"{key}={value}"
            for key, value in wanted.items()
            if state.labels.get(key) != value
            and (key.startswith(PSA_PREFIX) or key == f"{APPLIED_PREFIX}{name}")
        )
        would: list[str] = []
        if label_changes:
            would.append("set namespace labels " + ", ".join(label_changes))
        for verb, objects in sorted(by_verb.items()):
            would.append(f"{verb} {len(objects)} objects: {_shortened(sorted(objects), 12)}")
        warnings: tuple[str, ...] = ()
        psa_level = wanted.get(level_key("enforce"))
        if enforce_raised(state.labels, wanted):
            warnings = await self._preview(state.name, wanted)
        conflicts = [c for c in changes.conflicts if c.baseline == name]
        if conflicts:
            return Outcome(
                Result.CONFLICTED,
                entry.generation,
                "Conflicted",
                conflicts[0].message,
                warnings,
                psa_level,
            )
        if would:
            return Outcome(
                Result.DRIFTED,
                entry.generation,
                "WouldChange",
                "would " + "; would ".join(would),
                warnings,
                psa_level,
            )
        return Outcome(Result.COMPLIANT, entry.generation, "", "", warnings, psa_level)

    async def _report_namespace(
        self,
        state: NamespaceState,
        changes: NamespaceChanges,
        failures: Mapping[ObjectRef, str],
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
            await self.events.on_namespace(state.name, state.uid, NORMAL, reason, "; ".join(parts))
        for baseline, outcome in sorted(results.items()):
            before = self.outcomes.get(baseline, {}).get(state.name)
            known = _report(before) if before else self._reported_in_status(baseline, state.name)
            now = _report(outcome)
            news = known is None or known.problem != now.problem
            if news and outcome.result in (Result.FAILED, Result.CONFLICTED):
                kind = "ApplyFailed" if outcome.result is Result.FAILED else "Conflict"
                message = f"baseline {baseline}: {outcome.message}"
                await self.events.on_namespace(state.name, state.uid, WARNING, kind, message)
                entry = self.view.baselines().get(baseline)
                await self.events.on_baseline(
                    baseline,
                    entry.uid if entry else None,
                    WARNING,
                    kind,
                    f"namespace {state.name}: {outcome.message}",
                )
            if outcome.psa_warnings and (known is None or known.warnings != now.warnings):
                await self.events.on_namespace(
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

    def _record(self, namespace: str, results: Mapping[str, Outcome]) -> None:
        for baseline in set(self.outcomes) | set(results):
            per_namespace = self.outcomes.setdefault(baseline, {})
            before = per_namespace.get(namespace)
            after = results.get(baseline)
            if after is None:
                per_namespace.pop(namespace, None)
            else:
                per_namespace[namespace] = after
            if before != after:
                self.enqueue(status_key(baseline), STATUS_DEBOUNCE)

    # ------------------------------------------------------------------ cluster-scoped objects

    async def reconcile_cluster(self, name: str) -> None:
        entry = self.view.baselines().get(name)
        if entry is not None and not entry.deleting and not entry.enforcing:
            return  # invalid spec or Audit mode: its admission policies stay as they are
        if entry is None or entry.deleting:
            desired: tuple[Any, ...] = ()
            owners = {name: OwnerState(active=False)}  # always removed with the baseline
        else:
            assert entry.baseline is not None
            desired = tuple(render_cluster_objects(entry.baseline, self.operator_username))
            owners = {name: OwnerState(adopt=entry.baseline.spec.adopt, active=True)}
        wanted = {item.ref for item in desired}
        observed = {
            ref: obj
            for ref, obj in self.view.cluster_objects().items()
            if obj.owner == name or ref in wanted
        }
        applies, deletes, conflicts = diff_objects(desired, observed, owners)
        failures = await self._execute_cluster(applies, deletes)
        problem = None
        if failures:
            _, problem = sorted(failures.items())[0]
        elif conflicts:
            problem = conflicts[0].message
        if self.cluster_problems.get(name) != problem:
            if problem is None:
                self.cluster_problems.pop(name, None)
            else:
                self.cluster_problems[name] = problem
            self.enqueue(status_key(name), STATUS_DEBOUNCE)
        if failures:
            raise RuntimeError(f"admission policies of baseline {name}: {problem}")

    async def _execute_cluster(
        self, applies: Sequence[Apply], deletes: Sequence[Delete]
    ) -> dict[ObjectRef, str]:
        failures: dict[ObjectRef, str] = {}
        for item in applies:  # a policy before its binding: render order is ref order
            await self._apply(item, failures)
        for gone in sorted(deletes, key=lambda d: d.ref.kind.kind, reverse=True):  # bindings first
            await self._delete(gone, failures)
        return failures

    # ------------------------------------------------------------------ status

    async def write_status(self, name: str) -> None:
        entry = self.view.baselines().get(name)
        if entry is None:
            self.outcomes.pop(name, None)
            self._written_status.pop(name, None)
            return
        if entry.deleting:
            return
        if entry.baseline is not None and self._unreconciled(entry.baseline):
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
        if ready_now.get("reason") == "InvalidSpec":
            await self.events.on_baseline(
                entry.name, entry.uid, WARNING, "InvalidSpec", str(ready_now.get("message"))
            )
        elif ready_now.get("status") == "True" and ready_now.get("reason") in (
            "Converged",
            "Audited",
        ):
            await self.events.on_baseline(
                entry.name,
                entry.uid,
                NORMAL,
                str(ready_now["reason"]),
                str(ready_now.get("message")),
            )


class RetryLater(Exception):
    """Some writes failed; the outcome is recorded and the key goes back on the queue."""


_UNSERVED = "is not served by the API server"


def _explain(ref: ObjectRef, error: ApiError) -> str:
    if error.not_found and ref.kind.group and "page not found" in error.message.lower():
        return (
            f"{ref}: {ref.kind.plural}.{ref.kind.group}/{ref.kind.version} {_UNSERVED}"
            " (is its CRD installed?)"
        )
    return f"{ref}: {error}"


def _unserved(error: str) -> bool:
    return _UNSERVED in error


def _owner_state(entry: BaselineEntry, selects_namespace: bool) -> OwnerState:
    if entry.baseline is None:
        # An invalid spec changes nothing, unless the baseline is being deleted.
        return OwnerState(cleanup=entry.cleanup_policy, frozen=not entry.deleting)
    spec = entry.baseline.spec
    if entry.audit_mode and not entry.deleting:
        return OwnerState(adopt=spec.adopt, cleanup=spec.cleanup_policy, frozen=True)
    return OwnerState(
        adopt=spec.adopt,
        cleanup=spec.cleanup_policy,
        active=selects_namespace and not entry.deleting,
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
    return _shortened(sorted(str(ref) for ref in refs), 8)


def _shortened(items: Sequence[str], most: int) -> str:
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
    """A merge patch that also removes status fields the new status no longer has."""
    patch: dict[str, Any] = dict(wanted)
    for key in current:
        if key not in wanted and not key.startswith("kopf"):
            patch[key] = None
    return patch


__all__ = [
    "Conflict",
    "Reconciler",
    "cluster_key",
    "namespace_key",
    "status_key",
]

"""Reconciling one namespace: the unit of work.

Read the namespace, the baselines and the objects in it from the view (no GET);
select the baselines that apply; render and layer what they want (pure); diff it
with what is there (pure); make only those writes; record each baseline's outcome.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from baseline_operator.api.resource import SecurityBaseline
from baseline_operator.api.sharing import shared_label_items
from baseline_operator.controller.baselines import BaselineEntry
from baseline_operator.controller.brake import RemovalBrake
from baseline_operator.controller.events import WARNING
from baseline_operator.controller.keys import namespace_key, workloads_key
from baseline_operator.controller.status import StatusKeeper, shortened
from baseline_operator.controller.view import ClusterView
from baseline_operator.controller.writer import FailureKind, WriteFailure, Writer
from baseline_operator.kube.client import ApiError, KubeApi
from baseline_operator.policy.controls import ControlResult, audit_results, control_results
from baseline_operator.policy.diff import (
    ApplyReason,
    NamespaceChanges,
    NamespaceState,
    OwnerState,
    desired_namespace_labels,
    diff_namespace,
    pod_security_held_by_others,
)
from baseline_operator.policy.exceptions import ActiveException
from baseline_operator.policy.layering import NamespacePlan, plan_namespace
from baseline_operator.policy.names import APPLIED_PREFIX
from baseline_operator.policy.objects import NAMESPACE, POLICY_REPORT, ObjectRef
from baseline_operator.policy.podsecurity import PSA_PREFIX, enforce_raised, level_key
from baseline_operator.policy.select import selects
from baseline_operator.policy.status import Outcome, Result

log = structlog.get_logger(__name__)

# How soon a namespace whose view was stale (a write raced the watch) is looked at again:
# at once, nearly; then, while it stays stale, twice as long each time up to a cap, with
# a warning once it has stayed so for STALE_WARN_AFTER passes (a watch that stopped
# delivering, or a view that holds a version the server has left behind).
STALE_RETRY = 0.2
STALE_MAX_RETRY = 10.0
STALE_WARN_AFTER = 5


def stale_retry_delay(passes: int) -> float:
    """How long to wait before the next look at a namespace after `passes` stale passes."""
    return min(STALE_RETRY * 2.0 ** (passes - 1), STALE_MAX_RETRY)


class RetryLater(Exception):
    """Some writes were refused; the outcome is recorded and the key goes back on the queue
    with backoff."""


@dataclass
class NamespaceReconciler:
    view: ClusterView
    kube: KubeApi
    writer: Writer
    status: StatusKeeper
    brake: RemovalBrake
    enqueue: Callable[[Hashable, float], None]
    operator_namespace: str

    # The enforce level last raised in each namespace, and the API server's warnings then.
    _raised: dict[str, tuple[str | None, tuple[str, ...]]] = field(default_factory=dict)
    # The posture of each namespace as controls (for its PolicyReport), kept only while the
    # PolicyReport kind is served.
    _controls: dict[str, tuple[ControlResult, ...]] = field(default_factory=dict)
    # Conflicts of baselines that no longer select a namespace (a copy of their objects
    # left there), already posted as an Event: no status reports them.
    _orphan_conflicts: dict[str, frozenset[str]] = field(default_factory=dict)
    # Pod Security previews (dry runs, for Audit mode) by namespace and the labels they
    # were made for.
    _previews: dict[str, tuple[tuple[tuple[str, str], ...], tuple[str, ...]]] = field(
        default_factory=dict
    )
    # How many times each namespace was reconciled (logs and tests); dropped with it.
    reconciled: Counter[str] = field(default_factory=Counter)
    # Passes in a row that found the view of a namespace behind the server.
    stale_passes: Counter[str] = field(default_factory=Counter)

    def forget(self, name: str) -> None:
        """Drop everything kept for a namespace that is gone."""
        self._raised.pop(name, None)
        self._orphan_conflicts.pop(name, None)
        self._controls.pop(name, None)
        self._previews.pop(name, None)
        self.reconciled.pop(name, None)
        self.stale_passes.pop(name, None)
        self.view.forget_namespace(name)
        self.status.record(name, {})

    def kept_namespaces(self) -> int:
        """How many namespaces have per-namespace state here (a leak check)."""
        return len(
            set(self._raised)
            | set(self._previews)
            | set(self.reconciled)
            | set(self.stale_passes)
            | set(self._orphan_conflicts)
            | set(self._controls)
        )

    async def reconcile(self, name: str) -> None:
        state = self.view.namespace(name)
        if state is None or state.terminating:
            self.forget(name)
            return
        self.reconciled[name] += 1
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
            entry.name: _owner_state(
                entry, entry.name in selecting, self.brake.held(entry.name) is not None
            )
            for entry in entries.values()
        }
        plan = plan_namespace(
            name,
            enforce,
            exceptions=self._active(enforce),
            namespace_labels_now=state.labels,
        )
        observed = self.view.objects_in(name)
        changes = diff_namespace(plan.labels, plan.objects, state, observed, owners)

        raising = changes.labels is not None and enforce_raised(state.labels, changes.labels)
        failures, label_warnings = await self._execute(state, changes)
        # The API server's warnings about running pods the raised enforce level would
        # reject come with the label write itself (no dry run first: one request less per
        # namespace); they stay in the report while that level holds.
        preview: tuple[str, ...] = ()
        enforced = plan.labels.get(level_key("enforce"))
        if raising and ObjectRef(NAMESPACE, None, name) not in failures:
            preview = label_warnings
            self._raised[name] = (enforced, preview)
        elif name in self._raised and self._raised[name][0] == enforced:
            preview = self._raised[name][1]
        else:
            self._raised.pop(name, None)
        if any(f.kind is FailureKind.NAMESPACE_GONE for f in failures.values()):
            # Deleted under our feet (the watch had not said so yet): not a failure.
            log.info("namespace went away while being reconciled", namespace=name)
            self.forget(name)
            return
        if any(f.kind is FailureKind.FENCED for f in failures.values()):
            # Leadership is in doubt: nothing is judged or reported until it is back.
            raise RetryLater(f"namespace {name}: writes held back while not the leader")
        stale = [f.message for f in failures.values() if f.kind is FailureKind.STALE]
        if stale:
            # A write raced the watch, or found someone else's object where the baseline
            # wants one: this pass judged a view that was behind. Look again soon, and
            # report only what a pass over a current view finds.
            passes = self.stale_passes[name] = self.stale_passes[name] + 1
            if passes == STALE_WARN_AFTER:
                log.warning(
                    "the view of a namespace stays behind the API server",
                    namespace=name,
                    passes=passes,
                    writes=stale[:3],
                )
            self.enqueue(namespace_key(name), stale_retry_delay(passes))
            return
        self.stale_passes.pop(name, None)
        reported = {ref: f for ref, f in failures.items() if f.reported}

        psa_held = pod_security_held_by_others(plan.labels, state)
        results: dict[str, Outcome] = {}
        for baseline in enforce:
            results[baseline.name] = _enforce_outcome(
                baseline,
                selecting[baseline.name].generation,
                plan,
                changes,
                reported,
                preview,
                psa_held,
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
        await self.status.report_namespace(state, changes, failures, results)
        self._record_controls(
            name, plan, changes, reported, results, psa_held, selecting, owners, state.labels
        )
        await self._report_orphan_conflicts(state, changes, results)
        self.status.record(name, results)
        if any(f.kind is FailureKind.REFUSED for f in failures.values()):
            raise RetryLater(f"namespace {name}: {len(reported)} writes failed")

    def _active(
        self, baselines: Sequence[SecurityBaseline]
    ) -> dict[str, tuple[ActiveException, ...]]:
        """Each baseline's exceptions in force (they lower its own Pod Security enforce)."""
        return {
            baseline.name: found
            for baseline in baselines
            if (found := self.view.active_exceptions(baseline.name))
        }

    def controls_of(self, namespace: str) -> tuple[ControlResult, ...] | None:
        """The namespace's controls; None until it has been reconciled (or where the
        PolicyReport kind is not served)."""
        return self._controls.get(namespace)

    def _record_controls(
        self,
        namespace: str,
        plan: NamespacePlan,
        changes: NamespaceChanges,
        failures: Mapping[ObjectRef, WriteFailure],
        results: Mapping[str, Outcome],
        psa_held: Sequence[str],
        selecting: Mapping[str, BaselineEntry],
        owners: Mapping[str, OwnerState],
        labels: Mapping[str, str],
    ) -> None:
        """The namespace's controls after this pass; its PolicyReport is rewritten when they
        change (and only where the PolicyReport kind is served)."""
        if not self.view.served(POLICY_REPORT):
            self._controls.pop(namespace, None)
            return
        if any(
            owner.frozen and f"{APPLIED_PREFIX}{name}" in labels for name, owner in owners.items()
        ) or any(
            key.startswith(APPLIED_PREFIX) and key.removeprefix(APPLIED_PREFIX) not in owners
            for key in labels
        ):
            # A baseline the operator cannot judge now (invalid, or unknown) applies here:
            # its report stays as it is, like everything else of it (the last controls known
            # are kept; with none known, the report is not written at all).
            return
        problems = {ref: failure.message for ref, failure in failures.items()}
        for conflict in changes.conflicts:
            problems.setdefault(conflict.ref, conflict.message)
        controls: list[ControlResult] = []
        for name, outcome in sorted(results.items()):
            entry = selecting.get(name)
            if entry is None or entry.baseline is None:
                continue
            if entry.audit_mode:
                controls += audit_results(name, outcome.message, outcome.result is Result.COMPLIANT)
                continue
            spec = entry.baseline.spec
            token = spec.rbac is not None and spec.rbac.default_service_account is not None
            objects = [
                item
                for item in plan.objects
                if item.baseline == name or (item.baseline is None and token)
            ]
            pod_security = {}
            if spec.pod_security is not None:
                for mode in ("enforce", "audit", "warn"):
                    level = getattr(spec.pod_security, mode)
                    if level is not None:
                        pod_security[mode] = str(getattr(level, "value", level))
            held = [s.message for s in plan.superseded if s.baseline == name]
            held += [c.message for c in plan.collisions if c.baseline == name]
            controls += control_results(
                name,
                objects,
                pod_security,
                problems,
                held,
                psa_held,
                self.status.cluster_problems.get(name),
                has_admission=bool(
                    (spec.admission is not None and spec.admission.any_rule)
                    or spec.protect_generated_objects
                ),
            )
        frozen = tuple(controls)
        if self._controls.get(namespace) != frozen:
            self._controls[namespace] = frozen
            self.enqueue(workloads_key(namespace), 0.0)

    async def _report_orphan_conflicts(
        self, state: NamespaceState, changes: NamespaceChanges, results: Mapping[str, Outcome]
    ) -> None:
        """A conflict of a baseline that no longer selects the namespace (a copy carrying its
        labels, left alone) has no status to go to: it is posted once on the namespace."""
        messages = frozenset(
            f"baseline {c.baseline}: {c.message}"
            for c in changes.conflicts
            if c.baseline is not None and c.baseline not in results
        )
        posted = self._orphan_conflicts.get(state.name, frozenset())
        for message in sorted(messages - posted):
            self.status.events.on_namespace(state.name, state.uid, WARNING, "Conflict", message)
        if messages:
            self._orphan_conflicts[state.name] = messages
        else:
            self._orphan_conflicts.pop(state.name, None)

    async def _execute(
        self, state: NamespaceState, changes: NamespaceChanges
    ) -> tuple[dict[ObjectRef, WriteFailure], tuple[str, ...]]:
        """Make the writes; the failures by object (the namespace itself for labels), and
        the API server's warnings on the label write."""
        outcomes = await asyncio.gather(
            *(self.writer.apply(item) for item in changes.applies),
            *(self.writer.delete(item) for item in changes.deletes),
        )
        failures = {failure.ref: failure for failure in outcomes if failure is not None}
        if changes.labels is None:
            return failures, ()
        labelled = await self.writer.apply_labels(state.name, changes.labels)
        if labelled.failure is not None:
            failures[labelled.failure.ref] = labelled.failure
        return failures, labelled.warnings

    async def _preview(self, namespace: str, labels: Mapping[str, str]) -> tuple[str, ...]:
        """The API server's warnings about running pods the new enforce level would reject,
        from a dry run (an Audit-mode baseline writes no labels)."""
        wanted = shared_label_items(labels)
        cached = self._previews.get(namespace)
        if cached is not None and cached[0] == wanted:
            return cached[1]
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
        self._previews[namespace] = (wanted, warnings)
        return warnings

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
        plan = plan_namespace(
            state.name,
            [*enforce, entry.baseline],
            exceptions=self._active([*enforce, entry.baseline]),
            namespace_labels_now=state.labels,
        )
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
            would.append(f"{verb} {len(objects)} objects: {shortened(sorted(objects), 12)}")
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


def _enforce_outcome(
    baseline: SecurityBaseline,
    generation: int,
    plan: NamespacePlan,
    changes: NamespaceChanges,
    failures: Mapping[ObjectRef, WriteFailure],
    preview: tuple[str, ...],
    psa_held: Sequence[str] = (),
) -> Outcome:
    name = baseline.name
    mine = {a.desired.ref for a in changes.applies if a.desired.baseline in (name, None)}
    mine |= {d.ref for d in changes.deletes if d.baseline == name}
    mine.add(ObjectRef(NAMESPACE, None, plan.namespace))
    failed = sorted((ref, failure.message) for ref, failure in failures.items() if ref in mine)
    psa_level = plan.labels.get(level_key("enforce"))
    warnings = preview if baseline.spec.pod_security and baseline.spec.pod_security.enforce else ()
    if failed:
        _, error = failed[0]
        more = f" (+{len(failed) - 1} more)" if len(failed) > 1 else ""
        return Outcome(
            Result.FAILED, generation, "ApplyFailed", f"{error}{more}", warnings, psa_level
        )
    # Someone else's object where the baseline wants one, a copy carrying its labels, or
    # a name another baseline's object takes: reported, never silently dropped.
    conflicts = [c.message for c in changes.conflicts if c.baseline == name]
    conflicts += [c.message for c in plan.collisions if c.baseline == name]
    if baseline.spec.pod_security is not None:
        conflicts += list(psa_held)
    if conflicts:
        more = f" (+{len(conflicts) - 1} more)" if len(conflicts) > 1 else ""
        return Outcome(
            Result.CONFLICTED,
            generation,
            "Conflicted",
            conflicts[0] + more,
            warnings,
            psa_level,
        )
    lost = [s for s in plan.superseded if s.baseline == name]
    if lost:
        message = "; ".join(s.message for s in lost)
        return Outcome(Result.SUPERSEDED, generation, "Superseded", message, warnings, psa_level)
    return Outcome(Result.COMPLIANT, generation, "", "", warnings, psa_level)


def _owner_state(entry: BaselineEntry, selects_namespace: bool, held: bool) -> OwnerState:
    if held:
        # The brake holds this generation's removals: where it still applies, it writes
        # but deletes nothing; elsewhere (or while it is deleted) it stays as it is.
        spec = entry.baseline.spec if entry.baseline is not None else None
        applies = selects_namespace and not entry.deleting and spec is not None
        return OwnerState(
            adopt=spec.adopt if spec is not None else OwnerState().adopt,
            cleanup=entry.cleanup_policy,
            active=applies,
            frozen=not applies,
            hold_removal=True,
        )
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

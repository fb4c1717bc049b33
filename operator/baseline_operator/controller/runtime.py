"""The running operator: informers, the view, the work queue, the reconcilers, the resync.

Informer callbacks only decide which keys to queue. Nothing is reconciled before
every informer the reconciler reads has listed its kind once: a partial view
could lower a Pod Security level or recreate an object that exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog

from baseline_operator.api.exception import format_time, parse_time
from baseline_operator.api.kinds import BASELINE_EXCEPTION
from baseline_operator.controller.baselines import BaselineEntry, baseline_entry
from baseline_operator.controller.brake import RemovalBrake
from baseline_operator.controller.cluster_objects import ClusterObjectsReconciler
from baseline_operator.controller.events import EventRecorder
from baseline_operator.controller.exceptions import (
    ExceptionEntry,
    ExceptionKeeper,
    exception_entry,
    utc_now,
)
from baseline_operator.controller.informer import Informer, Key
from baseline_operator.controller.keys import (
    STATUS_DEBOUNCE,
    cluster_key,
    exception_key,
    namespace_key,
    status_key,
    workloads_key,
)
from baseline_operator.controller.metrics import MetricSamples, OperatorMetrics
from baseline_operator.controller.namespaces import NamespaceReconciler
from baseline_operator.controller.options import OperatorOptions
from baseline_operator.controller.queue import WorkQueue
from baseline_operator.controller.status import StatusKeeper
from baseline_operator.controller.view import ClusterView
from baseline_operator.controller.workloads import WorkloadAuditor
from baseline_operator.controller.writer import Writer
from baseline_operator.kube.client import KubeApi
from baseline_operator.policy.diff import NamespaceState, ObservedObject, observe_namespace
from baseline_operator.policy.names import (
    FIELD_MANAGER,
    MANAGED_BY_KEY,
    MANAGED_BY_VALUE,
    is_managed,
)
from baseline_operator.policy.objects import (
    CLUSTER_KINDS,
    NAMESPACE,
    NAMESPACED_KINDS,
    POD,
    POLICY_REPORT,
    SECURITY_BASELINE,
    SERVICE_ACCOUNT,
    Body,
    ObjectRef,
)
from baseline_operator.policy.select import selects, unserved_first
from baseline_operator.policy.status import Result
from baseline_operator.policy.workloads import NamespaceWorkloads, pod_essence, workload_status

log = structlog.get_logger(__name__)

# How long one finalizer attempt waits for the cleanup before kopf retries it.
FINALIZE_WAIT = 60.0
MANAGED_SELECTOR = f"{MANAGED_BY_KEY}={MANAGED_BY_VALUE}"


def _namespace(body: Body) -> NamespaceState:
    return observe_namespace(body, FIELD_MANAGER)


def _resource_version(
    entry: BaselineEntry | NamespaceState | ObservedObject | ExceptionEntry,
) -> str | None:
    return entry.resource_version


def _pod_version(pod: dict[str, Any]) -> str | None:
    version = pod["metadata"].get("resourceVersion")
    return version if isinstance(version, str) else None


@dataclass
class Runtime:
    kube: KubeApi
    options: OperatorOptions = field(default_factory=OperatorOptions)
    # The one clock exceptions are judged by (and status times stamped with); tests replace
    # it and call `self.exceptions.wake()`.
    clock: Callable[[], datetime] = utc_now
    # Prometheus metrics of this process, if served (controller/metrics.py).
    metrics: OperatorMetrics | None = None

    def __post_init__(self) -> None:
        kube, options = self.kube, self.options
        watch = options.watch_timeout
        self.baselines = Informer[BaselineEntry](
            kube,
            SECURITY_BASELINE,
            baseline_entry,
            self._on_baseline,
            _resource_version,
            watch_timeout=watch,
        )
        self.namespaces = Informer[NamespaceState](
            kube,
            NAMESPACE,
            _namespace,
            self._on_namespace,
            _resource_version,
            metadata_only=True,
            watch_timeout=watch,
        )
        self.objects = {
            kind: Informer[ObservedObject](
                kube,
                kind,
                self._managed_only,
                self._on_object,
                _resource_version,
                label_selector=MANAGED_SELECTOR,
                watch_timeout=watch,
            )
            for kind in (*NAMESPACED_KINDS, *CLUSTER_KINDS, POLICY_REPORT)
        }
        self.default_accounts = Informer[ObservedObject](
            kube,
            SERVICE_ACCOUNT,
            self._default_account,
            self._on_object,
            _resource_version,
            field_selector="metadata.name=default",
            watch_timeout=watch,
        )
        self.exception_informer = Informer[ExceptionEntry](
            kube,
            BASELINE_EXCEPTION,
            exception_entry,
            self._on_exception,
            _resource_version,
            watch_timeout=watch,
        )
        self.pods: Informer[dict[str, Any]] | None = None
        self.view = ClusterView(
            self.baselines,
            self.namespaces,
            self.objects,
            self.default_accounts,
            found_for=options.resync_seconds,
            clock=time.monotonic,
            exceptions_informer=self.exception_informer,
        )
        self.queue = WorkQueue(
            self._process,
            workers=options.workers,
            retain=self._retain,
            observe=self.metrics.on_work if self.metrics else lambda key, seconds, failed: None,
        )
        if self.metrics is not None:
            self.metrics.watch(self.metric_samples)
        queue = self.queue
        self.events = events = EventRecorder(kube, options.instance, busy=lambda: queue.backlog > 0)
        writer = Writer(kube, self.view)
        self.brake = RemovalBrake(
            self.view,
            options.namespace,
            share=options.removal_brake_share,
            minimum=options.removal_brake_minimum,
        )
        self.status = StatusKeeper(
            view=self.view,
            kube=kube,
            events=events,
            enqueue=self._enqueue,
            operator_namespace=options.namespace,
            now=lambda: format_time(self.clock()),
            workloads_of=self._workloads_of,
            removal_held=self._removal_held,
            exceptions_of=lambda name: self.exceptions.summary_of(name),  # noqa: PLW0108 (made below)
        )
        self.exceptions = ExceptionKeeper(
            view=self.view,
            kube=kube,
            events=events,
            enqueue=self._enqueue,
            affect=self._exceptions_changed,
            clock=lambda: self.clock(),  # noqa: PLW0108 (tests replace self.clock)
        )
        self.namespace_reconciler = NamespaceReconciler(
            view=self.view,
            kube=kube,
            writer=writer,
            status=self.status,
            brake=self.brake,
            enqueue=self._enqueue,
            operator_namespace=options.namespace,
        )
        self.cluster_reconciler = ClusterObjectsReconciler(
            view=self.view,
            writer=writer,
            status=self.status,
            brake=self.brake,
            operator_username=options.operator_username,
            eso_username=options.eso_username,
        )
        self.auditor = WorkloadAuditor(
            view=self.view,
            kube=kube,
            events=events,
            enqueue_status=lambda name: self._enqueue(status_key(name), STATUS_DEBOUNCE),
            operator_namespace=options.namespace,
            controls_of=self.namespace_reconciler.controls_of,
        )
        self._triggers: dict[str, tuple[Any, ...]] = {}
        self._resync: asyncio.Task[None] | None = None
        self._timer: asyncio.Task[None] | None = None
        self._starter: asyncio.Task[None] | None = None
        self._event_sender: asyncio.Task[None] | None = None
        # Set once every informer the reconciler reads has listed its kind.
        self.ready = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle

    def _core_informers(self) -> list[Informer[Any]]:
        return [
            self.baselines,
            self.namespaces,
            *self.objects.values(),
            self.default_accounts,
            self.exception_informer,
        ]

    def start(self) -> None:
        for informer in self._core_informers():
            informer.start()
        self._starter = asyncio.create_task(self._start_when_synced(), name="start")
        self._event_sender = asyncio.create_task(self.events.run(), name="events")

    async def _start_when_synced(self) -> None:
        await asyncio.gather(*(informer.synced.wait() for informer in self._core_informers()))
        self.ready.set()
        log.info(
            "caches synced",
            namespaces=len(self.namespaces),
            objects=sum(len(informer) for informer in self.objects.values()),
            baselines=len(self.baselines),
        )
        self._update_pod_watch()
        for entry in self.view.baselines().values():
            self.brake.update(entry)
        # Exceptions first: one that expired while the operator was down ends before
        # anything else is looked at.
        self.exceptions.catch_up()
        self.enqueue_everything()
        self.queue.start()
        self._resync = asyncio.create_task(self._resync_loop(), name="resync")
        self._timer = asyncio.create_task(self.exceptions.run_timer(), name="exception-timer")

    async def stop(self) -> None:
        for task in (self._starter, self._resync, self._timer, self._event_sender):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.queue.stop()
        for informer in [*self._core_informers(), *([self.pods] if self.pods else [])]:
            await informer.stop()

    @property
    def idle(self) -> bool:
        """Nothing to reconcile and no Event waiting to be posted."""
        return self.ready.is_set() and self.queue.idle and self.events.idle

    async def _resync_loop(self) -> None:
        while True:
            await asyncio.sleep(self.options.resync_seconds)
            self.auditor.reports_served = None  # the PolicyReport CRD may have come or gone
            self.enqueue_everything()

    def enqueue_everything(self) -> None:
        enforcing = [
            entry.baseline
            for entry in self.view.baselines().values()
            if entry.enforcing and entry.baseline is not None
        ]
        names = unserved_first(
            ((name, self._labels_of(name)) for name in self.view.namespace_names()),
            enforcing,
            self.options.namespace,
        )
        self.queue.add_all(namespace_key(name) for name in names)
        if self.pods is not None:
            self.queue.add_all(workloads_key(name) for name in names)
        for name in self.view.baselines():
            self.queue.add(cluster_key(name))
        self.queue.add_all(exception_key(name) for name in sorted(self.view.exceptions()))

    def _labels_of(self, namespace: str) -> Mapping[str, str]:
        state = self.view.namespace(namespace)
        return state.labels if state is not None else {}

    def _enqueue(self, key: Hashable, delay: float = 0.0) -> None:
        if self.ready.is_set():
            self.queue.add(key, delay)

    async def _process(self, key: Any) -> None:
        match key:
            case ("namespace", str(name)):
                await self.namespace_reconciler.reconcile(name)
            case ("cluster", str(name)):
                await self.cluster_reconciler.reconcile(name)
            case ("status", str(name)):
                await self.status.write_status(name)
            case ("exception", str(name)):
                await self.exceptions.write(name)
            case ("workloads", str(namespace)):
                if self.pods is not None and not self.pods.synced.is_set():
                    await self.pods.synced.wait()
                await self.auditor.audit_namespace(namespace)
            case _:
                raise ValueError(f"unknown work key {key!r}")

    def _retain(self, key: Hashable) -> bool:
        match key:
            case ("namespace" | "workloads", str(name)):
                return self.namespaces.get("", name) is not None
            case ("cluster" | "status", str(name)):
                return self.baselines.get("", name) is not None
            case ("exception", str(name)):
                return self.exception_informer.get("", name) is not None
        return True

    # ------------------------------------------------------------------ workload audit

    def _update_pod_watch(self) -> None:
        """Pods are watched only while a baseline audits workloads (the largest collection in
        a cluster costs nothing otherwise)."""
        wanted = self.options.workload_audit and any(
            entry.baseline is not None
            and entry.baseline.spec.workload_audit is not None
            and entry.baseline.spec.workload_audit.enabled
            for entry in self.view.baselines().values()
        )
        if wanted and self.pods is None:
            self.pods = Informer[dict[str, Any]](
                self.kube,
                POD,
                pod_essence,
                self._on_pod,
                _pod_version,
                watch_timeout=self.options.watch_timeout,
            )
            self.view.pods_informer = self.pods
            self.pods.start()
            self.queue.add_all(workloads_key(name) for name in self.view.namespace_names())
        elif not wanted and self.pods is not None:
            pods, self.pods = self.pods, None
            self.view.pods_informer = None
            asyncio.get_running_loop().create_task(pods.stop())
            self.queue.add_all(workloads_key(name) for name in self.view.namespace_names())

    def _removal_held(self, baseline: str) -> str | None:
        held = self.brake.held(baseline)
        return held.message(baseline) if held is not None else None

    def _workloads_of(self, baseline: str) -> tuple[dict[str, int], list[dict[str, Any]]] | None:
        entry = self.view.baselines().get(baseline)
        if entry is None or entry.baseline is None:
            return None
        section = entry.baseline.spec.workload_audit
        if section is None or not section.enabled:
            return None
        return workload_status(self.auditor.summaries.get(baseline, {}))

    # ------------------------------------------------------------------ triggers

    def _on_baseline(self, key: Key, old: BaselineEntry | None, new: BaselineEntry | None) -> None:
        name = key[1]
        # Its exceptions are judged against it (its limits, its existence).
        self.exceptions.refresh()
        if new is None:
            self._triggers.pop(name, None)
            self.status.forget_baseline(name)
            self.auditor.forget(name)
            self.view.forget_baseline(name)
            self.brake.forget(name)
            if self.ready.is_set():
                self.queue.add(cluster_key(name))
                self.queue.add_all(namespace_key(ns) for ns in self.view.namespace_names())
                self._update_pod_watch()
            return
        if self._triggers.get(name) != new.trigger:
            self._triggers[name] = new.trigger
            if self.ready.is_set():
                self.brake.update(new)  # before any namespace is looked at for this generation
                self._update_pod_watch()
                self.enqueue_everything()
        self._enqueue(status_key(name), 0.0)

    def _on_exception(
        self, key: Key, old: ExceptionEntry | None, new: ExceptionEntry | None
    ) -> None:
        name = key[1]
        if new is None:
            self.exceptions.forget(name)
        self.exceptions.refresh()
        if new is not None:
            self._enqueue(exception_key(name))

    def _exceptions_changed(self, baseline: str) -> None:
        """A baseline's exceptions in force changed: its admission policies, the namespaces
        it selects (Pod Security) and their workloads are looked at again."""
        if not self.ready.is_set():
            return
        self.queue.add(cluster_key(baseline))
        entry = self.view.baselines().get(baseline)
        if entry is None or entry.baseline is None:
            return
        for name in self.view.namespace_names():
            state = self.view.namespace(name)
            if state is None or state.terminating:
                continue
            if selects(entry.baseline, name, state.labels, self.options.namespace):
                self.queue.add(namespace_key(name))
                if self.pods is not None:
                    self.queue.add(workloads_key(name))

    def _managed_only(self, body: Body) -> ObservedObject | None:
        # The emulator does no label filtering: the selector is checked here as well.
        labels = (body.get("metadata") or {}).get("labels") or {}
        return self.view.observed(body) if is_managed(labels) else None

    def _default_account(self, body: Body) -> ObservedObject | None:
        name = (body.get("metadata") or {}).get("name")
        return self.view.observed(body) if name == "default" else None

    def _on_namespace(
        self, key: Key, old: NamespaceState | None, new: NamespaceState | None
    ) -> None:
        self.view.settle(ObjectRef(NAMESPACE, None, key[1]), new)
        if (
            old is not None
            and new is not None
            and old.labels == new.labels
            and (old.terminating == new.terminating)
        ):
            return  # only its status or annotations moved: nothing selection reads
        name = key[1]
        self._enqueue(namespace_key(name))
        if self.pods is not None:
            self._enqueue(workloads_key(name))

    def _on_object(self, key: Key, old: ObservedObject | None, new: ObservedObject | None) -> None:
        namespace, _ = key
        observed = new or old
        if observed is not None and self.view.settle(observed.ref, new):
            return  # the operator's own write coming back
        if namespace:
            self._enqueue(namespace_key(namespace))
            return
        if observed is not None and observed.owner:
            self._enqueue(cluster_key(observed.owner))

    def _on_pod(self, key: Key, old: Any, new: Any) -> None:
        if old != new:
            self._enqueue(workloads_key(key[0]))

    # ------------------------------------------------------------------ finalizer

    async def finalize(self, name: str) -> list[str]:
        """Clean up after a deleted baseline; what is left (empty when done)."""
        await self.ready.wait()
        self.view.mark_leaving(name)
        entry = self.view.baselines().get(name)
        if entry is not None and self.brake.update(entry):
            self.queue.add(status_key(name))
        held = self.brake.held(name)
        if held is not None:
            return [held.message(name)]
        keys = [cluster_key(name), *(namespace_key(ns) for ns in self.view.namespace_names())]
        self.queue.add_all(keys)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.queue.join(keys), timeout=FINALIZE_WAIT)
        entry = self.view.baselines().get(name)
        orphan = entry is not None and entry.cleanup_policy.value == "Orphan"
        return self.view.remains_of(name, include_objects=not orphan)

    # ------------------------------------------------------------------ introspection

    def metric_samples(self) -> MetricSamples | None:
        """The states Prometheus reads (controller/metrics.py), once the caches are synced."""
        if not self.ready.is_set():
            return None
        informers = {
            informer.kind.plural + ("/default" if informer is self.default_accounts else ""): (
                informer.stats.watch_restarts,
                informer.stats.relists_after_gone,
                len(informer),
            )
            for informer in [*self._core_informers(), *([self.pods] if self.pods else [])]
        }
        namespaces: dict[str, dict[str, int]] = {}
        for name in self.view.baselines():
            outcomes = self.status.outcomes_of(name)
            states = {"selected": len(outcomes)}
            for result in Result:
                states[result.value.lower()] = 0
            for outcome in outcomes.values():
                states[outcome.result.value.lower()] += 1
            namespaces[name] = states
        findings: Counter[str] = Counter()
        pods = 0
        per_namespace: dict[str, NamespaceWorkloads] = {}
        for summaries in self.auditor.summaries.values():
            for namespace, summary in summaries.items():
                # Every baseline sees the same pods there; the widest configuration counts.
                if (
                    namespace not in per_namespace
                    or summary.findings > per_namespace[namespace].findings
                ):
                    per_namespace[namespace] = summary
        for summary in per_namespace.values():
            pods += summary.pods
            for report in summary.non_compliant:
                findings.update(finding.check_id for finding in report.failing)
        exceptions: dict[str, tuple[int, float | None]] = {}
        now = self.clock()
        for name in self.view.baselines():
            counted = self.exceptions.summary_of(name)
            if counted is None:
                continue
            expiry = counted.get("nextExpiry")
            seconds = (parse_time(expiry) - now).total_seconds() if expiry else None
            exceptions[name] = (int(counted.get("active", 0)), seconds)
        return MetricSamples(
            exceptions=exceptions,
            queue_depth=self.queue.depth,
            events_waiting=self.events.waiting,
            events_dropped=self.events.dropped,
            queue_oldest_age=self.queue.oldest_age(),
            informers=informers,
            namespaces=namespaces,
            pods_audited=pods,
            findings=dict(findings),
        )

    def kept_per_namespace(self) -> dict[str, int]:
        """Sizes of everything kept per namespace (for leak checks in tests)."""
        return {
            "queue": self.queue.tracked(),
            "reconciler": self.namespace_reconciler.kept_namespaces(),
            "outcomes": sum(len(v) for v in self.status.outcomes.values()),
            "pending_writes": self.view.pending_writes(),
            "found_objects": self.view.found_objects(),
            "workload_summaries": sum(len(v) for v in self.auditor.summaries.values()),
        }

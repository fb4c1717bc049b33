"""The running operator: the work queue, the reconciler, and the resync loop.

Handlers call the `on_*` methods, which only decide which keys to queue.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from baseline_operator.api.spec import CleanupPolicy
from baseline_operator.controller.cache import ClusterView, IndexLike, baseline_entry
from baseline_operator.controller.events import EventRecorder, now_rfc3339
from baseline_operator.controller.queue import WorkQueue
from baseline_operator.controller.reconciler import (
    STATUS_DEBOUNCE,
    Reconciler,
    cluster_key,
    namespace_key,
    status_key,
)
from baseline_operator.controller.workloads import WorkloadAuditor, workloads_key
from baseline_operator.kube.client import KubeApi
from baseline_operator.policy.names import OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT
from baseline_operator.policy.workloads import workload_status

log = structlog.get_logger(__name__)

# How long one finalizer attempt waits for the cleanup before kopf retries it.
FINALIZE_WAIT = 60.0


@dataclass(frozen=True)
class RuntimeOptions:
    namespace: str = OPERATOR_NAMESPACE
    service_account: str = OPERATOR_SERVICE_ACCOUNT
    workers: int = 4
    resync_seconds: float = 300.0
    instance: str = "baseline-operator"
    workload_audit: bool = True

    @property
    def username(self) -> str:
        return f"system:serviceaccount:{self.namespace}:{self.service_account}"


@dataclass
class Runtime:
    kube: KubeApi
    indexes: Mapping[str, IndexLike]
    options: RuntimeOptions = field(default_factory=RuntimeOptions)
    operator_username: str | None = None

    def __post_init__(self) -> None:
        self.view = ClusterView(self.indexes)
        self.queue = WorkQueue(self._process, workers=self.options.workers)
        events = EventRecorder(self.kube, self.options.instance)
        self.auditor = WorkloadAuditor(
            view=self.view,
            kube=self.kube,
            events=events,
            enqueue_status=lambda name: self.queue.add(status_key(name), STATUS_DEBOUNCE),
            operator_namespace=self.options.namespace,
        )
        self.reconciler = Reconciler(
            view=self.view,
            kube=self.kube,
            events=events,
            enqueue=self.queue.add,
            operator_namespace=self.options.namespace,
            operator_username=self.operator_username or self.options.username,
            now=now_rfc3339,
            workloads_of=self._workloads_of,
        )
        self._triggers: dict[str, tuple[Any, ...]] = {}
        self._resync: asyncio.Task[None] | None = None
        # kopf holds handlers back until every index is listed; the first call means ready.
        self.ready = asyncio.Event()

    async def _process(self, key: Any) -> None:
        match key:
            case ("workloads", str(namespace)):
                await self.auditor.audit_namespace(namespace)
            case _:
                await self.reconciler.process(key)

    def _workloads_of(self, baseline: str) -> tuple[dict[str, int], list[dict[str, Any]]] | None:
        entry = self.view.baselines().get(baseline)
        if entry is None or entry.baseline is None:
            return None
        section = entry.baseline.spec.workload_audit
        if section is None or not section.enabled:
            return None
        return workload_status(self.auditor.summaries.get(baseline, {}))

    def start(self) -> None:
        self.queue.start()
        self._resync = asyncio.create_task(self._resync_loop(), name="resync")

    async def stop(self) -> None:
        if self._resync is not None:
            self._resync.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._resync
        await self.queue.stop()

    async def _resync_loop(self) -> None:
        await self.ready.wait()
        while True:
            await asyncio.sleep(self.options.resync_seconds)
            self.enqueue_everything()

    def enqueue_everything(self) -> None:
        names = self.view.namespace_names()
        self.queue.add_all(namespace_key(name) for name in names)
        if self.options.workload_audit:
            self.auditor.reports_served = None  # the PolicyReport CRD may have come or gone
            self.queue.add_all(workloads_key(name) for name in names)
        for name in self.view.baselines():
            self.queue.add(cluster_key(name))

    # ------------------------------------------------------------------ triggers

    def on_baseline(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        self.ready.set()
        name = body.get("metadata", {}).get("name", "")
        if event_type == "DELETED":
            self._triggers.pop(name, None)
            self.reconciler.outcomes.pop(name, None)
            self.auditor.forget(name)
            self.queue.add(cluster_key(name))
            self.queue.add_all(namespace_key(ns) for ns in self.view.namespace_names())
            return
        entry = baseline_entry(body)
        if self._triggers.get(name) != entry.trigger:
            self._triggers[name] = entry.trigger
            self.enqueue_everything()
        self.queue.add(status_key(name), 0.0)

    def on_namespace(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        self.ready.set()
        name = body.get("metadata", {}).get("name", "")
        self.queue.add(namespace_key(name))
        if self.options.workload_audit:
            self.queue.add(workloads_key(name))

    def on_workload(self, body: Mapping[str, Any]) -> None:
        self.ready.set()
        namespace = body.get("metadata", {}).get("namespace")
        if namespace:
            self.queue.add(workloads_key(namespace))

    def on_object(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        self.ready.set()
        metadata = body.get("metadata", {})
        namespace = metadata.get("namespace")
        if namespace:
            self.queue.add(namespace_key(namespace))
            return
        owner = (metadata.get("labels") or {}).get("security.baseline.dev/baseline")
        if owner:
            self.queue.add(cluster_key(owner))

    async def finalize(self, name: str) -> list[str]:
        """Clean up after a deleted baseline; what is left (empty when done)."""
        self.ready.set()
        keys = [cluster_key(name), *(namespace_key(ns) for ns in self.view.namespace_names())]
        self.queue.add_all(keys)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.queue.join(keys), timeout=FINALIZE_WAIT)
        entry = self.view.baselines().get(name)
        orphan = entry is not None and entry.cleanup_policy is CleanupPolicy.ORPHAN
        return self.view.remains_of(name, include_objects=not orphan)

"""Workload audit in the cluster: pods checked as they appear and change.

Pods come from a watch (no periodic full lists). For each namespace, the pods
are judged against the checklist configuration of every baseline that selects
it with `workloadAudit.enabled`; the results feed the baselines' status, an
Event on the namespace when its findings change, and, when the PolicyReport
CRD (wgpolicyk8s.io/v1alpha2) is installed, one bounded PolicyReport per
namespace.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from baseline_operator.controller.events import NORMAL, WARNING, EventRecorder
from baseline_operator.controller.view import ClusterView
from baseline_operator.kube.client import ApiError, KubeApi
from baseline_operator.policy.checklist import ChecklistConfig, Waiver
from baseline_operator.policy.controls import ControlResult
from baseline_operator.policy.diff import in_sync, with_desired_hash
from baseline_operator.policy.exceptions import waivers_for
from baseline_operator.policy.objects import POLICY_REPORT, DesiredObject, ObjectRef
from baseline_operator.policy.select import selects
from baseline_operator.policy.workloads import (
    POLICY_REPORT_NAME,
    NamespaceWorkloads,
    WaiversOf,
    audit_pods,
    namespace_message,
    policy_report,
)

log = structlog.get_logger(__name__)


@dataclass
class WorkloadAuditor:
    view: ClusterView
    kube: KubeApi
    events: EventRecorder
    enqueue_status: Callable[[str], None]
    operator_namespace: str
    # The namespace's posture as controls (from its last reconcile), merged into its report.
    # None until the namespace has been reconciled: no report is written before then.
    controls_of: Callable[[str], Sequence[ControlResult] | None] = lambda _: ()

    # baseline -> namespace -> what its pods get wrong
    summaries: dict[str, dict[str, NamespaceWorkloads]] = field(default_factory=dict)
    # Whether the API server serves PolicyReports; None until a write has told.
    reports_served: bool | None = None

    async def audit_namespace(self, name: str) -> None:
        state = self.view.namespace(name)
        results: dict[str, NamespaceWorkloads] = {}
        if state is not None and not state.terminating:
            pods = self.view.pods_in(name)
            for entry in self.view.baselines().values():
                baseline = entry.baseline
                if (
                    baseline is None
                    or entry.deleting
                    or baseline.spec.workload_audit is None
                    or not baseline.spec.workload_audit.enabled
                    or not selects(baseline, name, state.labels, self.operator_namespace)
                ):
                    continue
                results[entry.name] = audit_pods(
                    pods,
                    ChecklistConfig.from_baseline(baseline),
                    self._waivers(entry.name, name, state.labels),
                )

        before = {b: per_ns[name] for b, per_ns in self.summaries.items() if name in per_ns}
        for owner in set(before) | set(results):
            per_namespace = self.summaries.setdefault(owner, {})
            if owner in results:
                per_namespace[name] = results[owner]
            else:
                per_namespace.pop(name, None)
            if before.get(owner) != results.get(owner):
                self.enqueue_status(owner)

        if state is None or state.terminating:
            return
        await self._report_change(name, state.uid, before, results)
        await self._write_policy_report(name, results)

    def _waivers(
        self, baseline: str, namespace: str, namespace_labels: Mapping[str, str]
    ) -> WaiversOf | None:
        """Which checks the baseline's exceptions in force waive for a pod here."""
        active = self.view.active_exceptions(baseline)
        if not active:
            return None

        def of(pod_labels: Mapping[str, Any]) -> Mapping[str, Waiver]:
            return waivers_for(active, namespace, namespace_labels, pod_labels)

        return of

    async def _report_change(
        self,
        namespace: str,
        uid: str | None,
        before: dict[str, NamespaceWorkloads],
        after: dict[str, NamespaceWorkloads],
    ) -> None:
        if not before or not after:
            return  # a first look (after a start, or by a new baseline) is no news
        old = {b: summary.key() for b, summary in before.items()}
        new = {b: summary.key() for b, summary in after.items()}
        if old == new:
            return
        # All baselines see the same pods; the widest configuration reports the most.
        summary = max(after.values(), key=lambda s: (len(s.non_compliant), s.findings))
        message = namespace_message(summary.pods, summary.non_compliant)
        kind = WARNING if summary.non_compliant else NORMAL
        self.events.on_namespace(namespace, uid, kind, "WorkloadFindings", message)

    async def _write_policy_report(
        self, namespace: str, results: dict[str, NamespaceWorkloads]
    ) -> None:
        if self.reports_served is False or not self.view.served(POLICY_REPORT):
            return  # the kind is not served: no request to find that out again
        known = self.controls_of(namespace)
        if known is None:
            return  # its reconcile has not run yet; it queues this namespace again when done
        ref = ObjectRef(POLICY_REPORT, namespace, POLICY_REPORT_NAME)
        current = self.view.objects_of(POLICY_REPORT, namespace).get(ref)
        controls = [control.wire(namespace) for control in known]
        seen = self.view.watched_version(ref)
        try:
            if results or controls:
                report = policy_report(namespace, results, controls)
                desired = DesiredObject(ref, report, None)
                if current is None or not in_sync(current, desired):
                    answer = await self.kube.apply(with_desired_hash(desired))
                    self.view.wrote(ref, answer.body, seen=seen)
            elif current is not None and current.managed:
                await self.kube.delete(ref, current.uid)
                self.view.wrote(ref, None, seen=seen)
        except ApiError as exc:
            if exc.not_found:
                self.reports_served = False  # looked at again on the next resync
                return
            log.warning("policy report not written", namespace=namespace, error=str(exc))
            return
        if results or controls:
            self.reports_served = True

    def forget(self, baseline: str) -> None:
        self.summaries.pop(baseline, None)

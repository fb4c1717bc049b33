"""Workload audit in the cluster: what running pods get wrong, per namespace and baseline.

Pods arrive from a watch. Only what the checklist reads is kept of each one
(`pod_essence`), so the cache stays small. Findings are bounded where they are
reported: a namespace summary keeps counts and at most `MAX_REPORTED` pods; a
PolicyReport holds at most `MAX_POLICY_REPORT_RESULTS` results. Nothing grows
without bound in etcd.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from baseline_operator.api.status import MAX_REPORTED
from baseline_operator.policy.checklist import (
    FAIL,
    SKIP,
    ChecklistConfig,
    Finding,
    Severity,
    Waiver,
    check_pod,
)
from baseline_operator.policy.names import MANAGED_BY_KEY, MANAGED_BY_VALUE

POLICY_REPORT_NAME = "baseline-operator-workloads"
MAX_POLICY_REPORT_RESULTS = 100

_KEPT_SPEC = (
    "containers",
    "initContainers",
    "ephemeralContainers",
    "securityContext",
    "hostNetwork",
    "hostPID",
    "hostIPC",
)
_KEPT_CONTAINER = ("name", "image", "securityContext", "resources", "ports")


def pod_essence(body: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a Pod the hardening checklist reads (and its identity)."""
    metadata = body.get("metadata") or {}
    spec = body.get("spec") or {}
    kept: dict[str, Any] = {key: spec[key] for key in _KEPT_SPEC if key in spec}
    for key in ("containers", "initContainers", "ephemeralContainers"):
        if isinstance(kept.get(key), list):
            kept[key] = [
                {field: item[field] for field in _KEPT_CONTAINER if field in item}
                for item in kept[key]
                if isinstance(item, Mapping)
            ]
    volumes = spec.get("volumes")
    if isinstance(volumes, list):
        kept["volumes"] = [
            {"name": volume.get("name"), "hostPath": volume["hostPath"]}
            for volume in volumes
            if isinstance(volume, Mapping) and "hostPath" in volume
        ]
    return {
        "metadata": {
            "name": metadata.get("name"),
            "namespace": metadata.get("namespace"),
            "uid": metadata.get("uid"),
            "labels": dict(metadata.get("labels") or {}),
            "resourceVersion": metadata.get("resourceVersion"),
        },
        "spec": kept,
    }


@dataclass(frozen=True)
class PodReport:
    """A pod's findings: those that fail, and those an active exception waives (skip)."""

    namespace: str
    pod: str
    uid: str | None
    findings: tuple[Finding, ...]

    @property
    def failing(self) -> tuple[Finding, ...]:
        return tuple(finding for finding in self.findings if finding.result == FAIL)

    @property
    def skipped(self) -> tuple[Finding, ...]:
        return tuple(finding for finding in self.findings if finding.result == SKIP)

    @property
    def worst(self) -> Severity:
        return max((finding.severity for finding in self.failing), default=Severity.LOW)

    @property
    def check_ids(self) -> list[str]:
        """The checks the pod fails (waived ones are not failures)."""
        return sorted({finding.check_id for finding in self.failing})


# Check id -> the exception that waives it, for a pod (by its labels).
WaiversOf = Callable[[Mapping[str, Any]], Mapping[str, Waiver]]


@dataclass(frozen=True)
class NamespaceWorkloads:
    """One namespace's pods judged against one baseline's checklist configuration."""

    pods: int
    # Pods with at least one finding that fails.
    non_compliant: tuple[PodReport, ...] = field(default=())
    # Pods whose every finding an active exception waives.
    waived: tuple[PodReport, ...] = field(default=())

    @property
    def findings(self) -> int:
        """Findings that fail."""
        return sum(len(report.failing) for report in self.non_compliant)

    @property
    def skipped(self) -> int:
        """Findings active exceptions waive (reported as skip)."""
        return sum(len(report.skipped) for report in (*self.non_compliant, *self.waived))

    def key(self) -> tuple[Any, ...]:
        """What changing means: the pods with findings, and each finding's result (a fail
        turning into a skip, or back, is a change)."""
        return (
            self.pods,
            tuple(
                (r.pod, tuple(sorted((f.check_id, f.result) for f in r.findings)))
                for r in sorted((*self.non_compliant, *self.waived), key=lambda r: r.pod)
            ),
        )


def audit_pods(
    pods: Iterable[Mapping[str, Any]],
    config: ChecklistConfig,
    waivers: WaiversOf | None = None,
) -> NamespaceWorkloads:
    """Judge pods; `waivers` says, for a pod's labels, which checks active exceptions waive
    (policy.exceptions.waivers_for)."""
    failing: list[PodReport] = []
    waived: list[PodReport] = []
    count = 0
    for pod in pods:
        count += 1
        metadata = pod.get("metadata") or {}
        waived_checks = waivers(metadata.get("labels") or {}) if waivers is not None else None
        findings = tuple(check_pod(metadata, pod.get("spec") or {}, config, waived_checks))
        if findings:
            report = PodReport(
                metadata.get("namespace", ""),
                metadata.get("name", ""),
                metadata.get("uid"),
                findings,
            )
            (failing if report.failing else waived).append(report)
    failing.sort(key=lambda report: report.pod)
    waived.sort(key=lambda report: report.pod)
    return NamespaceWorkloads(count, tuple(failing), tuple(waived))


def workload_status(
    per_namespace: Mapping[str, NamespaceWorkloads],
) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """status.workloads and status.nonCompliantWorkloads of a baseline (worst pods first)."""
    totals = {"pods": 0, "nonCompliantPods": 0, "findings": 0, "skipped": 0}
    reports: list[PodReport] = []
    for summary in per_namespace.values():
        totals["pods"] += summary.pods
        totals["nonCompliantPods"] += len(summary.non_compliant)
        totals["findings"] += summary.findings
        totals["skipped"] += summary.skipped
        reports.extend(summary.non_compliant)
    reports.sort(key=lambda r: (-r.worst.rank, r.namespace, r.pod))
    listed = [
        {"namespace": r.namespace, "pod": r.pod, "checks": r.check_ids[:32]}
        for r in reports[:MAX_REPORTED]
    ]
    return totals, listed


def namespace_message(pods: int, reports: Sequence[PodReport]) -> str:
    """The Event text for a namespace whose findings changed."""
    if not reports:
        return f"all {pods} pods pass the hardening checks"
    shown = "; ".join(f"{r.pod} ({', '.join(r.check_ids)})" for r in reports[:5])
    more = f"; +{len(reports) - 5} more" if len(reports) > 5 else ""
    return f"{len(reports)} of {pods} pods fail hardening checks: {shown}{more}"


def policy_report(
    namespace: str,
    per_baseline: Mapping[str, NamespaceWorkloads],
    controls: Sequence[Mapping[str, Any]] = (),
) -> dict[str, Any]:
    """One bounded wgpolicyk8s.io/v1alpha2 PolicyReport for the namespace: the posture's
    controls (policy.controls) and the workload findings."""
    results: list[dict[str, Any]] = []
    counts = {FAIL: 0, SKIP: 0}
    pods = 0
    for baseline, summary in sorted(per_baseline.items()):
        pods = max(pods, summary.pods)
        for report in sorted((*summary.non_compliant, *summary.waived), key=lambda r: r.pod):
            for finding in report.findings:
                counts[finding.result] += 1
                result: dict[str, Any] = {
                    "policy": baseline,
                    "rule": finding.check_id,
                    "result": finding.result,
                    "severity": finding.severity.value,
                    "message": finding.message[:1024],
                    "source": "baseline-operator",
                    "scored": True,
                    "resources": [
                        {
                            "apiVersion": "v1",
                            "kind": "Pod",
                            "namespace": namespace,
                            "name": report.pod,
                            **({"uid": report.uid} if report.uid else {}),
                        }
                    ],
                }
                if finding.waived_by is not None:
                    result["properties"] = {
                        "exception": finding.waived_by.exception,
                        "expires": finding.waived_by.expires,
                    }
                results.append(result)
    failed_pods = len({r["resources"][0]["name"] for r in results})
    passed_controls = 0
    for control in controls:
        results.append(dict(control))
        if control["result"] == FAIL:
            counts[FAIL] += 1
        elif control["result"] == SKIP:
            counts[SKIP] += 1
        else:
            passed_controls += 1
    # Failures first, so that the bound never hides one behind a skip or a pass.
    results.sort(key=lambda r: {FAIL: 0, SKIP: 2}.get(r["result"], 1))
    return {
        "apiVersion": "wgpolicyk8s.io/v1alpha2",
        "kind": "PolicyReport",
        "metadata": {
            "name": POLICY_REPORT_NAME,
            "namespace": namespace,
            "labels": {MANAGED_BY_KEY: MANAGED_BY_VALUE},
        },
        "summary": {
            "pass": max(pods - failed_pods, 0) + passed_controls,
            "fail": counts[FAIL],
            "warn": 0,
            "error": 0,
            "skip": counts[SKIP],
        },
        "results": results[:MAX_POLICY_REPORT_RESULTS],
    }

"""Kubernetes Events, so that `kubectl describe` shows what the operator did and why.

Events are reports: posting one is best effort and never fails a reconcile.
The operator posts them only when something happens (a write, a new conflict,
a failure), never for a check that found everything in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import structlog

from baseline_operator.kube.client import ApiError, KubeApi
from baseline_operator.policy.objects import EVENT

log = structlog.get_logger(__name__)

NORMAL = "Normal"
WARNING = "Warning"
# Events about cluster-scoped objects (a SecurityBaseline, a BaselineException) live here,
# as kopf's do.
CLUSTER_EVENTS_NAMESPACE = "default"
_MAX_MESSAGE = 1024


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class EventRecorder:
    kube: KubeApi
    instance: str = "baseline-operator"

    async def on_namespace(
        self, namespace: str, uid: str | None, type_: str, reason: str, message: str
    ) -> None:
        involved = {"apiVersion": "v1", "kind": "Namespace", "name": namespace}
        if uid:
            involved["uid"] = uid
        # A Namespace is cluster-scoped: its Events live in `default` too.
        await self._post(CLUSTER_EVENTS_NAMESPACE, involved, type_, reason, message)

    async def on_baseline(
        self, name: str, uid: str | None, type_: str, reason: str, message: str
    ) -> None:
        involved = {
            "apiVersion": "security.baseline.dev/v1alpha1",
            "kind": "SecurityBaseline",
            "name": name,
        }
        if uid:
            involved["uid"] = uid
        await self._post(CLUSTER_EVENTS_NAMESPACE, involved, type_, reason, message)

    async def on_exception(
        self, name: str, uid: str | None, type_: str, reason: str, message: str
    ) -> None:
        involved = {
            "apiVersion": "security.baseline.dev/v1alpha1",
            "kind": "BaselineException",
            "name": name,
        }
        if uid:
            involved["uid"] = uid
        await self._post(CLUSTER_EVENTS_NAMESPACE, involved, type_, reason, message)

    async def _post(
        self, namespace: str, involved: dict[str, str], type_: str, reason: str, message: str
    ) -> None:
        stamp = now_rfc3339()
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{involved['name']}.", "namespace": namespace},
            "involvedObject": involved,
            "type": type_,
            "reason": reason,
            "message": message[:_MAX_MESSAGE],
            "source": {"component": "baseline-operator"},
            "reportingComponent": "baseline-operator",
            "reportingInstance": self.instance,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        try:
            await self.kube.create(EVENT, namespace, body)
        except ApiError as exc:
            log.info("event not posted", reason=reason, involved=involved["name"], error=str(exc))

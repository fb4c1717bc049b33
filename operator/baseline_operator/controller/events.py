"""Kubernetes Events, so that `kubectl describe` shows what the operator did and why.

Events are reports: posting one is best effort and never fails or slows a reconcile.
The operator records them only when something happens (a write, a new conflict,
a failure), never for a check that found everything in place.

As client-go's event broadcaster does, recording only puts the Event in a bounded
buffer; one sender posts them, one at a time, at a limited rate (a token bucket).
A rollout over thousands of namespaces records one Event per namespace: posted at
once, they would add a tenth to the rollout's requests and slow the writes that
matter. So they trail behind it. When the buffer is full a Normal Event is dropped
(the oldest Normal one gives way to a Warning), and the drops are counted
(`baseline_operator_events_dropped_total`).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

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

# Events posted per second once the burst is spent, the burst, and how many may wait.
EVENT_RATE = 10.0
EVENT_BURST = 100
EVENT_BUFFER = 5000


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class EventRecorder:
    kube: KubeApi
    instance: str = "baseline-operator"
    rate: float = EVENT_RATE
    burst: int = EVENT_BURST
    capacity: int = EVENT_BUFFER
    clock: Callable[[], float] = time.monotonic

    dropped: int = field(default=0, init=False)
    posted: int = field(default=0, init=False)
    _waiting: deque[tuple[str, dict[str, Any]]] = field(default_factory=deque, init=False)
    _sending: bool = field(default=False, init=False)
    _wake: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _tokens: float = field(default=0.0, init=False)
    _filled_at: float | None = field(default=None, init=False)  # None: a full bucket at first

    # ------------------------------------------------------------------ recording

    def on_namespace(
        self, namespace: str, uid: str | None, type_: str, reason: str, message: str
    ) -> None:
        involved = {"apiVersion": "v1", "kind": "Namespace", "name": namespace}
        if uid:
            involved["uid"] = uid
        # A Namespace is cluster-scoped: its Events live in `default` too.
        self._record(CLUSTER_EVENTS_NAMESPACE, involved, type_, reason, message)

    def on_baseline(
        self, name: str, uid: str | None, type_: str, reason: str, message: str
    ) -> None:
        involved = {
            "apiVersion": "security.baseline.dev/v1alpha1",
            "kind": "SecurityBaseline",
            "name": name,
        }
        if uid:
            involved["uid"] = uid
        self._record(CLUSTER_EVENTS_NAMESPACE, involved, type_, reason, message)

    def on_exception(
        self, name: str, uid: str | None, type_: str, reason: str, message: str
    ) -> None:
        involved = {
            "apiVersion": "security.baseline.dev/v1alpha1",
            "kind": "BaselineException",
            "name": name,
        }
        if uid:
            involved["uid"] = uid
        self._record(CLUSTER_EVENTS_NAMESPACE, involved, type_, reason, message)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def idle(self) -> bool:
        """Nothing waits to be posted and nothing is being posted."""
        return not self._waiting and not self._sending

    def _record(
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
        if len(self._waiting) >= self.capacity and not self._make_room(type_):
            self.dropped += 1
            return
        self._waiting.append((namespace, body))
        self._wake.set()

    def _make_room(self, type_: str) -> bool:
        """A Warning takes the place of the oldest Normal Event waiting, if any."""
        if type_ != WARNING:
            return False
        for index, (_, body) in enumerate(self._waiting):
            if body["type"] != WARNING:
                del self._waiting[index]
                self.dropped += 1
                return True
        return False

    # ------------------------------------------------------------------ sending

    async def run(self) -> None:
        """Post what is recorded, one at a time, within the rate; until cancelled."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._waiting:
                await asyncio.sleep(self._wait_for_token())
                namespace, body = self._waiting.popleft()
                self._sending = True
                try:
                    await self.kube.create(EVENT, namespace, body)
                    self.posted += 1
                except ApiError as exc:
                    involved = body["involvedObject"]["name"]
                    log.info(
                        "event not posted", reason=body["reason"], involved=involved, error=str(exc)
                    )
                finally:
                    self._sending = False

    def _wait_for_token(self) -> float:
        """Take a token; how long to wait first (0 when one is there)."""
        now = self.clock()
        if self._filled_at is None:
            self._tokens, self._filled_at = float(self.burst), now
        self._tokens = min(float(self.burst), self._tokens + (now - self._filled_at) * self.rate)
        self._filled_at = now
        self._tokens -= 1.0
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

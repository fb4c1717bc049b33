"""Kubernetes Events, so that `kubectl describe` shows what the operator did and why.

Events are reports: posting one is best effort and never fails or slows a reconcile.
The operator records them only when something happens (a write, a new conflict,
a failure), never for a check that found everything in place.

As client-go's event broadcaster does, recording only puts the Event in a bounded
buffer; one sender posts them, one at a time, at a limited rate (a token bucket).
A rollout over thousands of namespaces records one Event per namespace: posted at
once, they would add a tenth to the rollout's requests and slow the writes that
matter. So they trail behind it: while the reconcilers have a backlog, Events go out
at one per second, and the burst is kept for when the backlog is gone. When the buffer
is full a Normal Event is dropped (the oldest Normal one gives way to a Warning), and
the drops are counted (`baseline_operator_events_dropped_total`).
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

from baseline_operator.api.kinds import (
    BASELINE_EXCEPTION,
    EVENT,
    NAMESPACE,
    SECURITY_BASELINE,
    Kind,
)
from baseline_operator.kube.client import ApiError, KubeApi

log = structlog.get_logger(__name__)

NORMAL = "Normal"
WARNING = "Warning"
# Events about cluster-scoped objects (a Namespace, a SecurityBaseline, a
# BaselineException) live here, as kopf's do.
CLUSTER_EVENTS_NAMESPACE = "default"
_MAX_MESSAGE = 1024

# Events posted per second once the burst is spent, the burst, and how many may wait.
EVENT_RATE = 10.0
EVENT_BURST = 100
EVENT_BUFFER = 5000
# Events posted per second while the reconcilers have a backlog (a rollout under way).
EVENT_RATE_BUSY = 1.0


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """An Event waiting to be posted, as little as makes its body (built when posted: a
    rollout over thousands of namespaces keeps thousands of these for minutes)."""

    involved: Kind
    name: str
    uid: str | None
    type: str
    reason: str
    message: str
    stamp: str

    def body(self, instance: str) -> dict[str, Any]:
        involved = {
            "apiVersion": self.involved.api_version,
            "kind": self.involved.kind,
            "name": self.name,
        }
        if self.uid:
            involved["uid"] = self.uid
        return {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{self.name}.", "namespace": CLUSTER_EVENTS_NAMESPACE},
            "involvedObject": involved,
            "type": self.type,
            "reason": self.reason,
            "message": self.message,
            "source": {"component": "baseline-operator"},
            "reportingComponent": "baseline-operator",
            "reportingInstance": instance,
            "firstTimestamp": self.stamp,
            "lastTimestamp": self.stamp,
            "count": 1,
        }


@dataclass
class EventRecorder:
    kube: KubeApi
    instance: str = "baseline-operator"
    rate: float = EVENT_RATE
    burst: int = EVENT_BURST
    capacity: int = EVENT_BUFFER
    clock: Callable[[], float] = time.monotonic
    # Whether the reconcilers have work waiting: the posture's writes come first.
    busy: Callable[[], bool] = lambda: False
    busy_rate: float = EVENT_RATE_BUSY

    dropped: int = field(default=0, init=False)
    posted: int = field(default=0, init=False)
    _waiting: deque[RecordedEvent] = field(default_factory=deque, init=False)
    _sending: bool = field(default=False, init=False)
    _wake: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _tokens: float = field(default=0.0, init=False)
    _filled_at: float | None = field(default=None, init=False)  # None: a full bucket at first
    _sent_at: float = field(default=float("-inf"), init=False)  # when the last token was due
    # The last stamp made, shared by the Events recorded within the same second.
    _stamp: str = field(default="", init=False)

    # ------------------------------------------------------------------ recording

    def on_namespace(
        self, namespace: str, uid: str | None, type_: str, reason: str, message: str
    ) -> None:
        self._record(NAMESPACE, namespace, uid, type_, reason, message)

    def on_baseline(
        self, name: str, uid: str | None, type_: str, reason: str, message: str
    ) -> None:
        self._record(SECURITY_BASELINE, name, uid, type_, reason, message)

    def on_exception(
        self, name: str, uid: str | None, type_: str, reason: str, message: str
    ) -> None:
        self._record(BASELINE_EXCEPTION, name, uid, type_, reason, message)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def idle(self) -> bool:
        """Nothing waits to be posted and nothing is being posted."""
        return not self._waiting and not self._sending

    def _record(
        self,
        involved: Kind,
        name: str,
        uid: str | None,
        type_: str,
        reason: str,
        message: str,
    ) -> None:
        if len(self._waiting) >= self.capacity and not self._make_room(type_):
            self.dropped += 1
            return
        stamp = now_rfc3339()
        if stamp == self._stamp:
            stamp = self._stamp
        self._stamp = stamp
        self._waiting.append(
            RecordedEvent(involved, name, uid, type_, reason, message[:_MAX_MESSAGE], stamp)
        )
        self._wake.set()

    def _make_room(self, type_: str) -> bool:
        """A Warning takes the place of the oldest Normal Event waiting, if any."""
        if type_ != WARNING:
            return False
        for index, event in enumerate(self._waiting):
            if event.type != WARNING:
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
                event = self._waiting.popleft()
                self._sending = True
                try:
                    await self.kube.create(
                        EVENT, CLUSTER_EVENTS_NAMESPACE, event.body(self.instance)
                    )
                    self.posted += 1
                except ApiError as exc:
                    log.info(
                        "event not posted", reason=event.reason, involved=event.name, error=str(exc)
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
        wait = 0.0 if self._tokens >= 0 else -self._tokens / self.rate
        if self.busy():
            # The bucket refills faster than this spends it: the burst is whole afterwards.
            wait = max(wait, self._sent_at + 1.0 / self.busy_rate - now)
        self._sent_at = now + wait
        return wait

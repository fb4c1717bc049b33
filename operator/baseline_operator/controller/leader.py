"""One active replica: leader election on a coordination.k8s.io/v1 Lease, with fencing.

A replica acts only while it holds the Lease `baseline-operator-leader` in the
operator's namespace. Three durations govern it (client-go's, by default):

- `duration` (15 s): how long the Lease is good for after a renewal; another replica
  may take it over once it has seen the Lease unchanged for that long;
- `renew_deadline` (10 s): how long after the start of its last successful renewal the
  holder still writes. Past it, `may_write()` says no: the operator's client sends no
  further write (KubeApi.may_write), and the holder steps down. It is shorter than
  `duration`, so the holder has stopped writing before anyone else can acquire;
- `renew_every` (2 s): the renewal (and, while waiting, the acquisition) period; after a
  failed renewal the holder tries again sooner (every `renew_every / 4`), and no attempt
  may take longer than `1.5 * renew_every`, so a flaky or slow API server gets many
  chances within the deadline.

Every deadline is measured on this process's monotonic clock, and a replica waiting
for its turn judges expiry by how long it has itself seen the Lease unchanged (as
client-go does), not by comparing its wall clock with the holder's: clock skew between
machines cannot make two leaders. A frozen process (SIGSTOP, a paused VM) finds on
waking that its monotonic deadline has passed and writes nothing. Renewal runs on its
own schedule with its own client (short timeouts, no retries of its own, outside the
workers' request budget), and each attempt is cut short at the deadline.

Updates carry the resourceVersion they read, so two replicas racing for an expired
Lease cannot both win.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

import structlog

from baseline_operator.kube.client import ApiError
from baseline_operator.policy.objects import LEASE, NAMESPACE, Body, Kind, ObjectRef

log = structlog.get_logger(__name__)

LEASE_NAME = "baseline-operator-leader"
_MICRO_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"
T = TypeVar("T")


class LeaseApi(Protocol):
    """What leader election needs of the API client (KubeApi)."""

    async def get(self, ref: ObjectRef) -> Body | None: ...
    async def create(self, kind: Kind, namespace: str | None, body: Body) -> Body: ...
    async def replace(self, ref: ObjectRef, body: Body) -> Body: ...


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(_MICRO_TIME)


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    for pattern in (_MICRO_TIME, "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.strptime(text, pattern).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def claim(
    lease: dict[str, Any] | None,
    identity: str,
    duration: int,
    now: datetime,
    unchanged_for: float | None = None,
) -> dict[str, Any] | None:
    """The Lease spec to write to become (or stay) leader, or None while another holds it.

    Another's Lease is expired when its renewTime plus its duration is past `now` and, if
    `unchanged_for` is given, this replica has seen it unchanged for at least its duration
    on its own clock (which no skew between machines can shorten).
    """
    spec = (lease or {}).get("spec") or {}
    holder = spec.get("holderIdentity")
    renewed = parse_time(spec.get("renewTime")) or parse_time(spec.get("acquireTime"))
    held_for = int(spec.get("leaseDurationSeconds") or duration)
    expired = renewed is None or now > renewed + timedelta(seconds=held_for)
    if unchanged_for is not None and unchanged_for < held_for:
        expired = False
    if holder and holder != identity and not expired:
        return None
    transitions = int(spec.get("leaseTransitions") or 0)
    taking_over = holder != identity
    return {
        "holderIdentity": identity,
        "leaseDurationSeconds": duration,
        "acquireTime": format_time(now)
        if taking_over
        else spec.get("acquireTime", format_time(now)),
        "renewTime": format_time(now),
        "leaseTransitions": transitions + 1 if taking_over and holder else transitions,
    }


class LeaseContended(Exception):
    """A renewal met a Lease changed since it was read; whose change it was is not known."""


def _utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class LeaderElector:
    kube: LeaseApi
    namespace: str
    identity: str
    duration: int = 15
    renew_every: float = 2.0
    # Writes stop this long after the start of the last successful renewal (None: two
    # thirds of `duration`, client-go's 10 s of 15).
    renew_deadline: float | None = None
    clock: Callable[[], float] = time.monotonic
    wall_clock: Callable[[], datetime] = _utc_now
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    # Monotonic time until which this replica may write (None: it never led).
    _valid_until: float | None = field(default=None, init=False, repr=False)
    _stepped_down: bool = field(default=False, init=False, repr=False)
    # The Lease as last seen (its resourceVersion) and since when, on our clock.
    _seen_version: str | None = field(default=None, init=False, repr=False)
    _seen_since: float = field(default=0.0, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.renew_deadline is None:
            self.renew_deadline = self.duration * 2 / 3
        if not 0 < self.renew_every < self.renew_deadline < self.duration:
            raise ValueError(
                "leader election needs 0 < renew_every < renew_deadline < duration, got "
                f"{self.renew_every} / {self.renew_deadline} / {self.duration}"
            )

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef(LEASE, self.namespace, LEASE_NAME)

    @property
    def deadline(self) -> float:
        assert self.renew_deadline is not None
        return self.renew_deadline

    # ------------------------------------------------------------------ fencing

    def may_write(self) -> bool:
        """Whether this replica may write now: it leads and its renew deadline has not
        passed. The operator's client asks before every write (KubeApi.may_write)."""
        return (
            not self._stepped_down
            and self._valid_until is not None
            and self.clock() < self._valid_until
        )

    def remaining(self) -> float:
        """Seconds of writing left before the renew deadline (0 when not leading)."""
        if self._stepped_down or self._valid_until is None:
            return 0.0
        return max(0.0, self._valid_until - self.clock())

    # ------------------------------------------------------------------ the Lease

    def _unchanged_for(self, lease: Body | None) -> float:
        version = str(((lease or {}).get("metadata") or {}).get("resourceVersion") or "")
        now = self.clock()
        if version != self._seen_version:
            self._seen_version, self._seen_since = version, now
        return now - self._seen_since

    async def try_lead(self) -> bool:
        """One attempt to take or renew the Lease; on success, writes are allowed until
        the renew deadline counted from the start of this attempt."""
        started = self.clock()
        lease = await self.kube.get(self.ref)
        unchanged_for = self._unchanged_for(lease) if lease is not None else None
        spec = claim(lease, self.identity, self.duration, self.wall_clock(), unchanged_for)
        if spec is None:
            return False
        body: dict[str, Any] = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": LEASE_NAME, "namespace": self.namespace},
            "spec": spec,
        }
        try:
            if lease is None:
                answer = await self._create_lease(body)
            else:
                body["metadata"]["resourceVersion"] = lease["metadata"]["resourceVersion"]
                answer = await self.kube.replace(self.ref, body)
        except ApiError as exc:
            if not (exc.conflict or exc.already_exists):
                raise
            if self._valid_until is not None and not self._stepped_down:
                # Leading, this proves nothing: an earlier renewal of ours, cut short here
                # but still on its way, may have landed first. Look again (soon).
                raise LeaseContended(f"lease {LEASE_NAME} changed under a renewal") from exc
            return False  # another replica wrote first
        if not self._stepped_down:
            self._valid_until = started + self.deadline
        self._unchanged_for(answer)
        return True

    async def _create_lease(self, body: dict[str, Any]) -> Body:
        try:
            return await self.kube.create(LEASE, self.namespace, body)
        except ApiError as exc:
            if not exc.not_found:
                raise
            # Run from a workstation before manifests/base was applied, the operator's own
            # namespace may not exist yet: make it, restricted like the one the manifests make.
            log.info("creating the operator's namespace", namespace=self.namespace)
            await self.kube.create(
                NAMESPACE,
                None,
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {
                        "name": self.namespace,
                        "labels": {
                            f"pod-security.kubernetes.io/{mode}": "restricted"
                            for mode in ("enforce", "audit", "warn")
                        },
                    },
                },
            )
            return await self.kube.create(LEASE, self.namespace, body)

    async def _within(self, seconds: float, work: Coroutine[Any, Any, T]) -> T:
        """`work`, cut short (TimeoutError) after `seconds` on this elector's clock."""
        task = asyncio.ensure_future(work)
        timer = asyncio.ensure_future(self.sleep(max(seconds, 0.0)))
        try:
            await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            timer.cancel()
            task.cancel()
            raise
        timer.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            raise TimeoutError(f"no answer within {seconds:.1f}s")
        return task.result()

    async def acquire(self) -> None:
        logged = False
        while True:
            try:
                if await self._within(self.deadline, self.try_lead()):
                    log.info(
                        "leading",
                        identity=self.identity,
                        lease=LEASE_NAME,
                        writes_for=round(self.remaining(), 1),
                    )
                    return
            except (ApiError, TimeoutError) as exc:
                log.warning("leader election failed", error=str(exc))
            if not logged:
                log.info("waiting for leadership", identity=self.identity)
                logged = True
            await self.sleep(self.renew_every)

    def step_down(self, why: str) -> None:
        """Write nothing more, for good."""
        if not self._stepped_down:
            log.error("stepping down", identity=self.identity, reason=why)
        self._stepped_down = True

    async def hold(self, lost: asyncio.Event) -> None:
        """Renew every `renew_every` until the Lease is taken or the renew deadline passes
        without a renewal; then stop writing at once and set `lost`. Cancelled, it stops
        writing too (without setting `lost`)."""
        pause = self.renew_every
        try:
            while not lost.is_set():
                await self.sleep(pause)
                left = self.remaining()
                if left <= 0:
                    self.step_down("the renew deadline passed without a renewal")
                    break
                pause = self.renew_every / 4  # unless this attempt succeeds
                try:
                    if await self._within(min(left, self.renew_every * 1.5), self.try_lead()):
                        pause = self.renew_every
                        continue
                    self.step_down("leadership taken by another replica")
                    break
                except (ApiError, LeaseContended, TimeoutError) as exc:
                    log.warning(
                        "lease renewal failed",
                        error=str(exc),
                        writes_for=round(self.remaining(), 1),
                    )
        except asyncio.CancelledError:
            self._stepped_down = True
            raise
        self._stepped_down = True
        lost.set()

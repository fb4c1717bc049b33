"""Leader election decisions (the Lease arithmetic) and fencing, without a server."""

from __future__ import annotations

import asyncio
import copy
import random
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from baseline_operator.controller.leader import (
    LeaderElector,
    LeaseContended,
    claim,
    format_time,
)
from baseline_operator.kube.client import ApiError, Endpoint, KubeApi
from baseline_operator.policy.objects import LEASE, Kind, ObjectRef

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def lease(holder: str, renewed: datetime, transitions: int = 0) -> dict[str, Any]:
    return {
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": 15,
            "acquireTime": format_time(renewed),
            "renewTime": format_time(renewed),
            "leaseTransitions": transitions,
        }
    }


def test_a_free_lease_is_taken() -> None:
    spec = claim(None, "a", 15, NOW)
    assert spec is not None and spec["holderIdentity"] == "a" and spec["leaseTransitions"] == 0


def test_a_live_lease_of_another_is_respected() -> None:
    assert claim(lease("b", NOW - timedelta(seconds=5)), "a", 15, NOW) is None


def test_an_expired_lease_is_taken_over_and_counted() -> None:
    spec = claim(lease("b", NOW - timedelta(seconds=16), transitions=2), "a", 15, NOW)
    assert spec is not None
    assert spec["holderIdentity"] == "a" and spec["leaseTransitions"] == 3
    assert spec["acquireTime"] == format_time(NOW)


def test_the_holder_renews_without_a_transition() -> None:
    before = NOW - timedelta(seconds=5)
    spec = claim(lease("a", before, transitions=1), "a", 15, NOW)
    assert spec is not None
    assert spec["leaseTransitions"] == 1
    assert spec["acquireTime"] == format_time(before) and spec["renewTime"] == format_time(NOW)


# ----------------------------------------------------------------------------- fencing
#
# The elector on a fake clock (monotonic and wall, advanced only by its `sleep` or by the
# test) against a fake Lease store that checks resourceVersions as the API server does.


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> datetime:
        return NOW + timedelta(seconds=self.now - 1000.0)

    async def sleep(self, seconds: float) -> None:
        until = self.now + seconds
        while self.now < until:  # noqa: ASYNC110 (virtual time: the test moves it on)
            await asyncio.sleep(0)

    async def run(self, work: Awaitable[Any], step: float = 0.05, limit: float = 120.0) -> None:
        """Run `work` to its end, time going on by `step` whenever everything waits."""
        task = asyncio.ensure_future(work)
        started = self.now
        while not task.done():
            assert self.now - started < limit, "did not end in virtual time"
            for _ in range(5):
                await asyncio.sleep(0)
            self.now += step
        await task


class LeaseStore:
    """One Lease, as the API server keeps it; `fail` refuses requests, `hang` never answers."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.fail = False
        self.flaky: random.Random | None = None  # ...or 30% of them, at random
        self.requests = 0
        self.hang = False
        self.get_takes = 0.0
        self.writes: list[tuple[float, str]] = []  # (time, holder)

    async def _answer(self) -> None:
        if self.hang:
            await asyncio.Event().wait()
        self.requests += 1
        if self.fail or (self.flaky is not None and self.flaky.random() < 0.3):
            raise ApiError(503, "ServiceUnavailable", "down")

    async def get(self, ref: ObjectRef) -> dict[str, Any] | None:
        await self._answer()
        self.clock.now += self.get_takes
        return copy.deepcopy(self.lease)

    async def create(
        self, kind: Kind, namespace: str | None, body: dict[str, Any]
    ) -> dict[str, Any]:
        await self._answer()
        if self.lease is not None:
            raise ApiError(409, "AlreadyExists", "exists")
        return self._store(body)

    async def replace(self, ref: ObjectRef, body: dict[str, Any]) -> dict[str, Any]:
        await self._answer()
        assert self.lease is not None
        if body["metadata"]["resourceVersion"] != self.lease["metadata"]["resourceVersion"]:
            raise ApiError(409, "Conflict", "stale resourceVersion")
        return self._store(body)

    def _store(self, body: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        self.lease = copy.deepcopy(body)
        self.lease["metadata"]["resourceVersion"] = str(self.version)
        self.writes.append((self.clock.now, body["spec"]["holderIdentity"]))
        return copy.deepcopy(self.lease)


def elector(store: LeaseStore, clock: Clock, identity: str) -> LeaderElector:
    return LeaderElector(
        store,
        "ops",
        identity,
        clock=clock.monotonic,
        wall_clock=clock.wall,
        sleep=clock.sleep,
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(clock: Clock) -> LeaseStore:
    return LeaseStore(clock)


async def test_defaults_follow_client_go(store: LeaseStore, clock: Clock) -> None:
    leader = elector(store, clock, "a")
    assert (leader.duration, leader.renew_deadline, leader.renew_every) == (15, 10, 2)


@pytest.mark.parametrize(("every", "deadline", "duration"), [(2, 15, 15), (10, 10, 15), (0, 5, 15)])
def test_durations_that_cannot_fence_are_refused(
    every: float, deadline: float, duration: int
) -> None:
    with pytest.raises(ValueError, match="renew_every < renew_deadline < duration"):
        LeaderElector(LeaseStore(Clock()), "ops", "a", duration, every, renew_deadline=deadline)


async def test_no_write_before_leading(store: LeaseStore, clock: Clock) -> None:
    assert not elector(store, clock, "a").may_write()


async def test_writes_stop_at_the_renew_deadline_before_anyone_else_can_acquire(
    store: LeaseStore, clock: Clock
) -> None:
    leader, standby = elector(store, clock, "a"), elector(store, clock, "b")
    acquired_at = clock.now
    assert await leader.try_lead()
    assert not await standby.try_lead()  # the standby sees the renewal at once
    # The leader is frozen from here on: it never renews again. The standby polls.
    took_over_at = None
    while took_over_at is None:
        clock.now += 0.25
        if await standby.try_lead():
            took_over_at = clock.now
        # Never two writers: while the standby may write, the old leader may not.
        assert not (leader.may_write() and standby.may_write())
        if clock.now - acquired_at < 10:
            assert leader.may_write()
    assert not leader.may_write()
    assert took_over_at - acquired_at >= 15  # a full lease duration on the standby's clock
    assert store.lease is not None and store.lease["spec"]["holderIdentity"] == "b"


async def test_writing_time_counts_from_the_start_of_the_renewal(
    store: LeaseStore, clock: Clock
) -> None:
    store.get_takes = 3.0  # a slow API server: the answer comes 3 s after the request
    leader = elector(store, clock, "a")
    assert await leader.try_lead()
    assert leader.remaining() == pytest.approx(7.0)


async def test_a_standby_judges_expiry_by_its_own_clock_not_the_holders(
    store: LeaseStore, clock: Clock
) -> None:
    # The holder's wall clock is a minute behind: by the standby's wall clock, the Lease
    # it just renewed looks long expired.
    holder = LeaderElector(
        store,
        "ops",
        "a",
        clock=clock.monotonic,
        wall_clock=lambda: clock.wall() - timedelta(seconds=60),
        sleep=clock.sleep,
    )
    standby = elector(store, clock, "b")
    assert await holder.try_lead()
    assert not await standby.try_lead()
    clock.now += 14.9
    assert not await standby.try_lead()
    clock.now += 0.2
    assert not holder.may_write()
    assert await standby.try_lead()


async def test_a_renewal_that_changes_the_lease_restarts_the_standbys_count(
    store: LeaseStore, clock: Clock
) -> None:
    leader, standby = elector(store, clock, "a"), elector(store, clock, "b")
    assert await leader.try_lead()
    assert not await standby.try_lead()
    for _ in range(10):  # 20 s of renewals every 2 s
        clock.now += 2
        assert await leader.try_lead()
        assert not await standby.try_lead()
        assert leader.may_write()


async def test_a_leader_that_cannot_renew_stops_writing_at_the_deadline(
    store: LeaseStore, clock: Clock
) -> None:
    leader = elector(store, clock, "a")
    assert await leader.try_lead()
    acquired_at = clock.now
    store.fail = True
    lost = asyncio.Event()
    refused_from: list[float] = []

    async def watch_the_gate() -> None:
        while not lost.is_set():
            if not leader.may_write() and not refused_from:
                refused_from.append(clock.now)
            await asyncio.sleep(0)

    watcher = asyncio.create_task(watch_the_gate())
    await clock.run(leader.hold(lost))
    await watcher
    assert lost.is_set() and not leader.may_write()
    assert refused_from and refused_from[0] - acquired_at < 10.1  # (one step of the clock)
    assert clock.now - acquired_at < 15  # stepped down before the lease could pass
    assert [time for time, _ in store.writes] == [acquired_at]


async def test_a_hanging_renewal_is_cut_short_at_the_deadline(
    store: LeaseStore, clock: Clock
) -> None:
    leader = elector(store, clock, "a")
    assert await leader.try_lead()
    acquired_at = clock.now
    store.hang = True
    lost = asyncio.Event()
    await clock.run(leader.hold(lost))
    assert lost.is_set() and not leader.may_write()
    assert clock.now - acquired_at < 15


async def test_a_frozen_leader_writes_nothing_on_waking(store: LeaseStore, clock: Clock) -> None:
    leader = elector(store, clock, "a")
    assert await leader.try_lead()
    lost = asyncio.Event()
    holding = asyncio.create_task(leader.hold(lost))
    await asyncio.sleep(0)
    clock.now += 30  # SIGSTOP ... SIGCONT: the monotonic clock went on
    assert not leader.may_write()  # refused before the elector even runs again
    await clock.run(holding)
    assert lost.is_set()
    assert len(store.writes) == 1  # not even a renewal of the Lease


async def test_a_leader_whose_lease_was_taken_steps_down(store: LeaseStore, clock: Clock) -> None:
    leader, other = elector(store, clock, "a"), elector(store, clock, "b")
    assert await leader.try_lead()
    assert not await other.try_lead()
    clock.now += 16
    assert await other.try_lead()  # e.g. the leader's renewals were lost on the way
    leader._valid_until = clock.now + 10  # suppose the leader still thought it led
    lost = asyncio.Event()
    await clock.run(leader.hold(lost))
    assert lost.is_set() and not leader.may_write()
    assert store.lease is not None and store.lease["spec"]["holderIdentity"] == "b"


async def test_a_leader_renewing_in_time_keeps_writing(store: LeaseStore, clock: Clock) -> None:
    leader = elector(store, clock, "a")
    assert await leader.try_lead()
    lost = asyncio.Event()
    holding = asyncio.create_task(leader.hold(lost))
    while clock.now < 1100:  # 100 s of renewals every 2 s
        for _ in range(5):
            await asyncio.sleep(0)
        assert leader.may_write()
        clock.now += 0.05
    holding.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holding
    assert not lost.is_set()  # a stop is not a loss of leadership...
    assert not leader.may_write()  # ...but nothing is written after it
    assert len(store.writes) >= 45  # every 2 s (and a step)


async def test_a_flaky_api_server_does_not_cost_the_lease(store: LeaseStore, clock: Clock) -> None:
    """30% of the requests refused (half the renewals fail): a failed renewal is tried
    again soon, within the deadline, so the leader keeps leading."""
    leader = elector(store, clock, "a")
    assert await leader.try_lead()
    store.flaky = random.Random(1)
    lost = asyncio.Event()
    holding = asyncio.create_task(leader.hold(lost))
    while clock.now < 1100:
        for _ in range(5):
            await asyncio.sleep(0)
        assert leader.may_write() and not lost.is_set()
        clock.now += 0.05
    holding.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holding
    assert len(store.writes) > 10


async def test_a_renewal_that_lands_late_is_not_taken_for_a_rival(
    store: LeaseStore, clock: Clock
) -> None:
    """A renewal cut short on the client may still reach the server after the next one
    read the Lease: that one meets a Conflict, which is no sign of another leader."""
    leader = elector(store, clock, "a")
    assert await leader.try_lead()
    assert store.lease is not None
    original_get = store.get

    async def get_then_earlier_write_lands(ref: ObjectRef) -> dict[str, Any] | None:
        seen = await original_get(ref)
        store.get = original_get  # type: ignore[method-assign]
        assert store.lease is not None
        store._store(store.lease)  # our own earlier renewal, landing late
        return seen

    store.get = get_then_earlier_write_lands  # type: ignore[method-assign]
    with pytest.raises(LeaseContended):
        await leader.try_lead()
    assert leader.may_write()
    lost = asyncio.Event()
    holding = asyncio.create_task(leader.hold(lost))
    while clock.now < 1030:
        for _ in range(5):
            await asyncio.sleep(0)
        assert leader.may_write() and not lost.is_set()
        clock.now += 0.05
    holding.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holding


async def test_a_conflict_while_waiting_means_another_replica_won(
    store: LeaseStore, clock: Clock
) -> None:
    first, second = elector(store, clock, "a"), elector(store, clock, "b")
    original_get = store.get

    async def get_then_rival_creates(ref: ObjectRef) -> dict[str, Any] | None:
        seen = await original_get(ref)
        store.get = original_get  # type: ignore[method-assign]
        assert await first.try_lead()
        return seen

    store.get = get_then_rival_creates  # type: ignore[method-assign]
    assert not await second.try_lead()  # AlreadyExists: lost the race, not an error
    assert first.may_write() and not second.may_write()


async def test_the_fence_keeps_writes_from_leaving_the_client(clock: Clock) -> None:
    """Wired as the operator wires it (controller/main.py): a fenced write is not sent."""
    sent: list[str] = []
    leader = elector(LeaseStore(clock), clock, "a")
    kube = KubeApi(
        Endpoint("http://127.0.0.1:9"),
        on_request=lambda method, path, status, seconds: sent.append(method),
        may_write=leader.may_write,
    )
    with pytest.raises(ApiError) as refused:
        await kube.delete(ObjectRef(LEASE, "ops", "x"), None)
    assert refused.value.fenced and sent == []

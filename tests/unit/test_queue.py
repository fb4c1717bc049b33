"""The work queue: dedup, one worker per key, re-runs after changes, backoff, join."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

import pytest

from baseline_operator.controller.queue import WorkQueue

pytestmark = pytest.mark.looptime


async def test_a_burst_for_one_key_costs_one_run() -> None:
    runs: list[Hashable] = []
    gate = asyncio.Event()

    async def process(key: Hashable) -> None:
        runs.append(key)
        await gate.wait()

    queue = WorkQueue(process, workers=2)
    for _ in range(10):
        queue.add("ns-a")
    queue.start()
    await asyncio.sleep(0.1)
    gate.set()
    await queue.join(["ns-a"])
    await queue.stop()
    assert runs == ["ns-a"]


async def test_a_key_added_while_running_runs_again_but_never_concurrently() -> None:
    active = 0
    overlap = False
    runs = 0
    release = asyncio.Event()

    async def process(key: Hashable) -> None:
        nonlocal active, overlap, runs
        active += 1
        overlap = overlap or active > 1
        runs += 1
        if runs == 1:
            await release.wait()
        active -= 1

    queue = WorkQueue(process, workers=4)
    queue.start()
    queue.add("ns-a")
    await asyncio.sleep(0.1)
    queue.add("ns-a")  # arrives during the first run
    queue.add("ns-a")
    release.set()
    await queue.join(["ns-a"])
    await queue.stop()
    assert runs == 2 and not overlap


async def test_failures_come_back_with_backoff_and_join_waits_for_success() -> None:
    attempts: list[float] = []

    async def process(key: Hashable) -> None:
        attempts.append(asyncio.get_running_loop().time())
        if len(attempts) < 3:
            raise RuntimeError("API down")

    queue = WorkQueue(process, workers=1)
    queue.start()
    start = asyncio.get_running_loop().time()
    queue.add("ns-a")
    await queue.join(["ns-a"])
    await queue.stop()
    assert len(attempts) == 3
    gaps = [round(b - a, 1) for a, b in zip([start, *attempts], attempts, strict=False)][1:]
    assert gaps == [0.5, 1.0]


async def test_delayed_adds_collapse() -> None:
    runs = 0

    async def process(key: Hashable) -> None:
        nonlocal runs
        runs += 1

    queue = WorkQueue(process, workers=1)
    queue.start()
    for _ in range(5):
        queue.add("status", 1.0)
    await asyncio.sleep(2)
    await queue.stop()
    assert runs == 1


async def test_workers_bound_the_work_in_flight() -> None:
    active = 0
    peak = 0

    async def process(key: Hashable) -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(1)
        active -= 1

    queue = WorkQueue(process, workers=3)
    queue.start()
    keys = [f"ns-{i}" for i in range(12)]
    queue.add_all(keys)
    await queue.join(keys)
    await queue.stop()
    assert peak == 3


async def test_units_that_never_wait_leave_the_event_loop_to_others_between_them() -> None:
    # A restart checks thousands of namespaces in place, none of which makes a request: the
    # answers to a new namespace's writes must not wait for all of them.
    runs = 0
    runs_when_others_ran: list[int] = []

    async def process(key: Hashable) -> None:
        nonlocal runs
        runs += 1

    queue = WorkQueue(process, workers=4)
    for index in range(1000):
        queue.add(f"ns-{index}")
    queue.start()
    asyncio.get_running_loop().call_soon(lambda: runs_when_others_ran.append(runs))
    await queue.join([f"ns-{index}" for index in range(1000)])
    await queue.stop()
    assert runs == 1000
    assert runs_when_others_ran and runs_when_others_ran[0] <= 4

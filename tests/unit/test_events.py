"""Events are recorded without waiting and posted by one sender, at a limited rate."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from typing import Any

import pytest

from baseline_operator.controller.events import NORMAL, WARNING, EventRecorder
from baseline_operator.kube.client import ApiError


@dataclass
class RecordingApi:
    posted: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    fail: bool = False
    gate: asyncio.Event | None = None

    async def create(self, kind: Any, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            raise ApiError(403, "Forbidden", "events are not allowed")
        self.posted.append((namespace, body))
        return body


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def sending(recorder: EventRecorder):  # type: ignore[no-untyped-def]
    task = asyncio.create_task(recorder.run())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def until(check: Any, limit: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not check():
        assert loop.time() < deadline, "not in time"
        await asyncio.sleep(0.001)


async def test_recording_returns_at_once_and_the_sender_posts_in_order() -> None:
    api = RecordingApi(gate=asyncio.Event())
    recorder = EventRecorder(api)  # type: ignore[arg-type]
    async with sending(recorder):
        recorder.on_namespace("team-a", "uid-a", NORMAL, "Applied", "created NetworkPolicy x")
        recorder.on_baseline("prod", None, WARNING, "Conflict", "namespace team-a: taken")
        assert not recorder.idle  # nothing posted yet: the API has not answered
        api.gate.set()  # type: ignore[union-attr]
        await until(lambda: recorder.idle)
    assert [body["reason"] for _, body in api.posted] == ["Applied", "Conflict"]
    namespace, applied = api.posted[0]
    assert namespace == "default"
    assert applied["involvedObject"] == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "name": "team-a",
        "uid": "uid-a",
    }
    assert applied["metadata"]["generateName"] == "team-a."
    assert recorder.posted == 2


async def test_after_the_burst_events_go_out_at_the_rate() -> None:
    api = RecordingApi()
    clock = Clock()
    recorder = EventRecorder(api, rate=10.0, burst=3, clock=clock)  # type: ignore[arg-type]
    waits: list[float] = []
    for index in range(6):
        recorder.on_namespace(f"ns-{index}", None, NORMAL, "Applied", "x")
    for _ in range(6):
        waits.append(recorder._wait_for_token())
        clock.now += waits[-1]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert waits[3:] == pytest.approx([0.1, 0.1, 0.1])
    clock.now += 10.0  # a quiet while fills the bucket again, up to the burst
    assert [recorder._wait_for_token() for _ in range(4)][:3] == [0.0, 0.0, 0.0]


async def test_while_the_reconcilers_have_a_backlog_events_go_out_one_per_second() -> None:
    api = RecordingApi()
    clock = Clock()
    busy = True
    recorder = EventRecorder(  # type: ignore[arg-type]
        api, rate=10.0, burst=3, busy_rate=1.0, busy=lambda: busy, clock=clock
    )
    waits: list[float] = []
    for _ in range(4):
        waits.append(recorder._wait_for_token())
        clock.now += waits[-1]
    assert waits == pytest.approx([0.0, 1.0, 1.0, 1.0])
    busy = False  # the rollout is done: the burst was kept for it
    assert [recorder._wait_for_token() for _ in range(4)] == pytest.approx([0.0, 0.0, 0.0, 0.1])


async def test_a_full_buffer_drops_normal_events_and_a_warning_takes_a_normal_ones_place() -> None:
    recorder = EventRecorder(RecordingApi(), capacity=2)  # type: ignore[arg-type]
    recorder.on_namespace("a", None, NORMAL, "Applied", "x")
    recorder.on_namespace("b", None, NORMAL, "Applied", "x")
    recorder.on_namespace("c", None, NORMAL, "Applied", "x")  # dropped: no room
    recorder.on_namespace("d", None, WARNING, "Conflict", "x")  # "a" gives way
    assert recorder.dropped == 2
    waiting = [event.name for event in recorder._waiting]
    assert waiting == ["b", "d"]
    recorder.on_namespace("e", None, WARNING, "Conflict", "y")  # "b" gives way
    recorder.on_namespace("f", None, WARNING, "Conflict", "z")  # only Warnings: dropped
    assert [event.name for event in recorder._waiting] == ["d", "e"]
    assert recorder.dropped == 4


async def test_a_refused_event_is_logged_and_the_sender_goes_on() -> None:
    api = RecordingApi(fail=True)
    recorder = EventRecorder(api)  # type: ignore[arg-type]
    async with sending(recorder):
        recorder.on_exception("legacy", None, WARNING, "Expired", "x")
        await until(lambda: recorder.idle)
        api.fail = False
        recorder.on_exception("legacy", None, NORMAL, "Ended", "y")
        await until(lambda: recorder.idle and recorder.posted == 1)
    assert [body["reason"] for _, body in api.posted] == ["Ended"]

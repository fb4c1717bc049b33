"""A bounded work queue of keys, in the manner of client-go's workqueue.

A key is never processed by two workers at once; a key added while it is
being processed runs once more afterwards; adding a key that is already
waiting does nothing. So a burst of events for one namespace costs one
reconcile, and the number of workers bounds the work in flight. Failed keys
come back after a capped exponential backoff.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Iterable
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger(__name__)


@dataclass
class WorkQueue:
    process: Callable[[Hashable], Awaitable[None]]
    workers: int = 4
    max_backoff: float = 60.0
    # Whether to keep a key's bookkeeping after a successful run (False for a key about
    # something that is gone, e.g. a deleted namespace): nothing grows without bound.
    retain: Callable[[Hashable], bool] = lambda _: True
    # Told of every unit of work done: its key, how long it took, and whether it failed.
    observe: Callable[[Hashable, float, bool], None] = lambda key, seconds, failed: None

    _ready: asyncio.Queue[Hashable] = field(default_factory=asyncio.Queue, init=False)
    _waiting: set[Hashable] = field(default_factory=set, init=False)  # queued or delayed
    _active: set[Hashable] = field(default_factory=set, init=False)
    _again: set[Hashable] = field(default_factory=set, init=False)  # added while active
    _failures: dict[Hashable, int] = field(default_factory=dict, init=False)
    # A key's `_added` count rises with every add; `_done` records the count a finished
    # run had seen when it started, so join() knows whether a run covered its request.
    _added: dict[Hashable, int] = field(default_factory=dict, init=False)
    _done: dict[Hashable, int] = field(default_factory=dict, init=False)
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition, init=False)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list, init=False)
    _timers: set[asyncio.TimerHandle] = field(default_factory=set, init=False)
    _delayed: set[Hashable] = field(default_factory=set, init=False)
    # When each waiting key was queued (for the age of the oldest; dropped when it runs).
    _since: dict[Hashable, float] = field(default_factory=dict, init=False)

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._work(), name=f"worker-{n}") for n in range(self.workers)
        ]

    async def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    @property
    def backlog(self) -> int:
        """Keys ready to run that no worker has taken yet (delayed retries not counted)."""
        return self._ready.qsize()

    def add(self, key: Hashable, delay: float = 0.0) -> None:
        self._added[key] = self._added.get(key, 0) + 1
        if delay > 0:
            if key in self._delayed or key in self._waiting:
                return  # it will run soon enough, and will see everything up to then
            loop = asyncio.get_running_loop()
            timer: asyncio.TimerHandle | None = None

            def fire() -> None:
                if timer is not None:
                    self._timers.discard(timer)
                self._delayed.discard(key)
                self._enqueue(key)

            self._delayed.add(key)

            timer = loop.call_later(delay, fire)
            self._timers.add(timer)
            return
        self._enqueue(key)

    def add_all(self, keys: Iterable[Hashable]) -> None:
        for key in keys:
            self.add(key)

    def _enqueue(self, key: Hashable) -> None:
        if key in self._active:
            self._again.add(key)
        elif key not in self._waiting:
            self._waiting.add(key)
            self._since[key] = asyncio.get_running_loop().time()
            self._ready.put_nowait(key)

    @property
    def idle(self) -> bool:
        return not self._waiting and not self._active and not self._again and not self._timers

    async def join(self, keys: Iterable[Hashable]) -> None:
        """Wait until every key has been processed after the moment of this call."""
        wanted = {key: self._added.get(key, 0) for key in keys}
        async with self._changed:
            await self._changed.wait_for(
                lambda: all(
                    self._done.get(key, 0) >= count or key not in self._added
                    for key, count in wanted.items()
                )
            )

    async def _work(self) -> None:
        while True:
            # A unit that finds everything in place makes no request and so never yields;
            # nor does taking the next key from a queue that holds some. Without this, a
            # worker would check thousands of namespaces in one go (a restart, a resync)
            # while the answers to another namespace's writes, and the watches, wait.
            await asyncio.sleep(0)
            key = await self._ready.get()
            self._waiting.discard(key)
            self._since.pop(key, None)
            self._active.add(key)
            seen = self._added.get(key, 0)
            started = asyncio.get_running_loop().time()
            try:
                await self.process(key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failed key must not stop the worker
                self.observe(key, asyncio.get_running_loop().time() - started, True)
                failures = self._failures.get(key, 0) + 1
                self._failures[key] = failures
                delay = min(0.5 * 2 ** (failures - 1), self.max_backoff)
                log.warning(
                    "reconcile failed, retrying",
                    key=str(key),
                    error=str(exc),
                    retry_in=delay,
                    exc_info=failures == 1,
                )
                self._active.discard(key)
                self.add(key, delay)
                continue
            else:
                self._failures.pop(key, None)
                self.observe(key, asyncio.get_running_loop().time() - started, False)
            finally:
                self._ready.task_done()
            self._active.discard(key)
            async with self._changed:
                self._done[key] = max(self._done.get(key, 0), seen)
                if key in self._again:
                    self._again.discard(key)
                    self._enqueue(key)
                elif key not in self._waiting and key not in self._delayed and not self.retain(key):
                    self._added.pop(key, None)
                    self._done.pop(key, None)
                self._changed.notify_all()

    @property
    def depth(self) -> int:
        """Keys waiting or being worked on."""
        return len(self._waiting | self._active)

    def oldest_age(self) -> float:
        """How long the key that has waited longest has waited (0 when none waits)."""
        if not self._since:
            return 0.0
        return asyncio.get_running_loop().time() - min(self._since.values())

    def tracked(self) -> int:
        """How many keys the queue keeps bookkeeping for (a leak check)."""
        return len(set(self._added) | set(self._done) | set(self._failures))

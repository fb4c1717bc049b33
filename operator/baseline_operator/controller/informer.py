"""A list-and-watch cache of one kind, in the manner of client-go's informers.

One long-lived task per watched kind (never one per object) lists the kind once,
page by page, with the server-side label or field selector, then watches from the
list's resourceVersion with bookmarks, so a reconnect resumes where it stopped.
When the server answers `410 Gone` (the version was compacted), it lists again and
diffs the fresh list against what it holds: objects deleted during the gap become
deletions, so nothing is missed and nothing is kept that is gone.

Entries are compact: `transform` keeps of each object only what the reconciler
reads (and may refuse an object the server's selector let through, since the
in-process emulator does no filtering), its resourceVersion included, which
`entry_version` reads back (the store keeps nothing beside the entry: tens of
thousands of them). Every change is reported to `on_change`,
which only decides what to queue: the informer never calls the API for anyone.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import structlog

from baseline_operator.kube.client import ApiError, KubeApi, WatchEvent
from baseline_operator.policy.objects import Body, Kind

log = structlog.get_logger(__name__)

E = TypeVar("E")

# Where an object lives: its namespace ("" when cluster-scoped) and name.
Key = tuple[str, str]
ChangeHandler = Callable[[Key, "E | None", "E | None"], None]

# How long to wait before listing a kind the server does not serve (its CRD is missing).
NOT_SERVED_RETRY = 60.0
MAX_BACKOFF = 30.0


def key_of(body: Body) -> Key:
    metadata = body.get("metadata") or {}
    return (str(metadata.get("namespace") or ""), str(metadata.get("name") or ""))


def version_of(body: Body) -> str:
    return str((body.get("metadata") or {}).get("resourceVersion") or "")


@dataclass
class InformerStats:
    lists: int = 0
    relists_after_gone: int = 0
    watch_restarts: int = 0
    events: int = 0


@dataclass
class Informer(Generic[E]):
    kube: KubeApi
    kind: Kind
    transform: Callable[[Body], E | None]
    on_change: Callable[[Key, E | None, E | None], None]
    entry_version: Callable[[E], str | None]
    label_selector: str | None = None
    field_selector: str | None = None
    metadata_only: bool = False
    page_size: int = 500
    watch_timeout: int = 300

    # namespace -> name -> entry
    _store: dict[str, dict[str, E]] = field(default_factory=dict, init=False)
    synced: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    # False while the server does not serve the kind (then the store is empty).
    served: bool = field(default=True, init=False)
    stats: InformerStats = field(default_factory=InformerStats, init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False)

    # ------------------------------------------------------------------ reading

    def get(self, namespace: str, name: str) -> E | None:
        return self._store.get(namespace, {}).get(name)

    def version(self, namespace: str, name: str) -> str | None:
        found = self._store.get(namespace, {}).get(name)
        return None if found is None else self._version(found)

    def in_namespace(self, namespace: str) -> dict[str, E]:
        return dict(self._store.get(namespace, {}))

    def namespaces(self) -> Iterator[str]:
        return iter(self._store)

    def entries(self) -> Iterator[tuple[Key, E]]:
        for namespace, objects in self._store.items():
            for name, entry in objects.items():
                yield (namespace, name), entry

    def __len__(self) -> int:
        return sum(len(objects) for objects in self._store.values())

    # ------------------------------------------------------------------ running

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"informer-{self.kind.plural}")

    def relist(self) -> None:
        """List again now (a write said the kind is gone or back; a watch may not say so
        for a while)."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
            self.start()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            # Stopping: however the task ended (an error racing the cancellation) is moot.
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    async def _run(self) -> None:
        version: str | None = None
        failures = 0
        while True:
            try:
                if version is None:
                    version = await self._relist()
                async for event in self.kube.watch(
                    self.kind,
                    version,
                    label_selector=self.label_selector,
                    field_selector=self.field_selector,
                    metadata_only=self.metadata_only,
                    timeout_seconds=self.watch_timeout,
                ):
                    version = self._apply(event) or version
                failures = 0  # the server ended the stream: resume from where it stopped
            except ApiError as exc:
                if exc.kind_not_served:
                    self._not_served()
                    version = None
                    await asyncio.sleep(NOT_SERVED_RETRY)
                    continue
                if exc.gone:
                    # The version was compacted away: list again and diff against the store.
                    self.stats.relists_after_gone += 1
                    log.info("watch expired; listing again", kind=self.kind.plural)
                    version = None
                    continue
                failures += 1
                delay = self._count_restart(failures)
                log.info("watch interrupted", kind=self.kind.plural, error=str(exc), retry_in=delay)
                await asyncio.sleep(delay)
            except Exception as exc:  # an informer never dies: it lists again, as a reflector
                failures += 1
                delay = self._count_restart(failures)
                log.warning(
                    "watch failed; listing again",
                    kind=self.kind.plural,
                    error=repr(exc),
                    retry_in=delay,
                    exc_info=True,
                )
                version = None
                await asyncio.sleep(delay)

    def _count_restart(self, failures: int) -> float:
        """Count a restart of the watch; how long to wait before it, after `failures` in a
        row."""
        self.stats.watch_restarts += 1
        return min(0.5 * 2.0 ** (failures - 1), MAX_BACKOFF)

    async def _relist(self) -> str:
        """List everything (page by page) and replace the store, reporting the differences."""
        fresh: dict[str, dict[str, E]] = {}
        after: str | None = None
        version = ""
        while True:
            try:
                page = await self.kube.list_page(
                    self.kind,
                    label_selector=self.label_selector,
                    field_selector=self.field_selector,
                    metadata_only=self.metadata_only,
                    limit=self.page_size,
                    after=after,
                )
            except ApiError as exc:
                if after is not None and exc.gone:  # the continue token expired: start over
                    fresh, after = {}, None
                    continue
                raise
            if after is None:
                version = page.resource_version  # the first page's version: the snapshot's
            for body in page.items:
                # Items of a list carry no apiVersion and kind of their own.
                body.setdefault("apiVersion", self.kind.api_version)
                body.setdefault("kind", self.kind.kind)
                entry = self.transform(body)
                if entry is not None:
                    namespace, name = key_of(body)
                    fresh.setdefault(namespace, {})[name] = entry
            after = page.next
            if after is None:
                break
        self.stats.lists += 1
        self.served = True
        old, self._store = self._store, fresh
        # In a stable order (sets iterate in an order that varies from run to run).
        for namespace in sorted(set(old) | set(fresh)):
            before, now = old.get(namespace, {}), fresh.get(namespace, {})
            for name in sorted(set(before) | set(now)):
                previous, current = before.get(name), now.get(name)
                if (
                    previous is not None
                    and current is not None
                    and self._version(previous) == self._version(current)
                ):
                    continue
                self.on_change((namespace, name), previous, current)
        self.synced.set()
        return version

    def _not_served(self) -> None:
        if self.served:
            log.info("kind not served by the API server", kind=self.kind.plural)
        self.served = False
        old, self._store = self._store, {}
        for namespace, objects in old.items():
            for name, entry in objects.items():
                self.on_change((namespace, name), entry, None)
        self.synced.set()  # nothing of it exists: that is known too

    def _apply(self, event: WatchEvent) -> str | None:
        """Take one watch event into the store; the resourceVersion to resume from."""
        version = version_of(event.object)
        if event.type == "BOOKMARK":
            return version or None
        self.stats.events += 1
        namespace, name = key_of(event.object)
        objects = self._store.get(namespace, {})
        previous = objects.get(name)
        entry = None if event.type == "DELETED" else self.transform(event.object)
        if entry is None:
            if previous is None:
                return version or None
            del objects[name]
            if not objects:
                self._store.pop(namespace, None)
        else:
            if previous is not None and version and self._version(previous) == version:
                return version  # a replay of what the store holds
            self._store.setdefault(namespace, {})[name] = entry
        self.on_change((namespace, name), previous, entry)
        return version or None

    def _version(self, entry: E) -> str:
        return self.entry_version(entry) or ""

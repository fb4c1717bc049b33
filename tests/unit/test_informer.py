"""The informer against a scripted API: list, watch, bookmarks, 410 Gone, kinds not served."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from baseline_operator.api.kinds import NETWORK_POLICY
from baseline_operator.controller.informer import Informer, Key
from baseline_operator.kube.client import ApiError, Page, WatchEvent


def policy(name: str, version: str, namespace: str = "team-a") -> dict[str, Any]:
    # As list items come: no apiVersion or kind of their own.
    return {"metadata": {"name": name, "namespace": namespace, "resourceVersion": version}}


@dataclass
class ScriptedApi:
    """Answers lists from `lists` (one per call) and watches from `watches` (one per call:
    a list of events, or an exception to raise); then blocks, as an idle watch does."""

    lists: list[list[Page] | ApiError]
    watches: list[list[WatchEvent] | Exception]
    listed_selectors: list[str | None] = field(default_factory=list)
    watched_from: list[str] = field(default_factory=list)
    done: asyncio.Event = field(default_factory=asyncio.Event)

    async def list_page(self, kind: Any, **options: Any) -> Page:
        self.listed_selectors.append(options.get("label_selector"))
        script = self.lists[0]
        if isinstance(script, ApiError):
            self.lists.pop(0)
            raise script
        page = script.pop(0)
        if not script:
            self.lists.pop(0)
        return page

    async def watch(self, kind: Any, version: str, **options: Any) -> AsyncIterator[WatchEvent]:
        self.watched_from.append(version)
        if not self.watches:
            self.done.set()
            await asyncio.Event().wait()
        script = self.watches.pop(0)
        if isinstance(script, Exception):
            raise script
        for event in script:
            yield event


def informer(api: ScriptedApi, changes: list[tuple[Key, Any, Any]]) -> Informer[str]:
    def transform(body: dict[str, Any]) -> str | None:
        assert body["kind"] == "NetworkPolicy"  # filled in for list items
        return str(body["metadata"]["resourceVersion"])

    return Informer[str](
        api,  # type: ignore[arg-type]
        NETWORK_POLICY,
        transform,
        lambda key, old, new: changes.append((key, old, new)),
        lambda entry: entry,  # the entry is the resourceVersion
        label_selector="app.kubernetes.io/managed-by=baseline-operator",
    )


async def run_until_done(api: ScriptedApi, subject: Informer[str]) -> None:
    subject.start()
    await asyncio.wait_for(api.done.wait(), timeout=5)
    await subject.stop()


async def test_lists_in_pages_then_watches_from_the_lists_version() -> None:
    api = ScriptedApi(
        lists=[[Page([policy("a", "5")], "10", "more"), Page([policy("b", "7")], "11", None)]],
        watches=[
            [
                WatchEvent("MODIFIED", {**policy("a", "12"), "kind": "NetworkPolicy"}),
                WatchEvent("BOOKMARK", {"metadata": {"resourceVersion": "15"}}),
            ]
        ],
    )
    changes: list[tuple[Key, Any, Any]] = []
    subject = informer(api, changes)
    await run_until_done(api, subject)
    assert api.listed_selectors == ["app.kubernetes.io/managed-by=baseline-operator"] * 2
    # the first page's version is the snapshot's; the bookmark moves the place on
    assert api.watched_from == ["10", "15"]
    assert subject.get("team-a", "a") == "12"
    assert subject.synced.is_set()
    assert changes == [
        (("team-a", "a"), None, "5"),
        (("team-a", "b"), None, "7"),
        (("team-a", "a"), "5", "12"),
    ]


async def test_after_410_gone_a_fresh_list_is_diffed_against_the_store() -> None:
    api = ScriptedApi(
        lists=[
            [Page([policy("a", "5"), policy("b", "6")], "10", None)],
            # During the gap: b was deleted, c created, a unchanged.
            [Page([policy("a", "5"), policy("c", "20")], "21", None)],
        ],
        watches=[ApiError(410, "Expired", "too old resource version")],
    )
    changes: list[tuple[Key, Any, Any]] = []
    subject = informer(api, changes)
    await run_until_done(api, subject)
    assert subject.stats.relists_after_gone == 1
    assert api.watched_from == ["10", "21"]
    assert set(changes[2:]) == {(("team-a", "b"), "6", None), (("team-a", "c"), None, "20")}
    assert subject.get("team-a", "b") is None
    assert len(subject) == 2


async def test_a_dropped_watch_resumes_from_the_last_version_without_listing() -> None:
    api = ScriptedApi(
        lists=[[Page([policy("a", "5")], "10", None)]],
        watches=[
            [WatchEvent("DELETED", {**policy("a", "13"), "kind": "NetworkPolicy"})],
            ApiError(0, "Unreachable", "connection reset"),
        ],
    )
    changes: list[tuple[Key, Any, Any]] = []
    subject = informer(api, changes)
    await run_until_done(api, subject)
    assert api.watched_from == ["10", "13", "13"]
    assert subject.stats.lists == 1
    assert subject.stats.watch_restarts == 1
    assert changes[-1] == (("team-a", "a"), "5", None)
    assert len(subject) == 0


async def test_an_unexpected_watch_failure_lists_again_and_the_informer_lives_on() -> None:
    # Not every failure is an ApiError (aiohttp raises a bare RuntimeError when a
    # connection drops between two reads): the informer must neither die nor go stale.
    api = ScriptedApi(
        lists=[[Page([policy("a", "5")], "10", None)], [Page([policy("a", "8")], "30", None)]],
        watches=[RuntimeError("Connection closed."), [WatchEvent("DELETED", policy("a", "31"))]],
    )
    changes: list[tuple[Key, Any, Any]] = []
    subject = informer(api, changes)
    await run_until_done(api, subject)
    assert subject.stats.watch_restarts == 1
    assert api.watched_from == ["10", "30", "31"]  # listed again, then watched on
    assert subject.get("team-a", "a") is None
    assert changes == [
        (("team-a", "a"), None, "5"),
        (("team-a", "a"), "5", "8"),
        (("team-a", "a"), "8", None),
    ]
    await subject.stop()


async def test_stopping_an_informer_whose_task_failed_raises_nothing() -> None:
    subject = informer(ScriptedApi(lists=[], watches=[]), [])

    async def failing() -> None:
        raise RuntimeError("Connection closed.")

    subject._task = asyncio.create_task(failing())
    await asyncio.sleep(0)  # it has failed already when the stop comes
    await subject.stop()  # the failure is moot once stopping
    assert subject._task is None


async def test_a_kind_not_served_is_known_to_be_empty() -> None:
    api = ScriptedApi(lists=[ApiError(404, "", "404 page not found", is_status=False)], watches=[])
    subject = informer(api, [])
    subject.start()
    await asyncio.wait_for(subject.synced.wait(), timeout=5)
    assert not subject.served
    assert len(subject) == 0
    await subject.stop()

"""The in-process API emulator, through the official client (as the operator calls it) and kopf."""

from __future__ import annotations

import asyncio
import json
import queue
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import kmock
import kopf
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubernetes import client as k8s
from kubernetes import watch

from baseline_operator.demo.emulator import (
    SERVED_RESOURCES,
    ClusterEmulator,
    RecordedRequest,
    fail_next,
    kube_configuration,
    merge_patch,
    parse_selector,
    release_unapplied,
    running_emulator,
    write_requests,
)
from baseline_operator.policy.objects import ALL_KINDS, EVENT, LEASE, POD, SECURITY_BASELINE

APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
BASELINES = "/apis/security.baseline.dev/v1alpha1/securitybaselines"


@dataclass
class Cluster:
    emulator: ClusterEmulator
    url: str
    api_client: k8s.ApiClient

    @property
    def core(self) -> k8s.CoreV1Api:
        return k8s.CoreV1Api(self.api_client)

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """The official client is synchronous: run it off the loop the emulator serves on."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def raw(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        query: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> tuple[int, dict[str, Any], Mapping[str, str]]:
        """A request as the operator's KubeApi sends it: status, parsed body, headers."""

        def send() -> tuple[int, dict[str, Any], Mapping[str, str]]:
            headers = {"Accept": "application/json"}
            if body is not None:
                headers["Content-Type"] = content_type
            _, url, headers, serialized, _ = self.api_client.param_serialize(
                method=method,
                resource_path=path,
                query_params=list((query or {}).items()),
                header_params=headers,
                body=body,
            )
            response = self.api_client.call_api(method, url, header_params=headers, body=serialized)
            data = response.read()
            return response.status, json.loads(data) if data else {}, response.headers

        return await asyncio.to_thread(send)


@pytest.fixture
async def cluster() -> AsyncIterator[Cluster]:
    async with running_emulator() as (emulator, url):
        api_client = k8s.ApiClient(kube_configuration(url))
        yield Cluster(emulator, url, api_client)
        api_client.close()


def namespace(name: str, **labels: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def baseline(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "security.baseline.dev/v1alpha1",
        "kind": "SecurityBaseline",
        "metadata": {"name": name},
        "spec": spec,
    }


def names(listing: Any) -> list[str]:
    return sorted(item.metadata.name for item in listing.items)


def watch_until(
    list_fn: Callable[..., Any],
    last: Callable[[str, dict[str, Any]], bool],
    started: threading.Event,
    **kwargs: Any,
) -> list[tuple[str, str]]:
    """Stream (type, name) events until `last` matches; `started` is set at the first event."""
    stream = watch.Watch()
    events = []
    for event in stream.stream(list_fn, timeout_seconds=10, **kwargs):
        started.set()
        body = event["raw_object"]
        events.append((event["type"], body["metadata"]["name"]))
        if last(event["type"], body):
            stream.stop()
    return events


# ---------------------------------------------------------------------------- 1. namespaces


async def test_namespace_resource_paths_serve_namespaces(cluster: Cluster) -> None:
    core = cluster.core
    created = await cluster.call(core.create_namespace, namespace("team-a", env="prod"))
    assert created.metadata.name == "team-a"
    assert created.status.phase == "Active"

    fetched = await cluster.call(core.read_namespace, "team-a")
    assert fetched.metadata.uid == created.metadata.uid
    assert "team-a" in names(await cluster.call(core.list_namespace))

    labels = {"metadata": {"labels": {"x": "1"}}}
    patched = await cluster.call(core.patch_namespace, "team-a", labels)
    assert patched.metadata.labels == {
        "env": "prod",
        "x": "1",
        "kubernetes.io/metadata.name": "team-a",
    }
    status = await cluster.call(core.read_namespace_status, "team-a")
    assert status.status.phase == "Active"

    await cluster.call(core.delete_namespace, "team-a")
    with pytest.raises(k8s.ApiException) as gone:
        await cluster.call(core.read_namespace, "team-a")
    assert gone.value.status == 404


async def test_objects_inside_namespaces_still_work(cluster: Cluster) -> None:
    core = cluster.core
    for name in ("team-a", "team-b"):
        await cluster.call(core.create_namespace, namespace(name))
        await cluster.call(
            core.create_namespaced_service_account, name, {"metadata": {"name": "app"}}
        )

    account = await cluster.call(core.read_namespaced_service_account, "app", "team-a")
    assert account.metadata.namespace == "team-a"
    assert names(await cluster.call(core.list_namespaced_service_account, "team-b")) == ["app"]
    everywhere = await cluster.call(core.list_service_account_for_all_namespaces)
    assert sorted(item.metadata.namespace for item in everywhere.items) == ["team-a", "team-b"]


async def test_creating_in_a_missing_namespace_is_not_found(cluster: Cluster) -> None:
    with pytest.raises(k8s.ApiException) as error:
        await cluster.call(
            cluster.core.create_namespaced_service_account, "nowhere", {"metadata": {"name": "a"}}
        )
    assert error.value.status == 404


# ---------------------------------------------------------------------------- 2. discovery


async def discovered(cluster: Cluster) -> dict[tuple[str, str], dict[str, Any]]:
    """(apiVersion, name) -> the discovery entry, over every served group version."""
    entries = {}
    _, groups, _ = await cluster.raw("GET", "/apis")
    group_versions = ["v1"] + [
        version["groupVersion"] for group in groups["groups"] for version in group["versions"]
    ]
    for group_version in group_versions:
        path = "/api/v1" if group_version == "v1" else f"/apis/{group_version}"
        status, listing, _ = await cluster.raw("GET", path)
        assert status == 200, path
        for entry in listing["resources"]:
            entries[group_version, entry["name"]] = entry
    return entries


async def test_discovery_declares_every_served_resource_as_watchable(cluster: Cluster) -> None:
    entries = await discovered(cluster)
    for served in SERVED_RESOURCES:
        entry = entries[served.api_version, served.plural]
        assert entry["kind"] == served.kind
        assert entry["namespaced"] is served.namespaced
        assert {"watch", "list", "get", "create", "patch", "delete"} <= set(entry["verbs"])
        assert ((served.api_version, f"{served.plural}/status") in entries) is served.status


async def test_discovery_covers_every_kind_the_operator_uses(cluster: Cluster) -> None:
    entries = await discovered(cluster)
    for kind in (*ALL_KINDS, EVENT, LEASE, POD, SECURITY_BASELINE):
        entry = entries[kind.api_version, kind.plural]
        assert entry["kind"] == kind.kind
        assert entry["namespaced"] is kind.namespaced


# ---------------------------------------------------------------------------- 3. metadata


async def test_server_fills_uid_timestamps_versions_and_generation(cluster: Cluster) -> None:
    _, first, _ = await cluster.raw("POST", BASELINES, baseline("first", {"priority": 1}))
    _, second, _ = await cluster.raw("POST", BASELINES, baseline("second", {"priority": 1}))
    metadata = first["metadata"]
    assert uuid.UUID(metadata["uid"]).version == 4
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", metadata["creationTimestamp"])
    assert metadata["generation"] == 1
    # One counter for the whole server.
    assert int(second["metadata"]["resourceVersion"]) > int(metadata["resourceVersion"])

    path = f"{BASELINES}/first"
    _, labelled, _ = await cluster.raw(
        "PATCH", path, {"metadata": {"labels": {"a": "b"}}}, content_type=MERGE
    )
    assert labelled["metadata"]["generation"] == 1  # metadata is not spec
    assert int(labelled["metadata"]["resourceVersion"]) > int(second["metadata"]["resourceVersion"])

    _, changed, _ = await cluster.raw("PATCH", path, {"spec": {"priority": 2}}, content_type=MERGE)
    assert changed["metadata"]["generation"] == 2
    assert changed["metadata"]["uid"] == metadata["uid"]
    assert changed["metadata"]["creationTimestamp"] == metadata["creationTimestamp"]

    # A write that changes nothing stores nothing: same resourceVersion.
    _, same, _ = await cluster.raw("PATCH", path, {"spec": {"priority": 2}}, content_type=MERGE)
    assert same["metadata"]["resourceVersion"] == changed["metadata"]["resourceVersion"]
    assert (
        len(
            cluster.emulator.objects[
                "security.baseline.dev/v1alpha1/securitybaselines", None, "first"
            ].history
        )
        == 3
    )


# ---------------------------------------------------------------------------- 4. server-side apply


async def test_apply_creates_then_removes_what_the_manager_stopped_applying(
    cluster: Cluster,
) -> None:
    await cluster.call(cluster.core.create_namespace, namespace("team-a", owner="argocd"))
    path = "/api/v1/namespaces/team-a/limitranges/defaults"
    body = {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": {"name": "defaults", "namespace": "team-a", "labels": {"a": "1", "b": "2"}},
        "spec": {"limits": [{"type": "Container", "default": {"cpu": "1"}}]},
    }
    query = {"fieldManager": "baseline-operator", "force": "true"}
    status, created, _ = await cluster.raw("PATCH", path, body, query=query, content_type=APPLY)
    assert status == 201
    assert created["metadata"]["labels"] == {"a": "1", "b": "2"}

    # Someone else merges a label of their own.
    await cluster.raw("PATCH", path, {"metadata": {"labels": {"c": "3"}}}, content_type=MERGE)

    body["metadata"]["labels"] = {"a": "1"}
    body["spec"]["limits"] = [{"type": "Container"}]  # lists are atomic: replaced whole
    status, applied, _ = await cluster.raw("PATCH", path, body, query=query, content_type=APPLY)
    assert status == 200
    assert applied["metadata"]["labels"] == {"a": "1", "c": "3"}
    assert applied["spec"] == {"limits": [{"type": "Container"}]}


async def test_apply_keeps_fields_another_manager_still_applies(cluster: Cluster) -> None:
    core = cluster.core
    await cluster.call(core.create_namespace, namespace("team-a"))

    async def apply(manager: str, labels: dict[str, str]) -> dict[str, str]:
        applied = await cluster.call(
            core.patch_namespace,
            "team-a",
            namespace("team-a", **labels),
            field_manager=manager,
            _content_type=APPLY,
        )
        return dict(applied.metadata.labels)

    await apply("argocd", {"env": "prod", "shared": "yes"})
    await apply("baseline-operator", {"pod-security": "restricted", "shared": "yes"})
    labels = await apply("baseline-operator", {})
    assert labels == {"env": "prod", "shared": "yes", "kubernetes.io/metadata.name": "team-a"}


async def test_apply_accepts_a_yaml_body(cluster: Cluster) -> None:
    await cluster.call(cluster.core.create_namespace, namespace("team-a"))
    document = (
        "apiVersion: v1\nkind: ServiceAccount\n"
        "metadata:\n  name: app\n  namespace: team-a\nautomountServiceAccountToken: false\n"
    )
    status, created, _ = await cluster.raw(
        "PATCH",
        "/api/v1/namespaces/team-a/serviceaccounts/app",
        document,
        query={"fieldManager": "baseline-operator"},
        content_type=APPLY,
    )
    assert status == 201
    assert created["automountServiceAccountToken"] is False


# ---------------------------------------------------------------------------- 5. patches, status


async def test_merge_patch_null_deletes_a_key(cluster: Cluster) -> None:
    await cluster.call(cluster.core.create_namespace, namespace("team-a", a="1", b="2"))
    _, patched, _ = await cluster.raw(
        "PATCH",
        "/api/v1/namespaces/team-a",
        {"metadata": {"labels": {"a": None}}},
        content_type=MERGE,
    )
    assert patched["metadata"]["labels"] == {"b": "2", "kubernetes.io/metadata.name": "team-a"}


async def test_status_changes_only_through_the_status_subresource(cluster: Cluster) -> None:
    await cluster.raw("POST", BASELINES, baseline("prod", {"priority": 1}) | {"status": {"x": 1}})
    _, created, _ = await cluster.raw("GET", f"{BASELINES}/prod")
    assert "status" not in created

    status_patch = {"spec": {"priority": 9}, "status": {"observedGeneration": 1}}
    _, patched, _ = await cluster.raw(
        "PATCH", f"{BASELINES}/prod/status", status_patch, content_type=MERGE
    )
    assert patched["status"] == {"observedGeneration": 1}
    assert patched["spec"] == {"priority": 1}

    main_patch = {"spec": {"priority": 2}, "status": {"observedGeneration": 7}}
    _, patched, _ = await cluster.raw("PATCH", f"{BASELINES}/prod", main_patch, content_type=MERGE)
    assert patched["spec"] == {"priority": 2}
    assert patched["status"] == {"observedGeneration": 1}


async def test_json_patch_test_failure_is_unprocessable(cluster: Cluster) -> None:
    # kopf adds and removes its finalizers with a JSON patch guarded by a `test` op.
    _, created, _ = await cluster.raw("POST", BASELINES, baseline("prod", {}))
    version = created["metadata"]["resourceVersion"]
    add = {"op": "add", "path": "/metadata/finalizers", "value": ["f"]}
    stale = [{"op": "test", "path": "/metadata/resourceVersion", "value": "0"}, add]
    status, _, _ = await cluster.raw(
        "PATCH", f"{BASELINES}/prod", stale, content_type="application/json-patch+json"
    )
    assert status == 422
    fresh = [{"op": "test", "path": "/metadata/resourceVersion", "value": version}, add]
    status, patched, _ = await cluster.raw(
        "PATCH", f"{BASELINES}/prod", fresh, content_type="application/json-patch+json"
    )
    assert status == 200
    assert patched["metadata"]["finalizers"] == ["f"]


async def test_put_with_a_stale_resource_version_conflicts(cluster: Cluster) -> None:
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "leader", "namespace": "default"},
        "spec": {"holderIdentity": "a"},
    }
    path = "/apis/coordination.k8s.io/v1/namespaces/default/leases"
    _, created, _ = await cluster.raw("POST", path, lease)
    version = created["metadata"]["resourceVersion"]

    created["spec"]["holderIdentity"] = "b"
    status, replaced, _ = await cluster.raw("PUT", f"{path}/leader", created)
    assert status == 200
    assert replaced["spec"]["holderIdentity"] == "b"

    created["metadata"]["resourceVersion"] = version  # what the slower replica read
    created["spec"]["holderIdentity"] = "c"
    status, error, _ = await cluster.raw("PUT", f"{path}/leader", created)
    assert (status, error["reason"]) == (409, "Conflict")


# ---------------------------------------------------------------------------- 6. preconditions


async def test_delete_with_a_uid_precondition(cluster: Cluster) -> None:
    rbac = k8s.RbacAuthorizationV1Api(cluster.api_client)
    created = await cluster.call(cluster.core.create_namespace, namespace("team-a"))
    role = await cluster.call(rbac.create_namespaced_role, "team-a", {"metadata": {"name": "r"}})
    path = "/apis/rbac.authorization.k8s.io/v1/namespaces/team-a/roles/r"

    other = {"preconditions": {"uid": created.metadata.uid}}  # a uid, but not this object's
    status, error, _ = await cluster.raw("DELETE", path, other)
    assert (status, error["reason"]) == (409, "Conflict")
    assert (await cluster.call(rbac.read_namespaced_role, "r", "team-a")).metadata.uid

    options = k8s.V1DeleteOptions(preconditions=k8s.V1Preconditions(uid=role.metadata.uid))
    await cluster.call(rbac.delete_namespaced_role, "r", "team-a", body=options)
    status, _, _ = await cluster.raw("DELETE", path, {"preconditions": {"uid": role.metadata.uid}})
    assert status == 404


# ---------------------------------------------------------------------------- 7. dry run


async def test_dry_run_returns_the_result_and_changes_nothing(cluster: Cluster) -> None:
    core = cluster.core
    await cluster.call(core.create_namespace, namespace("team-a", a="1"))
    dry = {"dryRun": "All", "fieldManager": "baseline-operator"}
    started = threading.Event()
    watching = asyncio.create_task(
        cluster.call(
            watch_until,
            core.list_namespace,
            lambda _, body: body["metadata"]["name"] == "after",
            started,
        )
    )
    await cluster.call(started.wait, 5)  # the replay began: the watch is subscribed

    status, would_be, _ = await cluster.raw(
        "POST", "/api/v1/namespaces", namespace("new"), query={"dryRun": "All"}
    )
    assert (status, would_be["metadata"]["name"]) == (201, "new")
    _, would_be, _ = await cluster.raw(
        "PATCH",
        "/api/v1/namespaces/team-a",
        namespace("team-a", a="2"),
        query=dry,
        content_type=APPLY,
    )
    assert would_be["metadata"]["labels"]["a"] == "2"
    status, would_be, _ = await cluster.raw(
        "DELETE", "/api/v1/namespaces/team-a", query={"dryRun": "All"}
    )
    assert status == 200
    assert would_be["metadata"]["deletionTimestamp"]
    await cluster.call(core.create_namespace, namespace("after"))

    events = await watching
    replayed = ["default", "kube-system", "kube-public", "kube-node-lease", "team-a"]
    assert events == [("ADDED", name) for name in [*replayed, "after"]]
    assert "new" not in names(await cluster.call(core.list_namespace))
    kept = await cluster.call(core.read_namespace, "team-a")
    assert kept.metadata.labels["a"] == "1"
    assert kept.metadata.deletion_timestamp is None


# ---------------------------------------------------------------------------- 8. namespace deletion


async def test_deleting_a_namespace_deletes_what_is_in_it(cluster: Cluster) -> None:
    core = cluster.core
    for name in ("doomed", "kept"):
        await cluster.call(core.create_namespace, namespace(name))
        for account in ("a", "b"):
            await cluster.call(
                core.create_namespaced_service_account, name, {"metadata": {"name": account}}
            )
    started = threading.Event()
    watching = asyncio.create_task(
        cluster.call(
            watch_until,
            core.list_service_account_for_all_namespaces,
            lambda kind, body: kind == "DELETED" and body["metadata"]["name"] == "b",
            started,
        )
    )
    await cluster.call(started.wait, 5)

    await cluster.call(core.delete_namespace, "doomed")

    events = await watching
    assert events[-2:] == [("DELETED", "a"), ("DELETED", "b")]
    remaining = await cluster.call(core.list_service_account_for_all_namespaces)
    assert {item.metadata.namespace for item in remaining.items} == {"kept"}
    assert "doomed" not in names(await cluster.call(core.list_namespace))


async def test_a_namespace_with_finalizers_stays_terminating(cluster: Cluster) -> None:
    core = cluster.core
    body = namespace("held")
    body["metadata"]["finalizers"] = ["example.com/hold"]
    await cluster.call(core.create_namespace, body)
    await cluster.call(core.create_namespaced_service_account, "held", {"metadata": {"name": "a"}})

    await cluster.call(core.delete_namespace, "held")

    held = await cluster.call(core.read_namespace, "held")
    assert held.metadata.deletion_timestamp is not None
    assert held.status.phase == "Terminating"
    assert names(await cluster.call(core.list_namespaced_service_account, "held")) == []
    with pytest.raises(k8s.ApiException) as refused:
        await cluster.call(
            core.create_namespaced_service_account, "held", {"metadata": {"name": "b"}}
        )
    assert refused.value.status == 403

    await cluster.raw(
        "PATCH", "/api/v1/namespaces/held", {"metadata": {"finalizers": None}}, content_type=MERGE
    )
    with pytest.raises(k8s.ApiException) as gone:
        await cluster.call(core.read_namespace, "held")
    assert gone.value.status == 404


async def test_an_object_with_finalizers_goes_when_the_last_one_is_removed(
    cluster: Cluster,
) -> None:
    body = baseline("prod", {})
    body["metadata"]["finalizers"] = ["kopf.zalando.org/KopfFinalizerMarker"]
    await cluster.raw("POST", BASELINES, body)
    status, deleting, _ = await cluster.raw("DELETE", f"{BASELINES}/prod")
    assert status == 200
    assert deleting["metadata"]["deletionTimestamp"]
    _, still, _ = await cluster.raw("GET", f"{BASELINES}/prod")
    assert still["metadata"]["finalizers"] == ["kopf.zalando.org/KopfFinalizerMarker"]

    release = [{"op": "remove", "path": "/metadata/finalizers/0"}]
    await cluster.raw(
        "PATCH", f"{BASELINES}/prod", release, content_type="application/json-patch+json"
    )
    status, _, _ = await cluster.raw("GET", f"{BASELINES}/prod")
    assert status == 404


# ---------------------------------------------------------------------------- 9. label selectors


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("team=a", ["a1", "a2"]),
        ("team==a", ["a1", "a2"]),
        ("team!=a", ["b1", "none"]),
        ("team", ["a1", "a2", "b1"]),
        ("!team", ["none"]),
        ("team=a,tier=web", ["a1"]),
        ("team=a, !tier", ["a2"]),
    ],
)
async def test_list_filters_by_equality_based_label_selectors(
    cluster: Cluster, selector: str, expected: list[str]
) -> None:
    labels = {
        "a1": {"team": "a", "tier": "web"},
        "a2": {"team": "a"},
        "b1": {"team": "b"},
        "none": {},
    }
    for name, values in labels.items():
        await cluster.call(cluster.core.create_namespace, namespace(name, **values))
    listing = await cluster.call(cluster.core.list_namespace, label_selector=selector)
    assert [name for name in names(listing) if name in labels] == expected  # not kube-system...


async def test_set_based_selectors_are_refused_not_ignored(cluster: Cluster) -> None:
    with pytest.raises(k8s.ApiException) as refused:
        await cluster.call(cluster.core.list_namespace, label_selector="team in (a,b)")
    assert refused.value.status == 400


async def test_watch_filters_by_label_selector(cluster: Cluster) -> None:
    core = cluster.core
    await cluster.call(core.create_namespace, namespace("first", watched="yes"))
    started = threading.Event()
    watching = asyncio.create_task(
        cluster.call(
            watch_until,
            core.list_namespace,
            lambda _, body: body["metadata"]["name"] == "last",
            started,
            label_selector="watched=yes",
        )
    )
    await cluster.call(started.wait, 5)
    await cluster.call(core.create_namespace, namespace("unwatched"))
    await cluster.call(core.create_namespace, namespace("last", watched="yes"))
    assert await watching == [("ADDED", "first"), ("ADDED", "last")]


async def test_watch_from_a_resource_version_sends_only_later_changes(cluster: Cluster) -> None:
    core = cluster.core
    await cluster.call(core.create_namespace, namespace("before"))
    version = (await cluster.call(core.list_namespace)).metadata.resource_version
    watching = asyncio.create_task(
        cluster.call(
            watch_until,
            core.list_namespace,
            lambda _, body: body["metadata"]["name"] == "after",
            threading.Event(),
            resource_version=version,
        )
    )
    await cluster.call(core.create_namespace, namespace("after"))
    assert await watching == [("ADDED", "after")]


async def test_watch_ends_after_timeout_seconds(cluster: Cluster) -> None:
    core = cluster.core
    version = (await cluster.call(core.list_namespace)).metadata.resource_version
    started = time.monotonic()
    events = await cluster.call(
        lambda: list(
            watch.Watch().stream(core.list_namespace, resource_version=version, timeout_seconds=1)
        )
    )
    assert events == []
    assert 1 <= time.monotonic() - started < 3


# ---------------------------------------------------------------------------- 10. request log


async def test_write_requests_lists_writes_and_leaves_out_dry_runs(cluster: Cluster) -> None:
    core = cluster.core
    await cluster.call(core.create_namespace, namespace("team-a"))
    await cluster.call(core.read_namespace, "team-a")
    await cluster.call(core.list_namespace)
    await cluster.raw(
        "PATCH",
        "/api/v1/namespaces/team-a",
        namespace("team-a", a="1"),
        query={"fieldManager": "m", "dryRun": "All"},
        content_type=APPLY,
    )
    await cluster.raw(
        "PATCH",
        "/api/v1/namespaces/team-a",
        namespace("team-a", a="1"),
        query={"fieldManager": "m"},
        content_type=APPLY,
    )
    await cluster.call(core.delete_namespace, "team-a")

    assert write_requests(cluster.emulator) == [
        RecordedRequest("POST", "/api/v1/namespaces", (), dry_run=False),
        RecordedRequest("PATCH", "/api/v1/namespaces/team-a", (("fieldManager", "m"),), False),
        RecordedRequest("DELETE", "/api/v1/namespaces/team-a", (), dry_run=False),
    ]
    with_dry_runs = write_requests(cluster.emulator, include_dry_run=True)
    assert [request.dry_run for request in with_dry_runs] == [False, True, False, False]


# ---------------------------------------------------------------------------- 11. faults


async def test_fail_next_answers_429_with_retry_after_and_changes_nothing(
    cluster: Cluster,
) -> None:
    await cluster.call(cluster.core.create_namespace, namespace("team-a"))
    fail_next(cluster.emulator, "PATCH", "v1/namespaces", times=2, retry_after=3)
    patch = {"metadata": {"labels": {"a": "1"}}}

    outcomes = []
    for _ in range(3):
        status, body, headers = await cluster.raw(
            "PATCH", "/api/v1/namespaces/team-a", patch, content_type=MERGE
        )
        outcomes.append((status, body.get("reason"), headers.get("Retry-After")))
        if status == 429:
            stored = await cluster.call(cluster.core.read_namespace, "team-a")
            assert "a" not in stored.metadata.labels
    assert outcomes == [
        (429, "TooManyRequests", "3"),
        (429, "TooManyRequests", "3"),
        (200, None, None),
    ]


async def test_faults_with_kmock_dsl_directly(cluster: Cluster) -> None:
    # The same without the helper: a reaction on a slice of the matching requests. The slice
    # counts every matching request since the start, hence `seen`.
    emulator = cluster.emulator
    matching = emulator["post", kmock.resource("v1/serviceaccounts")]
    seen = len(matching)
    matching[seen : seen + 1] << 500 << {"kind": "Status", "code": 500, "reason": "InternalError"}

    create = cluster.core.create_namespaced_service_account
    with pytest.raises(k8s.ApiException) as failed:
        await cluster.call(create, "default", {"metadata": {"name": "app"}})
    assert failed.value.status == 500
    created = await cluster.call(create, "default", {"metadata": {"name": "app"}})
    assert created.metadata.name == "app"


async def test_urllib3_retries_a_429_delete_with_retry_after_by_itself(cluster: Cluster) -> None:
    # Worth knowing: the official client's connection pool (urllib3's default Retry) repeats
    # GET/PUT/DELETE answered 429/503 with Retry-After, so the caller never sees those.
    await cluster.call(cluster.core.create_namespace, namespace("team-a"))
    fail_next(cluster.emulator, "DELETE", "v1/namespaces", times=1, retry_after=0)
    status, _, _ = await cluster.raw("DELETE", "/api/v1/namespaces/team-a")
    assert status == 200
    deletes = [r for r in write_requests(cluster.emulator) if r.method == "DELETE"]
    assert len(deletes) == 2


# ---------------------------------------------------------------------------- kopf


async def test_kopf_watches_namespaces_and_baselines_through_the_emulator(
    cluster: Cluster,
) -> None:
    core = cluster.core
    await cluster.call(core.create_namespace, namespace("before"))
    registry = kopf.OperatorRegistry()
    seen: queue.SimpleQueue[tuple[str, str | None, str]] = queue.SimpleQueue()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=cluster.url)

    @kopf.on.event("namespaces", registry=registry)
    def namespace_event(event: kopf.RawEvent, name: str, **_: Any) -> None:
        seen.put(("namespaces", event["type"], name))

    @kopf.on.event("security.baseline.dev", "v1alpha1", "securitybaselines", registry=registry)
    def baseline_event(event: kopf.RawEvent, name: str, **_: Any) -> None:
        seen.put(("securitybaselines", event["type"], name))

    stop = asyncio.Event()
    operator = asyncio.create_task(
        kopf.operator(registry=registry, clusterwide=True, standalone=True, stop_flag=stop)
    )
    try:
        events = []

        async def wait_for(wanted: tuple[str, str | None, str]) -> None:
            while wanted not in events:
                events.append(await cluster.call(seen.get, timeout=10))

        await wait_for(("namespaces", None, "before"))  # listed: kopf's type is None
        await cluster.call(core.create_namespace, namespace("after"))
        await wait_for(("namespaces", "ADDED", "after"))
        await cluster.raw("POST", BASELINES, baseline("prod", {}))
        await wait_for(("securitybaselines", "ADDED", "prod"))
        assert ("namespaces", "ADDED", "before") not in events  # the watch did not replay it
    finally:
        # kopf waits 5 s for every task created after it started, the emulator's handlers of
        # the client's pooled connections included: close the pool first, then stop.
        cluster.api_client.close()
        stop.set()
        started = time.monotonic()
        await asyncio.wait_for(operator, timeout=10)
    assert time.monotonic() - started < 2


# ---------------------------------------------------------------------------- pure helpers

json_values = st.recursive(
    st.integers(0, 3) | st.text("ab", max_size=2) | st.booleans(),
    lambda children: (
        st.lists(children, max_size=2)
        | st.dictionaries(st.sampled_from("pqrs"), children, max_size=3)
    ),
    max_leaves=8,
)
json_objects = st.dictionaries(st.sampled_from("pqrs"), json_values, max_size=4)


def test_merge_patch_follows_rfc_7386_examples() -> None:
    assert merge_patch({"a": "b"}, {"a": "c"}) == {"a": "c"}
    assert merge_patch({"a": "b"}, {"b": "c"}) == {"a": "b", "b": "c"}
    assert merge_patch({"a": "b"}, {"a": None}) == {}
    assert merge_patch({"a": [{"b": "c"}]}, {"a": [1]}) == {"a": [1]}
    assert merge_patch({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}) == {"a": {"b": "d"}}
    assert merge_patch({"a": "foo"}, {"a": {"b": "c"}}) == {"a": {"b": "c"}}
    assert merge_patch({"e": None}, {"a": 1}) == {"e": None, "a": 1}


@given(json_objects, json_objects)
def test_merge_patch_is_idempotent(target: dict[str, Any], patch: dict[str, Any]) -> None:
    once = merge_patch(target, patch)
    assert merge_patch(once, patch) == once


@given(json_objects, json_objects)
def test_a_second_apply_by_the_same_manager_leaves_exactly_its_body(
    first: dict[str, Any], second: dict[str, Any]
) -> None:
    applied_once = merge_patch({}, first)
    released = release_unapplied(applied_once, first, second)
    assert merge_patch(released, second) == second


def test_release_keeps_what_another_manager_applies() -> None:
    current = {"labels": {"mine": "1", "shared": "1", "theirs": "1"}}
    mine = {"labels": {"mine": "1", "shared": "1"}}
    theirs = {"labels": {"shared": "1", "theirs": "1"}}
    assert release_unapplied(current, mine, {}, [theirs]) == {
        "labels": {"shared": "1", "theirs": "1"}
    }


def test_selector_parsing_rejects_set_based_and_malformed_terms() -> None:
    assert [r.operator for r in parse_selector("a=1,b!=2,c,!d,e==5")] == [
        "=",
        "!=",
        "exists",
        "!exists",
        "=",
    ]
    for text in ("a in (1)", "a notin (1)", "=1", "a b=1"):
        with pytest.raises(ValueError, match="selector"):
            parse_selector(text)

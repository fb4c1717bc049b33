"""kill -9 mid-rollout and mid-cleanup, on a real API server.

The operator runs as its own process (tests/support/processes.py). It is killed with
SIGKILL while NAMESPACES namespaces (BASELINE_E2E_CRASH_NAMESPACES, 100 by default; the
issue's figure is 500) are being rolled out, and again while the baseline holding them
is being deleted; each time it is started again (same POD_NAME: the restarted pod takes
its own Lease back at once). Judged on what the API server stores and its audit log:

- the rollout converges: exactly the planned objects exist, none was created twice;
- the deletion finishes: no generated object and no applied label is left;
- a Warning the first process posted for what the status reports (an object of others
  holding a wanted name: Conflicted) is not posted again by the restarted one.

Times (kill to converged, kill to cleaned up) are recorded, never asserted.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from baseline_operator.api.resource import parse_baseline
from baseline_operator.policy.layering import plan_namespace
from baseline_operator.policy.names import applied_label
from baseline_operator.policy.objects import (
    CLUSTER_KINDS,
    EVENT,
    NAMESPACE,
    NETWORK_POLICY,
    ROLE,
    ROLE_BINDING,
    SECURITY_BASELINE,
)
from tests.e2e.conftest import (
    E2E,
    NAMESPACES_AND_GENERATED,
    ROOT,
    SPEC,
    eventually,
    expected_refs,
    list_items,
    record_timing,
)
from tests.support.processes import (
    AuditEvent,
    AuditLog,
    OperatorProcess,
    OperatorProcesses,
    delete_baselines,
    operator_kubeconfig,
    role_bodies,
)

pytestmark = pytest.mark.e2e

NAMESPACES = int(os.environ.get("BASELINE_E2E_CRASH_NAMESPACES", "100"))
CONFLICTED = 3  # namespaces holding an object of others with a wanted name
WAIT = 60.0 + NAMESPACES * 0.3  # generous, never asserted


@pytest_asyncio.fixture
async def operators(e2e: E2E) -> AsyncIterator[OperatorProcesses]:
    namespace = await e2e.create_namespace("ops")
    for body in role_bodies(ROOT, namespace, e2e.run.operator_namespace):
        kind = ROLE if body["kind"] == "Role" else ROLE_BINDING
        await e2e.kube.create(kind, namespace, body)
    with OperatorProcesses.running(operator_kubeconfig(e2e.run.operator), namespace) as running:
        yield running


def created(events: list[AuditEvent]) -> Counter[tuple[str, str, str]]:
    """Successful creations by object: a POST answered 2xx, or an apply answered 201."""
    return Counter(
        (event.resource, event.namespace, event.name)
        for event in events
        if event.succeeded
        and (event.verb == "create" or (event.verb == "patch" and event.code == 201))
    )


async def warnings(e2e: E2E, namespaces: set[str]) -> list[dict[str, Any]]:
    """Warning Events about the given namespaces (they live in `default`)."""
    return [
        event
        for event in await list_items(e2e.kube, EVENT, "default", fieldSelector="type=Warning")
        if (event.get("involvedObject") or {}).get("name") in namespaces
    ]


async def holds_exactly(e2e: E2E, body: dict[str, Any], namespaces: list[str]) -> bool:
    """The namespaces hold exactly the objects and labels the plan wants (whatever the
    baseline holds elsewhere)."""
    name = body["metadata"]["name"]
    chosen = set(namespaces)
    owned = {ref for ref in await e2e.owned_refs(name) if ref.namespace in chosen}
    if owned != set().union(*(expected_refs(body, ns) for ns in namespaces)):
        return False
    labelled = {
        item["metadata"]["name"]: item["metadata"].get("labels") or {}
        for item in await list_items(
            e2e.kube, NAMESPACE, labelSelector=f"{applied_label(name)}=true"
        )
    }
    baseline = parse_baseline(body)
    return all(
        all(
            labelled.get(namespace, {}).get(key) == value
            for key, value in plan_namespace(namespace, [baseline]).labels.items()
        )
        for namespace in namespaces
    )


def alive(operators: OperatorProcesses, process: OperatorProcess) -> None:
    if process.exit_code is not None:
        raise AssertionError(f"the operator exited ({process.exit_code}):\n{operators.logs()}")


@pytest.mark.timeout(120 + NAMESPACES * 0.5)
async def test_kill_9_mid_rollout_and_mid_cleanup(
    e2e: E2E, audit: AuditLog, operators: OperatorProcesses
) -> None:
    body = e2e.baseline_body(**SPEC)
    name = await e2e.create_baseline(body)
    identity = e2e.name("op")
    process = operators.start(identity)

    # First, namespaces where an object of others holds a wanted name: the operator
    # reports them (status and a Warning Event) before the crash.
    deny = f"{name}-default-deny"
    conflicted = [e2e.name(f"x{index}") for index in range(CONFLICTED)]
    for namespace in conflicted:
        await e2e.create_namespace(namespace.removeprefix(f"{e2e.prefix}-"))
        await e2e.kube.create(
            NETWORK_POLICY,
            namespace,
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": {"name": deny},
                "spec": {"podSelector": {}},
            },
        )
        await e2e.cluster.merge_patch(
            NAMESPACE, None, namespace, {"metadata": {"labels": {"env": "prod"}}}
        )

    async def conflicts_reported() -> bool:
        alive(operators, process)
        listed = {
            entry["namespace"]
            for entry in (await e2e.cluster.status(name)).get("nonCompliant") or []
        }
        return listed == set(conflicted) and len(await warnings(e2e, set(conflicted))) >= len(
            conflicted
        )

    await eventually(conflicts_reported, limit=WAIT, what="the conflicts reported")
    warned_before = await warnings(e2e, set(conflicted))

    # The rollout, killed a quarter of the way.
    names = [e2e.name(f"n{index:03d}") for index in range(NAMESPACES)]
    e2e.namespaces.extend(names)
    await asyncio.gather(
        *(e2e.cluster.create_namespace(n, **e2e.scope_labels, env="prod") for n in names)
    )

    async def under_way() -> bool:
        alive(operators, process)
        touched = {
            event.namespace
            for event in audit.writes(user_agents=[identity])
            if event.namespace in names
        }
        return len(touched) >= NAMESPACES // 4

    await eventually(under_way, limit=WAIT, what="the rollout under way")
    process.kill()
    killed = time.monotonic()
    done_before = len(
        {event.namespace for event in audit.writes(user_agents=[identity])} & set(names)
    )
    assert not await holds_exactly(e2e, body, names), "the rollout ended before the kill"

    process = operators.start(identity)
    everything = conflicted + names

    async def rolled_out() -> bool:
        alive(operators, process)
        return await holds_exactly(e2e, body, names)

    await eventually(rolled_out, limit=WAIT, what="the rollout after the restart")
    record_timing(
        f"kill -9 with {done_before}/{NAMESPACES} namespaces begun: to all converged",
        time.monotonic() - killed,
    )

    async def status_settled() -> bool:
        status = await e2e.cluster.status(name)
        counts = status.get("namespaces") or {}
        return (
            counts.get("selected") == len(everything)
            and counts.get("compliant") == NAMESPACES
            and {entry["namespace"] for entry in status.get("nonCompliant") or []}
            == set(conflicted)
        )

    await eventually(status_settled, limit=WAIT, what="the status after the restart")
    writes = audit.writes(user_agents=[identity], resources=NAMESPACES_AND_GENERATED)
    twice = {key: n for key, n in created(writes).items() if n > 1}
    wanted = set().union(*(expected_refs(body, ns) for ns in everything))
    wanted -= {ref for ref in wanted if ref.namespace in conflicted and ref.name == deny}
    extra = await e2e.owned_refs(name) - wanted
    warned_after = await warnings(e2e, set(conflicted))

    # The cleanup, killed a quarter of the way.
    await delete_baselines(e2e.cluster, [name], limit=None)
    deletes_before = len(audit.writes(user_agents=[identity]))

    async def cleaning() -> bool:
        alive(operators, process)
        deleted = [
            event
            for event in audit.writes(user_agents=[identity])[deletes_before:]
            if event.verb == "delete"
        ]
        return len(deleted) >= NAMESPACES * 2

    await eventually(cleaning, limit=WAIT, what="the cleanup under way")
    process.kill()
    killed = time.monotonic()
    assert await e2e.owned_refs(name), "the cleanup ended before the kill"
    process = operators.start(identity)

    async def cleaned_up() -> bool:
        alive(operators, process)
        return await e2e.cluster.get(SECURITY_BASELINE, None, name) is None

    await eventually(cleaned_up, limit=WAIT, what="the cleanup after the restart")
    record_timing(
        f"kill -9 mid-cleanup of {NAMESPACES + CONFLICTED} namespaces: to baseline gone",
        time.monotonic() - killed,
    )
    left = await e2e.owned_refs(name)
    still_labelled = await list_items(
        e2e.kube, NAMESPACE, labelSelector=f"{applied_label(name)}=true"
    )
    cluster_left = [
        item["metadata"]["name"]
        for kind in CLUSTER_KINDS
        for item in await list_items(
            e2e.kube, kind, labelSelector=f"security.baseline.dev/baseline={name}"
        )
    ]
    process.stop()

    assert twice == {}, f"objects created more than once: {twice}"
    assert extra == set(), f"objects nobody wants: {extra}"
    assert left == set(), f"objects left after the cleanup: {left}"
    assert [item["metadata"]["name"] for item in still_labelled] == []
    assert cluster_left == []
    # A Warning for what the status already reported is not posted again by the restart.
    repeated = Counter(
        (event["involvedObject"]["name"], event.get("reason")) for event in warned_after
    )
    assert len(warned_after) == len(warned_before) and all(
        event.get("count", 1) == 1 for event in warned_after
    ), f"Warnings repeated after the restart: {dict(repeated)}"

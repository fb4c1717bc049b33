"""A rollout under faults, on a real API server, through a fault-injecting proxy.

The operator runs as its own process, as its ServiceAccount, against
tests/support/fault_proxy.py in front of the session's kube-apiserver: 20% of its
requests (the Lease's included) get 429 with Retry-After, 500, 503, a reset (before or
after the request reached the API server) or an answer held past the client's timeout,
and 20% of its watches are cut mid-way.

NAMESPACES namespaces (BASELINE_E2E_FAULT_NAMESPACES, 100 by default; the issue's figure
is 300) roll out once without faults and once with them. Judged on what the API server
stored and on its audit log (the operator's requests carry their own User-Agent):

- everything converges; every generated object was created at most once;
- the operator deletes nothing while the baseline wants everything it made;
- objects of others are never written: one with a wanted name (left alone and reported
  Conflicted) and unrelated ones beside it;
- once the faults stop, the status tells the truth (counts, nonCompliant, Degraded)
  within one resync.

Times to converge with and without faults are recorded (record_timing), not asserted.
The operator exits when it cannot renew its Lease in time (fencing); a supervisor
restarts it then, as the kubelet would, and the restarts are reported.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio

from baseline_operator.api.resource import parse_baseline
from baseline_operator.policy.layering import plan_namespace
from baseline_operator.policy.names import applied_label
from baseline_operator.policy.objects import (
    NAMESPACE,
    NETWORK_POLICY,
    ROLE,
    ROLE_BINDING,
    Kind,
    ObjectRef,
)
from baseline_operator.policy.status import MAX_REPORTED
from tests.e2e.conftest import (
    E2E,
    NAMESPACES_AND_GENERATED,
    NOTES,
    ROOT,
    SPEC,
    eventually,
    expected_refs,
    list_items,
    record_timing,
)
from tests.support.fault_proxy import FaultProxy
from tests.support.processes import (
    AuditEvent,
    AuditLog,
    OperatorProcess,
    OperatorProcesses,
    delete_baselines,
    kubeconfig_text,
    role_bodies,
)

pytestmark = pytest.mark.e2e

CONFIG_MAP = Kind("", "v1", "ConfigMap", "configmaps")

NAMESPACES = int(os.environ.get("BASELINE_E2E_FAULT_NAMESPACES", "100"))
RESYNC = 10  # seconds (the least the CLI takes)
# Faults cost time: answers held 31 s, backoff after 429/5xx. Generous, never asserted.
CONVERGE_WAIT = 120.0 + NAMESPACES * 0.6
# The operator gives up on a request after this long (--request-timeout); the proxy holds
# its delayed answers a second longer. Short, so that the suite stays quick in CI.
REQUEST_TIMEOUT = 5
TIMEOUT_ARGS = ("--request-timeout", str(REQUEST_TIMEOUT))
FOREIGN_EVERY = 10  # every tenth namespace of the faulted set holds objects of others


class Supervisor:
    """Restarts the operator process when it exits, as the kubelet would."""

    def __init__(self, processes: OperatorProcesses, name: str) -> None:
        self.processes = processes
        self.name = name
        self.process: OperatorProcess = processes.start(
            name, resync_seconds=RESYNC, extra=TIMEOUT_ARGS
        )
        self.restarts: list[int] = []  # exit codes

    def check(self) -> None:
        code = self.process.exit_code
        if code is not None:
            self.restarts.append(code)
            if len(self.restarts) > 5:
                raise AssertionError(f"the operator keeps exiting:\n{self.processes.logs()}")
            self.process = self.processes.start(
                self.name, resync_seconds=RESYNC, extra=TIMEOUT_ARGS
            )


@pytest_asyncio.fixture
async def proxy(e2e: E2E) -> AsyncIterator[FaultProxy]:
    running = FaultProxy(
        e2e.run.admin.server, e2e.run.admin.ca_file, seed=20260, delay=REQUEST_TIMEOUT + 1
    )
    await running.start()
    try:
        yield running
    finally:
        await running.stop()


async def until(check: Callable[[], Awaitable[bool]], supervisor: Supervisor, what: str) -> float:
    """Wait for `check` (restarting the operator if it exits); the seconds it took."""
    started = time.monotonic()

    async def supervised() -> bool:
        supervisor.check()
        return await check()

    await eventually(supervised, limit=CONVERGE_WAIT, what=what)
    return time.monotonic() - started


async def converged(
    e2e: E2E, body: dict[str, Any], namespaces: list[str], taken: set[ObjectRef]
) -> bool:
    """Every object and label the plan wants, except those whose names others hold."""
    name = body["metadata"]["name"]
    wanted = set().union(*(expected_refs(body, ns) for ns in namespaces)) - taken
    owned = await e2e.owned_refs(name)
    if not wanted <= owned:
        return False
    labelled = {
        item["metadata"]["name"]: item["metadata"].get("labels") or {}
        for item in await list_items(
            e2e.kube, NAMESPACE, labelSelector=f"{applied_label(name)}=true"
        )
    }
    baseline = parse_baseline(body)
    for namespace in namespaces:
        plan = plan_namespace(namespace, [baseline])
        labels = labelled.get(namespace, {})
        if any(labels.get(key) != value for key, value in plan.labels.items()):
            return False
    return True


async def label_all(e2e: E2E, names: list[str]) -> None:
    """Select the namespaces (env=prod), all at once."""
    await asyncio.gather(
        *(e2e.cluster.merge_patch(NAMESPACE, None, n, {"metadata": {"labels": {"env": "prod"}}})
          for n in names)
    )  # fmt: skip


def created(events: list[AuditEvent]) -> Counter[tuple[str, str, str]]:
    """Successful creations by object: a POST answered 2xx, or an apply answered 201."""
    return Counter(
        (event.resource, event.namespace, event.name)
        for event in events
        if event.succeeded
        and (event.verb == "create" or (event.verb == "patch" and event.code == 201))
    )


# Two rollouts (one with answers held 31 s) and a cleanup: beyond the suite's 120 s default.
@pytest.mark.timeout(180 + NAMESPACES * 1.5)
async def test_a_rollout_under_faults_converges_exactly(
    e2e: E2E, audit: AuditLog, proxy: FaultProxy
) -> None:
    lease_namespace = await e2e.create_namespace("ops")
    for role in role_bodies(ROOT, lease_namespace, e2e.run.operator_namespace):
        kind = ROLE if role["kind"] == "Role" else ROLE_BINDING
        await e2e.kube.create(kind, lease_namespace, role)
    body = e2e.baseline_body(**SPEC)
    name = await e2e.create_baseline(body)
    calm = [e2e.name(f"c{index:03d}") for index in range(NAMESPACES)]
    stormy = [e2e.name(f"f{index:03d}") for index in range(NAMESPACES)]
    e2e.namespaces.extend(calm + stormy)
    await asyncio.gather(*(e2e.cluster.create_namespace(n, **e2e.scope_labels) for n in calm))
    await asyncio.gather(*(e2e.cluster.create_namespace(n, **e2e.scope_labels) for n in stormy))

    # Objects of others, in place before the baseline selects their namespaces: one with a
    # name the baseline wants (a NetworkPolicy that allows everything), two unrelated.
    foreign: dict[ObjectRef, str] = {}  # ref -> resourceVersion
    taken: set[ObjectRef] = set()
    deny_name = f"{name}-default-deny"
    for namespace in stormy[::FOREIGN_EVERY]:
        theirs: list[tuple[Kind, str, dict[str, Any]]] = [
            (NETWORK_POLICY, deny_name, {"spec": {"podSelector": {}}}),
            (NETWORK_POLICY, "theirs", {"spec": {"podSelector": {}}}),
            (CONFIG_MAP, "theirs", {"data": {"a": "b"}}),
        ]
        for kind, object_name, content in theirs:
            version = f"{kind.group}/{kind.version}" if kind.group else kind.version
            stored = await e2e.kube.create(
                kind,
                namespace,
                {"apiVersion": version, "kind": kind.kind, "metadata": {"name": object_name}}
                | content,
            )
            foreign[ObjectRef(kind, namespace, object_name)] = stored["metadata"]["resourceVersion"]
        taken.add(ObjectRef(NETWORK_POLICY, namespace, deny_name))
    assert taken <= set().union(*(expected_refs(body, ns) for ns in stormy))

    token = (e2e.run.operator.authorization() or "").removeprefix("Bearer ").strip()
    with OperatorProcesses.running(
        kubeconfig_text(proxy.url, None, token), lease_namespace
    ) as processes:
        supervisor = Supervisor(processes, e2e.name("op"))
        agent = supervisor.name

        async def calm_done() -> bool:
            return await converged(e2e, body, calm, set())

        await label_all(e2e, calm)
        seconds = await until(calm_done, supervisor, "the rollout without faults")
        record_timing(f"{NAMESPACES} namespaces rolled out without faults", seconds)

        proxy.enabled = True
        before_storm = len(audit.writes(user_agents=[agent]))

        async def stormy_done() -> bool:
            return await converged(e2e, body, stormy, taken)

        await label_all(e2e, stormy)
        seconds = await until(stormy_done, supervisor, "the rollout under faults")
        record_timing(f"{NAMESPACES} namespaces rolled out under 20% faults", seconds)
        proxy.enabled = False
        faults_stopped = time.monotonic()

        # The status tells the truth: every namespace selected, the ones holding a foreign
        # object with a wanted name Conflicted, nothing failed or degraded.
        conflicted = {ref.namespace for ref in taken}

        last: dict[str, Any] = {}

        async def truthful() -> bool:
            status = last["status"] = await e2e.cluster.status(name)
            counts = status.get("namespaces") or {}
            listed = {entry["namespace"] for entry in status.get("nonCompliant") or []}
            conditions = {c["type"]: c for c in status.get("conditions") or []}
            return (
                counts.get("selected") == 2 * NAMESPACES
                and counts.get("failed") == 0
                and counts.get("compliant") == 2 * NAMESPACES - len(conflicted)
                # the list is bounded: the worst MAX_REPORTED
                and listed <= conflicted
                and len(listed) == min(len(conflicted), MAX_REPORTED)
                and conditions.get("Degraded", {}).get("status") == "False"
                and conditions.get("Conflicted", {}).get("status") == "True"
            )

        try:
            await until(truthful, supervisor, "the status telling the truth after the faults")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the status: {last.get('status')}") from None
        record_timing(
            f"faults stopped to a truthful status (resync every {RESYNC}s)",
            time.monotonic() - faults_stopped,
        )

        # Judged on the audit log, before anything is removed.
        events = audit.writes(user_agents=[agent], resources=NAMESPACES_AND_GENERATED)
        ours = set(calm + stormy)
        twice = {key: n for key, n in created(events).items() if n > 1 and key[1] in ours}
        deleted = [event for event in events if event.verb == "delete"]
        foreign_keys = {(ref.kind.plural, ref.namespace, ref.name) for ref in foreign}
        attempts = [
            event
            for event in audit.writes(user_agents=[agent])
            if (event.resource, event.namespace, event.name) in foreign_keys
        ]
        # Creating is how the operator finds an object of others with a wanted name
        # (AlreadyExists); nothing else may reach one, and nothing may succeed.
        touched = [event for event in attempts if event.succeeded or event.verb != "create"]
        for ref, version in foreign.items():
            now = await e2e.cluster.get(ref.kind, ref.namespace, ref.name)
            assert now is not None and now["metadata"]["resourceVersion"] == version, ref
        storm_writes = len(audit.writes(user_agents=[agent])) - before_storm
        summary = (
            f"{proxy.counts['requests']} requests through the proxy, {proxy.injected} faults "
            f"injected ({', '.join(f'{k} {n}' for k, n in sorted(proxy.counts.items()))}); "
            f"{storm_writes} writes from the faults on; {len(attempts)} creations refused on "
            f"objects of others; operator restarts {supervisor.restarts}"
        )
        print(summary)
        NOTES.append(f"faults ({NAMESPACES} namespaces): {summary}")

        started = time.monotonic()
        await delete_baselines(e2e.cluster, [name], CONVERGE_WAIT)
        record_timing(
            f"{2 * NAMESPACES} namespaces cleaned up (baseline deleted), no faults",
            time.monotonic() - started,
        )
        left = await e2e.owned_refs(name)

    assert proxy.injected > 0
    assert twice == {}, f"objects created more than once: {twice}"
    assert deleted == [], "deleted while wanted:\n" + "\n".join(map(str, deleted))
    assert touched == [], "objects of others written:\n" + "\n".join(map(str, touched))
    assert left == set()

"""Benchmarks of the operator, each printed as a ratio against a reference measured in the
same run, so that results compare across machines.

1. core: the pure per-namespace work (select, render, layer, diff an in-sync namespace)
   against a reference that only deep-copies the same desired objects: how much the
   planning costs over the least work that produces the objects at all.
2. converge: N namespaces created at once, the real operator against the in-process
   emulator, until every one holds the production posture; against a reference that
   sends the same writes directly (a POST per object the operator makes, a server-side
   apply for the default ServiceAccount's field and one for the namespace's labels) with
   the same concurrency. It also counts write requests against that minimum.
3. resync: a resync of N in-sync namespaces by the running operator (no writes) against
   the core's pure planning of the same namespaces.

Run: python bench/bench_operator.py [--namespaces N]   (the quick look, no cluster needed;
bench/bench_scale.py measures against a real API server)
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import kopf
import structlog
import yaml

from baseline_operator.api.resource import parse_baseline
from baseline_operator.controller.main import operator_in_process
from baseline_operator.controller.options import OperatorOptions
from baseline_operator.demo.emulator import running_emulator, write_requests
from baseline_operator.kube.client import KubeApi
from baseline_operator.kube.config import endpoint_for
from baseline_operator.policy.diff import (
    NamespaceState,
    OwnerState,
    diff_namespace,
    observe,
    with_desired_hash,
)
from baseline_operator.policy.layering import plan_namespace
from baseline_operator.policy.names import APPLIED_PREFIX, FIELD_MANAGER
from baseline_operator.policy.objects import (
    NAMESPACE,
    SECURITY_BASELINE,
    DesiredObject,
    Ownership,
)
from baseline_operator.policy.select import selects

WORKERS = 4
EXAMPLE = Path(__file__).parents[1] / "manifests" / "examples" / "production.yaml"


def best_of(repeats: int, work: Callable[[], None]) -> float:
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        timings.append(time.perf_counter() - started)
    return min(timings)


def as_stored(body: dict[str, Any]) -> dict[str, Any]:
    """A body as the API server shows it after the operator wrote it: its managedFields name
    the operator's field manager (the proof of ownership the diff asks for)."""
    stored = copy.deepcopy(body)
    stored["metadata"]["managedFields"] = [
        {
            "manager": FIELD_MANAGER,
            "operation": "Update",
            "apiVersion": body["apiVersion"],
            "fieldsType": "FieldsV1",
            "fieldsV1": {},
        }
    ]
    return stored


def bench_core(count: int) -> tuple[float, float]:
    body = yaml.safe_load(EXAMPLE.read_text())
    baseline = parse_baseline(body)
    labels = {"env": "production"}
    names = [f"team-{i}" for i in range(count)]
    plans = {name: plan_namespace(name, [baseline]) for name in names}
    observed = {
        name: {
            item.ref: observe(as_stored(with_desired_hash(item))) for item in plans[name].objects
        }
        for name in names
    }
    states = {
        name: NamespaceState(name, None, {**labels, **plans[name].labels}, False, None)
        for name in names
    }
    owners = {baseline.name: OwnerState(active=True)}

    def core() -> None:
        for name in names:
            assert selects(baseline, name, labels)
            plan = plan_namespace(name, [baseline])
            changes = diff_namespace(
                plan.labels, plan.objects, states[name], observed[name], owners
            )
            assert changes.in_place

    def reference() -> None:
        for name in names:
            copy.deepcopy([item.body for item in plans[name].objects])

    return best_of(5, core), best_of(5, reference)


async def bench_converge(count: int) -> dict[str, float]:
    body = yaml.safe_load(EXAMPLE.read_text())
    body["spec"].pop("excludeNamespaces", None)
    baseline = parse_baseline(body)
    async with running_emulator() as (emulator, url):
        kube = KubeApi(endpoint_for(url))
        await kube.create(SECURITY_BASELINE, None, copy.deepcopy(body))

        # Reference: the same applies, made directly, with the operator's request budget.
        reference_names = [f"ref-{i}" for i in range(count)]
        for name in reference_names:
            await kube.create(
                NAMESPACE,
                None,
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
            )
        slots = asyncio.Semaphore(kube.budget)

        async def write(item: DesiredObject | dict[str, Any]) -> None:
            # As the operator sends them: a POST for an object it makes, a server-side
            # apply for its fields on an object of others and for the namespace's labels.
            async with slots:
                if isinstance(item, DesiredObject) and item.ownership is Ownership.OBJECT:
                    await kube.create(item.ref.kind, item.ref.namespace, with_desired_hash(item))
                else:
                    await kube.apply(item.body if isinstance(item, DesiredObject) else item)

        started = time.perf_counter()
        bodies: list[DesiredObject | dict[str, Any]] = []
        for name in reference_names:
            plan = plan_namespace(name, [baseline])
            bodies.extend(plan.objects)
            bodies.append(
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": name, "labels": plan.labels},
                }
            )
        await asyncio.gather(*(write(item) for item in bodies))
        reference = time.perf_counter() - started
        minimum_writes = len(bodies)

        options = OperatorOptions(
            resync_seconds=3600, workers=WORKERS, workload_audit=False, watch_timeout=120
        )
        async with operator_in_process(
            kube, lambda: kopf.ConnectionInfo(server=url), options
        ) as memo:
            result = await _measure(emulator, kube, memo, baseline.name, count)
        await kube.close()
        return {"reference": reference, "minimum_writes": minimum_writes, **result}


async def _measure(
    emulator: Any, kube: KubeApi, memo: kopf.Memo, baseline: str, count: int
) -> dict[str, float]:
    """Convergence of `count` new namespaces, then a resync of all of them in place."""
    # Polled from outside, as a user would: the runtime exposes no event for "idle".
    while not (  # noqa: ASYNC110
        hasattr(memo, "runtime") and memo.runtime.idle
    ):
        await asyncio.sleep(0.05)
    writes_before = len(write_requests(emulator))

    names = [f"team-{i}" for i in range(count)]
    started = time.perf_counter()
    for name in names:
        await kube.create(
            NAMESPACE,
            None,
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name, "labels": {"env": "production"}},
            },
        )
    applied = f"{APPLIED_PREFIX}{baseline}"
    while True:
        runtime = memo.runtime
        done = sum(
            1
            for name in names
            if (state := runtime.view.namespace(name)) is not None
            and applied in state.labels
            and runtime.status.outcomes_of(baseline).get(name) is not None
        )
        if done == count and runtime.idle:
            break
        await asyncio.sleep(0.01)
    converged = time.perf_counter() - started
    # The operator's writes: not Events, not status, not the benchmark's own namespaces.
    operator_writes = [
        w
        for w in write_requests(emulator)[writes_before:]
        if "/status" not in w.path
        and "/events" not in w.path
        and not (w.method == "POST" and w.path.rstrip("/") == "/api/v1/namespaces")
    ]

    # Resync of everything in place: no writes, the pure work plus the queue.
    runtime = memo.runtime
    writes_before_resync = len(write_requests(emulator))
    resync_started = time.perf_counter()
    runtime.enqueue_everything()
    await runtime.queue.join([("namespace", name) for name in names])
    resync = time.perf_counter() - resync_started
    resync_writes = len(write_requests(emulator)) - writes_before_resync
    return {
        "converged": converged,
        "writes": len(operator_writes),
        "resync": resync,
        "resync_writes": resync_writes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--namespaces", type=int, default=100)
    args = parser.parse_args()
    count = args.namespaces
    # The measurements are the output; the operator's own info logs would bury them.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))

    core, reference = bench_core(count)
    print(
        f"core     {count} namespaces: plan+diff {core * 1e3:8.2f} ms"
        f" ({core / count * 1e6:6.1f} us each); reference deep copy {reference * 1e3:8.2f} ms;"
        f" ratio {core / reference:5.2f}"
    )

    result = asyncio.run(bench_converge(count))
    print(
        f"converge {count} namespaces: operator {result['converged']:6.2f} s;"
        f" reference direct applies {result['reference']:6.2f} s;"
        f" ratio {result['converged'] / result['reference']:5.2f}"
    )
    print(
        f"writes   operator {result['writes']}, minimum {result['minimum_writes']};"
        f" ratio {result['writes'] / result['minimum_writes']:5.2f}"
    )
    print(
        f"resync   {count} namespaces in place: {result['resync'] * 1e3:8.1f} ms, "
        f"{result['resync_writes']} writes; ratio to pure planning {result['resync'] / core:5.2f}"
    )


if __name__ == "__main__":
    main()

"""Namespaces come and go by the hundred: nothing the operator keeps per namespace stays."""

from __future__ import annotations

import asyncio

from baseline_operator.policy.objects import NAMESPACE
from tests.support.cluster import Cluster, baseline, eventually, running_operator

CHURN = 500


async def test_per_namespace_state_returns_to_its_size_after_500_namespaces(
    cluster: Cluster,
) -> None:
    spec = {
        "networkPolicy": {"defaultDeny": ["Ingress"]},
        "podSecurity": {"enforce": "baseline"},
        "workloadAudit": {"enabled": True},
    }
    async with running_operator(cluster) as operator:
        await cluster.create_baseline(baseline(**spec))
        await cluster.create_namespace("steady", env="prod")
        await operator.settled()
        before = operator.runtime.kept_per_namespace()
        assert before["outcomes"] == 1  # the steady namespace: the measure is not empty

        names = [f"churn-{index}" for index in range(CHURN)]
        await asyncio.gather(*(cluster.create_namespace(name, env="prod") for name in names))
        runtime = operator.runtime

        async def all_reconciled() -> bool:
            return len(runtime.status.outcomes_of("prod")) == CHURN + 1

        await eventually(all_reconciled, limit=120)
        during = runtime.kept_per_namespace()
        assert during["outcomes"] == CHURN + 1
        assert during["queue"] >= CHURN  # the measure sees per-namespace bookkeeping

        await asyncio.gather(*(cluster.delete(NAMESPACE, None, name) for name in names))

        async def all_forgotten() -> bool:
            return runtime.kept_per_namespace() == before

        await eventually(all_forgotten, limit=120)
        assert len(runtime.namespaces) == len(await cluster.list(NAMESPACE))

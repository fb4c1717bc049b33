"""Leader election on a Lease, through the API (the emulator checks resourceVersions on PUT)."""

from __future__ import annotations

import asyncio

from baseline_operator.controller.leader import LEASE_NAME, LeaderElector
from baseline_operator.policy.objects import LEASE
from tests.support.cluster import Cluster


async def test_one_leads_the_other_waits_then_takes_over(cluster: Cluster) -> None:
    await cluster.create_namespace("baseline-operator-system")
    first = LeaderElector(
        cluster.kube, "baseline-operator-system", "replica-a", duration=2, renew_every=0.2
    )
    second = LeaderElector(
        cluster.kube, "baseline-operator-system", "replica-b", duration=2, renew_every=0.2
    )
    await first.acquire()
    lost_first = asyncio.Event()
    holding = asyncio.create_task(first.hold(lost_first))
    waiting = asyncio.create_task(second.acquire())
    await asyncio.sleep(1.0)
    assert not waiting.done()  # the lease is renewed: the second replica waits

    holding.cancel()  # the first replica stops renewing (as if it died)
    await asyncio.wait_for(waiting, 5)
    lease = await cluster.get(LEASE, "baseline-operator-system", LEASE_NAME)
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == "replica-b"
    assert lease["spec"]["leaseTransitions"] == 1

    # The first replica, if it came back, would see it has lost the lease and step down.
    lost = asyncio.Event()
    await asyncio.wait_for(first.hold(lost), 3)
    assert lost.is_set()


async def test_a_missing_operator_namespace_is_created(cluster: Cluster) -> None:
    from baseline_operator.policy.objects import NAMESPACE

    elector = LeaderElector(cluster.kube, "ops-fresh", "replica-a", duration=2, renew_every=0.2)
    await asyncio.wait_for(elector.acquire(), 5)
    namespace = await cluster.get(NAMESPACE, None, "ops-fresh")
    assert namespace is not None
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    lease = await cluster.get(LEASE, "ops-fresh", LEASE_NAME)
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == "replica-a"

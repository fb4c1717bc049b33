"""A view that stays behind the API server: the namespace is looked at again with backoff,
a warning says so, and it converges once the view catches up."""

from __future__ import annotations

import pytest
import structlog

from baseline_operator.controller import namespaces
from baseline_operator.demo.emulator import fail_next
from baseline_operator.policy.objects import NETWORK_POLICY
from tests.support.cluster import Cluster, baseline, eventually, running_operator


def test_the_delay_doubles_from_the_first_retry_up_to_a_cap() -> None:
    delays = [namespaces.stale_retry_delay(passes) for passes in range(1, 10)]
    assert delays[:4] == [0.2, 0.4, 0.8, 1.6]
    assert delays[-1] == namespaces.STALE_MAX_RETRY
    assert delays == sorted(delays)


async def test_a_namespace_whose_writes_keep_finding_a_stale_view_backs_off_and_warns(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(namespaces, "STALE_RETRY", 0.01)  # the same doubling, sooner
    delays: list[float] = []
    async with running_operator(cluster) as operator:
        await operator.settled()
        reconciler = operator.runtime.namespace_reconciler
        enqueue = reconciler.enqueue

        def recording(key: object, delay: float) -> None:
            if key == ("namespace", "team-a"):
                delays.append(delay)
            enqueue(key, delay)  # type: ignore[arg-type]

        reconciler.enqueue = recording  # type: ignore[method-assign]
        # Every create of the NetworkPolicy answered 409 seven times: seven passes in a row
        # judge a view that is behind (the object "exists", yet reads as gone).
        fail_next(
            cluster.emulator,
            "post",
            "networking.k8s.io/v1/networkpolicies",
            times=7,
            status=409,
            retry_after=None,
        )
        with structlog.testing.capture_logs() as logs:
            await cluster.create_baseline(baseline(networkPolicy={"defaultDeny": ["Ingress"]}))
            await cluster.create_namespace("team-a", env="prod")

            async def created() -> bool:
                return await cluster.get(NETWORK_POLICY, "team-a", "prod-default-deny") is not None

            await eventually(created)
            await operator.settled()

    assert delays == pytest.approx([0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64])
    warnings = [entry for entry in logs if entry["event"].startswith("the view of a namespace")]
    assert [(entry["namespace"], entry["passes"]) for entry in warnings] == [("team-a", 5)]
    assert "prod-default-deny" in warnings[0]["writes"][0]
    assert not reconciler.stale_passes  # converged: the count starts again

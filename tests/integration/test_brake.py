"""The brake on mass removal: a generation that would strip most namespaces waits."""

from __future__ import annotations

import copy

from baseline_operator.controller.baselines import ACKNOWLEDGE_REMOVAL
from baseline_operator.policy.names import applied_label
from baseline_operator.policy.objects import NAMESPACE as NAMESPACE_KIND
from baseline_operator.policy.objects import NETWORK_POLICY, SECURITY_BASELINE
from tests.support.cluster import Cluster, baseline, eventually, running_operator

SPEC = {"networkPolicy": {"defaultDeny": ["Ingress"]}, "podSecurity": {"enforce": "baseline"}}
TEAMS = [f"team-{index}" for index in range(6)]


async def _ready_reason(cluster: Cluster, reason: str) -> None:
    async def reached() -> bool:
        return (await cluster.condition("prod", "Ready")).get("reason") == reason

    await eventually(reached)


async def _acknowledge(cluster: Cluster) -> None:
    """Someone who means it says so, for the current generation."""
    stored = await cluster.get(SECURITY_BASELINE, None, "prod")
    assert stored is not None
    generation = str(stored["metadata"]["generation"])
    annotations = {ACKNOWLEDGE_REMOVAL: generation}
    await cluster.merge_patch(
        SECURITY_BASELINE, None, "prod", {"metadata": {"annotations": annotations}}
    )


async def _held_everywhere(cluster: Cluster) -> None:
    """Every namespace still holds the posture, and the baseline says why."""
    ready = await cluster.condition("prod", "Ready")
    assert ready["reason"] == "RemovalHeld", ready
    assert f'{ACKNOWLEDGE_REMOVAL}="' in ready["message"]
    assert "from 6 of the 6 namespaces" in ready["message"]
    for team in TEAMS:
        assert (await cluster.labels(team)).get(applied_label("prod")) == "true"
        assert await cluster.get(NETWORK_POLICY, team, "prod-default-deny") is not None


async def test_a_selector_typo_is_held_until_acknowledged(cluster: Cluster) -> None:
    for team in TEAMS:
        await cluster.create_namespace(team, env="prod")
    body = baseline(**SPEC)
    await cluster.create_baseline(body)
    async with running_operator(cluster) as operator:
        await _ready_reason(cluster, "Converged")
        typo = copy.deepcopy(body["spec"])
        typo["namespaceSelector"] = {"matchLabels": {"env": "prdo"}}
        await cluster.merge_patch(SECURITY_BASELINE, None, "prod", {"spec": typo})

        await _ready_reason(cluster, "RemovalHeld")
        await operator.settled()
        await _held_everywhere(cluster)

        await _acknowledge(cluster)

        async def removed() -> bool:
            for team in TEAMS:
                if await cluster.get(NETWORK_POLICY, team, "prod-default-deny") is not None:
                    return False
                if applied_label("prod") in await cluster.labels(team):
                    return False
            return True

        await eventually(removed)


async def test_a_deletion_that_would_strip_every_namespace_waits(cluster: Cluster) -> None:
    for team in TEAMS:
        await cluster.create_namespace(team, env="prod")
    await cluster.create_baseline(baseline(**SPEC))
    async with running_operator(cluster):
        await _ready_reason(cluster, "Converged")
        await cluster.delete(SECURITY_BASELINE, None, "prod")

        await _ready_reason(cluster, "RemovalHeld")
        await _held_everywhere(cluster)
        assert await cluster.get(SECURITY_BASELINE, None, "prod") is not None  # the finalizer

        await _acknowledge(cluster)

        async def gone() -> bool:
            return await cluster.get(SECURITY_BASELINE, None, "prod") is None

        await eventually(gone)
        for team in TEAMS:
            assert await cluster.get(NETWORK_POLICY, team, "prod-default-deny") is None
            assert applied_label("prod") not in await cluster.labels(team)


async def test_a_few_namespaces_leaving_is_no_mass_removal(cluster: Cluster) -> None:
    for team in TEAMS:
        await cluster.create_namespace(team, env="prod")
    await cluster.create_baseline(baseline(**SPEC))
    async with running_operator(cluster):
        await _ready_reason(cluster, "Converged")
        # Two of six leave (a third): below the share, removed at once.
        for team in TEAMS[:2]:
            await cluster.merge_patch(
                NAMESPACE_KIND, None, team, {"metadata": {"labels": {"env": "dev"}}}
            )

        async def left() -> bool:
            gone = [
                await cluster.get(NETWORK_POLICY, team, "prod-default-deny") for team in TEAMS[:2]
            ]
            return gone == [None, None]

        await eventually(left)
        assert (await cluster.condition("prod", "Ready")).get("reason") != "RemovalHeld"

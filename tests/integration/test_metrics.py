"""The metrics endpoint of a running operator, scraped as Prometheus would."""

from __future__ import annotations

import socket

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from baseline_operator.controller.main import operator_in_process
from baseline_operator.controller.metrics import OperatorMetrics, resource_of
from baseline_operator.controller.options import OperatorOptions
from baseline_operator.kube.client import KubeApi, RetryPolicy
from baseline_operator.policy.objects import NETWORK_POLICY
from tests.support.cluster import FULL_SPEC, Cluster, baseline, eventually

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def scrape(port: int) -> Samples:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/metrics") as answer,
    ):
        assert answer.status == 200
        text = await answer.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_paths_map_to_bounded_resource_names() -> None:
    assert resource_of("/apis/networking.k8s.io/v1/namespaces/a/networkpolicies/x") == (
        "networkpolicies"
    )
    assert resource_of("/api/v1/namespaces/team-a") == "namespaces"
    assert resource_of("/api/v1/namespaces/team-a/serviceaccounts/default") == "serviceaccounts"
    assert resource_of("/apis/example.com/v1/namespaces/a/whatever/x") == "other"
    assert resource_of("/healthz") == "other"


async def test_a_running_operator_is_scraped(cluster: Cluster) -> None:
    metrics = OperatorMetrics()
    metrics.leader = True
    kube = KubeApi(cluster.endpoint, retry=RetryPolicy(first_delay=0.05, max_delay=0.5))
    kube.on_request = metrics.on_request
    port = free_port()
    runner = await metrics.serve("127.0.0.1", port)
    spec = {key: value for key, value in FULL_SPEC.items() if key != "externalSecrets"}
    await cluster.create_baseline(baseline(**spec))
    await cluster.create_namespace("team-a", env="prod")
    await cluster.create_namespace("team-b", env="prod")
    options = OperatorOptions(resync_seconds=3600, username="system:serviceaccount:x:y")
    try:
        async with operator_in_process(kube, cluster.connection, options, metrics) as memo:

            async def compliant() -> bool:
                samples = await scrape(port)
                return (
                    value(
                        samples, "baseline_operator_namespaces", baseline="prod", state="compliant"
                    )
                    == 2
                )

            await eventually(compliant)
            # Drift: someone deletes a generated NetworkPolicy; it is created again.
            await cluster.delete(NETWORK_POLICY, "team-a", "prod-default-deny")

            async def recreated() -> bool:
                return await cluster.get(NETWORK_POLICY, "team-a", "prod-default-deny") is not None

            await eventually(recreated)
            await memo.runtime.queue.join([("namespace", "team-a")])
            samples = await scrape(port)
    finally:
        await runner.cleanup()
        await kube.close()

    assert value(samples, "baseline_operator_leader") == 1
    assert value(samples, "baseline_operator_namespaces", baseline="prod", state="selected") == 2
    assert value(samples, "baseline_operator_conflicts", baseline="prod") == 0
    # Two namespaces' default deny, then the one put back: three creates.
    creates = value(
        samples, "baseline_operator_writes_total", verb="POST", resource="networkpolicies"
    )
    assert creates >= 3
    assert (
        value(samples, "baseline_operator_writes_total", verb="PATCH", resource="namespaces") >= 2
    )
    assert (
        value(samples, "baseline_operator_reconciles_total", kind="namespace", result="done") >= 3
    )
    assert value(samples, "baseline_operator_api_request_duration_seconds_count", verb="POST") >= 3
    assert value(samples, "baseline_operator_cached_objects", resource="namespaces") >= 2
    assert ("baseline_operator_queue_depth", ()) in samples
    assert ("baseline_operator_queue_oldest_item_age_seconds", ()) in samples
    assert value(samples, "baseline_operator_watch_restarts_total", resource="networkpolicies") == 0
    names = {name for name, _ in samples}
    assert not any("team-a" in str(labels) for _, labels in samples)  # bounded label values
    assert "baseline_operator_relists_total" in names

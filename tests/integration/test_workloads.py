"""Workload audit in the cluster: pods judged from a watch, reported in status, Events and
a bounded PolicyReport."""

from __future__ import annotations

import asyncio
from typing import Any

from baseline_operator.policy.objects import EVENT, NETWORK_POLICY, POD, POLICY_REPORT
from baseline_operator.policy.workloads import POLICY_REPORT_NAME
from tests.support.cluster import Cluster, baseline, eventually, running_operator
from tests.support.pods import pod

AUDITED = {
    "workloadAudit": {"enabled": True},
    "admission": {
        "allowedRegistries": ["registry.example.com/"],
        "requiredLabels": ["app"],
        "validationActions": ["Warn"],
    },
}


async def workload_events(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    return [
        event
        for event in await cluster.list(EVENT, "default")
        if event["involvedObject"]["name"] == namespace and event["reason"] == "WorkloadFindings"
    ]


async def test_the_posture_is_reported_control_by_control(cluster: Cluster) -> None:
    """Without workloadAudit too: one result per control, pass or fail with the reason."""
    spec = {
        "podSecurity": {"enforce": "restricted", "warn": "restricted"},
        "networkPolicy": {"defaultDeny": ["Ingress", "Egress"], "allowDNS": True},
        "rbac": {
            "defaultServiceAccount": {"automountServiceAccountToken": False},
            "viewers": [{"kind": "Group", "name": "team"}],
        },
    }
    await cluster.create_namespace("team-a", env="prod")
    # Someone else's object holds the name of the DNS allow rule.
    await cluster.kube.create(
        NETWORK_POLICY,
        "team-a",
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "prod-allow-dns", "namespace": "team-a"},
            "spec": {"podSelector": {}},
        },
    )
    async with running_operator(cluster) as operator:
        await cluster.create_baseline(baseline(**spec))

        async def written() -> dict[str, Any] | None:
            return await cluster.get(POLICY_REPORT, "team-a", POLICY_REPORT_NAME)

        await eventually(lambda: _truthy(written()))
        await operator.settled()
        report = await written()
        assert report is not None
        results = {
            (r["rule"], r.get("resources", [{}])[0].get("name")): r for r in report["results"]
        }
        assert results[("pod-security-enforce", None)]["result"] == "pass"
        assert results[("network-policy", "prod-default-deny")]["result"] == "pass"
        dns = results[("network-policy", "prod-allow-dns")]
        assert dns["result"] == "fail"
        assert "was not made by baseline-operator" in dns["message"]
        assert results[("rbac-binding", "prod-viewers")]["result"] == "pass"
        assert results[("default-service-account-token", "default")]["result"] == "pass"
        assert report["summary"]["fail"] == 1
        assert report["results"][0]["result"] == "fail"  # failures first


async def _truthy(value: Any) -> bool:
    return bool(await value)


async def test_pods_are_judged_and_reported(cluster: Cluster) -> None:
    async with running_operator(cluster) as operator:
        await cluster.create_namespace("team-a", env="prod")
        await cluster.kube.create(POD, "team-a", pod("good", hardened=True, namespace="team-a"))
        await cluster.kube.create(POD, "team-a", pod("bad", hardened=False, namespace="team-a"))
        await cluster.create_baseline(baseline(**AUDITED))

        async def reported() -> bool:
            return (await cluster.status("prod")).get("workloads", {}).get("pods") == 2

        await eventually(reported)
        await operator.settled()
        status = await cluster.status("prod")
        assert status["workloads"]["nonCompliantPods"] == 1
        (listed,) = status["nonCompliantWorkloads"]
        assert listed["namespace"] == "team-a" and listed["pod"] == "bad"
        assert {"privileged", "allowed-registries", "required-labels", "image-tag"} <= set(
            listed["checks"]
        )

        report = await cluster.get(POLICY_REPORT, "team-a", POLICY_REPORT_NAME)
        assert report is not None
        findings = [r for r in report["results"] if r.get("category") != "posture"]
        rules = {result["rule"] for result in findings}
        assert "privileged" in rules
        assert all(result["resources"][0]["name"] == "bad" for result in findings)
        # The posture's controls come too (policy.controls): here the admission policies.
        posture = [r for r in report["results"] if r.get("category") == "posture"]
        assert {r["rule"]: r["result"] for r in posture} == {"admission-policies": "pass"}
        assert report["summary"]["fail"] == len(findings)
        # the first look after a start is no news: no Event yet
        assert await workload_events(cluster, "team-a") == []

        await cluster.delete(POD, "team-a", "bad")

        async def cleared() -> bool:
            return (await cluster.status("prod")).get("workloads", {}).get("nonCompliantPods") == 0

        await eventually(cleared)
        (event,) = await workload_events(cluster, "team-a")
        assert event["message"] == "all 1 pods pass the hardening checks"
        report = await cluster.get(POLICY_REPORT, "team-a", POLICY_REPORT_NAME)
        assert report is not None
        assert [r for r in report["results"] if r.get("category") != "posture"] == []


async def test_workloads_at_rest_cost_nothing(cluster: Cluster) -> None:
    from baseline_operator.demo.emulator import write_requests

    await cluster.create_namespace("team-a", env="prod")
    await cluster.kube.create(POD, "team-a", pod("bad", hardened=False, namespace="team-a"))
    await cluster.create_baseline(baseline(**AUDITED))
    async with running_operator(cluster, resync_seconds=0.5) as operator:
        await operator.settled(quiet=1.0)
        assert cluster.emulator is not None
        before = len(write_requests(cluster.emulator))
        await asyncio.sleep(1.6)
        await operator.settled()
        assert write_requests(cluster.emulator)[before:] == []
    async with running_operator(cluster) as operator:
        await operator.settled(quiet=1.0)
        assert write_requests(cluster.emulator)[before:] == []


async def test_without_the_policy_report_crd_nothing_breaks(cluster: Cluster) -> None:
    assert cluster.emulator is not None
    for resource in list(cluster.emulator.resources):
        if getattr(resource, "group", None) == "wgpolicyk8s.io":
            del cluster.emulator.resources[resource]
    await cluster.create_namespace("team-a", env="prod")
    await cluster.kube.create(POD, "team-a", pod("bad", hardened=False, namespace="team-a"))
    await cluster.create_baseline(baseline(**AUDITED))
    async with running_operator(cluster) as operator:

        async def reported() -> bool:
            return (await cluster.status("prod")).get("workloads", {}).get("nonCompliantPods") == 1

        await eventually(reported)
        await operator.settled()
        assert not operator.runtime.view.served(POLICY_REPORT)
        assert not any("wgpolicyk8s.io" in w.path for w in cluster.writes())
        ready = await cluster.condition("prod", "Ready")
        assert ready["status"] == "True"

"""Workload audit against a real API server: existing pods (they never run here, but they
exist) judged from a watch, counted in the baseline's status, and an Event on change."""

from __future__ import annotations

import pytest

from baseline_operator.policy.objects import EVENT, POD, SERVICE_ACCOUNT
from tests.e2e.conftest import E2E, eventually, list_items
from tests.support.pods import pod

pytestmark = pytest.mark.e2e


async def test_existing_pods_are_judged_and_changes_reported(e2e: E2E) -> None:
    namespace = await e2e.create_namespace("apps", env="prod")

    async def account() -> bool:
        return await e2e.cluster.get(SERVICE_ACCOUNT, namespace, "default") is not None

    await eventually(account, what=f"the default ServiceAccount of {namespace}")
    await e2e.kube.create(POD, namespace, pod("hardened", hardened=True))
    await e2e.kube.create(POD, namespace, pod("loose", hardened=False))
    body = e2e.baseline_body(
        workloadAudit={"enabled": True},
        admission={"allowedRegistries": ["registry.example.com/"], "validationActions": ["Warn"]},
    )
    name = await e2e.create_baseline(body)

    async with e2e.operator() as operator:

        async def counted() -> bool:
            workloads = (await e2e.cluster.status(name)).get("workloads") or {}
            return workloads.get("pods") == 2 and workloads.get("nonCompliantPods") == 1

        await eventually(counted, what="status.workloads of two pods, one failing")
        status = await e2e.cluster.status(name)
        (listed,) = status["nonCompliantWorkloads"]
        assert (listed["namespace"], listed["pod"]) == (namespace, "loose")
        assert {"allowed-registries", "image-tag", "run-as-non-root"} <= set(listed["checks"])

        await e2e.kube.request(
            "DELETE",
            f"/api/v1/namespaces/{namespace}/pods/loose",
            body={"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0},
        )

        async def cleared() -> bool:
            workloads = (await e2e.cluster.status(name)).get("workloads") or {}
            return workloads.get("pods") == 1 and workloads.get("nonCompliantPods") == 0

        await eventually(cleared, what="status.workloads after the failing pod is gone")

        async def evented() -> bool:
            events = await list_items(e2e.kube, EVENT, "default")
            return any(
                event["involvedObject"].get("name") == namespace
                and event["reason"] == "WorkloadFindings"
                and event["message"] == "all 1 pods pass the hardening checks"
                for event in events
            )

        await eventually(evented, what="a WorkloadFindings Event on the namespace")
        await operator.settled()

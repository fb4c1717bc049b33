"""Writes only what differs: Audit mode, a resync at rest and a restart write nothing.

"Nothing" is what the API server itself counts: `apiserver_request_total` for write
verbs (not dry runs) by clients other than the control plane's own, on the namespaces,
the generated kinds, Events and SecurityBaselines.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from baseline_operator.policy.names import applied_label
from baseline_operator.policy.objects import (
    EXTERNAL_SECRET,
    SECURITY_BASELINE,
    SERVICE_ACCOUNT,
    VALIDATING_ADMISSION_POLICY,
)
from tests.e2e.conftest import (
    E2E,
    EVERYTHING_THE_OPERATOR_WRITES,
    NAMESPACES_AND_GENERATED,
    SPEC,
    converged_on,
    eventually,
    expected_refs,
    list_items,
    served,
)
from tests.support.cluster import FULL_SPEC

pytestmark = pytest.mark.e2e

ADMISSION = {"denyPrivileged": True, "requiredLabels": ["app"], "validationActions": ["Deny"]}
RESYNC = 5.0


async def default_account(e2e: E2E, namespace: str) -> dict[str, Any]:
    """The namespace's default ServiceAccount, once the controller manager has made it."""

    async def made() -> dict[str, Any] | None:
        return await e2e.cluster.get(SERVICE_ACCOUNT, namespace, "default")

    return await eventually(made, what=f"the default ServiceAccount of {namespace}")


async def test_audit_mode_writes_nothing_and_reports(e2e: E2E) -> None:
    namespace = await e2e.create_namespace("a", env="prod")
    account = await default_account(e2e, namespace)
    labels = await e2e.cluster.labels(namespace)
    body = e2e.baseline_body(
        **SPEC, mode="Audit", admission=ADMISSION, protectGeneratedObjects=True
    )
    name = body["metadata"]["name"]
    async with e2e.operator() as operator:
        await operator.settled()
        before = await e2e.snapshot()
        await e2e.create_baseline(body)

        async def audited() -> bool:
            ready = await e2e.cluster.condition(name, "Ready")
            return ready.get("reason") == "Audited" and ready.get("observedGeneration") == 1

        await eventually(audited, what="Ready reason Audited")
        await operator.settled(quiet=1.0)

        assert await e2e.writes_since(before, NAMESPACES_AND_GENERATED) == {}
        assert await e2e.cluster.labels(namespace) == labels
        assert await e2e.owned_refs(name) == set()
        policies = await list_items(
            e2e.kube,
            VALIDATING_ADMISSION_POLICY,
            labelSelector=f"security.baseline.dev/baseline={name}",
        )
        assert policies == []
        after = await e2e.cluster.get(SERVICE_ACCOUNT, namespace, "default")
        assert after is not None
        assert after["metadata"]["resourceVersion"] == account["metadata"]["resourceVersion"]

        status = await e2e.cluster.status(name)
        assert status["namespaces"] == {
            "selected": 1,
            "compliant": 0,
            "drifted": 1,
            "failed": 0,
            "conflicted": 0,
            "superseded": 0,
        }
        (report,) = status["nonCompliant"]
        assert report["namespace"] == namespace
        assert report["reason"] == "WouldChange"
        wanted = expected_refs(body, namespace)
        assert f"would create {len(wanted)} objects:" in report["message"]
        assert f"NetworkPolicy {name}-default-deny" in report["message"]
        assert "pod-security.kubernetes.io/enforce=restricted" in report["message"]
        assert f"{applied_label(name)}=true" in report["message"]


async def test_a_resync_at_rest_writes_nothing(e2e: E2E) -> None:
    namespaces = [
        await e2e.create_namespace("a", env="prod"),
        await e2e.create_namespace("b", env="prod"),
    ]
    body = e2e.baseline_body(**SPEC, admission=ADMISSION, protectGeneratedObjects=True)
    name = await e2e.create_baseline(body)
    async with e2e.operator(resync_seconds=RESYNC) as operator:
        await eventually(lambda: converged_on(e2e, body, namespaces), what="convergence")

        async def ready() -> bool:
            return (await e2e.cluster.condition(name, "Ready")).get("status") == "True"

        await eventually(ready, what="Ready")
        await operator.settled(quiet=1.0)
        before = await e2e.snapshot()
        reconciled = operator.runtime.namespace_reconciler.reconciled
        counts = {namespace: reconciled[namespace] for namespace in namespaces}

        await asyncio.sleep(2 * RESYNC + 1)
        await operator.settled()

        assert all(reconciled[ns] >= counts[ns] + 2 for ns in namespaces), "no resync ran"
        assert await e2e.writes_since(before, EVERYTHING_THE_OPERATOR_WRITES) == {}


async def test_a_restart_in_sync_writes_nothing(e2e: E2E) -> None:
    namespace = await e2e.create_namespace("a", env="prod")
    body = e2e.baseline_body(**SPEC, admission=ADMISSION, protectGeneratedObjects=True)
    name = await e2e.create_baseline(body)
    async with e2e.operator(cleanup=False) as operator:
        await eventually(lambda: converged_on(e2e, body, [namespace]), what="convergence")

        async def ready() -> bool:
            return (await e2e.cluster.condition(name, "Ready")).get("status") == "True"

        await eventually(ready, what="Ready")
        await operator.settled(quiet=1.0)

    before = await e2e.snapshot()
    async with e2e.operator() as operator:
        await operator.settled(quiet=2.0)
        assert namespace in operator.runtime.status.outcomes_of(name)
        assert await e2e.writes_since(before, EVERYTHING_THE_OPERATOR_WRITES) == {}


async def test_a_restart_keeps_the_status_of_a_failing_baseline(e2e: E2E) -> None:
    if await served(e2e.kube, EXTERNAL_SECRET):
        pytest.skip(reason="needs failing writes, but the ExternalSecret kind is served here")
    namespace = await e2e.create_namespace("a", env="prod")
    body = e2e.baseline_body(**FULL_SPEC)  # its ExternalSecret cannot be written
    name = await e2e.create_baseline(body)
    async with e2e.operator(cleanup=False) as operator:

        async def failed() -> bool:
            return (await e2e.cluster.condition(name, "Ready")).get("reason") == "ApplyFailed"

        await eventually(failed, what="Ready reason ApplyFailed")
        await operator.settled(quiet=1.0)
    stored = await e2e.cluster.get(SECURITY_BASELINE, None, name)
    assert stored is not None

    async with e2e.operator() as operator:
        await operator.settled(quiet=2.0)
        assert namespace in operator.runtime.status.outcomes_of(name)
        again = await e2e.cluster.get(SECURITY_BASELINE, None, name)
        assert again is not None
        assert again["status"]["conditions"] == stored["status"]["conditions"]
        assert again["metadata"]["resourceVersion"] == stored["metadata"]["resourceVersion"]

"""ExternalSecrets: reported when their kind is not served, written once it is.

The External Secrets Operator's real CRD is never installed here. One test installs a
minimal stand-in for `externalsecrets.external-secrets.io` (v1, any fields) and deletes it
afterwards; it is skipped where ESO is installed, or where baselines of others want
ExternalSecrets (the operator would then write theirs too).
"""

from __future__ import annotations

from typing import Any

import pytest

from baseline_operator.policy.objects import EXTERNAL_SECRET, NETWORK_POLICY, SECURITY_BASELINE
from tests.e2e.conftest import (
    CRD_KIND,
    E2E,
    eventually,
    served,
    stand_in_crd,
)

pytestmark = pytest.mark.e2e

SECRETS: list[dict[str, Any]] = [
    {
        "name": "db",
        "secretStoreRef": {"name": "vault", "kind": "ClusterSecretStore"},
        "refreshInterval": "1h",
        "data": [{"secretKey": "password", "remoteRef": {"key": "{namespace}/db"}}],
    }
]
RESYNC = 3.0
UNSERVED = "externalsecrets.external-secrets.io/v1 is not served by the API server"


async def reports_unserved(e2e: E2E, name: str, namespace: str) -> None:
    async def failed() -> dict[str, Any]:
        ready = await e2e.cluster.condition(name, "Ready")
        return ready if ready.get("reason") == "ApplyFailed" else {}

    ready = await eventually(failed, what="Ready reason ApplyFailed")
    assert ready["status"] == "False"
    status = await e2e.cluster.status(name)
    assert status["namespaces"]["failed"] == 1
    (report,) = status["nonCompliant"]
    assert report["namespace"] == namespace
    assert report["reason"] == "ApplyFailed"
    assert f"ExternalSecret {namespace}/db: {UNSERVED}" in report["message"]
    degraded = await e2e.cluster.condition(name, "Degraded")
    assert degraded["status"] == "True"
    assert UNSERVED in degraded["message"]


async def test_an_unserved_kind_is_reported_as_failed(e2e: E2E) -> None:
    if await served(e2e.kube, EXTERNAL_SECRET):
        pytest.skip(reason="the External Secrets Operator is installed here")
    namespace = await e2e.create_namespace("a", env="prod")
    body = e2e.baseline_body(networkPolicy={"defaultDeny": ["Ingress"]}, externalSecrets=SECRETS)
    name = await e2e.create_baseline(body)
    async with e2e.operator():
        await reports_unserved(e2e, name, namespace)
        # Everything else is written all the same.
        assert await e2e.cluster.get(NETWORK_POLICY, namespace, f"{name}-default-deny")


async def test_external_secrets_are_written_once_their_kind_is_served(e2e: E2E) -> None:
    installed = await served(e2e.kube, EXTERNAL_SECRET)
    wanting = sorted(
        name
        for name, body in e2e.run.foreign_baselines.items()
        if (body.get("spec") or {}).get("externalSecrets")
    )
    if not installed and wanting:
        why = f"serving ExternalSecrets would write those of other baselines: {wanting}"
        pytest.skip(reason=why)
    namespace = await e2e.create_namespace("a", env="prod")
    body = e2e.baseline_body(externalSecrets=SECRETS)
    name = await e2e.create_baseline(body)
    async with e2e.operator(resync_seconds=RESYNC):
        if not installed:
            await reports_unserved(e2e, name, namespace)
            await e2e.kube.create(CRD_KIND, None, stand_in_crd(EXTERNAL_SECRET))
            e2e.track(CRD_KIND, stand_in_crd(EXTERNAL_SECRET)["metadata"]["name"])

        async def written() -> dict[str, Any] | None:
            if not await served(e2e.kube, EXTERNAL_SECRET):
                return None
            return await e2e.cluster.get(EXTERNAL_SECRET, namespace, "db")

        secret = await eventually(written, what="the ExternalSecret written")
        assert secret["spec"]["secretStoreRef"] == {"name": "vault", "kind": "ClusterSecretStore"}
        assert secret["spec"]["data"] == [
            {"secretKey": "password", "remoteRef": {"key": f"{namespace}/db"}}
        ]
        assert secret["metadata"]["labels"]["security.baseline.dev/baseline"] == name

        async def ready() -> bool:
            return (await e2e.cluster.condition(name, "Ready")).get("reason") == "Converged"

        await eventually(ready, what="Ready reason Converged")

        if not installed:
            # The kind goes away again (ESO uninstalled): deleting the baseline still finishes.
            await e2e.cluster.delete(
                CRD_KIND, None, stand_in_crd(EXTERNAL_SECRET)["metadata"]["name"]
            )

            async def unserved() -> bool:
                return not await served(e2e.kube, EXTERNAL_SECRET)

            await eventually(unserved, what="the stand-in CRD gone")
            await e2e.cluster.delete(SECURITY_BASELINE, None, name)

            async def finalized() -> bool:
                return await e2e.cluster.get(SECURITY_BASELINE, None, name) is None

            await eventually(finalized, limit=20, what="the baseline's finalizer")

"""Test helpers shared by the integration tests (emulator) and the e2e tests (a real cluster).

`Cluster` talks to an API server through the operator's own `KubeApi`; `running_operator`
runs the real operator (kopf, handlers, queue, reconciler) in-process against it.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import kopf

from baseline_operator.controller.main import operator_in_process
from baseline_operator.controller.options import OperatorOptions
from baseline_operator.controller.runtime import Runtime
from baseline_operator.demo.emulator import ClusterEmulator, RecordedRequest, write_requests
from baseline_operator.kube.client import (
    ApiError,
    Endpoint,
    KubeApi,
    RetryPolicy,
    collection_path,
)
from baseline_operator.policy.objects import NAMESPACE, SECURITY_BASELINE, Kind, ObjectRef

WAIT = 15.0


def baseline(name: str = "prod", **spec: Any) -> dict[str, Any]:
    spec.setdefault("namespaceSelector", {"matchLabels": {"env": "prod"}})
    return {
        "apiVersion": "security.baseline.dev/v1alpha1",
        "kind": "SecurityBaseline",
        "metadata": {"name": name},
        "spec": spec,
    }


FULL_SPEC: dict[str, Any] = {
    "podSecurity": {"enforce": "restricted", "warn": "restricted"},
    "networkPolicy": {
        "defaultDeny": ["Ingress", "Egress"],
        "allowDNS": True,
        "ingress": [
            {
                "name": "from-web",
                "from": [{"podSelector": {"matchLabels": {"app": "web"}}}],
                "ports": [{"port": 8080}],
            }
        ],
    },
    "rbac": {
        "defaultServiceAccount": {"automountServiceAccountToken": False},
        "serviceAccounts": [
            {
                "name": "app",
                "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}],
            }
        ],
        "viewers": [{"kind": "Group", "name": "team"}],
    },
    "resources": {
        "limitRange": {"defaultRequest": {"cpu": "100m"}, "default": {"cpu": "500m"}},
        "quota": {"hard": {"pods": "10"}},
    },
    "externalSecrets": [
        {
            "name": "db",
            "secretStoreRef": {"name": "vault"},
            "data": [{"secretKey": "password", "remoteRef": {"key": "{namespace}/db"}}],
        }
    ],
}


@dataclass
class Cluster:
    kube: KubeApi
    connection: Callable[[], kopf.ConnectionInfo]
    endpoint: Endpoint
    emulator: ClusterEmulator | None = None
    # The ServiceAccount user tamper protection exempts (None: the default one).
    username: str | None = None

    async def create_namespace(self, name: str, **labels: str) -> None:
        await self.kube.create(
            NAMESPACE,
            None,
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}},
        )

    async def create_baseline(self, body: dict[str, Any]) -> None:
        await self.kube.create(SECURITY_BASELINE, None, copy.deepcopy(body))

    async def get(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any] | None:
        return await self.kube.get(ObjectRef(kind, namespace, name))

    async def list(self, kind: Kind, namespace: str | None = None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = (
            await self.kube.request("GET", collection_path(kind, namespace))
        ).body.get("items", [])
        return items

    async def merge_patch(
        self, kind: Kind, namespace: str | None, name: str, patch: dict[str, Any]
    ) -> None:
        path = collection_path(kind, namespace) + f"/{name}"
        await self.kube.request(
            "PATCH", path, body=patch, content_type="application/merge-patch+json"
        )

    async def delete(self, kind: Kind, namespace: str | None, name: str) -> None:
        with contextlib.suppress(ApiError):
            await self.kube.request("DELETE", collection_path(kind, namespace) + f"/{name}")

    async def labels(self, namespace: str) -> dict[str, str]:
        body = await self.get(NAMESPACE, None, namespace)
        return dict((body or {}).get("metadata", {}).get("labels", {}))

    async def status(self, name: str) -> dict[str, Any]:
        body = await self.get(SECURITY_BASELINE, None, name)
        return dict((body or {}).get("status") or {})

    async def condition(self, name: str, type_: str) -> dict[str, Any]:
        for condition in (await self.status(name)).get("conditions", []):
            if condition["type"] == type_:
                return dict(condition)
        return {}

    def writes(self) -> list[RecordedRequest]:
        """Writes that change the cluster: not Events, not the baselines' own status."""
        return [
            request
            for request in write_requests(self.emulator)
            if "/events" not in request.path and not request.path.endswith("/status")
        ]


@dataclass
class Operator:
    memo: kopf.Memo
    options: OperatorOptions = field(default_factory=OperatorOptions)

    @property
    def runtime(self) -> Runtime:
        runtime: Runtime = self.memo.runtime
        return runtime

    async def settled(self, quiet: float = 0.3) -> None:
        """Wait until the operator has seen everything and its queue has stayed empty a while."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        calm_since: float | None = None
        while loop.time() < deadline:
            runtime = getattr(self.memo, "runtime", None)
            idle = runtime is not None and runtime.idle
            if idle:
                calm_since = calm_since if calm_since is not None else loop.time()
                if loop.time() - calm_since >= quiet:
                    return
            else:
                calm_since = None
            await asyncio.sleep(0.02)
        raise AssertionError("the operator did not settle")


async def eventually(check: Callable[[], Awaitable[bool]], limit: float = WAIT) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while loop.time() < deadline:
        if await check():
            return
        await asyncio.sleep(0.03)
    raise AssertionError("the condition did not come true in time")


@contextlib.asynccontextmanager
async def running_operator(
    cluster: Cluster,
    resync_seconds: float = 3600,
    namespace: str = "baseline-operator-system",
    watch_timeout: int = 300,
) -> AsyncIterator[Operator]:
    kube = KubeApi(cluster.endpoint, retry=RetryPolicy(first_delay=0.05, max_delay=0.5))
    options = OperatorOptions(
        namespace=namespace,
        resync_seconds=resync_seconds,
        username=cluster.username,
        watch_timeout=watch_timeout,
    )
    async with operator_in_process(kube, cluster.connection, options) as memo:
        try:
            yield Operator(memo, options)
        finally:
            # The test's own client too: see operator_in_process (it reconnects when used).
            await cluster.kube.close()

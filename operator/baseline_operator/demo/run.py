"""`baseline-operator demo`: the real operator loop against an in-process API emulator.

It creates namespaces (one with an object of a wanted name that someone else
made), applies the example baselines embedded in the package, runs the
operator until every baseline reports on its current generation, shows what
each namespace now holds, then edits and deletes generated objects to show
drift being repaired, and prints the baselines' status the way
`kubectl get sbl` and `kubectl describe sbl` would.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any, TextIO

import kopf
import structlog
import yaml

from baseline_operator.controller.main import operator_in_process
from baseline_operator.controller.options import OperatorOptions
from baseline_operator.demo.emulator import running_emulator
from baseline_operator.kube.client import KubeApi, collection_path
from baseline_operator.kube.config import endpoint_for
from baseline_operator.policy.names import APPLIED_PREFIX, is_managed
from baseline_operator.policy.objects import (
    NAMESPACE,
    NAMESPACED_KINDS,
    NETWORK_POLICY,
    POD,
    ROLE_BINDING,
    SECURITY_BASELINE,
    Kind,
)

ENFORCE = "pod-security.kubernetes.io/enforce"
# The name the production baseline wants for its default-deny policy, taken beforehand.
TAKEN_NAME = "production-default-deny"
TIMEOUT = 60.0

# (name, labels): a mix that exercises selection, exclusion, layering and Audit mode.
_SHAPES: list[tuple[str, dict[str, str]]] = [
    ("shop", {"env": "production"}),
    ("payments", {"env": "production"}),
    ("web", {"security.baseline.dev/tier": "starter"}),
    ("staging-api", {"env": "staging"}),
    ("legacy-app", {"env": "production"}),  # excluded by name in the production baseline
    ("batch", {"security.baseline.dev/tier": "starter", "env": "production"}),  # both layer
    ("sandbox", {}),  # selected by nothing
    ("reports", {"env": "production"}),
]


def counted(number: int, singular: str, plural: str | None = None) -> str:
    """'1 namespace carries', '2 namespaces carry': the number with the words that agree."""
    return f"{number} {singular if number == 1 else (plural or singular + 's')}"


def demo_namespaces(count: int) -> list[tuple[str, dict[str, str]]]:
    chosen = list(_SHAPES[:count])
    for index in range(len(chosen), count):
        name, labels = _SHAPES[index % len(_SHAPES)]
        chosen.append((f"{name}-{index}", labels))
    return chosen


def example_baselines() -> list[dict[str, Any]]:
    folder = resources.files("baseline_operator.demo").joinpath("examples")
    documents: list[dict[str, Any]] = []
    for entry in sorted(folder.iterdir(), key=lambda item: item.name):
        if entry.name.endswith(".yaml"):
            documents.extend(doc for doc in yaml.safe_load_all(entry.read_text()) if doc)
    return documents


def run_demo(namespaces: int, out: TextIO | None = None) -> int:
    import sys  # noqa: PLC0415 - the default stream, resolved when called

    # The demo prints its own story; the operator's logs would only interleave with it.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    return asyncio.run(demo(namespaces, out or sys.stdout))


async def demo(count: int, out: TextIO) -> int:
    def say(text: str = "") -> None:
        print(text, file=out, flush=True)

    async with running_emulator() as (_, url):
        kube = KubeApi(endpoint_for(url))
        namespaces = demo_namespaces(count)
        for name, labels in namespaces:
            await kube.create(
                NAMESPACE,
                None,
                {
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": name, "labels": labels},
                },
            )
        foreign = "payments" if any(name == "payments" for name, _ in namespaces) else None
        if foreign:
            await kube.create(
                NETWORK_POLICY,
                foreign,
                {
                    "apiVersion": "networking.k8s.io/v1",
                    "kind": "NetworkPolicy",
                    "metadata": {"name": "production-default-deny", "namespace": foreign},
                    "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
                },
            )
        for pod in _demo_pods(namespaces):
            await kube.create(POD, pod["metadata"]["namespace"], pod)
        baselines = example_baselines()
        for body in baselines:
            await kube.create(SECURITY_BASELINE, None, body)
        names = [body["metadata"]["name"] for body in baselines]

        say("baseline-operator demo: the real operator loop against an in-process API emulator")
        say(
            f"  {counted(len(namespaces), 'namespace')},"
            f" {counted(len(names), 'SecurityBaseline')}: {', '.join(names)}"
        )
        if foreign:
            say(f"  already there, made by someone else: NetworkPolicy {foreign}/{TAKEN_NAME}")
        say()

        options = OperatorOptions(resync_seconds=3600, workers=4)
        loop = asyncio.get_running_loop()
        started = loop.time()
        progress = Progress(kube, names, say, started, loop.time)
        try:
            async with operator_in_process(kube, lambda: kopf.ConnectionInfo(server=url), options):
                say("converging")
                if not await _wait(progress.settled, TIMEOUT):
                    say(f"  not settled within {TIMEOUT:.0f}s")
                    return 1
                say()
                await _show_namespaces(kube, namespaces, say)
                say()
                await _show_drift_repair(kube, namespaces, say, loop.time)
                say()
                await _show_baselines(kube, names, say)
        finally:
            await kube.close()
    return 0


def _demo_pods(namespaces: list[tuple[str, dict[str, str]]]) -> list[dict[str, Any]]:
    """Pods that were running before the operator came: one hardened, one not."""
    names = {name for name, _ in namespaces}
    if "shop" not in names:
        return []
    hardened = {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "checkout-7d9f",
                "namespace": "shop",
                "labels": {"app": "checkout"},
            },
            "spec": {
                "containers": [
                    {
                        "name": "checkout",
                        "image": "registry.example.com/shop/checkout:2.4.1",
                        "securityContext": hardened,
                        "resources": {
                            "requests": {"cpu": "100m", "memory": "128Mi"},
                            "limits": {"memory": "256Mi"},
                        },
                    }
                ]
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "legacy-worker", "namespace": "shop"},
            "spec": {
                "containers": [{"name": "worker", "image": "docker.io/library/busybox:latest"}]
            },
        },
    ]


async def _wait(check: Callable[[], Awaitable[bool]], limit: float, every: float = 0.1) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while loop.time() < deadline:
        if await check():
            return True
        await asyncio.sleep(every)
    return False


async def _list(kube: KubeApi, kind: Kind, namespace: str | None = None) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = (
        await kube.request("GET", collection_path(kind, namespace))
    ).body.get("items", [])
    return items


@dataclass
class Progress:
    """Convergence as a user sees it (lists through the API), printed when it changes."""

    kube: KubeApi
    names: list[str]
    say: Callable[[str], None]
    started: float
    clock: Callable[[], float]
    last: str = ""

    async def settled(self) -> bool:
        """Whether every baseline reports on its current generation (printing progress)."""
        items = await _list(self.kube, SECURITY_BASELINE)
        baselines = {item["metadata"]["name"]: item for item in items}
        reported = sum(1 for name in self.names if _reports(baselines.get(name, {})))
        labelled = sum(
            1
            for item in await _list(self.kube, NAMESPACE)
            if any(key.startswith(APPLIED_PREFIX) for key in item["metadata"].get("labels", {}))
        )
        line = (
            f"{counted(labelled, 'namespace carries', 'namespaces carry')} a baseline;"
            f" {reported}/{len(self.names)} baselines report"
        )
        if line != self.last:
            self.last = line
            self.say(f"  {self.clock() - self.started:5.2f}s {line}")
        return reported == len(self.names)


def _reports(body: dict[str, Any]) -> bool:
    status = body.get("status") or {}
    ready = next((c for c in status.get("conditions", []) if c.get("type") == "Ready"), None)
    return (
        ready is not None
        and status.get("observedGeneration") == body["metadata"].get("generation")
        and ready.get("reason") != "Reconciling"
        and ("workloads" in status or not _audits_workloads(body))
    )


def _audits_workloads(body: dict[str, Any]) -> bool:
    return bool((body.get("spec", {}).get("workloadAudit") or {}).get("enabled"))


async def _show_namespaces(
    kube: KubeApi, namespaces: list[tuple[str, dict[str, str]]], say: Callable[[str], None]
) -> None:
    by_namespace: dict[str, Counter[str]] = {}
    for kind in NAMESPACED_KINDS:
        for item in await _list(kube, kind):
            if is_managed(item["metadata"].get("labels")):
                by_namespace.setdefault(item["metadata"]["namespace"], Counter())[kind.kind] += 1
    labels = {
        item["metadata"]["name"]: item["metadata"].get("labels", {})
        for item in await _list(kube, NAMESPACE)
    }
    say(f"{'NAMESPACE':<14}{'BASELINES':<22}{'ENFORCE':<12}GENERATED OBJECTS")
    for name, _ in namespaces:
        applied = sorted(
            key.removeprefix(APPLIED_PREFIX)
            for key in labels.get(name, {})
            if key.startswith(APPLIED_PREFIX)
        )
        counts = by_namespace.get(name, Counter())
        objects = ", ".join(f"{kind} {number}" for kind, number in sorted(counts.items())) or "-"
        say(
            f"{name:<14}{','.join(applied) or '-':<22}{labels.get(name, {}).get(ENFORCE, '-'):<12}"
            f"{objects}"
        )


async def _show_drift_repair(
    kube: KubeApi,
    namespaces: list[tuple[str, dict[str, str]]],
    say: Callable[[str], None],
    clock: Callable[[], float],
) -> None:
    target = next(
        (
            name
            for name, labels in namespaces
            if labels == {"env": "production"} and name not in ("payments", "legacy-app")
        ),
        None,
    )
    if target is None:
        return
    say("drift")
    policy_path = collection_path(NETWORK_POLICY, target) + "/production-default-deny"
    started = clock()
    await kube.request("DELETE", policy_path)

    async def recreated() -> bool:
        try:
            body = (await kube.request("GET", policy_path)).body
        except Exception:
            return False
        return is_managed(body["metadata"].get("labels"))

    if await _wait(recreated, 10, every=0.02):
        say(
            f"  deleted NetworkPolicy {target}/production-default-deny: recreated after"
            f" {clock() - started:.2f}s"
        )

    namespace_path = collection_path(NAMESPACE, None) + f"/{target}"
    started = clock()
    await kube.request(
        "PATCH",
        namespace_path,
        content_type="application/merge-patch+json",
        body={"metadata": {"labels": {ENFORCE: "privileged"}}},
    )

    async def restored() -> bool:
        body = (await kube.request("GET", namespace_path)).body
        return bool(body["metadata"].get("labels", {}).get(ENFORCE) == "restricted")

    if await _wait(restored, 10, every=0.02):
        say(
            f"  set {ENFORCE}=privileged on {target}: restored to restricted after"
            f" {clock() - started:.2f}s"
        )

    binding_path = collection_path(ROLE_BINDING, target) + "/production-viewers"
    started = clock()
    await kube.request(
        "PATCH",
        binding_path,
        content_type="application/merge-patch+json",
        body={
            "subjects": [
                {"kind": "Group", "name": "everyone", "apiGroup": "rbac.authorization.k8s.io"}
            ]
        },
    )

    async def rebound() -> bool:
        body = (await kube.request("GET", binding_path)).body
        return bool(body.get("subjects", [{}])[0].get("name") == "team-a")

    if await _wait(rebound, 10, every=0.02):
        say(
            f"  rebound RoleBinding {target}/production-viewers to group 'everyone':"
            f" repaired after {clock() - started:.2f}s"
        )


async def _show_baselines(kube: KubeApi, names: list[str], say: Callable[[str], None]) -> None:
    baselines = {item["metadata"]["name"]: item for item in await _list(kube, SECURITY_BASELINE)}
    say(f"{'NAME':<22}{'MODE':<9}{'SELECTED':<10}{'COMPLIANT':<11}READY")
    for name in names:
        status = baselines[name].get("status") or {}
        counts = status.get("namespaces") or {}
        ready: dict[str, Any] = next(
            (c for c in status.get("conditions", []) if c["type"] == "Ready"), {}
        )
        say(
            f"{name:<22}{baselines[name]['spec'].get('mode', 'Enforce'):<9}"
            f"{counts.get('selected', 0):<10}{counts.get('compliant', 0):<11}"
            f"{ready.get('status', '')}"
        )
    for name in names:
        status = baselines[name].get("status") or {}
        say("")
        say(f"SecurityBaseline {name}")
        say("  Conditions:")
        for condition in status.get("conditions", []):
            say(
                f"    {condition['type']:<11}{condition['status']:<6}{condition['reason']:<16}"
                f"{condition['message']}"
            )
        for report in status.get("nonCompliant", []):
            say(f"  Not compliant: {report['namespace']}: {report['reason']}: {report['message']}")
        if "workloads" in status:
            counts = status["workloads"]
            say(
                f"  Workloads: {counted(counts['pods'], 'pod')} checked,"
                f" {counted(counts['nonCompliantPods'], 'fails', 'fail')} hardening checks"
                f" ({counted(counts['findings'], 'finding')})"
            )
            for item in status.get("nonCompliantWorkloads", []):
                say(f"    {item['namespace']}/{item['pod']}: {', '.join(item['checks'])}")

"""baseline-operator at scale, against a real kube-apiserver: each result a ratio against a
reference measured in the same run.

The cluster is the one BASELINE_BENCH_KUBECONFIG names (cluster-admin on a throwaway
cluster), else a control plane started from the binaries in BASELINE_E2E_ASSETS
(etcd, kube-apiserver, kube-controller-manager; tests/support/control_plane.py) on
loopback and thrown away at the end. The operator runs as a subprocess
(`baseline-operator run --no-leader-election`), so its memory is its own; the benchmark
follows the cluster with watches of its own and counts requests on the API server's
`apiserver_request_total` (clients of the control plane itself excluded).

One baseline (`bench`, below): Pod Security labels, three NetworkPolicies, an
application ServiceAccount with its Role and RoleBinding, a viewers RoleBinding and a
LimitRange (8 objects the operator makes), plus its field on each namespace's default
ServiceAccount and the namespace labels: 10 writes per namespace.

Phases, in order:

1. floor: N namespaces (not selected by the baseline) receive the same writes straight
   from a plain aiohttp client with the operator's request budget in flight: a POST per
   object, a server-side apply for the default ServiceAccount's field and one for the
   labels (under another field manager and managed-by value, so the operator does not
   see or own them afterwards);
2. fresh install: N namespaces labelled for the baseline exist; the operator starts;
   time until every namespace holds every object and label / floor; writes per namespace;
3. restart: the converged operator is stopped and started again and a new namespace is
   created at once: time until it is served, and writes besides its own (must be 0);
4. at rest: new-namespace convergence over namespaces created one at a time, and drift
   repair of deleted NetworkPolicies (p50/p99);
5. memory: the operator's RSS (VmRSS, VmHWM) with nothing selected, with N unselected
   namespaces (the floor's), after converging, after a restart; then pods are created
   (compliant with Pod Security `restricted`), workloadAudit is enabled, and the
   operator restarted once more: RSS per 10,000 pods;
6. the floor again (new namespaces, no operator running): how far the machine's speed
   drifted over the run; the install is also given against the mean of both floors.

The API server's CPU (its `process_cpu_seconds_total`) and the client's are reported for
the floor and the install, per 1,000 writes: where the time goes.

Run (from the repository root):

    BASELINE_E2E_ASSETS=DIR python -m bench.bench_scale --namespaces 1000
    python -m bench.bench_scale --json out.json   # also write the results as JSON

The quick look without a cluster is bench/bench_operator.py (the in-process emulator).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import functools
import json
import os
import platform
import re
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from baseline_operator.api.resource import parse_baseline
from baseline_operator.kube.client import (
    APPLY_CONTENT_TYPE,
    MERGE_PATCH_CONTENT_TYPE,
    ApiError,
    Endpoint,
    KubeApi,
    collection_path,
    object_path,
)
from baseline_operator.kube.config import load_kubeconfig
from baseline_operator.policy.diff import with_desired_hash
from baseline_operator.policy.layering import NamespacePlan, plan_namespace
from baseline_operator.policy.names import BASELINE_KEY, MANAGED_BY_KEY
from baseline_operator.policy.objects import (
    CLUSTER_KINDS,
    NAMESPACE,
    NAMESPACED_KINDS,
    NETWORK_POLICY,
    POD,
    SECURITY_BASELINE,
    SERVICE_ACCOUNT,
    Body,
    Kind,
    ObjectRef,
    Ownership,
)

SCRIPT = Path(__file__).resolve()
ROOT = SCRIPT.parents[1]
KUBECONFIG_ENV = "BASELINE_BENCH_KUBECONFIG"
ASSETS_ENV = "BASELINE_E2E_ASSETS"
CRD_FILE = ROOT / "crds/securitybaselines.security.baseline.dev.yaml"
CONFIG_MAP = Kind("", "v1", "ConfigMap", "configmaps", True)
# What the kube-controller-manager puts in every new namespace besides its default
# ServiceAccount; a phase starts once both are everywhere, so it does not share the
# machine with that work.
ROOT_CA_CONFIG_MAP = "kube-root-ca.crt"
CRD_KIND = Kind(
    "apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", False
)

FLOOR_MANAGER = "baseline-bench-floor"
RUN_LABEL = "bench.baseline.dev/run"
SELECT_LABEL = "bench.baseline.dev/selected"
ACKNOWLEDGE_REMOVAL = "security.baseline.dev/acknowledge-removal"
REQUEST_BUDGET = 8  # the operator's default (--request-budget)
WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "DELETE", "DELETECOLLECTION", "APPLY"})

SPEC: dict[str, Any] = {
    "namespaceSelector": {"matchLabels": {SELECT_LABEL: "true"}},
    "mode": "Enforce",
    "podSecurity": {
        "enforce": "restricted",
        "enforceVersion": "latest",
        "audit": "restricted",
        "warn": "restricted",
    },
    "networkPolicy": {
        "defaultDeny": ["Ingress", "Egress"],
        "allowDNS": True,
        "allowSameNamespace": True,
    },
    "rbac": {
        "defaultServiceAccount": {"automountServiceAccountToken": False},
        "serviceAccounts": [
            {
                "name": "app",
                "automountServiceAccountToken": False,
                "rules": [
                    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}
                ],
            }
        ],
        "viewers": [{"kind": "Group", "name": "team"}],
    },
    "resources": {
        "limitRange": {
            "defaultRequest": {"cpu": "250m", "memory": "256Mi"},
            "default": {"cpu": "500m", "memory": "512Mi"},
        }
    },
    "workloadAudit": {"enabled": False},
}


def baseline_body(name: str, **overrides: Any) -> Body:
    spec = copy.deepcopy(SPEC)
    spec.update(overrides)
    return {
        "apiVersion": f"{SECURITY_BASELINE.group}/{SECURITY_BASELINE.version}",
        "kind": "SecurityBaseline",
        "metadata": {"name": name},
        "spec": spec,
    }


def plan_for(namespace: str, name: str) -> NamespacePlan:
    return plan_namespace(namespace, [parse_baseline(baseline_body(name))])


# ----------------------------------------------------------------------------- the cluster


@dataclass
class Cluster:
    kubeconfig: Path
    configuration: Endpoint
    username: str | None  # the operator's identity, for --username (None: let it ask)
    description: str


@contextlib.contextmanager
def cluster() -> Iterator[Cluster]:
    """The cluster named by BASELINE_BENCH_KUBECONFIG, else a throwaway control plane."""
    named = os.environ.get(KUBECONFIG_ENV)
    if named:
        yield Cluster(Path(named), _configuration(Path(named)), None, f"{KUBECONFIG_ENV}")
        return
    assets = os.environ.get(ASSETS_ENV)
    if not assets:
        raise SystemExit(
            f"set {KUBECONFIG_ENV} (a throwaway cluster's kubeconfig, cluster-admin) or"
            f" {ASSETS_ENV} (a directory with etcd, kube-apiserver, kube-controller-manager)"
        )
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.support.control_plane import ADMIN_USER, ControlPlane  # noqa: PLC0415

    with ControlPlane(Path(assets)).start() as running:
        version = _apiserver_version(Path(assets))
        yield Cluster(
            running.kubeconfig,
            _configuration(running.kubeconfig),
            ADMIN_USER,
            f"a control plane of its own on loopback ({version}, etcd --unsafe-no-fsync,"
            " priority and fairness off)",
        )


def _apiserver_version(assets: Path) -> str:
    answer = subprocess.run(
        [str(assets / "kube-apiserver"), "--version"], capture_output=True, text=True, check=False
    )
    return answer.stdout.strip() or "kube-apiserver"


def _configuration(path: Path) -> Endpoint:
    return load_kubeconfig(str(path))


# ----------------------------------------------------------------------------- requests

# (group, resource, subresource, verb), as apiserver_request_total labels them
Series = tuple[str, str, str, str]
_SERIES = re.compile(r"^apiserver_request_total\{(.*)\} (\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


_CPU = re.compile(r"^process_cpu_seconds_total (\S+)$", re.MULTILINE)


async def server_sample(kube: KubeApi) -> tuple[Counter[Series], float]:
    """Write requests the API server counted, by clients that are not the control plane's,
    and the CPU seconds the API server has used."""
    counts: Counter[Series] = Counter()
    text = await kube.get_text("/metrics")
    cpu = _CPU.search(text)
    for line in text.splitlines():
        match = _SERIES.match(line)
        if not match:
            continue
        labels = dict(_LABEL.findall(match.group(1)))
        if (
            labels.get("verb") not in WRITE_VERBS
            or labels.get("dry_run")
            or labels.get("system_client")
        ):
            continue
        key = (
            labels.get("group", ""),
            labels.get("resource", ""),
            labels.get("subresource", ""),
            labels["verb"],
        )
        counts[key] += int(float(match.group(2)))
    return counts, float(cpu.group(1)) if cpu else 0.0


@dataclass(frozen=True)
class Window:
    counts: Counter[Series]
    own: Counter[Series]
    server_cpu: float


@dataclass
class Writes:
    """Writes of one phase by category: the posture (generated objects and the namespace
    labels), the SecurityBaseline itself (kopf's bookkeeping, status), Events, and other
    requests (e.g. the operator asking who it is)."""

    objects: int = 0
    labels: int = 0
    baseline: int = 0
    events: int = 0
    other: int = 0
    detail: dict[str, int] = field(default_factory=dict)
    server_cpu_seconds: float = 0.0  # the API server's CPU over the phase

    @property
    def posture(self) -> int:
        return self.objects + self.labels

    @classmethod
    def between(
        cls, before: Counter[Series], after: Counter[Series], own: Counter[Series]
    ) -> Writes:
        """What others than the benchmark wrote (the benchmark's own writes taken off)."""
        writes = cls()
        posture_kinds = {kind.plural for kind in (*NAMESPACED_KINDS, *CLUSTER_KINDS)}
        for series in set(after) | set(own):
            count = after[series] - before[series] - own[series]
            if count == 0:
                continue
            _, resource, subresource, verb = series
            name = f"{resource}{'/' + subresource if subresource else ''} {verb}"
            writes.detail[name] = count
            if resource == "events":
                writes.events += count
            elif resource == SECURITY_BASELINE.plural:
                writes.baseline += count
            elif resource == "namespaces" and verb in ("APPLY", "PATCH", "PUT"):
                writes.labels += count
            elif resource in posture_kinds:
                writes.objects += count
            else:
                writes.other += count
        return writes


def _series(kind: Kind, verb: str, subresource: str = "") -> Series:
    return (kind.group, kind.plural, subresource, verb)


class Bench:
    """The benchmark's own requests (counted, so they can be taken off the server's)."""

    def __init__(self, kube: KubeApi, run: str) -> None:
        self.kube = kube
        self.run = run
        self.own: Counter[Series] = Counter()

    async def create_namespaces(self, names: list[str], selected: bool) -> None:
        labels = {RUN_LABEL: self.run}
        if selected:
            labels[SELECT_LABEL] = "true"

        async def create(name: str) -> None:
            metadata: Body = {"name": name, "labels": labels}
            body: Body = {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata}
            self.own[_series(NAMESPACE, "POST")] += 1
            await self.kube.create(NAMESPACE, None, body)

        await bounded(create(name) for name in names)

    async def create_pods(self, pods: list[tuple[str, str, bool]]) -> None:
        async def create(namespace: str, name: str, tidy: bool) -> None:
            self.own[_series(POD, "POST")] += 1
            await self.kube.create(POD, namespace, pod_body(namespace, name, tidy))

        await bounded(create(*pod) for pod in pods)

    async def delete(self, ref: ObjectRef) -> None:
        self.own[_series(ref.kind, "DELETE")] += 1
        await self.kube.delete(ref, None)

    async def create_baseline(self, body: Body) -> None:
        self.own[_series(SECURITY_BASELINE, "POST")] += 1
        await self.kube.create(SECURITY_BASELINE, None, body)

    async def patch_baseline(self, name: str, patch: Body) -> None:
        self.own[_series(SECURITY_BASELINE, "PATCH")] += 1
        await self.kube.request(
            "PATCH",
            object_path(ObjectRef(SECURITY_BASELINE, None, name)),
            body=patch,
            content_type=MERGE_PATCH_CONTENT_TYPE,
        )


async def bounded(work: Iterator[Awaitable[None]] | Any, limit: int = REQUEST_BUDGET) -> None:
    """Run the coroutines, `limit` at a time."""
    slots = asyncio.Semaphore(limit)

    async def one(coroutine: Awaitable[None]) -> None:
        async with slots:
            await coroutine

    await asyncio.gather(*(one(item) for item in work))


def pod_body(namespace: str, name: str, tidy: bool) -> Body:
    """A pod Pod Security `restricted` admits; `tidy` ones also pass the hardening checklist
    (read-only root filesystem, limits, a pinned image)."""
    container: Body = {
        "name": "app",
        "image": "registry.example.com/team/app:1.4.2" if tidy else "registry.example.com/app",
        "ports": [{"containerPort": 8080, "name": "http"}],
        "env": [{"name": "MODE", "value": "production"}],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"]},
            "runAsNonRoot": True,
        },
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
    }
    if tidy:
        container["securityContext"]["readOnlyRootFilesystem"] = True
        container["resources"]["limits"] = {"cpu": "500m", "memory": "256Mi"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app": "web", "app.kubernetes.io/part-of": "shop"},
        },
        "spec": {
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [container],
        },
    }


# ----------------------------------------------------------------------------- the floor


def floor_writes(
    namespace: str, baseline: str
) -> list[tuple[str, str, list[tuple[str, str]], Body, str]]:
    """The operator's writes for one namespace, as the floor sends them: (method, path,
    query, body, content type). Same bodies, but another field manager and managed-by value
    and the baseline name `bench-floor`, so the operator neither sees nor owns them."""
    plan = plan_for(namespace, baseline)
    writes = []
    for item in plan.objects:
        ref = item.ref
        if item.ownership is Ownership.OBJECT:
            body = copy.deepcopy(with_desired_hash(item))
            body["metadata"]["labels"][MANAGED_BY_KEY] = FLOOR_MANAGER
            writes.append(
                (
                    "POST",
                    collection_path(ref.kind, ref.namespace),
                    [("fieldManager", FLOOR_MANAGER)],
                    body,
                    "application/json",
                )
            )
        else:
            writes.append(
                (
                    "PATCH",
                    object_path(ref),
                    [("fieldManager", FLOOR_MANAGER), ("force", "true")],
                    item.body,
                    APPLY_CONTENT_TYPE,
                )
            )
    metadata: Body = {"name": namespace, "labels": plan.labels}
    labels: Body = {"apiVersion": "v1", "kind": "Namespace", "metadata": metadata}
    writes.append(
        (
            "PATCH",
            object_path(ObjectRef(NAMESPACE, None, namespace)),
            [("fieldManager", FLOOR_MANAGER), ("force", "true")],
            labels,
            APPLY_CONTENT_TYPE,
        )
    )
    return writes


def floor_process(task_file: str) -> int:
    """The floor's client, run as a process of its own: the task in, the timing out."""
    task = json.loads(Path(task_file).read_text())
    configuration = _configuration(Path(task["kubeconfig"]))
    task["result"] = asyncio.run(send_floor(configuration, task["namespaces"], task["baseline"]))
    Path(task_file).write_text(json.dumps(task))
    return 0


async def send_floor(endpoint: Endpoint, namespaces: list[str], baseline: str) -> dict[str, float]:
    """The floor: every write sent straight, REQUEST_BUDGET in flight."""
    writes = [write for name in namespaces for write in floor_writes(name, baseline)]
    connector = aiohttp.TCPConnector(ssl=endpoint.ssl_context(), limit=REQUEST_BUDGET)
    failures: list[str] = []
    async with aiohttp.ClientSession(connector=connector) as session:
        base = endpoint.server.rstrip("/")

        async def send(method: str, path: str, query: Any, body: Body, content_type: str) -> None:
            headers = {"Content-Type": content_type, "Accept": "application/json"}
            if (authorization := endpoint.authorization()) is not None:
                headers["Authorization"] = authorization
            async with session.request(
                method, base + path, params=query, data=json.dumps(body), headers=headers
            ) as answer:
                await answer.read()
                if answer.status >= 300:
                    failures.append(f"{method} {path}: {answer.status}")

        started, wall, cpu = time.perf_counter(), time.time(), time.process_time()
        await bounded(send(*write) for write in writes)
        elapsed = time.perf_counter() - started
    if failures:
        raise RuntimeError(f"the floor's writes failed: {failures[:5]} ({len(failures)} in all)")
    return {
        "seconds": elapsed,
        "writes": len(writes),
        "started": wall,
        "cpu_seconds": time.process_time() - cpu,
    }


# ----------------------------------------------------------------------------- the machine

# A fixed loop, run every PROBE_PERIOD by a process of its own, timed by its own CPU clock:
# waiting for a core is not counted, so what moves its time is the speed of the core it
# ran on (a virtual machine's cores slow down when the host is busy). About 1 ms of one
# core in 250.
PROBE_PERIOD = 0.25
PROBE_LOOP = 20_000


def speed_probe_process(output: str) -> int:
    """Append `wall-clock CPU-seconds-of-the-loop` lines to `output` until killed."""
    with open(output, "a") as out:
        while True:
            started = time.thread_time()
            total = 0
            for i in range(PROBE_LOOP):
                total += i * i
            out.write(f"{time.time():.3f} {time.thread_time() - started:.7f}\n")
            out.flush()
            time.sleep(PROBE_PERIOD)


def loop_seconds(samples: list[tuple[float, float]], start: float, end: float) -> float | None:
    """The median CPU time of the probe's loop between two wall-clock times."""
    inside = [took for at, took in samples if start <= at <= end]
    return statistics.median(inside) if inside else None


def read_probe(path: Path) -> list[tuple[float, float]]:
    samples = []
    for line in path.read_text().splitlines():
        at, _, took = line.partition(" ")
        with contextlib.suppress(ValueError):
            samples.append((float(at), float(took)))
    return samples


# ----------------------------------------------------------------------------- watching


@dataclass
class Expected:
    labels: dict[str, str]
    objects: frozenset[tuple[str, str]]  # (plural, name)


class Tracker:
    """The benchmark's own watches: which namespaces hold their posture, and since when."""

    def __init__(self, kube: KubeApi, run: str, kinds: list[Kind], owners: list[str]) -> None:
        self.kube = kube
        self.owners = owners
        self.run = run
        self.kinds = kinds
        self.expected: dict[str, Expected] = {}
        self.labels: dict[str, dict[str, str]] = {}
        self.objects: dict[str, dict[tuple[str, str], str]] = {}  # ns -> (plural, name) -> uid
        self.automount: dict[str, Any] = {}
        self.root_ca: set[str] = set()  # namespaces holding the root CA ConfigMap
        self.served_at: dict[str, float] = {}
        self.changed = asyncio.Event()
        # Namespaces changed since the waiter last looked (one waiter at a time): a wait
        # looks at these only, not at every namespace on every event.
        self._touched: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []

    def expect(self, namespace: str, plan: NamespacePlan) -> None:
        objects = frozenset(
            (item.ref.kind.plural, item.ref.name)
            for item in plan.objects
            if item.ownership is Ownership.OBJECT
        )
        self.expected[namespace] = Expected(dict(plan.labels), objects)
        self.served_at.pop(namespace, None)
        self._check(namespace)

    def served(self, namespace: str) -> bool:
        expected = self.expected.get(namespace)
        if expected is None:
            return False
        labels = self.labels.get(namespace, {})
        if any(labels.get(key) != value for key, value in expected.labels.items()):
            return False
        if self.automount.get(namespace) is not False:
            return False
        return expected.objects <= self.objects.get(namespace, {}).keys()

    def bootstrapped(self, namespace: str) -> bool:
        """The kube-controller-manager is done with the new namespace."""
        return namespace in self.automount and namespace in self.root_ca

    def _check(self, namespace: str) -> None:
        if namespace not in self.served_at and self.served(namespace):
            self.served_at[namespace] = time.time()  # wall clock: other processes' too
        self._touched.add(namespace)
        self.changed.set()

    async def start(self) -> None:
        selector = f"{BASELINE_KEY} in ({','.join(self.owners)})"
        follows = [
            self._follow(NAMESPACE, f"{RUN_LABEL}={self.run}", None, True, self._on_namespace),
            self._follow(SERVICE_ACCOUNT, None, "metadata.name=default", False, self._on_account),
            self._follow(
                CONFIG_MAP, None, f"metadata.name={ROOT_CA_CONFIG_MAP}", True, self._on_root_ca
            ),
            *(
                self._follow(kind, selector, None, True, self._on_object(kind))
                for kind in self.kinds
            ),
        ]
        synced = [asyncio.Event() for _ in follows]
        self._tasks = [
            asyncio.create_task(follow(flag)) for follow, flag in zip(follows, synced, strict=True)
        ]
        await asyncio.gather(*(flag.wait() for flag in synced))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _on_namespace(self, kind: str, body: Body) -> None:
        metadata = body["metadata"]
        name = metadata["name"]
        if kind == "DELETED":
            self.labels.pop(name, None)
        else:
            self.labels[name] = dict(metadata.get("labels") or {})
        self._check(name)

    def _on_account(self, kind: str, body: Body) -> None:
        namespace = body["metadata"]["namespace"]
        self.automount[namespace] = (
            None if kind == "DELETED" else body.get("automountServiceAccountToken")
        )
        self._check(namespace)

    def _on_root_ca(self, kind: str, body: Body) -> None:
        namespace = body["metadata"]["namespace"]
        if kind == "DELETED":
            self.root_ca.discard(namespace)
        else:
            self.root_ca.add(namespace)
        self._check(namespace)

    def _on_object(self, kind: Kind) -> Callable[[str, Body], None]:
        def handle(event: str, body: Body) -> None:
            metadata = body["metadata"]
            namespace = metadata["namespace"]
            held = self.objects.setdefault(namespace, {})
            if event == "DELETED":
                held.pop((kind.plural, metadata["name"]), None)
            else:
                held[(kind.plural, metadata["name"])] = metadata["uid"]
            self._check(namespace)

        return handle

    def _follow(
        self,
        kind: Kind,
        label_selector: str | None,
        field_selector: str | None,
        metadata_only: bool,
        handle: Callable[[str, Body], None],
    ) -> Callable[[asyncio.Event], Coroutine[Any, Any, None]]:
        async def follow(synced: asyncio.Event) -> None:
            while True:
                try:
                    version, after = "", None
                    while True:
                        page = await self.kube.list_page(
                            kind,
                            label_selector=label_selector,
                            field_selector=field_selector,
                            metadata_only=metadata_only,
                            limit=2000,
                            after=after,
                        )
                        version = version or page.resource_version
                        for item in page.items:
                            handle("ADDED", item)
                        if (after := page.next) is None:
                            break
                    synced.set()
                    while True:
                        async for event in self.kube.watch(
                            kind,
                            version,
                            label_selector=label_selector,
                            field_selector=field_selector,
                            metadata_only=metadata_only,
                            timeout_seconds=300,
                        ):
                            version = event.object["metadata"].get("resourceVersion") or version
                            if event.type != "BOOKMARK":
                                handle(event.type, event.object)
                except ApiError:
                    await asyncio.sleep(0.5)  # listed again: what was missed comes back

        return follow

    async def wait(self, done: Callable[[], bool], limit: float, what: str) -> None:
        """Until `done()` (checked at every change the watches bring), at most `limit` s."""
        deadline = time.perf_counter() + limit
        while not done():
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise TimeoutError(f"{what}: not within {limit:.0f} s")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), timeout=min(remaining, 1.0))

    async def wait_all(
        self, namespaces: list[str], ready: Callable[[str], bool], limit: float, what: str
    ) -> None:
        """Wait until `ready` holds for every namespace, looking at each namespace once and
        then only again when an event touched it (the benchmark's CPU is not the
        operator's to share)."""
        self._touched.clear()
        missing = {name for name in namespaces if not ready(name)}

        def done() -> bool:
            touched, self._touched = self._touched, set()
            missing.difference_update([name for name in touched & missing if ready(name)])
            return not missing

        try:
            await self.wait(done, limit, what)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; {len(missing)} of {len(namespaces)} not ready") from None

    async def all_served(self, namespaces: list[str], limit: float, what: str) -> float:
        """Wait until every namespace is served; when the last one was."""
        await self.wait_all(namespaces, lambda name: name in self.served_at, limit, what)
        return max(self.served_at[name] for name in namespaces)


# ----------------------------------------------------------------------------- the operator


def _operator_command(executable: str | None) -> tuple[str, ...]:
    """`--operator`, else the `baseline-operator` of this Python."""
    if executable:
        return (executable,)
    script = Path(sys.executable).parent / "baseline-operator"
    if script.exists():
        return (str(script),)
    return (sys.executable, "-c", "from baseline_operator.cli import main; main()")


@functools.cache
def _serves_metrics(operator: tuple[str, ...]) -> bool:
    """Whether this operator has a metrics endpoint to place."""
    command = [*operator, "run", "--help"]
    answer = subprocess.run(command, capture_output=True, text=True, check=False)
    return "--metrics-address" in answer.stdout


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class OperatorProcess:
    cluster: Cluster
    namespace: str
    log: Path
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0  # time.time()
    # More arguments of `baseline-operator run` (--operator-args), for experiments.
    extra: tuple[str, ...] = ()
    # How to start `baseline-operator` (--operator).
    operator: tuple[str, ...] = ()

    def start(self) -> None:
        operator = self.operator or _operator_command(None)
        command = [
            *operator,
            "run",
            "--no-leader-election",
            "--namespace",
            self.namespace,
        ]
        if self.cluster.username:
            command += ["--username", self.cluster.username]
        if _serves_metrics(operator):
            # As deployed (metrics on), on a free loopback port: others may hold the default.
            command += ["--metrics-address", f"127.0.0.1:{_free_port()}"]
        command += self.extra
        environment = {**os.environ, "KUBECONFIG": str(self.cluster.kubeconfig)}
        if self.operator:
            # An operator installed elsewhere (--operator) runs its own install: a
            # PYTHONPATH set for the benchmark would have it import the source tree instead
            # (compiled at every start where bytecode is not written).
            environment.pop("PYTHONPATH", None)
        self.started_at = time.time()
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=environment
            )

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def memory(self) -> dict[str, float]:
        """VmRSS and VmHWM (peak) in MiB."""
        found = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                found[key] = int(value.split()[0]) / 1024
        return found

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    async def settled(self, limit: float = 300.0, quiet: float = 3.0) -> float:
        """Wait until the operator has used under 3% of a core for `quiet` seconds; how long
        that took."""
        started = time.perf_counter()
        calm = 0.0
        last = self.cpu_seconds()
        while calm < quiet:
            if time.perf_counter() - started > limit:
                raise TimeoutError(f"the operator did not settle within {limit:.0f} s")
            if not self.alive():
                raise RuntimeError(f"the operator exited; see {self.log}")
            await asyncio.sleep(0.5)
            now = self.cpu_seconds()
            calm = calm + 0.5 if now - last < 0.015 else 0.0
            last = now
        return time.perf_counter() - started - quiet

    def synced_after(self) -> float | None:
        """Seconds from start to the operator's 'caches synced' log line (its last one)."""
        found = None
        for line in self.log.read_text(errors="replace").splitlines():
            if "caches synced" not in line:
                continue
            with contextlib.suppress(ValueError, KeyError):
                stamp = datetime.fromisoformat(json.loads(line)["timestamp"]).timestamp()
                if stamp >= self.started_at - 1:
                    found = stamp - self.started_at
        return found

    async def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        for _ in range(100):
            if self.process.poll() is not None:
                return
            await asyncio.sleep(0.1)
        self.process.kill()
        self.process.wait()


# ----------------------------------------------------------------------------- the run


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


async def install(kube: KubeApi, operator_namespace: str) -> None:
    body = yaml.safe_load(CRD_FILE.read_text())
    await kube.request(
        "PATCH",
        object_path(ObjectRef(CRD_KIND, None, body["metadata"]["name"])),
        query=[("fieldManager", "baseline-bench"), ("force", "true")],
        body=body,
        content_type=APPLY_CONTENT_TYPE,
    )
    for _ in range(300):
        crd = await kube.get(ObjectRef(CRD_KIND, None, body["metadata"]["name"]))
        conditions = ((crd or {}).get("status") or {}).get("conditions") or []
        if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
            break
        await asyncio.sleep(0.1)
    with contextlib.suppress(ApiError):
        await kube.create(
            NAMESPACE,
            None,
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": operator_namespace}},
        )


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


class ScaleRun:
    """One run of every phase against one cluster; `results` fills as it goes."""

    def __init__(self, cluster_: Cluster, args: argparse.Namespace, workdir: Path) -> None:
        self.cluster = cluster_
        self.args = args
        self.workdir = workdir
        self.count: int = args.namespaces
        self.run = secrets.token_hex(3)
        self.prefix = f"b{self.run}"
        self.operator_namespace = f"{self.prefix}-operator"
        self.kube = KubeApi(cluster_.configuration, budget=REQUEST_BUDGET, timeout=60)
        self.bench = Bench(self.kube, self.run)
        # The floor's baseline name has the same length, so its bodies have the same size.
        self.baseline, self.floor_baseline = f"bench-{self.run}", f"floor-{self.run}"
        example = plan_for("x", self.baseline)
        self.kinds = sorted(
            {item.ref.kind for item in example.objects if item.ownership is Ownership.OBJECT},
            key=lambda kind: kind.plural,
        )
        self.objects_per_namespace = sum(
            1 for item in example.objects if item.ownership is Ownership.OBJECT
        )
        self.writes_per_namespace = len(example.objects) + 1  # and the labels
        self.tracker = Tracker(
            self.kube, self.run, self.kinds, [self.baseline, self.floor_baseline]
        )
        self.operators: list[OperatorProcess] = []
        self.floor_names = [f"{self.prefix}-floor-{i}" for i in range(self.count)]
        self.floor_again_names = [f"{self.prefix}-floor2-{i}" for i in range(self.count)]
        self.names = [f"{self.prefix}-ns-{i}" for i in range(self.count)]
        self.floor_seconds = 0.0
        self.results: dict[str, Any] = {
            "namespaces": self.count,
            "run": self.prefix,
            "objects_per_namespace": self.objects_per_namespace,
            "writes_per_namespace_minimum": self.writes_per_namespace,
        }

    def new_operator(self) -> OperatorProcess:
        log = self.workdir / f"operator-{len(self.operators)}.log"
        operator = OperatorProcess(
            self.cluster,
            self.operator_namespace,
            log,
            extra=tuple(self.args.operator_args.split()),
            operator=_operator_command(self.args.operator),
        )
        self.operators.append(operator)
        operator.start()
        return operator

    async def profile(
        self, operator: OperatorProcess, name: str
    ) -> asyncio.subprocess.Process | None:
        """With --profile: py-spy samples the operator (without pausing it) for a while."""
        if not self.args.profile:
            return None
        spy = Path(sys.executable).parent / "py-spy"
        output = Path(self.args.profile) / f"{name}-{self.count}.txt"
        output.parent.mkdir(parents=True, exist_ok=True)
        command = [str(spy), "record", "--nonblocking", "--format", "raw", "--rate", "50"]
        command += ["--duration", str(self.args.profile_seconds), "--pid", str(operator.pid)]
        command += ["-o", str(output)]
        return await asyncio.create_subprocess_exec(
            *command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def profile_server(self, name: str) -> asyncio.Task[None] | None:
        """With --profile: the API server's own CPU profile (Go pprof, /debug/pprof/profile)
        over the same span, to compare where its time goes in the floor and the install."""
        if not self.args.profile:
            return None
        output = Path(self.args.profile) / f"apiserver-{name}-{self.count}.pb.gz"
        output.parent.mkdir(parents=True, exist_ok=True)
        endpoint = self.cluster.configuration

        async def fetch() -> None:
            headers = {}
            if (authorization := endpoint.authorization()) is not None:
                headers["Authorization"] = authorization
            url = endpoint.server.rstrip("/") + "/debug/pprof/profile"
            connector = aiohttp.TCPConnector(ssl=endpoint.ssl_context())
            timeout = aiohttp.ClientTimeout(total=self.args.profile_seconds + 60)
            async with (
                aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
                session.get(
                    url, params={"seconds": str(self.args.profile_seconds)}, headers=headers
                ) as answer,
            ):
                output.write_bytes(await answer.read())

        return asyncio.create_task(fetch())

    async def window(self) -> Window:
        """The server's write counts and CPU and the benchmark's own writes, at the start of
        a phase."""
        counts, cpu = await server_sample(self.kube)
        return Window(counts, Counter(self.bench.own), cpu)

    async def writes_since(self, start: Window) -> Writes:
        counts, cpu = await server_sample(self.kube)
        writes = Writes.between(start.counts, counts, self.bench.own - start.own)
        writes.server_cpu_seconds = cpu - start.server_cpu
        return writes

    async def measure(self) -> dict[str, Any]:
        await install(self.kube, self.operator_namespace)
        await self.tracker.start()
        probe_file = self.workdir / "speed-probe.txt"
        probe = await asyncio.create_subprocess_exec(
            sys.executable, str(SCRIPT), "--speed-probe", str(probe_file)
        )
        try:
            await self.bench.create_baseline(baseline_body(self.baseline))
            await self.nothing_selected()
            await self.floor("floor", self.floor_names)
            self.floor_seconds = self.results["floor"]["seconds"]
            await self.unselected()
            operator = await self.fresh_install()
            operator = await self.restart(operator)
            await self.at_rest(operator)
            if self.args.pods:
                await self.pods(operator)
            # The floor once more, so that a drift of the machine's speed over the run shows.
            await self.stop_operators()
            await self.floor("floor_again", self.floor_again_names)
            self.results["peak_rss"] = max(value["VmHWM"] for value in _memories(self.results))
            self.results["speed"] = self.speeds(read_probe(probe_file))
        finally:
            probe.kill()
            await probe.wait()
            await self.stop_operators()
            await self.tracker.stop()
            if os.environ.get(KUBECONFIG_ENV):
                await _clean_up(self)
            await self.kube.close()
        return self.results

    def speeds(self, samples: list[tuple[float, float]]) -> dict[str, float | None]:
        """The probe's loop time during the floor, the install and the floor again."""
        fresh = self.results["fresh_install"]
        spans = {
            key: (
                self.results[key]["started"],
                self.results[key]["started"] + self.results[key]["seconds"],
            )
            for key in ("floor", "floor_again")
        }
        spans["fresh_install"] = (fresh["started"], fresh["started"] + fresh["seconds"])
        return {key: loop_seconds(samples, *span) for key, span in spans.items()}

    async def stop_operators(self) -> None:
        for running in self.operators:
            if running.alive():
                await running.stop()

    async def nothing_selected(self) -> None:
        """The operator with nothing to do: its floor of memory."""
        operator = self.new_operator()
        await operator.settled(limit=120)
        self.results["rss_empty"] = operator.memory()
        await operator.stop()
        say(f"operator with nothing selected: {self.results['rss_empty']}")

    async def floor(self, key: str, names: list[str]) -> None:
        """The same writes from a plain client in a process of its own (as the operator is),
        in namespaces nothing selects, while no operator runs."""
        started = time.perf_counter()
        await self.bench.create_namespaces(names, selected=False)
        await self.tracker.wait_all(
            names, self.tracker.bootstrapped, 600, "the floor's namespaces bootstrapped"
        )
        self.results.setdefault("create_namespaces_seconds", time.perf_counter() - started)
        for name in names:
            self.tracker.expect(name, plan_for(name, self.floor_baseline))
        await asyncio.sleep(2)
        start = await self.window()
        task = self.workdir / "floor.json"
        task.write_text(
            json.dumps(
                {
                    "kubeconfig": str(self.cluster.kubeconfig),
                    "namespaces": names,
                    "baseline": self.floor_baseline,
                }
            )
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(SCRIPT), "--send-floor", str(task)
        )
        server_profile = self.profile_server(key)
        if await asyncio.wait_for(process.wait(), timeout=3600) != 0:
            raise RuntimeError("the floor's client failed")
        if server_profile is not None:
            await server_profile
        sent = json.loads(task.read_text())["result"]
        counted = await self.writes_since(start)
        seen = await self.tracker.all_served(names, 120, "the floor's writes seen")
        self.results[key] = {
            "seconds": sent["seconds"],
            "writes_sent": sent["writes"],
            "writes_counted": counted.posture,
            "seen_after": seen - sent["started"],
            "started": sent["started"],
            "client_cpu_seconds": sent["cpu_seconds"],
            "server_cpu_seconds": counted.server_cpu_seconds,
        }
        say(f"{key}: {sent['writes']} writes in {sent['seconds']:.2f} s")

    async def unselected(self) -> None:
        """The operator with N namespaces it does not select (the floor's)."""
        operator = self.new_operator()
        await operator.settled(limit=300)
        self.results["rss_unselected"] = operator.memory()
        await operator.stop()
        say(f"operator with {self.count} unselected namespaces: {self.results['rss_unselected']}")

    async def fresh_install(self) -> OperatorProcess:
        """N labelled namespaces exist; the operator starts."""
        await self.bench.create_namespaces(self.names, selected=True)
        await self.tracker.wait_all(
            self.names, self.tracker.bootstrapped, 600, "the namespaces bootstrapped"
        )
        for name in self.names:
            self.tracker.expect(name, plan_for(name, self.baseline))
        await asyncio.sleep(2)
        start = await self.window()
        operator = self.new_operator()
        profiler = await self.profile(operator, "fresh-install")
        server_profile = self.profile_server("fresh-install")
        limit = min(3600.0, 20 * self.floor_seconds + 120)
        last = await self.tracker.all_served(self.names, limit, "fresh install")
        converged = last - operator.started_at
        _, server_cpu = await server_sample(self.kube)
        operator_cpu = operator.cpu_seconds()
        if profiler is not None:
            await profiler.wait()
        if server_profile is not None:
            await server_profile
        settle = await operator.settled(limit=600)
        writes = await self.writes_since(start)
        self.results["fresh_install"] = {
            "seconds": converged,
            "started": operator.started_at,
            "synced_after": operator.synced_after(),
            "ratio": converged / self.floor_seconds,
            "writes": writes.__dict__,
            "posture_writes_per_namespace": writes.posture / self.count,
            "settled_after": settle,
            "rss": operator.memory(),
            # Up to the moment every namespace was served (the Events that trail excluded).
            "server_cpu_seconds": server_cpu - start.server_cpu,
            "operator_cpu_seconds": operator_cpu,
        }
        say(
            f"fresh install: {converged:.2f} s,"
            f" {writes.posture / self.count:.2f} writes per namespace; {writes.detail}"
        )
        return operator

    async def restart(self, operator: OperatorProcess) -> OperatorProcess:
        """Stop the converged operator, start it again, create a new namespace at once."""
        await operator.stop()
        start = await self.window()
        operator = self.new_operator()
        fresh = f"{self.prefix}-restart"
        self.tracker.expect(fresh, plan_for(fresh, self.baseline))
        await self.bench.create_namespaces([fresh], selected=True)
        last = await self.tracker.all_served([fresh], 900, "a new namespace after a restart")
        served = last - operator.started_at
        await operator.settled(limit=600)
        writes = await self.writes_since(start)
        self.results["restart"] = {
            "served_after": served,
            "synced_after": operator.synced_after(),
            "writes": writes.__dict__,
            "posture_writes_besides_new": writes.posture - self.writes_per_namespace,
            "rss": operator.memory(),
        }
        say(f"restart: new namespace served after {served:.2f} s; writes {writes.detail}")
        return operator

    async def at_rest(self, operator: OperatorProcess) -> None:
        """New namespaces one at a time, then deleted NetworkPolicies one at a time."""
        start = await self.window()
        latencies = []
        for i in range(self.args.at_rest):
            name = f"{self.prefix}-rest-{i}"
            self.tracker.expect(name, plan_for(name, self.baseline))
            started = time.time()
            await self.bench.create_namespaces([name], selected=True)
            latencies.append(await self.tracker.all_served([name], 60, "a new namespace") - started)
            await asyncio.sleep(0.2)
        repairs = []
        for name in self.names[: self.args.at_rest]:
            repairs.append(await self.repair(name))
            await asyncio.sleep(0.2)
        await operator.settled(limit=120)
        writes = await self.writes_since(start)
        minimum = self.args.at_rest * self.writes_per_namespace + len(repairs)
        self.results["at_rest"] = {
            "new_namespace_ms": [round(x * 1e3, 1) for x in latencies],
            "repair_ms": [round(x * 1e3, 1) for x in repairs],
            "new_p50": statistics.median(latencies),
            "new_p99": percentile(latencies, 0.99),
            "repair_p50": statistics.median(repairs),
            "repair_p99": percentile(repairs, 0.99),
            "writes": writes.__dict__,
            "posture_writes_beyond_minimum": writes.posture - minimum,
            "rss": operator.memory(),
        }
        rest = self.results["at_rest"]
        say(
            f"at rest: new p50 {rest['new_p50'] * 1e3:.0f} ms p99 {rest['new_p99'] * 1e3:.0f} ms;"
            f" repair p50 {rest['repair_p50'] * 1e3:.0f} ms p99 {rest['repair_p99'] * 1e3:.0f} ms"
        )

    async def repair(self, namespace: str) -> float:
        """Delete the namespace's default-deny NetworkPolicy; seconds until it is back."""
        ref = ObjectRef(NETWORK_POLICY, namespace, f"{self.baseline}-default-deny")
        key = (NETWORK_POLICY.plural, ref.name)
        uid = self.tracker.objects[namespace][key]

        def back() -> bool:
            return self.tracker.objects.get(namespace, {}).get(key) not in (None, uid)

        started = time.perf_counter()
        await self.bench.delete(ref)
        await self.tracker.wait(back, 60, "a deleted NetworkPolicy put back")
        return time.perf_counter() - started

    async def pods(self, operator: OperatorProcess) -> None:
        """Pods created while no baseline audits workloads, then workloadAudit on."""
        pods = [
            (self.names[i % self.count], f"web-{i // self.count}", i % 2 == 0)
            for i in range(self.args.pods)
        ]
        started = time.perf_counter()
        await self.bench.create_pods(pods)
        created = time.perf_counter() - started
        await operator.settled(limit=120)
        unwatched = operator.memory()
        await operator.stop()
        operator = self.new_operator()
        await operator.settled(limit=600)
        without_audit = operator.memory()
        await self.bench.patch_baseline(
            self.baseline, {"spec": {"workloadAudit": {"enabled": True}}}
        )
        await asyncio.sleep(1)
        await operator.settled(limit=900)
        live = operator.memory()
        await operator.stop()
        operator = self.new_operator()
        await operator.settled(limit=900)
        self.results["pods"] = {
            "count": self.args.pods,
            "create_seconds": created,
            "rss_pods_unwatched_live": unwatched,
            "rss_restart_pods_unwatched": without_audit,
            "rss_audit_enabled_live": live,
            "rss_restart_audit": operator.memory(),
        }
        say(f"pods: {self.results['pods']}")


def _memories(results: dict[str, Any]) -> Iterator[dict[str, float]]:
    for value in results.values():
        if isinstance(value, dict):
            if "VmHWM" in value:
                yield value
            else:
                yield from _memories(value)


async def _clean_up(run: ScaleRun) -> None:
    """On a cluster of others: the baseline, its removal acknowledged (its finalizer runs while
    the operator does), then every namespace of the run."""
    kube = run.kube
    operator = run.new_operator()
    ref = ObjectRef(SECURITY_BASELINE, None, run.baseline)
    with contextlib.suppress(ApiError):
        await kube.delete(ref, None)
        body = await kube.get(ref)
        generation = str(((body or {}).get("metadata") or {}).get("generation", ""))
        annotations = {ACKNOWLEDGE_REMOVAL: generation}
        await kube.request(
            "PATCH",
            object_path(ref),
            body={"metadata": {"annotations": annotations}},
            content_type=MERGE_PATCH_CONTENT_TYPE,
        )
    for _ in range(300):
        if await kube.get(ref) is None:
            break
        await asyncio.sleep(1)
    await operator.stop()
    names = [run.operator_namespace]
    after = None
    while True:
        page = await kube.list_page(NAMESPACE, label_selector=f"{RUN_LABEL}={run.run}", after=after)
        names += [item["metadata"]["name"] for item in page.items]
        if (after := page.next) is None:
            break
    await bounded(kube.delete(ObjectRef(NAMESPACE, None, name), None) for name in names)
    print(f"deleted {len(names)} namespaces of run {run.prefix}")


# ----------------------------------------------------------------------------- the report


def report(results: dict[str, Any]) -> str:
    n = results["namespaces"]
    per = results["objects_per_namespace"]
    floor = results["floor"]
    again = results["floor_again"]
    fresh = results["fresh_install"]
    restart = results["restart"]
    rest = results["at_rest"]
    empty = results["rss_empty"]["VmRSS"]
    unselected = results["rss_unselected"]["VmRSS"]
    after_restart = restart["rss"]["VmRSS"]
    per_namespace = (unselected - empty) / n
    per_selected = (after_restart - unselected) / n
    per_object = (after_restart - unselected - n * per_namespace) / (n * per)

    minimum = results["writes_per_namespace_minimum"]
    posture = fresh["posture_writes_per_namespace"] * n

    def met(ok: bool) -> str:
        return "met" if ok else "**not met**"

    rows = [
        (
            "floor: the same writes from a plain client, 8 in flight",
            f"{floor['writes_sent']} writes in {floor['seconds']:.1f} s"
            f" ({floor['writes_sent'] / floor['seconds']:.0f}/s; all seen by watches after"
            f" {floor['seen_after']:.1f} s)",
            "",
            "",
        ),
        (
            f"fresh install, {n} namespaces: every object and label in place",
            f"{fresh['seconds']:.1f} s (caches synced at {fresh['synced_after'] or 0:.1f} s)",
            f"**{fresh['ratio']:.2f}x floor**"
            f" ({(fresh['seconds'] - (fresh['synced_after'] or 0)) / floor['seconds']:.2f}x"
            " from caches synced)",
            f"≤ 1.5x: {met(fresh['ratio'] <= 1.5)}",
        ),
        (
            "floor again, at the end of the run (the machine's drift)",
            f"{again['seconds']:.1f} s",
            f"{fresh['seconds'] / ((floor['seconds'] + again['seconds']) / 2):.2f}x"
            " (install / mean of both floors)",
            "",
        ),
        *_speed_rows(results),
        (
            "CPU per 1,000 writes: API server / client, floor and install",
            f"floor {_per_thousand(floor, 'server_cpu_seconds')} /"
            f" {_per_thousand(floor, 'client_cpu_seconds')} s;"
            f" install {fresh['server_cpu_seconds'] / posture * 1000:.2f} /"
            f" {fresh['operator_cpu_seconds'] / posture * 1000:.2f} s"
            " (the operator's from its start)",
            "",
            "",
        ),
        (
            "writes per namespace (objects + labels) / minimum",
            f"{fresh['posture_writes_per_namespace']:.2f} / {minimum}"
            f"; Events {fresh['writes']['events']}, to the baseline {fresh['writes']['baseline']}",
            f"{fresh['posture_writes_per_namespace'] / minimum:.2f}",
            "",
        ),
        (
            "restart, everything in place: a new namespace served after",
            f"{restart['served_after']:.1f} s"
            f" (caches synced at {restart['synced_after'] or 0:.1f} s)",
            "",
            f"≤ 15 s: {met(restart['served_after'] <= 15)}",
        ),
        (
            "restart: writes besides the new namespace's",
            f"{restart['posture_writes_besides_new']} (Events {restart['writes']['events']},"
            f" to the baseline {restart['writes']['baseline']})",
            "",
            f"0: {met(restart['posture_writes_besides_new'] == 0)}",
        ),
        (
            f"at rest: new namespace, {len(rest['new_namespace_ms'])} one at a time",
            f"p50 {rest['new_p50'] * 1e3:.0f} ms, p99 {rest['new_p99'] * 1e3:.0f} ms",
            "",
            f"≤ 50 / 150 ms: {met(rest['new_p50'] <= 0.05 and rest['new_p99'] <= 0.15)}",
        ),
        (
            f"at rest: deleted NetworkPolicy back, {len(rest['repair_ms'])} one at a time",
            f"p50 {rest['repair_p50'] * 1e3:.0f} ms, p99 {rest['repair_p99'] * 1e3:.0f} ms",
            "",
            f"p99 ≤ 150 ms: {met(rest['repair_p99'] <= 0.15)}",
        ),
        (
            "at rest: writes beyond one per object and label",
            f"{rest['posture_writes_beyond_minimum']}",
            "",
            "",
        ),
        (
            "RSS: nothing selected / N unselected namespaces",
            f"{empty:.1f} / {unselected:.1f} MiB",
            "",
            "",
        ),
        (
            f"RSS: converged / after restart ({2 * n} namespaces, {n * per} objects)",
            f"{fresh['rss']['VmRSS']:.1f} / {after_restart:.1f} MiB",
            "",
            "",
        ),
        (
            "RSS per 1,000 namespaces (namespace + its default ServiceAccount)",
            f"{per_namespace * 1000:.1f} MiB",
            "",
            "",
        ),
        (
            f"RSS per 1,000 selected namespaces with their {per * 1000} objects",
            f"{per_selected * 1000:.1f} MiB",
            "",
            "",
        ),
        ("RSS per 10,000 managed objects", f"{per_object * 10000:.1f} MiB", "", ""),
        (
            f"RSS estimate at {n} namespaces, {n * per} objects (unselected taken off)",
            f"{after_restart - n * per_namespace:.1f} MiB",
            "",
            f"≤ 100 MiB: {met(after_restart - n * per_namespace <= 100)}" if n >= 5000 else "",
        ),
        ("peak RSS (VmHWM) over the run", f"{results['peak_rss']:.1f} MiB", "", ""),
    ]
    if "pods" in results:
        pods = results["pods"]
        base = pods["rss_restart_pods_unwatched"]["VmRSS"]
        audited = pods["rss_restart_audit"]["VmRSS"]
        rows += [
            (
                f"{pods['count']} pods, workloadAudit off: RSS after restart",
                f"{base:.1f} MiB (no pod watch)",
                "",
                "",
            ),
            (
                "workloadAudit on: RSS live / after restart",
                f"{pods['rss_audit_enabled_live']['VmRSS']:.1f} / {audited:.1f} MiB",
                "",
                "",
            ),
            ("RSS per 10,000 pods", f"{(audited - base) / pods['count'] * 10000:.1f} MiB", "", ""),
        ]
    lines = ["| what | measured | ratio | target |", "| --- | --- | --- | --- |"]
    lines += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(lines)


def _speed_rows(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """The machine's speed in the three timed phases: the probe's loop time (median), and
    the install against the floors with each phase's time scaled by it."""
    speed = results.get("speed") or {}
    floor, again, fresh = (speed.get(key) for key in ("floor", "floor_again", "fresh_install"))
    if not (floor and again and fresh):
        return []
    scaled = [
        results[key]["seconds"] / speed[key] for key in ("floor", "floor_again", "fresh_install")
    ]
    return [
        (
            "the machine's speed: a fixed loop's CPU time, floor / install / floor again",
            f"{floor * 1e3:.2f} / {fresh * 1e3:.2f} / {again * 1e3:.2f} ms",
            f"{scaled[2] / scaled[0]:.2f}x, {scaled[2] / scaled[1]:.2f}x"
            " (install / each floor, each phase's time divided by its loop time)",
            "",
        )
    ]


def _per_thousand(floor: dict[str, Any], key: str) -> str:
    return f"{floor[key] / floor['writes_sent'] * 1000:.2f}"


def machine() -> str:
    return (
        f"{os.cpu_count()} cores ({platform.machine()}), Python {platform.python_version()},"
        f" {platform.system()} {platform.release()}"
    )


async def main_async(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    with cluster() as cluster_:
        print(f"cluster: {cluster_.description}; machine: {machine()}; logs in {workdir}")
        results = await ScaleRun(cluster_, args, workdir).measure()
        results["cluster"] = cluster_.description
    results["machine"] = machine()
    results["command"] = " ".join(sys.argv)
    print(report(results))
    if args.json:
        with open(args.json, "w") as out:  # noqa: ASYNC230 (once, at the end)
            json.dump(results, out, indent=2, default=str)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--namespaces", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=10000, help="0: no pod phase")
    parser.add_argument("--at-rest", type=int, default=50, help="namespaces and repairs")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument(
        "--profile",
        default=None,
        help="a directory: py-spy samples the fresh install there, and the API server's own"
        " CPU profile (pprof) the floor and the fresh install",
    )
    parser.add_argument("--profile-seconds", type=int, default=60)
    parser.add_argument(
        "--operator-args",
        default="",
        help="more arguments of `baseline-operator run`, e.g. '--workers 8' (default: none)",
    )
    parser.add_argument(
        "--operator",
        default=None,
        help="the `baseline-operator` executable to measure (default: this Python's); for"
        " memory, one installed as the image installs it: `pip install .`, no extras",
    )
    parser.add_argument("--send-floor", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--speed-probe", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.send_floor:
        return floor_process(args.send_floor)
    if args.speed_probe:
        return speed_probe_process(args.speed_probe)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    raise SystemExit(main())

"""The real operator against a real Kubernetes API server.

The cluster is, in this order of preference:

- BASELINE_E2E_KUBECONFIG: the kubeconfig of a throwaway cluster you administer;
- BASELINE_E2E_ASSETS: a directory holding `etcd`, `kube-apiserver` and
  `kube-controller-manager` (any kube-apiserver 1.30+): the session starts its own
  control plane from them on loopback (tests/support/control_plane.py) and tears it
  down at the end, failures or not. CI does this;

and with neither, every test here is skipped and says why. What a run does to the
cluster, and undoes:

- it applies the SecurityBaseline CRD from crds/ (server-side apply) and leaves it
  installed: baselines of others may depend on it;
- it creates the operator's namespace `<run>-operator` with the ServiceAccount
  `baseline-operator`, bound to a copy of manifests/base/clusterrole.yaml named
  `<run>-operator`. The operator runs in-process with a token of that account, so the
  shipped RBAC is what the tests exercise, and the tamper-protection policy sees the
  operator's own user;
- every namespace and baseline it creates is named `<run>-<test>-...` (run =
  `e2e-<6 hex>`), and baselines select namespaces only through the two labels the
  tests stamp (RUN_LABEL, SCOPE_LABEL), so nothing else in the cluster is ever selected;
- it deletes baselines first (their finalizer runs while the operator is still up),
  then namespaces, then the cluster-scoped objects it made, and finally sweeps
  whatever still carries the run's name, and the Events about its objects.

The operator acts on every SecurityBaseline in the cluster, not only the run's: on a
cluster that holds baselines of others it reconciles those too. The terminal summary
names them; where the tests count the API server's write requests, changes to objects
of others are taken off (replayed from a watch); and the one test that would make the
operator write into their namespaces (installing an ExternalSecret kind) is skipped.

The operator runs inside the test function (`async with e2e.operator():`), not in a
fixture: kopf, when it stops, waits five seconds for every task started while it ran and
then cancels it, and a fixture's teardown is such a task.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_asyncio
import yaml

from baseline_operator.api.resource import parse_baseline
from baseline_operator.controller.baselines import ACKNOWLEDGE_REMOVAL
from baseline_operator.kube.client import (
    APPLY_CONTENT_TYPE,
    ApiError,
    Endpoint,
    KubeApi,
    RetryPolicy,
    collection_path,
)
from baseline_operator.kube.config import connection_info, load_kubeconfig
from baseline_operator.policy.layering import plan_namespace
from baseline_operator.policy.names import (
    BASELINE_KEY,
    MANAGED_BY_KEY,
    MANAGED_BY_VALUE,
    OPERATOR_SERVICE_ACCOUNT,
    applied_label,
)
from baseline_operator.policy.objects import (
    CLUSTER_KINDS,
    EVENT,
    NAMESPACE,
    NAMESPACED_KINDS,
    SECURITY_BASELINE,
    SERVICE_ACCOUNT,
    Kind,
    ObjectRef,
)
from tests.support.cluster import FULL_SPEC, Cluster, Operator, baseline, running_operator
from tests.support.control_plane import (
    ASSETS_ENV,
    ControlPlane,
    Credentials,
    missing_binaries,
)
from tests.support.processes import NO_AUDIT_LOG, AuditLog

ENV = "BASELINE_E2E_KUBECONFIG"
KUBECTL_ENV = "BASELINE_E2E_KUBECTL"
ROOT = Path(__file__).parents[2]
CRD_FILE = ROOT / "crds/securitybaselines.security.baseline.dev.yaml"
CLUSTER_ROLE_FILE = ROOT / "manifests/base/clusterrole.yaml"

RUN_LABEL = "e2e.baseline-operator.test/run"
SCOPE_LABEL = "e2e.baseline-operator.test/scope"
E2E_MANAGER = "baseline-operator-e2e"
# A real API server and controller manager: generous, so a slow machine is not a failure.
WAIT = 45.0

CRD_KIND = Kind(
    "apiextensions.k8s.io", "v1", "CustomResourceDefinition", "customresourcedefinitions", False
)
CLUSTER_ROLE = Kind("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", False)
CLUSTER_ROLE_BINDING = Kind(
    "rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", False
)

T = TypeVar("T")

# ----------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Answer:
    """What the API server answered to a request, refusals included."""

    status: int
    body: dict[str, Any]
    warnings: tuple[str, ...] = ()

    @property
    def message(self) -> str:
        return str(self.body.get("message", ""))


async def attempt(
    kube: KubeApi,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
    query: Iterable[tuple[str, str]] = (),
    content_type: str = "application/json",
) -> Answer:
    """A request whose refusal is an answer to look at, not an error."""
    try:
        response = await kube.request(
            method, path, query=list(query), body=body, content_type=content_type
        )
    except ApiError as exc:
        return Answer(exc.status, {"reason": exc.reason, "message": exc.message})
    return Answer(response.status, response.body, response.warnings)


async def list_items(
    kube: KubeApi, kind: Kind, namespace: str | None = None, **query: str
) -> list[dict[str, Any]]:
    answer = await kube.request("GET", collection_path(kind, namespace), query=list(query.items()))
    items: list[dict[str, Any]] = answer.body.get("items", [])
    return items


def object_path(kind: Kind, namespace: str | None, name: str) -> str:
    return f"{collection_path(kind, namespace)}/{name}"


async def server_side_apply(
    kube: KubeApi, kind: Kind, body: dict[str, Any], *, dry_run: bool = False
) -> Answer:
    """Apply as kubectl would (strict field validation), as the tests' own field manager."""
    namespace = body["metadata"].get("namespace")
    query = [("fieldManager", E2E_MANAGER), ("force", "true"), ("fieldValidation", "Strict")]
    if dry_run:
        query.append(("dryRun", "All"))
    return await attempt(
        kube,
        "PATCH",
        object_path(kind, namespace, body["metadata"]["name"]),
        body,
        query,
        APPLY_CONTENT_TYPE,
    )


def stand_in_crd(kind: Kind) -> dict[str, Any]:
    """A schema-less CRD for a kind another project defines (ExternalSecrets, PolicyReports):
    enough for the operator to write and read it, without installing that project."""
    singular = kind.kind.lower()
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{kind.plural}.{kind.group}"},
        "spec": {
            "group": kind.group,
            "scope": "Namespaced",
            "names": {
                "kind": kind.kind,
                "plural": kind.plural,
                "singular": singular,
                "listKind": f"{kind.kind}List",
            },
            "versions": [
                {
                    "name": kind.version,
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }


async def served(kube: KubeApi, kind: Kind) -> bool:
    """Whether the API server serves a kind (its CRD is installed and established)."""
    answer = await attempt(kube, "GET", f"/apis/{kind.group}/{kind.version}")
    return answer.status == 200 and any(
        item.get("name") == kind.plural for item in answer.body.get("resources", [])
    )


async def eventually(
    check: Callable[[], Awaitable[T | None]], limit: float = WAIT, what: str = "the condition"
) -> T:
    """Poll until `check` returns something truthy; return it."""
    deadline = time.monotonic() + limit
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not come true within {limit:.0f}s")
        await asyncio.sleep(0.1)


async def namespace_deleted(kube: KubeApi, name: str, limit: float = WAIT) -> None:
    """Wait until a deleted namespace is gone; if it is not, say what holds it up (the
    namespace controller's conditions: a finalizer, or a request something refused)."""
    last: dict[str, Any] = {}

    async def gone() -> bool:
        nonlocal last
        answer = await attempt(kube, "GET", object_path(NAMESPACE, None, name))
        last = answer.body
        return answer.status == 404

    try:
        await eventually(gone, limit=limit, what=f"namespace {name} disappearing")
    except AssertionError as exc:
        stuck = [
            f"{condition['type']}: {condition.get('message')}"
            for condition in (last.get("status") or {}).get("conditions") or []
            if condition.get("status") == "True"
        ]
        raise AssertionError(f"{exc}; {'; '.join(stuck) or 'no condition says why'}") from None


def in_thread(coroutine_function: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion on a loop of its own (for synchronous session fixtures)."""

    def run() -> T:
        return asyncio.run(coroutine_function())  # type: ignore[arg-type]

    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(run).result()


# The kubeconfig of the session's cluster (set by the `run` fixture).
KUBECONFIG: list[str] = []


def kubectl(*args: str) -> subprocess.CompletedProcess[str] | None:
    """Run kubectl (BASELINE_E2E_KUBECTL, else the one on PATH) against the e2e cluster;
    None when there is no kubectl."""
    binary = (
        os.environ.get(KUBECTL_ENV)
        or shutil.which("kubectl", path=str(Path(sys.executable).parent))  # the test extra's
        or shutil.which("kubectl")
    )
    if not binary or not KUBECONFIG:
        return None
    environment = {**os.environ, "KUBECONFIG": KUBECONFIG[0]}
    return subprocess.run(
        [binary, *args], capture_output=True, text=True, env=environment, timeout=60, check=False
    )


async def close(kube: KubeApi) -> None:
    await kube.close()


def new_kube(endpoint: Endpoint, headers: dict[str, str] | None = None) -> KubeApi:
    return KubeApi(
        dataclasses.replace(endpoint, headers={**endpoint.headers, **(headers or {})}),
        retry=RetryPolicy(first_delay=0.05, max_delay=0.5),
    )


# ----------------------------------------------------------------------------- metrics

WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "DELETE", "DELETECOLLECTION", "APPLY"})
# (API group, resource): what the operator writes.
GENERATED_RESOURCES = frozenset(
    {(kind.group, kind.plural) for kind in (*NAMESPACED_KINDS, *CLUSTER_KINDS)}
)
NAMESPACES_AND_GENERATED = GENERATED_RESOURCES | {("", "namespaces")}
EVENT_RESOURCES = frozenset({("", "events"), ("events.k8s.io", "events")})
EVERYTHING_THE_OPERATOR_WRITES = (
    NAMESPACES_AND_GENERATED | EVENT_RESOURCES | {(SECURITY_BASELINE.group, "securitybaselines")}
)
# (group, resource, subresource, verb)
Series = tuple[str, str, str, str]
_SERIES = re.compile(r"^apiserver_request_total\{(.*)\} (\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


async def write_requests(kube: KubeApi) -> Counter[Series]:
    """The API server's count of real (not dry-run) write requests by clients that are not
    the control plane's own (the operator is never one of those)."""
    text = await kube.get_text("/metrics")
    counts: Counter[Series] = Counter()
    for line in text.splitlines():
        match = _SERIES.match(line)
        if not match:
            continue
        labels = dict(_LABEL.findall(match.group(1)))
        if labels.get("verb") not in WRITE_VERBS or labels.get("dry_run", "") != "":
            continue
        if labels.get("system_client", ""):  # kube-controller-manager, kube-apiserver, ...
            continue
        key = (
            labels.get("group", ""),
            labels.get("resource", ""),
            labels.get("subresource", ""),
            labels["verb"],
        )
        counts[key] += int(float(match.group(2)))
    return counts


@dataclass(frozen=True)
class WriteSnapshot:
    counts: Counter[Series]
    version: str  # a resourceVersion from which a watch replays what changed since


def _resource_path(group: str, resource: str) -> str:
    return f"/apis/{group}/{_served_version(group)}/{resource}" if group else f"/api/v1/{resource}"


def _served_version(group: str) -> str:
    for kind in (*NAMESPACED_KINDS, *CLUSTER_KINDS, SECURITY_BASELINE):
        if kind.group == group:
            return kind.version
    return "v1"


def _belongs_to_run(item: dict[str, Any], prefix: str) -> bool:
    metadata = item.get("metadata") or {}
    involved = item.get("involvedObject") or {}
    names: tuple[str, ...] = (
        metadata.get("name", ""),
        metadata.get("namespace") or "",
        involved.get("name", ""),
    )
    if item.get("kind") == "Event":  # an Event is about its involved object
        names = (involved.get("name", ""), involved.get("namespace") or "")
    return any(name.startswith(prefix) for name in names)


async def foreign_changes(
    kube: KubeApi, group: str, resource: str, version: str, prefix: str
) -> list[str]:
    """Changes to objects not of this run since `version`, replayed from a watch (which
    the server closes after a second)."""
    query = [("watch", "1"), ("resourceVersion", version), ("timeoutSeconds", "1")]
    text = await kube.get_text(_resource_path(group, resource), query)
    changes = []
    for line in text.splitlines():
        event = json.loads(line)
        item = event.get("object") or {}
        if event.get("type") == "ERROR":  # e.g. the version is too old to replay from
            raise AssertionError(f"cannot tell whose writes these were: {item.get('message')}")
        if event.get("type") in ("ADDED", "MODIFIED", "DELETED") and not _belongs_to_run(
            item, prefix
        ):
            metadata = item.get("metadata") or {}
            where = f"{metadata['namespace']}/" if metadata.get("namespace") else ""
            changes.append(f"{event['type']} {where}{metadata.get('name')}")
    return changes


# ----------------------------------------------------------------------------- the run


@dataclass
class Run:
    """One pytest session against the cluster."""

    prefix: str  # e2e-<6 hex>: the start of every name this run gives
    admin: Endpoint
    operator: Endpoint  # the operator's ServiceAccount token
    operator_namespace: str
    foreign_baselines: dict[str, dict[str, Any]]  # baselines of others, by name
    # A plain user in no group (when the session started its own control plane): tests
    # grant it what a tenant holds, e.g. the built-in `admin` role in one namespace.
    tenant: Endpoint | None = None
    _scopes: int = 0

    def next_scope(self) -> str:
        self._scopes += 1
        return f"t{self._scopes:02d}"


TIMINGS: list[tuple[str, float]] = []
NOTES: list[str] = []
# The API server's audit log (JSON lines), when the session started the control plane.
AUDIT_LOG: list[Path] = []


def record_timing(label: str, seconds: float) -> None:
    TIMINGS.append((label, seconds))
    print(f"e2e timing: {label}: {seconds:.2f}s")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not TIMINGS and not NOTES:
        return
    terminalreporter.section("e2e against a real API server")
    for note in NOTES:
        terminalreporter.write_line(note)
    for label, seconds in TIMINGS:
        terminalreporter.write_line(f"{seconds:8.2f}s  {label}")


def _admin_endpoint(path: str) -> Endpoint:
    """The kubeconfig's endpoint, its CA in a file (the fault proxy and the kubeconfigs of
    operator processes name the CA by path)."""
    endpoint = load_kubeconfig(path)
    if endpoint.ca_data is None:
        return endpoint
    ca_file = Path(tempfile.mkdtemp(prefix="e2e-ca-")) / "ca.crt"
    ca_file.write_text(endpoint.ca_data)
    return dataclasses.replace(endpoint, ca_file=str(ca_file), ca_data=None)


def _token_endpoint(admin: Endpoint, token: str) -> Endpoint:
    """The same server, authenticated only by a bearer token (no client certificate)."""
    return dataclasses.replace(
        admin, certificate_file=None, key_file=None, authorization=lambda: f"Bearer {token}"
    )


async def _install_crd(kube: KubeApi) -> None:
    # The SecurityBaseline CRD and, next to it, the BaselineException CRD.
    for path in (CRD_FILE, CRD_FILE.with_name("baselineexceptions.security.baseline.dev.yaml")):
        body = yaml.safe_load(path.read_text())
        answer = await server_side_apply(kube, CRD_KIND, body)
        assert answer.status in (200, 201), f"installing the CRD failed: {answer.message}"

        async def established(name: str = body["metadata"]["name"]) -> bool:
            crd = await kube.request("GET", object_path(CRD_KIND, None, name))
            conditions = (crd.body.get("status") or {}).get("conditions") or []
            return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)

        await eventually(established, what=f"the CRD {path.name} being Established")


async def _prepare_operator_identity(kube: KubeApi, prefix: str, namespace: str) -> str:
    """The operator's namespace, ServiceAccount and the shipped ClusterRole; a token."""
    await kube.create(
        NAMESPACE,
        None,
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace, "labels": {RUN_LABEL: prefix}},
        },
    )
    await kube.create(
        SERVICE_ACCOUNT,
        namespace,
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": OPERATOR_SERVICE_ACCOUNT, "namespace": namespace},
        },
    )
    shipped = yaml.safe_load(CLUSTER_ROLE_FILE.read_text())
    name = f"{prefix}-operator"
    await kube.create(
        CLUSTER_ROLE,
        None,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name, "labels": {RUN_LABEL: prefix}},
            "rules": shipped["rules"],
        },
    )
    await kube.create(
        CLUSTER_ROLE_BINDING,
        None,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name, "labels": {RUN_LABEL: prefix}},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": name,
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": OPERATOR_SERVICE_ACCOUNT, "namespace": namespace}
            ],
        },
    )
    answer = await kube.request(
        "POST",
        object_path(SERVICE_ACCOUNT, namespace, OPERATOR_SERVICE_ACCOUNT) + "/token",
        body={
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 7200},
        },
    )
    token: str = answer.body["status"]["token"]
    return token


async def _sweep(kube: KubeApi, prefix: str, wait: float) -> list[str]:
    """Remove whatever still carries the run's name; say what had been left behind."""
    left: list[str] = []
    for item in await list_items(kube, SECURITY_BASELINE):
        name = item["metadata"]["name"]
        if not name.startswith(f"{prefix}-"):
            continue
        left.append(f"SecurityBaseline {name}")
        path = object_path(SECURITY_BASELINE, None, name)
        if item["metadata"].get("finalizers"):
            await attempt(
                kube,
                "PATCH",
                path,
                {"metadata": {"finalizers": None}},
                content_type="application/merge-patch+json",
            )
        await attempt(kube, "DELETE", path)
    for kind in CLUSTER_KINDS:
        for item in await list_items(kube, kind):
            owner = (item["metadata"].get("labels") or {}).get(BASELINE_KEY, "")
            if owner.startswith(f"{prefix}-"):
                left.append(f"{kind.kind} {item['metadata']['name']}")
                await attempt(kube, "DELETE", object_path(kind, None, item["metadata"]["name"]))
    for kind in (CLUSTER_ROLE_BINDING, CLUSTER_ROLE):
        for item in await list_items(kube, kind, labelSelector=f"{RUN_LABEL}={prefix}"):
            await attempt(kube, "DELETE", object_path(kind, None, item["metadata"]["name"]))
    # Events about the run's namespaces and baselines (those of cluster-scoped objects live in
    # `default`; the others go with their namespaces).
    await asyncio.gather(
        *(
            attempt(kube, "DELETE", object_path(EVENT, "default", event["metadata"]["name"]))
            for event in await list_items(kube, EVENT, "default")
            if (event.get("involvedObject") or {}).get("name", "").startswith(f"{prefix}-")
        )
    )
    namespaces = [
        item["metadata"]["name"]
        for item in await list_items(kube, NAMESPACE, labelSelector=f"{RUN_LABEL}={prefix}")
    ]
    for name in namespaces:
        await attempt(kube, "DELETE", object_path(NAMESPACE, None, name))

    async def gone() -> bool:
        return not await list_items(kube, NAMESPACE, labelSelector=f"{RUN_LABEL}={prefix}")

    try:
        await eventually(gone, limit=wait, what="the run's namespaces disappearing")
    except AssertionError:
        left.append(f"namespaces still terminating after {wait:.0f}s (deletion was requested)")
    return left


NO_CLUSTER = (
    f"neither {ENV} nor {ASSETS_ENV} is set: the e2e tests need a real API server (a "
    "kubeconfig with cluster-admin rights on a throwaway cluster, or a directory with the "
    "etcd, kube-apiserver and kube-controller-manager binaries to start one)"
)


@pytest.fixture(scope="session")
def cluster_access() -> Iterable[tuple[str, Credentials | None]]:
    """The kubeconfig of the session's cluster, and a plain user's credentials (a user in
    no group, for RBAC and tenant cases) when the session started the control plane."""
    path = os.environ.get(ENV)
    if path:
        if not Path(path).is_file():
            pytest.fail(f"{ENV}={path}: no such kubeconfig file")
        yield path, None
        return
    assets = os.environ.get(ASSETS_ENV)
    if not assets:
        pytest.skip(reason=NO_CLUSTER)
    missing = missing_binaries(Path(assets))
    if missing:
        pytest.fail(f"{ASSETS_ENV}={assets}: missing executable {', '.join(missing)}")
    with ControlPlane(Path(assets), audit=True).start() as plane:
        NOTES.append(f"a throwaway control plane from {ASSETS_ENV} at {plane.url}")
        AUDIT_LOG[:] = [plane.audit_log] if plane.audit_log else []
        yield str(plane.kubeconfig), plane.tenant


@pytest.fixture(scope="session")
def run(cluster_access: tuple[str, Credentials | None]) -> Iterable[Run]:
    path, tenant = cluster_access
    KUBECONFIG[:] = [path]
    admin = _admin_endpoint(path)
    prefix = f"e2e-{secrets.token_hex(3)}"
    operator_namespace = f"{prefix}-operator"

    async def set_up() -> tuple[str, dict[str, dict[str, Any]]]:
        kube = new_kube(admin)
        try:
            await _install_crd(kube)
            token = await _prepare_operator_identity(kube, prefix, operator_namespace)
            foreign = {
                item["metadata"]["name"]: item
                for item in await list_items(kube, SECURITY_BASELINE)
                if not item["metadata"]["name"].startswith(f"{prefix}-")
            }
            return token, foreign
        finally:
            await close(kube)

    try:
        token, foreign = in_thread(set_up)
    except BaseException:
        in_thread(lambda: _sweep_with_new_client(admin, prefix, wait=0))
        raise
    if foreign:
        NOTES.append(
            "the cluster holds SecurityBaselines this run did not create, which the operator "
            f"reconciled too: {', '.join(sorted(foreign))}"
        )
    NOTES.append(f"run prefix {prefix}")
    yield Run(
        prefix,
        admin,
        _token_endpoint(admin, token),
        operator_namespace,
        foreign,
        _token_endpoint(admin, tenant.token) if tenant else None,
    )
    left = in_thread(lambda: _sweep_with_new_client(admin, prefix, wait=60))
    if left:
        NOTES.append("swept after the run: " + "; ".join(left))


async def _sweep_with_new_client(admin: Endpoint, prefix: str, wait: float) -> list[str]:
    kube = new_kube(admin)
    try:
        return await _sweep(kube, prefix, wait)
    finally:
        await close(kube)


# ----------------------------------------------------------------------------- one test


def expected_refs(body: dict[str, Any], namespace: str) -> set[ObjectRef]:
    """What one baseline alone should generate in a namespace (the pure core's plan)."""
    plan = plan_namespace(namespace, [parse_baseline(body)])
    return {item.ref for item in plan.objects if item.baseline is not None}


# FULL_SPEC without externalSecrets: their kind is usually not served (see test_external_secrets).
SPEC: dict[str, Any] = {key: value for key, value in FULL_SPEC.items() if key != "externalSecrets"}


def contains(live: Any, wanted: Any, path: str = "") -> list[str]:
    """Where `live` (as stored) lacks or differs from `wanted` (as rendered); the server
    may add defaults, but must not lose or change anything the operator asked for. An
    empty list or map the operator states is stored as an absent field."""
    if live is None and wanted in ([], {}):
        return []
    if isinstance(wanted, dict):
        if not isinstance(live, dict):
            return [f"{path}: {live!r} is not an object"]
        return [
            problem
            for key, value in wanted.items()
            for problem in contains(live.get(key), value, f"{path}.{key}")
        ]
    if isinstance(wanted, list):
        if not isinstance(live, list) or len(live) != len(wanted):
            return [f"{path}: {live!r} != {wanted!r}"]
        return [
            problem
            for index, (got, want) in enumerate(zip(live, wanted, strict=True))
            for problem in contains(got, want, f"{path}[{index}]")
        ]
    return [] if live == wanted else [f"{path}: {live!r} != {wanted!r}"]


async def converged_on(e2e: E2E, body: dict[str, Any], namespaces: list[str]) -> bool:
    """Every object, label and the default ServiceAccount, as the pure core plans them."""
    name = body["metadata"]["name"]
    wanted = set().union(*(expected_refs(body, namespace) for namespace in namespaces))
    if await e2e.owned_refs(name) != wanted:
        return False
    plans = {ns: plan_namespace(ns, [parse_baseline(body)]) for ns in namespaces}
    found = {
        item["metadata"]["name"]: item
        for item in await list_items(
            e2e.kube, NAMESPACE, labelSelector=f"{applied_label(name)}=true"
        )
    }
    for namespace, plan in plans.items():
        labels = found.get(namespace, {}).get("metadata", {}).get("labels", {})
        if any(labels.get(key) != value for key, value in plan.labels.items()):
            return False
    accounts = {
        item["metadata"]["namespace"]: item
        for item in await list_items(
            e2e.kube, SERVICE_ACCOUNT, fieldSelector="metadata.name=default"
        )
    }
    for namespace, plan in plans.items():
        for item in plan.objects:
            if item.baseline is None:  # the default ServiceAccount: only some fields are ours
                field = "automountServiceAccountToken"
                if accounts.get(namespace, {}).get(field) != item.body[field]:
                    return False
    return True


@dataclass
class E2E:
    """One test's view of the cluster: the names it may use and what it made."""

    run: Run
    scope: str
    cluster: Cluster  # the tests' own requests: cluster-admin
    operator_side: Cluster  # the operator's ServiceAccount
    baselines: list[str] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    cluster_objects: list[str] = field(default_factory=list)  # paths, deleted last

    @property
    def kube(self) -> KubeApi:
        return self.cluster.kube

    @property
    def prefix(self) -> str:
        return f"{self.run.prefix}-{self.scope}"

    @property
    def scope_labels(self) -> dict[str, str]:
        return {RUN_LABEL: self.run.prefix, SCOPE_LABEL: self.scope}

    def name(self, suffix: str) -> str:
        return f"{self.prefix}-{suffix}"

    # -- making things

    async def create_namespace(self, suffix: str, **labels: str) -> str:
        name = self.name(suffix)
        self.namespaces.append(name)
        await self.cluster.create_namespace(name, **self.scope_labels, **labels)
        return name

    def baseline_body(
        self, suffix: str = "prod", selector: dict[str, Any] | None = None, **spec: Any
    ) -> dict[str, Any]:
        """A baseline that selects only this test's namespaces (env=prod unless told)."""
        chosen = copy.deepcopy(
            selector if selector is not None else {"matchLabels": {"env": "prod"}}
        )
        chosen.setdefault("matchLabels", {}).update(self.scope_labels)
        return baseline(self.name(suffix), namespaceSelector=chosen, **spec)

    async def create_baseline(self, body: dict[str, Any]) -> str:
        name: str = body["metadata"]["name"]
        assert name.startswith(self.prefix)
        self.baselines.append(name)
        await self.cluster.create_baseline(body)
        return name

    def track(self, kind: Kind, name: str) -> None:
        """A cluster-scoped object the test created, to delete at the end."""
        self.cluster_objects.append(object_path(kind, None, name))

    # -- reading

    async def owned_refs(self, owner: str) -> set[ObjectRef]:
        """Every generated namespaced object of one baseline, across the cluster."""
        refs: set[ObjectRef] = set()
        selector = f"{MANAGED_BY_KEY}={MANAGED_BY_VALUE},{BASELINE_KEY}={owner}"
        for kind in NAMESPACED_KINDS:
            try:
                items = await list_items(self.kube, kind, labelSelector=selector)
            except ApiError as exc:
                if exc.not_found:  # a kind the server does not serve
                    continue
                raise
            refs |= {
                ObjectRef(kind, item["metadata"]["namespace"], item["metadata"]["name"])
                for item in items
            }
        return refs

    async def snapshot(self) -> WriteSnapshot:
        # The counts first, then the version: a write of others in between is counted but
        # not replayed, so it can fail the test, never excuse a write of the operator's.
        counts = await write_requests(self.kube)
        listed = await self.kube.request(
            "GET", collection_path(NAMESPACE, None), query=[("limit", "1")]
        )
        return WriteSnapshot(counts, str(listed.body["metadata"]["resourceVersion"]))

    async def writes_since(
        self, before: WriteSnapshot, resources: frozenset[tuple[str, str]]
    ) -> dict[str, Any]:
        """Write requests on `resources` since `before` that this run's operator could have
        made: {} when there were none.

        The metrics do not say which object a request was for, and the operator also acts
        on objects of others (it reconciles every baseline in the cluster). So where a
        resource's count grew, the changes to objects outside this run since `before` are
        replayed from a watch and taken off; what remains is reported with those changes.
        """
        after = await write_requests(self.kube)
        grown: dict[tuple[str, str], dict[Series, int]] = {}
        for series, count in after.items():
            if (series[0], series[1]) in resources and count > before.counts.get(series, 0):
                grown.setdefault((series[0], series[1]), {})[series] = count - before.counts.get(
                    series, 0
                )
        if not grown:
            return {}
        foreign = await asyncio.gather(
            *(
                foreign_changes(self.kube, group, resource, before.version, self.run.prefix)
                for group, resource in grown
            )
        )
        unexplained: dict[str, Any] = {}
        for (group, resource), changes in zip(grown, foreign, strict=True):
            total = sum(grown[(group, resource)].values())
            if total > len(changes):
                unexplained[f"{resource}.{group}" if group else resource] = {
                    "requests": {
                        "/".join(key[2:]).strip("/"): n
                        for key, n in grown[(group, resource)].items()
                    },
                    "changes to objects of others": changes,
                }
        return unexplained

    # -- the operator

    @contextlib.asynccontextmanager
    async def operator(
        self, resync_seconds: float = 3600, cleanup: bool = True
    ) -> AsyncIterator[Operator]:
        """The real operator, in-process, as its ServiceAccount. With `cleanup`, the test's
        baselines are deleted (and their finalizer awaited) before it stops."""
        async with running_operator(
            self.operator_side, resync_seconds=resync_seconds, namespace=self.run.operator_namespace
        ) as running:
            try:
                yield running
            finally:
                if cleanup:
                    await self.delete_baselines()

    async def acknowledge_removal(self, name: str) -> None:
        """Let the current generation remove the baseline's posture, however widely (the
        brake on mass removal)."""
        stored = await self.cluster.get(SECURITY_BASELINE, None, name)
        if stored is None:
            return
        generation = str(stored["metadata"]["generation"])
        await self.cluster.merge_patch(
            SECURITY_BASELINE,
            None,
            name,
            {"metadata": {"annotations": {ACKNOWLEDGE_REMOVAL: generation}}},
        )

    async def delete_baselines(self, limit: float = WAIT, acknowledge: bool = True) -> None:
        for name in self.baselines:
            if acknowledge:  # the test means to remove them everywhere
                await self.acknowledge_removal(name)
            await self.cluster.delete(SECURITY_BASELINE, None, name)

        async def all_gone() -> bool:
            for name in self.baselines:
                if await self.cluster.get(SECURITY_BASELINE, None, name) is not None:
                    return False
            return True

        await eventually(all_gone, limit=limit, what="the finalizers of the test's baselines")

    async def clean_up(self) -> None:
        remaining = [
            name
            for name in self.baselines
            if await self.cluster.get(SECURITY_BASELINE, None, name) is not None
        ]
        if remaining:
            try:
                async with self.operator():
                    pass
            except AssertionError:
                # The operator could not finish: do not leave finalizers behind.
                await self._force_remove(remaining)
                raise
        for name in self.namespaces:
            await self.cluster.delete(NAMESPACE, None, name)
        for path in reversed(self.cluster_objects):
            await attempt(self.kube, "DELETE", path)

    async def _force_remove(self, names: list[str]) -> None:
        for name in names:
            await attempt(
                self.kube,
                "PATCH",
                object_path(SECURITY_BASELINE, None, name),
                {"metadata": {"finalizers": None}},
                content_type="application/merge-patch+json",
            )
            await self.cluster.delete(SECURITY_BASELINE, None, name)
            for kind in CLUSTER_KINDS:
                for item in await list_items(
                    self.kube, kind, labelSelector=f"{BASELINE_KEY}={name}"
                ):
                    await attempt(
                        self.kube, "DELETE", object_path(kind, None, item["metadata"]["name"])
                    )


def _cluster(endpoint: Endpoint) -> Cluster:
    # username None: the operator asks the API server who it is (a SelfSubjectReview).
    return Cluster(
        new_kube(endpoint),
        lambda: connection_info(endpoint),
        endpoint,
        username=None,
    )


@pytest_asyncio.fixture()
async def e2e(run: Run) -> AsyncIterator[E2E]:
    world = E2E(run, run.next_scope(), _cluster(run.admin), _cluster(run.operator))
    try:
        yield world
    finally:
        try:
            await world.clean_up()
        finally:
            await close(world.cluster.kube)
            await close(world.operator_side.kube)


@pytest.fixture
def audit(run: Run) -> AuditLog:
    """The API server's audit log from this moment on (only a control plane the session
    started has one)."""
    if not AUDIT_LOG:
        pytest.skip(reason=NO_AUDIT_LOG)
    return AuditLog(AUDIT_LOG[0]).mark()


@pytest_asyncio.fixture()
async def admin(run: Run) -> AsyncIterator[KubeApi]:
    """The tests' own requests (cluster-admin), for tests that run no operator."""
    kube = new_kube(run.admin)
    try:
        yield kube
    finally:
        await close(kube)

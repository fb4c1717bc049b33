"""An in-process Kubernetes API server for the demo and the integration tests.

It is kmock's `KubernetesEmulator` (objects kept in memory, served over plain HTTP
on 127.0.0.1) with the few real-server behaviours the operator depends on added,
each one small and marked with the behaviour it stands in for:

- the Namespace resource's own paths parse (kmock reads `/api/v1/namespaces...`
  as objects inside a namespace and answers 500);
- discovery of every resource the operator and kopf use (`declare_resources`);
- server-filled metadata: uid, creationTimestamp, a global resourceVersion,
  generation; a write that changes nothing stores nothing and emits no event;
- server-side apply (create when missing; per field manager, a field it applied
  before and omits now is removed), RFC 7386 merge patch, JSON patch (kopf's
  finalizers), PUT with resourceVersion conflicts, the status subresource;
- DELETE preconditions, `dryRun=All`, namespace deletion that removes its content,
  equality-based label selectors, `resourceVersion` and `timeoutSeconds` on watches.

managedFields are emulated for server-side apply only (one Apply entry per manager,
listing the fields of its last applied body). Not emulated (do not test the operator
against these): apply conflicts between managers (`force` is accepted and changes
nothing), schema validation and pruning, admission (ValidatingAdmissionPolicies are
stored, not enforced), ownerReference garbage collection, Pod Security warnings on dry
runs, set-based selectors (`in`, `notin`: answered 400), DELETED events on a watch for
an object that stops matching its label selector, bookmarks, the `finalize` subresource,
PUT creating a missing object. A watch from a resourceVersion sends each object changed
since then as ADDED (a real server sends MODIFIED) and nothing for objects deleted
before the watch began.

How to run it
-------------
Without pytest (the demo)::

    emulator = ClusterEmulator()
    declare_resources(emulator)
    async with emulator, kmock.Server(emulator) as server:   # the handler must be entered too
        url = str(server.url).rstrip("/")                     # http://127.0.0.1:<free port>

`running_emulator()` does exactly that, and creates the namespaces every cluster
has (kopf posts the Events of cluster-scoped objects to `default`; creating in a
missing namespace is a 404, as on a real server). kmock's pytest plugin also offers a
`kmock` fixture (registered automatically): the same construction with a plain
`kmock.KubernetesEmulator`, so none of the fixes here, unless the `kmock_cls` ini
option names this class; its URL is `kmock.url`, and the fixture's name shadows the
module's inside the test. Tests here use `running_emulator()` instead.

The official client: `kubernetes.client.ApiClient(kube_configuration(url))`. It is
synchronous; call it through `asyncio.to_thread`, never directly on the event loop:
the emulator runs on that same loop, so a blocking call there deadlocks.

The official client's connection pool (urllib3's default Retry) silently repeats a
GET, PUT or DELETE answered 429/503 with a Retry-After header, up to 3 times; the
caller sees such a fault only when it outlasts those retries (or without the header).

kopf: give it the URL from a login handler,
`@kopf.on.login() def login(**_): return kopf.ConnectionInfo(server=url)`, and run
`kopf.operator(registry=..., clusterwide=True, standalone=True, stop_flag=event)` in a
task; stop it with `event.set()` and await the task. On stopping, kopf waits 5 s for
every task created after it started and then cancels them, the emulator's handlers of
still-open connections included: close the official client's pools first
(`api_client.close()`), then kopf stops in milliseconds. Tasks of the demo's own that
were started after kopf are cancelled too.

Event order: kopf lists each resource, then watches from the list's resourceVersion;
objects that existed before it started reach `@kopf.on.event` handlers with
`event["type"] is None`, later ones as ADDED/MODIFIED/DELETED. (A bare kmock replays
every object as ADDED on each watch, so kopf would see existing objects twice.)
Deleting a namespace emits MODIFIED (Terminating) for it, DELETED for each object in
it, then DELETED for it.

Injected faults: a reaction added with kmock's DSL is consulted before the
emulator's own handlers, and the emulator changes state only in its handlers, so
an injected 429 leaves the state untouched, as a real refusal does. See
`fail_next()`; in the DSL it reads
`emulator["patch", kmock.resource("v1/namespaces")][n:n + 2] << 429 << headers << body`
where `n` counts the matching requests made so far (a slice indexes all matching
requests since the start, not those after the reaction was added).
"""

from __future__ import annotations

import asyncio
import copy
import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp.web
import attrs
import jsonpatch
import kmock
import yaml
from kmock._internal import parsing
from kmock._internal.rendering import ReactionMismatchError, Response
from kubernetes import client as k8s

Body = dict[str, Any]
ObjectKey = tuple[kmock.resource, str | None, str]

APPLY = "application/apply-patch+yaml"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
# The namespaces a fresh cluster has.
CLUSTER_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
NAMESPACES = kmock.resource("", "v1", "namespaces")
EVENTS = kmock.resource("", "v1", "events")
_NAME_LABEL = "kubernetes.io/metadata.name"


@dataclass(frozen=True)
class ServedResource:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    status: bool = False  # has a status subresource
    short_names: tuple[str, ...] = ()

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def resource(self) -> kmock.resource:
        return kmock.resource(self.group, self.version, self.plural)


SERVED_RESOURCES: tuple[ServedResource, ...] = (
    ServedResource("", "v1", "namespaces", "Namespace", namespaced=False, status=True),
    ServedResource("", "v1", "serviceaccounts", "ServiceAccount", namespaced=True),
    ServedResource("", "v1", "limitranges", "LimitRange", namespaced=True),
    ServedResource("", "v1", "resourcequotas", "ResourceQuota", namespaced=True, status=True),
    ServedResource("", "v1", "pods", "Pod", namespaced=True, status=True),
    ServedResource("", "v1", "events", "Event", namespaced=True),
    ServedResource("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", namespaced=True),
    ServedResource("rbac.authorization.k8s.io", "v1", "roles", "Role", namespaced=True),
    ServedResource(
        "rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", namespaced=True
    ),
    ServedResource(
        "external-secrets.io",
        "v1",
        "externalsecrets",
        "ExternalSecret",
        namespaced=True,
        status=True,
    ),
    ServedResource(
        "admissionregistration.k8s.io",
        "v1",
        "validatingadmissionpolicies",
        "ValidatingAdmissionPolicy",
        namespaced=False,
        status=True,
    ),
    ServedResource(
        "admissionregistration.k8s.io",
        "v1",
        "validatingadmissionpolicybindings",
        "ValidatingAdmissionPolicyBinding",
        namespaced=False,
    ),
    ServedResource("coordination.k8s.io", "v1", "leases", "Lease", namespaced=True),
    ServedResource("wgpolicyk8s.io", "v1alpha2", "policyreports", "PolicyReport", namespaced=True),
    ServedResource("events.k8s.io", "v1", "events", "Event", namespaced=True),
    ServedResource(
        "apiextensions.k8s.io",
        "v1",
        "customresourcedefinitions",
        "CustomResourceDefinition",
        namespaced=False,
        status=True,
    ),
    ServedResource(
        "security.baseline.dev",
        "v1alpha1",
        "securitybaselines",
        "SecurityBaseline",
        namespaced=False,
        status=True,
        short_names=("sbl",),
    ),
    ServedResource(
        "security.baseline.dev",
        "v1alpha1",
        "baselineexceptions",
        "BaselineException",
        namespaced=False,
        status=True,
        short_names=("sbx",),
    ),
)


def declare_resources(emulator: kmock.KubernetesEmulator) -> None:
    """Serve discovery for every resource the operator and kopf use (with `watch`)."""
    for served in SERVED_RESOURCES:
        emulator.resources[served.resource] = kmock.ResourceInfo(
            kind=served.kind,
            singular=served.kind.lower(),
            namespaced=served.namespaced,
            verbs=set(VERBS),
            shortnames=set(served.short_names),
            subresources={"status"} if served.status else set(),
        )


# ---------------------------------------------------------------------------- path parsing
# Stands in for: the Namespace resource's own URLs. kmock reads every
# `/api/v1/namespaces/X/...` as "inside namespace X", so the collection path fails to
# parse (500) and `/api/v1/namespaces/X[/status]` loses its name. kmock parses paths in
# one module-level function and offers no hook, so the function is wrapped, once, for
# the process; every other path goes to kmock's own parser unchanged.
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})
_kmock_parse_path: Callable[[str], parsing.ParsedPath] = parsing.parse_path


def _parse_path(path: str) -> parsing.ParsedPath:
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"]:
        name = parts[3] if len(parts) >= 4 else None
        subresource = parts[4] if len(parts) == 5 else None
        if len(parts) <= 4 or subresource in _NAMESPACE_SUBRESOURCES:
            return parsing.ParsedPath("", "v1", "namespaces", None, name, subresource)
    return _kmock_parse_path(path)


if getattr(parsing.parse_path, "__module__", None) != __name__:
    parsing.parse_path = _parse_path


# ---------------------------------------------------------------------------- pure helpers


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: maps merge recursively, null deletes, the rest replaces."""
    if not isinstance(patch, Mapping):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, Mapping) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def release_unapplied(
    current: Mapping[str, Any],
    previous: Mapping[str, Any],
    applied: Mapping[str, Any],
    others: Iterable[Mapping[str, Any]] = (),
) -> Body:
    """`current` without the fields `previous` applied and `applied` omits.

    Stands in for server-side apply's field ownership: recursive through maps, lists
    are atomic, and a field another manager's last apply still sets is kept.
    """
    others = list(others)
    result = dict(current)
    for key, before in previous.items():
        if key not in result:
            continue
        still_set = [other[key] for other in others if key in other]
        now = applied.get(key)
        if isinstance(before, Mapping) and isinstance(result[key], Mapping):
            if key in applied and not isinstance(now, Mapping):
                continue  # the new value replaces it whole
            # A map is released key by key: keys other writers set in it stay.
            result[key] = release_unapplied(
                result[key],
                before,
                now if isinstance(now, Mapping) else {},
                [value for value in still_set if isinstance(value, Mapping)],
            )
            if not result[key] and key not in applied and not still_set:
                del result[key]  # nothing of anyone's is left in it
        elif key not in applied and not still_set:
            del result[key]
    return result


def fields_v1(body: Mapping[str, Any], top: bool = True) -> dict[str, Any]:
    """The fieldsV1 set of an applied body: `f:<key>` per field, maps recursively, lists whole."""
    fields: dict[str, Any] = {}
    for key, value in body.items():
        if top and key in ("apiVersion", "kind"):
            continue
        child = value
        if top and key == "metadata" and isinstance(value, Mapping):
            child = {k: v for k, v in value.items() if k not in ("name", "namespace")}
            if not child:
                continue
        fields[f"f:{key}"] = fields_v1(child, top=False) if isinstance(child, Mapping) else {}
    return fields


def managed_fields(applied: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Stands in for managedFields: one Apply entry per manager, from its last applied body."""
    return [
        {
            "manager": manager,
            "operation": "Apply",
            "apiVersion": str(body.get("apiVersion", "")),
            "fieldsType": "FieldsV1",
            "fieldsV1": fields_v1(body),
        }
        for manager, body in sorted(applied.items())
    ]


def with_update_entry(body: Body, current: Mapping[str, Any] | None, manager: str | None) -> Body:
    """Stands in for managedFields on a create, replace or patch: the writer's Update entry
    next to what others already own (a real server names a client with no fieldManager
    after its user agent)."""
    name = manager or "unnamed-client"
    kept = [
        entry
        for entry in ((current or {}).get("metadata") or {}).get("managedFields") or []
        if not (entry.get("manager") == name and entry.get("operation") == "Update")
    ]
    entry = {
        "manager": name,
        "operation": "Update",
        "apiVersion": str(body.get("apiVersion", "")),
        "fieldsType": "FieldsV1",
        "fieldsV1": fields_v1(body),
    }
    body.setdefault("metadata", {})["managedFields"] = [*kept, entry]
    return body


@dataclass(frozen=True)
class Requirement:
    """One term of an equality-based selector: `k=v`, `k==v`, `k!=v`, `k`, `!k`."""

    key: str
    operator: str  # "=", "!=", "exists", "!exists"
    value: str = ""

    def matches(self, values: Mapping[str, str]) -> bool:
        if self.operator == "exists":
            return self.key in values
        if self.operator == "!exists":
            return self.key not in values
        if self.operator == "=":
            return values.get(self.key) == self.value
        return values.get(self.key) != self.value


def parse_selector(text: str) -> tuple[Requirement, ...]:
    """Parse an equality-based selector; ValueError for set-based or malformed ones."""
    requirements = []
    for raw in text.split(","):
        term = raw.strip()
        if not term:
            continue
        if "(" in term or " in " in f" {term} " or " notin " in f" {term} ":
            raise ValueError(f"set-based selectors are not emulated: {term!r}")
        if "!=" in term:
            key, _, value = term.partition("!=")
            requirements.append(Requirement(key.strip(), "!=", value.strip()))
        elif "=" in term:
            key, _, value = term.partition("==") if "==" in term else term.partition("=")
            requirements.append(Requirement(key.strip(), "=", value.strip()))
        elif term.startswith("!"):
            requirements.append(Requirement(term[1:].strip(), "!exists"))
        else:
            requirements.append(Requirement(term, "exists"))
        if not requirements[-1].key or " " in requirements[-1].key:
            raise ValueError(f"malformed selector term: {term!r}")
    return tuple(requirements)


@dataclass(frozen=True)
class Selection:
    """What a list or watch asks for: `labelSelector` and `fieldSelector` (name, namespace)."""

    labels: tuple[Requirement, ...] = ()
    fields: tuple[Requirement, ...] = ()

    @classmethod
    def of(cls, params: Mapping[str, str]) -> Selection:
        fields = parse_selector(params.get("fieldSelector", ""))
        for requirement in fields:
            if requirement.key not in ("metadata.name", "metadata.namespace"):
                raise ValueError(f"field selector not emulated: {requirement.key!r}")
        return cls(parse_selector(params.get("labelSelector", "")), fields)

    def matches(self, body: Mapping[str, Any]) -> bool:
        metadata = body.get("metadata") or {}
        labels = metadata.get("labels") or {}
        fields = {
            f"metadata.{name}": metadata[name] for name in ("name", "namespace") if name in metadata
        }
        return all(r.matches(labels) for r in self.labels) and all(
            r.matches(fields) for r in self.fields
        )


# ---------------------------------------------------------------------------- the emulator


def _error(status: int, reason: str, message: str, **details: Any) -> kmock.KubernetesError:
    """A Status error as a real server sends it (details keep kmock from adding a traceback)."""
    return kmock.KubernetesError(
        status=status, reason=reason, message=message, details=details or {"causes": []}
    )


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _header(request: kmock.Request, name: str) -> str:
    for key, value in request.headers.items():
        if key.lower() == name.lower():
            return str(value)
    return ""


def _dry_run(request: kmock.Request) -> bool:
    return request.params.get("dryRun") == "All"


def _version_number(text: str | None) -> int:
    return int(text) if text and text.isdigit() else 0


def _revision_of(body: Mapping[str, Any]) -> int:
    return _version_number((body.get("metadata") or {}).get("resourceVersion"))


# Metadata the server owns: a client's copy in a write body is ignored.
_SERVER_METADATA = (
    "uid",
    "creationTimestamp",
    "resourceVersion",
    "generation",
    "deletionTimestamp",
)


@attrs.define(kw_only=True)
class ClusterEmulator(kmock.KubernetesEmulator):
    """kmock's emulator with the real-server behaviours the operator relies on."""

    _revision: int = attrs.field(default=0, init=False)
    # Last applied body per (object, field manager): stands in for managedFields.
    _applied: dict[tuple[ObjectKey, str], Body] = attrs.field(factory=dict, init=False)

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        # kmock guesses no action for PUT; a real server replaces the object.
        self.fallback[kmock.method.PUT] << self._serve_replace

    async def _handle(self, request: kmock.Request) -> aiohttp.web.StreamResponse:
        # kmock's dispatch (RawHandler._handle: reactions by priority, the first that takes
        # the request answers), changed in two ways:
        # - KubernetesEmulator._handle is skipped: it changes the stored objects before any
        #   reaction runs, even when a test's reaction answers instead. Here state changes
        #   only in the fallback handlers, so an injected 429/500 changes nothing, as a real
        #   server's refusal does.
        # - whether a reaction sees the request is decided from its criteria for plain filter
        #   chains; kmock re-filters the whole request log for it, so every request cost
        #   O(requests so far): 150 ms a request after 3000 requests.
        reactions = list(self._payloads)
        depth = max((len(reaction.priorities) for reaction in reactions), default=0)
        reactions.sort(key=lambda reaction: _precedence(reaction.priorities, depth))
        for reaction in reactions:
            if reaction._disabled.is_set() or not self._sees(reaction._source, request):
                continue
            try:
                response: aiohttp.web.StreamResponse = await reaction(request)
            except ReactionMismatchError:  # declined or depleted: kmock retires it
                reaction._disabled.set()
            except NotImplementedError:  # matched, but had nothing to answer with
                pass
            else:
                return response
        raise NotImplementedError("no reaction matches the request")

    def _sees(self, view: kmock.View, request: kmock.Request) -> bool:
        """`request in view`, without re-filtering the request log where it is not needed."""
        if view is self:
            return True  # the request is already in this handler's log
        if type(view) is kmock.Filter:
            return bool(view.criteria(request)) and self._sees(view._source, request)
        if type(view) is kmock.Priority:
            return self._sees(view._source, request)
        return request in view  # slices, groups, streams: kmock's own check

    # ------------------------------------------------------------------ seeding

    async def create_object(self, body: Body) -> Body:
        """Create an object directly (no request recorded), e.g. to arrange a test."""
        wanted = (body["apiVersion"], body["kind"])
        served = {(s.api_version, s.kind): s for s in SERVED_RESOURCES}[wanted]
        namespace = (body.get("metadata") or {}).get("namespace") if served.namespaced else None
        async with self._lock:
            return await self._create(served.resource, namespace, body, dry_run=False)

    # ------------------------------------------------------------------ reads

    async def _serve_fetch(self, request: kmock.Request) -> Body:
        resource, namespace = self._address(request)
        async with self._lock:
            current = self._current((resource, namespace, request.name or ""))
        if current is None:
            raise self._not_found(resource, request.name)
        return current

    async def _serve_list(self, request: kmock.Request) -> Body:
        resource, namespace = self._address(request)
        selection = self._selection(request)
        async with self._lock:
            items = [
                body
                for (res, ns, _), obj in self.objects.items()
                if res == resource and (namespace is None or ns == namespace) and not obj.deleted
                for body in [copy.deepcopy(obj.raw)]
                if selection.matches(body)
            ]
            revision = str(self._revision)
        return {
            "apiVersion": _api_version(resource),
            "kind": f"{self.resources[resource].kind}List",
            "metadata": {"resourceVersion": revision},
            "items": items,
        }

    async def _serve_watch(self, request: kmock.Request) -> AsyncIterator[Any]:
        resource, namespace = self._address(request)
        selection = self._selection(request)
        since = _version_number(request.params.get("resourceVersion"))
        timeout = request.params.get("timeoutSeconds")
        deadline = asyncio.get_running_loop().time() + float(timeout) if timeout else None

        def watched(body: Mapping[str, Any]) -> bool:
            metadata = body.get("metadata") or {}
            return (
                (namespace is None or metadata.get("namespace") == namespace)
                and (request.name is None or metadata.get("name") == request.name)
                and selection.matches(body)
            )

        yield b""  # send the headers: the watch is open even if nothing happens
        bus = self._buses[resource]
        async with self._lock:  # no write can slip between the replay and the live events
            marker = await bus.mark()
            replay = [
                copy.deepcopy(obj.raw)
                for (res, _, _), obj in self.objects.items()
                if res == resource and not obj.deleted
            ]
        events = aiter(bus.stream(since=marker))
        try:
            # Stands in for `resourceVersion` on a watch: changes after it only (a missing
            # or "0" version replays everything as ADDED, as a real server does).
            for body in replay:
                if _revision_of(body) > since and watched(body):
                    yield {"type": "ADDED", "object": body}
            while True:
                # Stands in for `timeoutSeconds`: the server ends the watch.
                now = asyncio.get_running_loop().time()
                remaining = None if deadline is None else deadline - now
                try:
                    event = await asyncio.wait_for(anext(events), remaining)
                except TimeoutError:
                    return
                if watched(event["object"]):
                    yield event
        finally:
            await events.aclose()  # type: ignore[attr-defined]
            await bus.unmark(marker)

    # ------------------------------------------------------------------ writes

    async def _serve_create(self, request: kmock.Request) -> Response:
        resource, namespace = self._address(request)
        body = self._body(request)
        if isinstance(body, dict) and resource != EVENTS:
            with_update_entry(body, None, request.params.get("fieldManager"))
        async with self._lock:
            created = await self._create(resource, namespace, body, dry_run=_dry_run(request))
        return Response(status=201, payload=created)

    async def _serve_update(self, request: kmock.Request) -> Response:
        """PATCH: server-side apply, merge patch, strategic merge patch (as merge), JSON patch.

        Always a Response with its status: kmock copies a returned Response's status onto
        the reaction, so it would stick to every later answer of this handler.
        """
        resource, namespace = self._address(request)
        key: ObjectKey = (resource, namespace, request.name or "")
        content_type = _header(request, "Content-Type").split(";")[0].strip()
        body = self._body(request, yaml_allowed=content_type == APPLY)
        dry_run = _dry_run(request)
        async with self._lock:
            current = self._current(key)
            if content_type == APPLY:
                manager = request.params.get("fieldManager")
                if not manager:
                    raise _error(400, "BadRequest", "fieldManager is required for apply patch")
                if (body.get("metadata") or {}).get("name") != request.name:
                    raise _error(400, "BadRequest", "the name in the body differs from the URL")
                appliers = {m: b for (k, m), b in self._applied.items() if k == key}
                appliers[manager] = body
                if current is None and request.subresource is None:
                    fresh = copy.deepcopy(body)
                    fresh.setdefault("metadata", {})["managedFields"] = managed_fields(appliers)
                    created = await self._create(resource, namespace, fresh, dry_run=dry_run)
                    if not dry_run:
                        self._applied[key, manager] = copy.deepcopy(body)
                    return Response(status=201, payload=created)
                if current is None:
                    raise self._not_found(resource, request.name)
                others = [b for m, b in appliers.items() if m != manager]
                released = release_unapplied(
                    current, self._applied.get((key, manager), {}), body, others
                )
                wanted = merge_patch(released, body)
                wanted.setdefault("metadata", {})["managedFields"] = managed_fields(appliers)
                result = await self._update(key, current, wanted, request, dry_run=dry_run)
                if not dry_run:
                    self._applied[key, manager] = copy.deepcopy(body)
                return Response(status=200, payload=result)
            if current is None:
                raise self._not_found(resource, request.name)
            if content_type in (MERGE_PATCH, STRATEGIC_MERGE_PATCH):
                wanted = merge_patch(current, body)
            elif content_type == JSON_PATCH:
                try:
                    wanted = jsonpatch.apply_patch(current, body)
                except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
                    raise _error(422, "Invalid", f"the JSON patch failed: {exc}") from exc
            else:
                raise _error(
                    415, "UnsupportedMediaType", f"unsupported patch type {content_type!r}"
                )
            self._check_version(current, wanted)
            if request.subresource is None:
                with_update_entry(wanted, current, request.params.get("fieldManager"))
            result = await self._update(key, current, wanted, request, dry_run=dry_run)
            return Response(status=200, payload=result)

    async def _serve_replace(self, request: kmock.Request) -> Body:
        """PUT: replace the object; a stale metadata.resourceVersion is a 409 Conflict."""
        resource, namespace = self._address(request)
        key: ObjectKey = (resource, namespace, request.name or "")
        body = self._body(request)
        async with self._lock:
            current = self._current(key)
            if current is None:
                raise self._not_found(resource, request.name)
            self._check_version(current, body)
            if request.subresource is None:
                with_update_entry(body, current, request.params.get("fieldManager"))
            return await self._update(key, current, body, request, dry_run=_dry_run(request))

    async def _serve_delete(self, request: kmock.Request) -> Body:
        resource, namespace = self._address(request)
        key: ObjectKey = (resource, namespace, request.name or "")
        options = request.data if isinstance(request.data, Mapping) else {}
        async with self._lock:
            current = self._current(key)
            if current is None:
                raise self._not_found(resource, request.name)
            # Stands in for DeleteOptions.preconditions.
            preconditions = options.get("preconditions") or {}
            metadata = current["metadata"]
            for field in ("uid", "resourceVersion"):
                if preconditions.get(field) and preconditions[field] != metadata.get(field):
                    raise _error(
                        409,
                        "Conflict",
                        f"Precondition failed: {field} in precondition: {preconditions[field]}, "
                        f"{field} in object meta: {metadata.get(field)}",
                        name=request.name,
                        kind=resource.plural,
                    )
            if _dry_run(request):
                metadata.setdefault("deletionTimestamp", _now())
                return current
            if resource == NAMESPACES:
                return await self._delete_namespace(key, current)
            return await self._delete(key, current)

    # ------------------------------------------------------------------ state (under the lock)

    def _current(self, key: ObjectKey) -> Body | None:
        if key not in self.objects or self.objects[key].deleted:
            return None
        body: Body = copy.deepcopy(self.objects[key].raw)
        return body

    async def _store(self, key: ObjectKey, body: Body, event: str) -> Body:
        self._revision += 1
        body["metadata"]["resourceVersion"] = str(self._revision)
        if key not in self.objects:
            self.objects[key] = copy.deepcopy(body)
        else:
            self.objects[key].history.append(copy.deepcopy(body))
        await self._buses[key[0]].put({"type": event, "object": copy.deepcopy(body)})
        return body

    async def _remove(self, key: ObjectKey, last: Body) -> Body:
        self._revision += 1
        last["metadata"]["resourceVersion"] = str(self._revision)
        self.objects[key].delete()
        self._applied = {k: v for k, v in self._applied.items() if k[0] != key}
        await self._buses[key[0]].put({"type": "DELETED", "object": copy.deepcopy(last)})
        return last

    async def _create(
        self, resource: kmock.resource, namespace: str | None, body: Body, *, dry_run: bool
    ) -> Body:
        body = copy.deepcopy(body)
        metadata = body.setdefault("metadata", {})
        for field in _SERVER_METADATA:
            metadata.pop(field, None)
        info = self.resources[resource]
        body.update(apiVersion=_api_version(resource), kind=info.kind)
        if info.namespaced:
            if metadata.get("namespace", namespace) != namespace:
                raise _error(400, "BadRequest", "the namespace in the body differs from the URL")
            await self._check_namespace_open(namespace)
            metadata["namespace"] = namespace
        else:
            metadata.pop("namespace", None)
        if not metadata.get("name") and metadata.get("generateName"):
            # Stands in for generateName (kopf names its Events this way).
            metadata["name"] = metadata["generateName"] + secrets.token_hex(3)[:5]
        name = metadata.get("name")
        if not name:
            raise _error(422, "Invalid", "metadata.name or metadata.generateName is required")
        key: ObjectKey = (resource, namespace, name)
        if self._current(key) is not None:
            raise _error(
                409,
                "AlreadyExists",
                f'{resource.plural} "{name}" already exists',
                name=name,
                kind=resource.plural,
            )
        if "status" in info.subresources:
            body.pop("status", None)  # the status subresource is written on its own path
        if resource == NAMESPACES:
            body["status"] = {"phase": "Active"}
        metadata.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
        self._server_labels(resource, body)
        if dry_run:
            metadata["resourceVersion"] = str(self._revision)
            return body
        return await self._store(key, body, "ADDED")

    async def _update(
        self, key: ObjectKey, current: Body, wanted: Body, request: kmock.Request, *, dry_run: bool
    ) -> Body:
        resource = key[0]
        wanted = copy.deepcopy(wanted)
        has_status = "status" in self.resources[resource].subresources
        if request.subresource == "status" and has_status:
            # Stands in for the status subresource: only status changes through it.
            status = wanted.get("status")
            wanted = copy.deepcopy(current)
            wanted.pop("status", None)
            if status is not None:
                wanted["status"] = status
        elif request.subresource is not None:
            raise _error(404, "NotFound", f"subresource {request.subresource!r} is not emulated")
        elif has_status:
            # ... and the main resource ignores status changes.
            wanted.pop("status", None)
            if "status" in current:
                wanted["status"] = current["status"]
        metadata = wanted.setdefault("metadata", {})
        for field in _SERVER_METADATA:
            metadata.pop(field, None)
            if field in current["metadata"]:
                metadata[field] = current["metadata"][field]
        wanted.update(apiVersion=current["apiVersion"], kind=current["kind"])
        metadata["name"] = current["metadata"]["name"]
        if "namespace" in current["metadata"]:
            metadata["namespace"] = current["metadata"]["namespace"]
        self._server_labels(resource, wanted)
        if _content(wanted) != _content(current):
            # Stands in for generation: it counts changes of everything but metadata and status.
            metadata["generation"] = int(current["metadata"].get("generation", 1)) + 1
        if wanted == current:
            return current  # a real server stores nothing and emits no event for a no-op
        if dry_run:
            return wanted
        if metadata.get("deletionTimestamp") and not metadata.get("finalizers"):
            return await self._remove(key, wanted)  # the last finalizer is gone
        return await self._store(key, wanted, "MODIFIED")

    async def _delete(self, key: ObjectKey, current: Body) -> Body:
        metadata = current["metadata"]
        if metadata.get("finalizers"):
            if metadata.get("deletionTimestamp"):
                return current
            metadata["deletionTimestamp"] = _now()
            return await self._store(key, current, "MODIFIED")
        return await self._remove(key, current)

    async def _delete_namespace(self, key: ObjectKey, current: Body) -> Body:
        # Stands in for the namespace controller: the namespace turns Terminating, all
        # that is in it is deleted, then the namespace goes unless finalizers hold it.
        name = key[2]
        if not current["metadata"].get("deletionTimestamp"):
            current["metadata"]["deletionTimestamp"] = _now()
            current["status"] = {"phase": "Terminating"}
            current = await self._store(key, current, "MODIFIED")
        for inner in [k for k in self.objects if k[1] == name]:
            body = self._current(inner)
            if body is not None:
                await self._delete(inner, body)
        if current["metadata"].get("finalizers"):
            return current
        return await self._remove(key, current)

    async def _check_namespace_open(self, namespace: str | None) -> None:
        # Stands in for the NamespaceLifecycle admission plugin.
        found = self._current((NAMESPACES, None, namespace or ""))
        if found is None:
            raise _error(
                404,
                "NotFound",
                f'namespaces "{namespace}" not found',
                name=namespace,
                kind="namespaces",
            )
        if found["metadata"].get("deletionTimestamp"):
            raise _error(
                403,
                "Forbidden",
                f"unable to create new content in namespace {namespace} "
                "because it is being terminated",
                name=namespace,
                kind="namespaces",
            )

    @staticmethod
    def _server_labels(resource: kmock.resource, body: Body) -> None:
        # Stands in for the immutable `kubernetes.io/metadata.name` label on namespaces.
        if resource == NAMESPACES:
            metadata = body["metadata"]
            metadata["labels"] = {**(metadata.get("labels") or {}), _NAME_LABEL: metadata["name"]}

    @staticmethod
    def _check_version(current: Body, wanted: Mapping[str, Any]) -> None:
        # Stands in for optimistic concurrency: a resourceVersion in the body must be current.
        given = (wanted.get("metadata") or {}).get("resourceVersion")
        if given and given != current["metadata"]["resourceVersion"]:
            raise _error(
                409,
                "Conflict",
                "Operation cannot be fulfilled: the object has been modified; "
                "please apply your changes to the latest version and try again",
                name=current["metadata"]["name"],
            )

    # ------------------------------------------------------------------ request decoding

    def _address(self, request: kmock.Request) -> tuple[kmock.resource, str | None]:
        resource = request.resource
        if resource is None or resource not in self.resources:
            raise _error(404, "NotFound", "the server could not find the requested resource")
        namespaced = bool(self.resources[resource].namespaced)
        return resource, request.namespace if namespaced else None

    @staticmethod
    def _selection(request: kmock.Request) -> Selection:
        try:
            return Selection.of(request.params)
        except ValueError as exc:
            raise _error(400, "BadRequest", str(exc)) from exc

    @staticmethod
    def _body(request: kmock.Request, *, yaml_allowed: bool = False) -> Any:
        data = request.data
        if data is None and yaml_allowed and request.text:
            data = yaml.safe_load(request.text)  # an apply body may be YAML proper
        if not isinstance(data, Mapping | list):
            raise _error(400, "BadRequest", "the request body is not a JSON object")
        return copy.deepcopy(data)

    @staticmethod
    def _not_found(resource: kmock.resource, name: str | None) -> kmock.KubernetesError:
        return _error(
            404,
            "NotFound",
            f'{resource.plural} "{name}" not found',
            name=name,
            kind=resource.plural,
        )


def _precedence(priorities: tuple[float, ...], depth: int) -> tuple[float, ...]:
    # Higher priorities first; a shorter tuple is padded with zeros (kmock's ordering).
    return tuple(-priority for priority in priorities) + (0.0,) * (depth - len(priorities))


def _content(body: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in body.items() if key not in _NOT_CONTENT}


_NOT_CONTENT = frozenset({"apiVersion", "kind", "metadata", "status"})


def _api_version(resource: kmock.resource) -> str:
    return f"{resource.group}/{resource.version}" if resource.group else str(resource.version)


# ---------------------------------------------------------------------------- running


@asynccontextmanager
async def running_emulator(
    namespaces: Iterable[str] = CLUSTER_NAMESPACES,
) -> AsyncIterator[tuple[ClusterEmulator, str]]:
    """A served emulator with every resource declared and the given namespaces; its URL."""
    emulator = ClusterEmulator()
    declare_resources(emulator)
    async with emulator, kmock.Server(emulator) as server:
        for name in namespaces:
            await emulator.create_object(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
            )
        yield emulator, str(server.url).rstrip("/")


def kube_configuration(url: str) -> k8s.Configuration:
    """A configuration of the official client for the emulator (plain HTTP, no credentials;
    for tests that drive the emulator with the official client, which the operator does not
    use)."""
    configuration = k8s.Configuration()
    configuration.host = url.rstrip("/")
    configuration.verify_ssl = False
    return configuration


# ---------------------------------------------------------------------------- for tests


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    dry_run: bool


def write_requests(
    emulator: kmock.KubernetesEmulator, *, include_dry_run: bool = False
) -> list[RecordedRequest]:
    """Every POST/PUT/PATCH/DELETE the emulator received, in order (dry runs only if asked)."""
    recorded = []
    for request in emulator:
        method = str(request.method.value).upper()
        if method not in WRITE_METHODS:
            continue
        query = tuple((str(k), str(v)) for k, v in request.url.query.items())
        dry_run = ("dryRun", "All") in query
        if dry_run and not include_dry_run:
            continue
        recorded.append(RecordedRequest(method, request.url.path, query, dry_run))
    return recorded


_REASONS = {
    409: "Conflict",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
}


def fail_next(
    emulator: kmock.KubernetesEmulator,
    method: str,
    resource: str,
    *,
    times: int = 1,
    status: int = 429,
    retry_after: int | None = 1,
) -> None:
    """Answer the next `times` requests of `method` on `resource` ("v1/namespaces") with an error.

    The failed requests change nothing. `retry_after` sets the Retry-After header.
    """
    view = emulator[kmock.method(method.upper()), kmock.resource(resource)]
    seen = len(view)  # a slice counts all matching requests since the start
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
    reason = _REASONS.get(status, "InternalError")
    body = {
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "code": status,
        "reason": reason,
        "message": f"injected {status} {reason}",
    }
    reaction = view[seen : seen + times] << status
    if headers:
        reaction = reaction << headers
    reaction << body

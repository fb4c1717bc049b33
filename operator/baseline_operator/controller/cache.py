"""What the operator knows about the cluster: kopf indexes, and its own recent writes.

kopf indexes are filled from watches and persist nothing. kopf holds back every
non-index handler until all indexes have been listed once, so no namespace is
reconciled before every baseline, namespace and managed object is known: a
partial view could otherwise lower a Pod Security level or miss an object.

A watch lags behind the writes the operator itself makes. `RecentWrites` keeps
what the API server answered to each write until the watch has caught up, so a
reconcile that runs in between does not write the same object twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from baseline_operator.api.resource import (
    BaselineMeta,
    InvalidBaseline,
    SecurityBaseline,
    parse_spec,
)
from baseline_operator.api.spec import CleanupPolicy, Mode
from baseline_operator.policy.diff import (
    NamespaceState,
    ObservedObject,
    observe,
    observe_namespace,
)
from baseline_operator.policy.names import APPLIED_PREFIX, FIELD_MANAGER, is_managed
from baseline_operator.policy.objects import (
    CLUSTER_KINDS,
    NAMESPACE,
    NAMESPACED_KINDS,
    Kind,
    ObjectRef,
)
from baseline_operator.policy.workloads import pod_essence

BASELINE_INDEX = "baseline_index"
NAMESPACE_INDEX = "namespace_index"
POD_INDEX = "pod_index"


def object_index_name(kind: Kind) -> str:
    return f"{kind.plural}_index"


def plain(body: Mapping[str, Any]) -> dict[str, Any]:
    """A deep, plain-dict copy of a (kopf) body."""
    copied: dict[str, Any] = json.loads(json.dumps(body, default=_unwrap))
    return copied


def _unwrap(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


@dataclass(frozen=True)
class BaselineEntry:
    """A SecurityBaseline as last seen, parsed (or the reasons it cannot be)."""

    name: str
    uid: str | None
    generation: int
    deleting: bool
    baseline: SecurityBaseline | None
    errors: tuple[str, ...]
    # Read even from an invalid spec, so that deleting an invalid baseline still cleans up
    # the way it asked.
    cleanup_policy: CleanupPolicy
    status: Mapping[str, Any] = field(compare=False, hash=False)

    @property
    def valid(self) -> bool:
        return self.baseline is not None

    @property
    def audit_mode(self) -> bool:
        return self.baseline is not None and self.baseline.spec.mode is Mode.AUDIT

    @property
    def enforcing(self) -> bool:
        """Valid, in Enforce mode and not being deleted: the operator acts on its behalf."""
        return self.baseline is not None and not self.deleting and not self.audit_mode

    @property
    def trigger(self) -> tuple[Any, ...]:
        """What, when it changes, means every namespace must be looked at again."""
        return (self.uid, self.generation, self.deleting)


def baseline_entry(body: Mapping[str, Any]) -> BaselineEntry:
    raw = plain(body)
    metadata = raw.get("metadata") or {}
    name = metadata.get("name", "")
    errors: tuple[str, ...] = ()
    baseline: SecurityBaseline | None = None
    try:
        spec = parse_spec(raw.get("spec"))
        baseline = SecurityBaseline(
            api_version="security.baseline.dev/v1alpha1",
            kind="SecurityBaseline",
            metadata=BaselineMeta(
                name=name, uid=metadata.get("uid"), generation=metadata.get("generation")
            ),
            spec=spec,
        )
    except InvalidBaseline as exc:
        errors = tuple(str(error) for error in exc.errors)
    except ValueError as exc:  # the name itself (the CRD normally refuses it)
        errors = (f"metadata.name: {exc}",)
    return BaselineEntry(
        name=name,
        uid=metadata.get("uid"),
        generation=int(metadata.get("generation") or 0),
        deleting=bool(metadata.get("deletionTimestamp")),
        baseline=baseline,
        errors=errors,
        cleanup_policy=(
            baseline.spec.cleanup_policy if baseline is not None else _lenient_cleanup(raw)
        ),
        status=raw.get("status") or {},
    )


def _lenient_cleanup(raw: Mapping[str, Any]) -> CleanupPolicy:
    spec = raw.get("spec")
    value = spec.get("cleanupPolicy") if isinstance(spec, Mapping) else None
    return CleanupPolicy.ORPHAN if value == CleanupPolicy.ORPHAN.value else CleanupPolicy.DELETE


def resource_version(body: Mapping[str, Any]) -> str | None:
    value = (body.get("metadata") or {}).get("resourceVersion")
    return value if isinstance(value, str) else None


class IndexLike(Protocol):
    """The read-only part of kopf.Index the view needs."""

    def __getitem__(self, key: Any) -> Iterable[Any]: ...
    def __contains__(self, key: object) -> bool: ...
    def __iter__(self) -> Iterator[Any]: ...


@dataclass
class _Pending:
    """A write whose answer the watch has not shown yet."""

    stale_version: str | None  # the resourceVersion the watch showed before the write
    body: dict[str, Any] | None  # the server's answer; None for a delete


@dataclass
class RecentWrites:
    """The operator's own writes, until the watches have caught up with them."""

    _pending: dict[ObjectRef, _Pending] = field(default_factory=dict)

    def record(self, ref: ObjectRef, before: str | None, answer: dict[str, Any] | None) -> None:
        self._pending[ref] = _Pending(before, answer)

    def pending_refs(self) -> list[ObjectRef]:
        return list(self._pending)

    def forget_namespace(self, namespace: str) -> None:
        """Drop what is kept for a namespace that is gone: nothing will read it again."""
        gone = [
            ref
            for ref in self._pending
            if ref.namespace == namespace or (ref.kind == NAMESPACE and ref.name == namespace)
        ]
        for ref in gone:
            del self._pending[ref]

    def resolve(
        self, ref: ObjectRef, watched_version: str | None, watched: Any
    ) -> tuple[bool, dict[str, Any] | None]:
        """(True, body-or-None) when the recent write still beats the watch; (False, None) else."""
        pending = self._pending.get(ref)
        if pending is None:
            return False, None
        if watched_version == pending.stale_version:
            return True, pending.body
        del self._pending[ref]  # the watch has moved on: it is the truth again
        return False, None


@dataclass
class ClusterView:
    """Read access to the indexes, with the operator's own recent writes laid over them."""

    indexes: Mapping[str, IndexLike]
    writes: RecentWrites = field(default_factory=RecentWrites)

    # -- baselines

    def baselines(self) -> dict[str, BaselineEntry]:
        index = self.indexes[BASELINE_INDEX]
        entries: dict[str, BaselineEntry] = {}
        for name in index:
            for entry in index[name]:
                entries[name] = entry
        return entries

    # -- namespaces

    def namespace_names(self) -> list[str]:
        return sorted(self.indexes[NAMESPACE_INDEX])

    def namespace(self, name: str) -> NamespaceState | None:
        index = self.indexes[NAMESPACE_INDEX]
        watched: tuple[NamespaceState, str | None] | None = None
        if name in index:
            for state, version in index[name]:
                watched = (state, version)
        ref = ObjectRef(NAMESPACE, None, name)
        overridden, body = self.writes.resolve(ref, watched[1] if watched else None, watched)
        if overridden and body is not None:
            return observe_namespace(body, FIELD_MANAGER)
        return watched[0] if watched else None

    # -- objects

    def objects_in(self, namespace: str) -> dict[ObjectRef, ObservedObject]:
        """Every watched object of the generated kinds in a namespace (managed or not)."""
        return self._objects(NAMESPACED_KINDS, namespace)

    def cluster_objects(self) -> dict[ObjectRef, ObservedObject]:
        return self._objects(CLUSTER_KINDS, "")

    def objects_of(self, kind: Kind, namespace: str) -> dict[ObjectRef, ObservedObject]:
        return self._objects((kind,), namespace)

    def pods_in(self, namespace: str) -> list[dict[str, Any]]:
        """The essence of every pod in a namespace (see policy.workloads.pod_essence)."""
        index = self.indexes.get(POD_INDEX)
        if index is None or namespace not in index:
            return []
        pods: list[dict[str, Any]] = sorted(
            index[namespace], key=lambda pod: pod["metadata"].get("name") or ""
        )
        return pods

    def _objects(self, kinds: Iterable[Kind], key: str) -> dict[ObjectRef, ObservedObject]:
        found: dict[ObjectRef, tuple[ObservedObject, str | None]] = {}
        for kind in kinds:
            index = self.indexes.get(object_index_name(kind))
            if index is None or key not in index:
                continue
            for observed, version in index[key]:
                found[observed.ref] = (observed, version)
        result = {ref: observed for ref, (observed, _) in found.items()}
        for ref in self.writes.pending_refs():
            if ref.kind.kind == "Namespace" or (ref.namespace or "") != key:
                continue
            watched = found.get(ref)
            overridden, body = self.writes.resolve(ref, watched[1] if watched else None, watched)
            if not overridden:
                continue
            if body is None:
                result.pop(ref, None)
            else:
                result[ref] = observe(body)
        return result

    def watched_version(self, ref: ObjectRef) -> str | None:
        """The resourceVersion of an object as the watch last showed it."""
        if ref.kind == NAMESPACE:
            index = self.indexes[NAMESPACE_INDEX]
            if ref.name not in index:
                return None
            for _, version in index[ref.name]:
                return version  # type: ignore[no-any-return]
            return None
        objects = self.indexes.get(object_index_name(ref.kind))
        key = ref.namespace or ""
        if objects is None or key not in objects:
            return None
        for observed, version in objects[key]:
            if observed.ref == ref:
                return version  # type: ignore[no-any-return]
        return None

    # -- what a baseline left behind

    def remains_of(self, baseline: str, include_objects: bool) -> list[str]:
        """What of a baseline is still in live namespaces and the cluster, for its finalizer."""
        remains: list[str] = []
        for name in self.namespace_names():
            state = self.namespace(name)
            if state is None or state.terminating:
                continue  # namespace deletion removes everything in it; never wait on it
            if f"{APPLIED_PREFIX}{baseline}" in state.labels:
                remains.append(f"label on namespace {name}")
            if include_objects:
                remains.extend(
                    str(ref)
                    for ref, obj in sorted(self.objects_in(name).items())
                    if obj.owner == baseline
                )
        remains.extend(
            str(ref) for ref, obj in sorted(self.cluster_objects().items()) if obj.owner == baseline
        )
        return remains


# ----------------------------------------------------------------------------- index functions
# kopf calls these for every watched object; they must be cheap and pure.


def index_baseline(body: Mapping[str, Any]) -> dict[str, BaselineEntry]:
    entry = baseline_entry(body)
    return {entry.name: entry}


def index_namespace(body: Mapping[str, Any]) -> dict[str, tuple[NamespaceState, str | None]]:
    raw = plain(body)
    state = observe_namespace(raw, FIELD_MANAGER)
    return {state.name: (state, resource_version(raw))}


def index_object(body: Mapping[str, Any]) -> dict[str, tuple[ObservedObject, str | None]]:
    raw = plain(body)
    observed = observe(raw)
    return {observed.ref.namespace or "": (observed, resource_version(raw))}


def index_own_object(
    body: Mapping[str, Any],
) -> dict[str, tuple[ObservedObject, str | None]] | None:
    """Only the operator's own objects of a kind other tools write too (PolicyReports)."""
    if not is_managed(dict((body.get("metadata") or {}).get("labels") or {})):
        return None
    return index_object(body)


def index_pod(body: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    essence = pod_essence(body)
    return {essence["metadata"]["namespace"] or "": essence}

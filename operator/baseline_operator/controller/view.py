"""What the operator knows about the cluster: its informers, and its own recent writes.

The reconciler reads only this view, never the API server. It is made of:

- the informers (one list-and-watch per kind): every SecurityBaseline, every
  namespace as metadata, the objects the operator generated (label-selected), the
  default ServiceAccount of each namespace (field-selected: the operator sets one
  field there), and pods when a baseline audits workloads;
- the operator's own writes until the watches show them (`wrote`): a watch lags
  behind the answer to a write, and a reconcile in between must not write again;
- objects of others found where the operator wanted to create one (`found`):
  the operator does not watch every NetworkPolicy in the cluster to avoid
  clobbering one; a create that answers AlreadyExists leads to a read of that one
  object, which is remembered here until the next resync looks again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from baseline_operator.controller.baselines import BaselineEntry
from baseline_operator.controller.informer import Informer
from baseline_operator.policy.diff import (
    NamespaceState,
    ObservedObject,
    made_for,
    observe,
    observe_namespace,
)
from baseline_operator.policy.exceptions import ActiveException
from baseline_operator.policy.names import APPLIED_PREFIX, FIELD_MANAGER
from baseline_operator.policy.objects import NAMESPACE, SERVICE_ACCOUNT, Kind, ObjectRef

Entry = ObservedObject | NamespaceState


@dataclass
class _Pending:
    """A write whose answer the watch has not shown yet."""

    stale_version: str | None  # the resourceVersion the watch showed before the write
    entry: Entry | None  # what the server answered; None for a delete


@dataclass
class _Found:
    observed: ObservedObject
    at: float  # when it was read (monotonic seconds)


@dataclass
class ClusterView:
    baselines_informer: Informer[BaselineEntry]
    namespaces_informer: Informer[NamespaceState]
    # The generated kinds, namespaced and cluster-scoped, and the operator's PolicyReports.
    objects_informers: Mapping[Kind, Informer[ObservedObject]]
    default_accounts: Informer[ObservedObject]
    pods_informer: Informer[dict[str, Any]] | None = None
    # Every BaselineException (controller.exceptions.ExceptionEntry), when watched.
    exceptions_informer: Informer[Any] | None = None
    # How long an object of others found by a create is believed before it is read again.
    found_for: float = 300.0
    clock: Callable[[], float] = lambda: 0.0

    # By the namespace a write was in (a Namespace's own writes under its name), so that
    # reading one namespace never scans the writes of all the others.
    _pending: dict[str, dict[ObjectRef, _Pending]] = field(default_factory=dict, init=False)
    _found: dict[str, dict[ObjectRef, _Found]] = field(default_factory=dict, init=False)
    # Baselines whose finalizer runs: treated as deleted before the watch shows it.
    _leaving: set[str] = field(default_factory=set, init=False)
    # Each baseline's exceptions in force, as last judged (controller.exceptions).
    _active: dict[str, tuple[ActiveException, ...]] = field(default_factory=dict, init=False)

    # ------------------------------------------------------------------ baselines

    def baselines(self) -> dict[str, BaselineEntry]:
        entries = {name: entry for (_, name), entry in self.baselines_informer.entries()}
        for name in self._leaving & set(entries):
            entries[name] = entries[name].leaving()
        return entries

    def mark_leaving(self, name: str) -> None:
        self._leaving.add(name)

    def forget_baseline(self, name: str) -> None:
        self._leaving.discard(name)

    # ------------------------------------------------------------------ exceptions

    def exceptions(self) -> dict[str, Any]:
        """Every BaselineException by name (controller.exceptions.ExceptionEntry)."""
        if self.exceptions_informer is None:
            return {}
        return dict(self.exceptions_informer.in_namespace(""))

    def active_exceptions(self, baseline: str) -> tuple[ActiveException, ...]:
        """A baseline's exceptions in force, as judged at the last moment the operator
        looked (one verdict for admission, Pod Security and the workload audit)."""
        return self._active.get(baseline, ())

    def active_sets(self) -> dict[str, tuple[ActiveException, ...]]:
        return dict(self._active)

    def set_active(self, active: Mapping[str, tuple[ActiveException, ...]]) -> None:
        self._active = dict(active)

    # ------------------------------------------------------------------ namespaces

    def namespace_names(self) -> list[str]:
        return sorted(self.namespaces_informer.in_namespace(""))

    def namespace(self, name: str) -> NamespaceState | None:
        ref = ObjectRef(NAMESPACE, None, name)
        watched = self.namespaces_informer.get("", name)
        overridden, entry = self._resolve(ref, self.namespaces_informer.version("", name))
        if overridden:
            return entry if isinstance(entry, NamespaceState) else None
        return watched

    # ------------------------------------------------------------------ objects

    def objects_in(self, namespace: str) -> dict[ObjectRef, ObservedObject]:
        """The operator's objects in a namespace, its default ServiceAccount, and objects of
        others found where the operator wanted to create one."""
        result: dict[ObjectRef, ObservedObject] = {}
        for kind, informer in self.objects_informers.items():
            if kind.namespaced and kind.plural != "policyreports":
                self._collect(result, kind, informer, namespace)
        account = self.default_accounts.get(namespace, "default")
        if account is not None:
            result.setdefault(account.ref, account)
        now = self.clock()
        for ref, found in list(self._found.get(namespace, {}).items()):
            if now - found.at > self.found_for:
                self._forget_found(ref)
            elif ref not in result:
                result[ref] = found.observed
        self._overlay(result, namespace)
        return result

    def cluster_objects(self) -> dict[ObjectRef, ObservedObject]:
        result: dict[ObjectRef, ObservedObject] = {}
        for kind, informer in self.objects_informers.items():
            if not kind.namespaced:
                self._collect(result, kind, informer, "")
        self._overlay(result, "")
        return result

    def objects_of(self, kind: Kind, namespace: str) -> dict[ObjectRef, ObservedObject]:
        result: dict[ObjectRef, ObservedObject] = {}
        informer = self.objects_informers.get(kind)
        if informer is not None:
            self._collect(result, kind, informer, namespace)
        self._overlay(result, namespace, kinds={kind})
        return result

    def kind_not_served(self, kind: Kind) -> None:
        """A write found the kind not served: forget its objects now (its CRD was deleted),
        the operator's own recent writes of it too."""
        for ref in [ref for writes in self._pending.values() for ref in writes if ref.kind == kind]:
            self._drop_pending(ref)
        informer = self.objects_informers.get(kind)
        if informer is not None and informer.served:
            informer.relist()

    def served(self, kind: Kind) -> bool:
        informer = self.objects_informers.get(kind)
        return informer is not None and informer.served

    def pods_in(self, namespace: str) -> list[dict[str, Any]]:
        """The essence of every pod in a namespace (see policy.workloads.pod_essence)."""
        if self.pods_informer is None:
            return []
        pods = self.pods_informer.in_namespace(namespace)
        return [pods[name] for name in sorted(pods)]

    def version_of(self, ref: ObjectRef) -> str | None:
        """The resourceVersion of an object as last known (a recent write's answer first)."""
        pending = self._pending.get(_bucket(ref), {}).get(ref)
        watched = self.watched_version(ref)
        if pending is not None and watched == pending.stale_version:
            entry = pending.entry
            return entry.resource_version if isinstance(entry, ObservedObject) else None
        found = self._found.get(ref.namespace or "", {}).get(ref)
        if watched is None and found is not None:
            return found.observed.resource_version
        return watched

    def finalizers_of(self, ref: ObjectRef) -> tuple[str, ...]:
        """The finalizers an object carries (others': a PUT over it keeps them)."""
        objects = self.objects_in(ref.namespace) if ref.namespace else self.cluster_objects()
        observed = objects.get(ref)
        return observed.finalizers if observed is not None else ()

    # ------------------------------------------------------------------ the operator's writes

    def wrote(self, ref: ObjectRef, answer: dict[str, Any] | None, *, seen: str | None) -> None:
        """Remember the server's answer to a write (None: deleted) until the watch shows it.
        `seen`: the version the watch showed when the write was sent."""
        before = self.watched_version(ref)
        self._forget_found(ref)
        informer = self.objects_informers.get(ref.kind)
        if informer is not None and not informer.served:
            informer.relist()  # the kind is served again (its CRD came back): watch it now
        if before != seen:
            # The watch moved while the write was in flight: it shows this write already,
            # or a change made since (the kube-controller-manager writes a ResourceQuota's
            # status as soon as it exists). Kept, the answer would hide that change until
            # the next one, and every PUT over the answer's version would be refused.
            self._drop_pending(ref)
            return
        if answer is None:
            if before is None:
                return  # nothing watched to hide
            self._pending.setdefault(_bucket(ref), {})[ref] = _Pending(before, None)
            return
        version = str((answer.get("metadata") or {}).get("resourceVersion") or "")
        if version and version == before:
            return  # a write that changed nothing: the watch already shows it
        entry: Entry = (
            observe_namespace(answer, FIELD_MANAGER) if ref.kind == NAMESPACE else observe(answer)
        )
        self._pending.setdefault(_bucket(ref), {})[ref] = _Pending(before, entry)

    def observed(self, body: dict[str, Any]) -> ObservedObject:
        """A watched object's entry. When the event shows the very version the answer to the
        operator's own write showed, the entry made from that answer is reused: a rollout's
        every write comes back as an event, and each was observed once already."""
        ref = ObjectRef.of(body)
        pending = self._pending.get(_bucket(ref), {}).get(ref)
        if pending is not None and isinstance(pending.entry, ObservedObject):
            version = (body.get("metadata") or {}).get("resourceVersion")
            if version and pending.entry.resource_version == version:
                return pending.entry
        return observe(body)

    def settle(self, ref: ObjectRef, entry: Entry | None) -> bool:
        """Take a watch event (the informer holds it already; None: gone) against the
        operator's pending write of the same object; whether the event only echoes that
        write (the view knew it, so there is nothing new to look at: a rollout's writes
        come back as events, and each would otherwise queue its namespace for a pass that
        finds nothing to do).

        The pending write is dropped as soon as the watch has moved past it, here, not at
        the next read of its namespace: a namespace nobody reads again would hold it for
        good, and it would come back to life were the watch to lose the object (its kind
        no longer served)."""
        pending = self._pending.get(_bucket(ref), {}).get(ref)
        if pending is None:
            return False
        echo = pending.entry == entry
        informer = self.objects_informers.get(ref.kind)
        if informer is not None and not informer.served:
            self._drop_pending(ref)  # no object of a kind not served exists
        else:
            self._resolve(ref, self.watched_version(ref))
        return echo

    def found(self, observed: ObservedObject) -> None:
        """An object of others where the operator wanted to create one, as just read."""
        namespace = observed.ref.namespace or ""
        self._found.setdefault(namespace, {})[observed.ref] = _Found(observed, self.clock())

    def forget_found(self, namespace: str) -> None:
        """Read the objects of others in a namespace again on its next reconcile."""
        self._found.pop(namespace, None)

    def forget_namespace(self, namespace: str) -> None:
        """Drop everything kept for a namespace that is gone."""
        self._found.pop(namespace, None)
        self._pending.pop(namespace, None)

    def pending_writes(self) -> int:
        return sum(len(writes) for writes in self._pending.values())

    def found_objects(self) -> int:
        return sum(len(found) for found in self._found.values())

    # ------------------------------------------------------------------ what a baseline left

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
                # Copies carrying its labels are not its objects: never waited for.
                remains.extend(
                    str(ref)
                    for ref, obj in sorted(self.objects_in(name).items())
                    if made_for(obj, baseline)
                )
        remains.extend(
            str(ref)
            for ref, obj in sorted(self.cluster_objects().items())
            if made_for(obj, baseline)
        )
        return remains

    # ------------------------------------------------------------------ internals

    def _collect(
        self,
        result: dict[ObjectRef, ObservedObject],
        kind: Kind,
        informer: Informer[ObservedObject],
        namespace: str,
    ) -> None:
        del kind
        for observed in informer.in_namespace(namespace).values():
            result[observed.ref] = observed

    def _overlay(
        self,
        result: dict[ObjectRef, ObservedObject],
        namespace: str,
        kinds: Iterable[Kind] | None = None,
    ) -> None:
        wanted = set(kinds) if kinds is not None else None
        for ref in list(self._pending.get(namespace, {})):
            if ref.kind == NAMESPACE or (wanted is not None and ref.kind not in wanted):
                continue
            overridden, entry = self._resolve(ref, self.watched_version(ref))
            if not overridden:
                continue
            if isinstance(entry, ObservedObject):
                result[ref] = entry
            else:
                result.pop(ref, None)

    def _resolve(self, ref: ObjectRef, watched_version: str | None) -> tuple[bool, Entry | None]:
        """(True, entry-or-None) while a recent write beats the watch; (False, None) after."""
        writes = self._pending.get(_bucket(ref), {})
        pending = writes.get(ref)
        if pending is None:
            return False, None
        if watched_version == pending.stale_version:
            return True, pending.entry
        self._drop_pending(ref)  # the watch has moved on: it is the truth again
        return False, None

    def _drop_pending(self, ref: ObjectRef) -> None:
        writes = self._pending.get(_bucket(ref))
        if writes is not None:
            writes.pop(ref, None)
            if not writes:
                del self._pending[_bucket(ref)]

    def watched_version(self, ref: ObjectRef) -> str | None:
        """The resourceVersion the watch shows now (None: not there); what a write takes
        before it is sent, for `wrote`."""
        if ref.kind == NAMESPACE:
            return self.namespaces_informer.version("", ref.name)
        namespace = ref.namespace or ""
        informer = self.objects_informers.get(ref.kind)
        version = informer.version(namespace, ref.name) if informer is not None else None
        if version is None and ref.kind == SERVICE_ACCOUNT and ref.name == "default":
            version = self.default_accounts.version(namespace, ref.name)
        return version

    def _forget_found(self, ref: ObjectRef) -> None:
        found = self._found.get(ref.namespace or "")
        if found is not None:
            found.pop(ref, None)
            if not found:
                self._found.pop(ref.namespace or "", None)


def _bucket(ref: ObjectRef) -> str:
    """Where a write is kept: its namespace; a Namespace's own under its name."""
    return ref.name if ref.kind == NAMESPACE else (ref.namespace or "")

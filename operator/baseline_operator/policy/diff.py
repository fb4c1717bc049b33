"""What to write so that what is in a namespace becomes what the baselines want.

`diff_namespace` compares a NamespacePlan with the objects observed in the
namespace (from watches, never from reads per object) and returns the writes:
server-side applies, deletes with a uid precondition, and conflicts to report.
Its rules are the safety rules of DESIGN.md:

- only objects carrying the managed-by label are ever deleted or overwritten;
  an object of a wanted name without it is a conflict unless `adopt` allows;
- objects of a baseline the operator cannot judge right now (an invalid spec,
  Audit mode, a baseline it does not know) stay exactly as they are;
- a namespace leaving a baseline, or a baseline being deleted, removes that
  baseline's objects only under `cleanupPolicy: Delete`;
- nothing is written when everything is in place (quiet at rest).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from baseline_operator.api.fields import parse_quantity
from baseline_operator.api.spec import AdoptPolicy, CleanupPolicy
from baseline_operator.policy.names import (
    APPLIED_PREFIX,
    DESIRED_HASH_KEY,
    FIELD_MANAGER,
    is_managed,
    owning_baseline,
)
from baseline_operator.policy.objects import Body, DesiredObject, ObjectRef, Ownership
from baseline_operator.policy.podsecurity import PSA_PREFIX, merge_stricter

# ----------------------------------------------------------------------------- observations


@dataclass(frozen=True)
class ObservedObject:
    """An object as a watch last saw it, reduced to what the diff needs."""

    ref: ObjectRef
    uid: str | None
    labels: Mapping[str, str]
    body: Body = field(compare=False, hash=False)
    # Top-level fields the operator's field manager owns by server-side apply (from
    # managedFields); what it set on objects it does not own, e.g. the default ServiceAccount.
    owned_fields: frozenset[str] = frozenset()
    # What a PUT over this object must carry: the version it replaces, and finalizers of
    # others (the External Secrets Operator's), which are not the operator's to drop.
    resource_version: str | None = None
    finalizers: tuple[str, ...] = ()

    @property
    def managed(self) -> bool:
        return is_managed(dict(self.labels))

    @property
    def owner(self) -> str | None:
        return owning_baseline(dict(self.labels))

    @property
    def desired_hash(self) -> str | None:
        annotations = (self.body.get("metadata") or {}).get("annotations") or {}
        value = annotations.get(DESIRED_HASH_KEY)
        return value if isinstance(value, str) else None


_VOLATILE_METADATA = (
    "managedFields",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "selfLink",
    "deletionGracePeriodSeconds",
)


def observe(body: Body) -> ObservedObject:
    """Reduce a watched body: drop status and server bookkeeping, keep what can drift."""
    metadata = dict(body.get("metadata") or {})
    uid = metadata.get("uid")
    owned = owned_top_fields(metadata.get("managedFields"), FIELD_MANAGER)
    version = metadata.get("resourceVersion")
    finalizers = metadata.get("finalizers") or ()
    for key in _VOLATILE_METADATA:
        metadata.pop(key, None)
    essence = {key: value for key, value in body.items() if key != "status"}
    essence["metadata"] = metadata
    return ObservedObject(
        ref=ObjectRef.of(body),
        uid=uid if isinstance(uid, str) else None,
        labels=dict(metadata.get("labels") or {}),
        body=essence,
        owned_fields=owned,
        resource_version=version if isinstance(version, str) else None,
        finalizers=tuple(str(item) for item in finalizers),
    )


@dataclass(frozen=True)
class NamespaceState:
    """A namespace as a watch last saw it."""

    name: str
    uid: str | None
    labels: Mapping[str, str]
    terminating: bool
    # Label keys the operator's field manager owns, read from managedFields; None when the
    # server did not say (then the operator's own keys are recognised by their prefixes).
    owned_label_keys: frozenset[str] | None


def observe_namespace(body: Body, manager: str) -> NamespaceState:
    metadata = body.get("metadata") or {}
    status = body.get("status") or {}
    return NamespaceState(
        name=metadata["name"],
        uid=metadata.get("uid"),
        labels=dict(metadata.get("labels") or {}),
        terminating=bool(metadata.get("deletionTimestamp")) or status.get("phase") == "Terminating",
        owned_label_keys=owned_label_keys(metadata.get("managedFields"), manager),
    )


def _apply_entries(managed_fields: Any, manager: str) -> list[dict[str, Any]]:
    if not isinstance(managed_fields, list):
        return []
    return [
        entry.get("fieldsV1") or {}
        for entry in managed_fields
        if isinstance(entry, dict)
        and entry.get("manager") == manager
        and entry.get("operation") == "Apply"
    ]


def owned_top_fields(managed_fields: Any, manager: str) -> frozenset[str]:
    """Top-level fields (other than metadata) a field manager owns through server-side apply."""
    fields: set[str] = set()
    for entry in _apply_entries(managed_fields, manager):
        fields.update(
            key.removeprefix("f:") for key in entry if key.startswith("f:") and key != "f:metadata"
        )
    return frozenset(fields)


def owned_label_keys(managed_fields: Any, manager: str) -> frozenset[str] | None:
    """The label keys a field manager owns through server-side apply, from managedFields."""
    if not isinstance(managed_fields, list):
        return None
    keys: set[str] = set()
    for fields in _apply_entries(managed_fields, manager):
        labels = (fields.get("f:metadata") or {}).get("f:labels") or {}
        keys.update(key.removeprefix("f:") for key in labels if key.startswith("f:"))
    return frozenset(keys)


# ----------------------------------------------------------------------------- baselines


@dataclass(frozen=True)
class OwnerState:
    """What the diff must know about a baseline that wants or owns objects in the namespace."""

    adopt: AdoptPolicy = AdoptPolicy.NEVER
    cleanup: CleanupPolicy = CleanupPolicy.DELETE
    # Valid, Enforce, not being deleted, and selecting this namespace.
    active: bool = False
    # Invalid spec or Audit mode: what it made stays exactly as it is.
    frozen: bool = False


# ----------------------------------------------------------------------------- changes


class ApplyReason(StrEnum):
    CREATE = "create"
    UPDATE = "update"  # drift repaired, or the baseline changed
    ADOPT = "adopt"  # an object the operator did not make, taken over as `adopt` allows
    RELEASE = "release"  # fields the operator set on an object it does not own, given back


@dataclass(frozen=True)
class Apply:
    desired: DesiredObject
    body: Body = field(compare=False)
    reason: ApplyReason


@dataclass(frozen=True)
class Delete:
    ref: ObjectRef
    uid: str | None
    baseline: str | None


@dataclass(frozen=True)
class Conflict:
    ref: ObjectRef
    baseline: str | None
    message: str


@dataclass(frozen=True)
class NamespaceChanges:
    namespace: str
    labels: dict[str, str] | None  # the full set of the operator's labels to apply, or None
    applies: tuple[Apply, ...] = ()
    deletes: tuple[Delete, ...] = ()
    conflicts: tuple[Conflict, ...] = ()

    @property
    def writes(self) -> int:
        return len(self.applies) + len(self.deletes) + (self.labels is not None)

    @property
    def in_place(self) -> bool:
        return self.writes == 0 and not self.conflicts


# ----------------------------------------------------------------------------- comparison


def desired_hash(body: Body) -> str:
    """A stable digest of what the operator wants an object to be."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def with_desired_hash(desired: DesiredObject) -> Body:
    """The body to apply: the desired object plus its digest (owned objects only)."""
    if desired.ownership is not Ownership.OBJECT:
        return desired.body
    body = json.loads(json.dumps(desired.body))
    annotations = body["metadata"].setdefault("annotations", {})
    annotations[DESIRED_HASH_KEY] = desired_hash(desired.body)
    return dict(body)


def covers(actual: Any, desired: Any) -> bool:
    """Does `actual` hold everything `desired` says (the server may add defaults)?"""
    if isinstance(desired, dict):
        if actual is None:
            return all(_empty(value) for value in desired.values())
        if not isinstance(actual, dict):
            return False
        return all(
            covers(actual.get(key), value) if key in actual else _empty(value)
            for key, value in desired.items()
        )
    if isinstance(desired, list):
        if actual is None:
            return not desired
        if not isinstance(actual, list) or len(actual) != len(desired):
            return False
        return all(covers(a, d) for a, d in zip(actual, desired, strict=True))
    if actual == desired and type(actual) is type(desired):
        return True
    return _same_quantity(actual, desired)


def _empty(value: Any) -> bool:
    return bool(value == {} or value == [])


def _same_quantity(actual: Any, desired: Any) -> bool:
    # The server canonicalises quantities ("0.5" -> "500m", "1024Mi" -> "1Gi").
    if isinstance(actual, bool) or isinstance(desired, bool):
        return False
    if not isinstance(actual, str | int) or not isinstance(desired, str | int):
        return False
    try:
        return bool(parse_quantity(actual) == parse_quantity(desired))
    except ValueError:
        return False


def in_sync(observed: ObservedObject, desired: DesiredObject) -> bool:
    """Unchanged since the operator wrote it, and what it wrote is what it still wants."""
    if desired.ownership is Ownership.OBJECT and observed.desired_hash != desired_hash(
        desired.body
    ):
        return False
    return covers(observed.body, desired.body)


# ----------------------------------------------------------------------------- the diff


def diff_objects(
    desired: tuple[DesiredObject, ...],
    observed: Mapping[ObjectRef, ObservedObject],
    owners: Mapping[str, OwnerState],
    release_fields: bool = True,
) -> tuple[tuple[Apply, ...], tuple[Delete, ...], tuple[Conflict, ...]]:
    """The applies, deletes and conflicts that turn `observed` into `desired`.

    `observed` holds the managed objects in scope and any object whose name a
    desired object takes; `owners` describes every baseline the cluster knows
    (a label naming a baseline missing from it belongs to an unknown one).
    """
    applies: list[Apply] = []
    conflicts: list[Conflict] = []
    desired_refs = {item.ref for item in desired}

    for item in desired:
        current = observed.get(item.ref)
        if current is None:
            applies.append(Apply(item, with_desired_hash(item), ApplyReason.CREATE))
            continue
        if item.ownership is Ownership.FIELDS:
            if not covers(current.body, item.body):
                applies.append(Apply(item, item.body, ApplyReason.UPDATE))
            continue
        if current.managed:
            if not in_sync(current, item):
                applies.append(Apply(item, with_desired_hash(item), ApplyReason.UPDATE))
            continue
        policy = owners.get(item.baseline or "", OwnerState()).adopt
        if policy is AdoptPolicy.FORCE or (
            policy is AdoptPolicy.IF_IDENTICAL
            and covers(current.body, _without_metadata(item.body))
        ):
            applies.append(Apply(item, with_desired_hash(item), ApplyReason.ADOPT))
        else:
            conflicts.append(Conflict(item.ref, item.baseline, _conflict_message(item, policy)))

    deletes: list[Delete] = []
    for ref, current in sorted(observed.items()):
        if ref in desired_refs:
            continue
        if not current.managed:
            if current.owned_fields and release_fields:
                # Applying just the identity gives up every field the operator set there.
                bare = DesiredObject(ref, _identity(current.body), None, Ownership.FIELDS)
                applies.append(Apply(bare, bare.body, ApplyReason.RELEASE))
            continue
        owner = current.owner
        state = owners.get(owner) if owner is not None else None
        if state is None or state.frozen:
            continue  # a baseline the operator cannot judge now: leave its objects alone
        if state.active or state.cleanup is CleanupPolicy.DELETE:
            deletes.append(Delete(ref, current.uid, owner))
    return tuple(applies), tuple(deletes), tuple(conflicts)


def diff_namespace(
    plan_labels: Mapping[str, str],
    desired: tuple[DesiredObject, ...],
    namespace: NamespaceState,
    observed: Mapping[ObjectRef, ObservedObject],
    owners: Mapping[str, OwnerState],
) -> NamespaceChanges:
    """The writes that bring one namespace to its plan (objects and the operator's labels)."""
    in_namespace = {ref: obj for ref, obj in observed.items() if ref.namespace == namespace.name}
    # A baseline the operator cannot judge may have wanted the fields it set on foreign
    # objects (the default ServiceAccount's token setting): keep them until it can.
    held_back = bool(_held_back_baselines(namespace, owners))
    applies, deletes, conflicts = diff_objects(
        desired, in_namespace, owners, release_fields=not held_back
    )
    return NamespaceChanges(
        namespace=namespace.name,
        labels=_labels_to_apply(plan_labels, namespace, owners),
        applies=applies,
        deletes=deletes,
        conflicts=conflicts,
    )


def _identity(body: Body) -> Body:
    metadata = body.get("metadata") or {}
    identity: Body = {"name": metadata.get("name")}
    if metadata.get("namespace"):
        identity["namespace"] = metadata["namespace"]
    return {"apiVersion": body.get("apiVersion"), "kind": body.get("kind"), "metadata": identity}


def _without_metadata(body: Body) -> Body:
    return {key: value for key, value in body.items() if key != "metadata"}


def _conflict_message(item: DesiredObject, policy: AdoptPolicy) -> str:
    if policy is AdoptPolicy.IF_IDENTICAL:
        why = "it differs from what the baseline wants (adopt: IfIdentical)"
    else:
        why = "the baseline does not adopt objects (adopt: Never)"
    return f"{item.ref} exists and was not made by baseline-operator; left alone: {why}"


def desired_namespace_labels(
    plan_labels: Mapping[str, str],
    namespace: NamespaceState,
    owners: Mapping[str, OwnerState],
) -> dict[str, str]:
    """The operator's labels for the namespace, keeping those of baselines it cannot judge."""
    labels = dict(plan_labels)
    held_back = _held_back_baselines(namespace, owners)
    for name in held_back:
        labels[f"{APPLIED_PREFIX}{name}"] = namespace.labels[f"{APPLIED_PREFIX}{name}"]
    if held_back:
        # A frozen or unknown baseline may have set Pod Security levels: never lower them here.
        current_psa = {k: v for k, v in namespace.labels.items() if k.startswith(PSA_PREFIX)}
        labels = merge_stricter(labels, current_psa)
    return labels


def _held_back_baselines(namespace: NamespaceState, owners: Mapping[str, OwnerState]) -> list[str]:
    """Baselines applied to the namespace that the operator cannot judge now (frozen or unknown)."""
    held: list[str] = []
    for key in namespace.labels:
        if key.startswith(APPLIED_PREFIX):
            name = key.removeprefix(APPLIED_PREFIX)
            state = owners.get(name)
            if state is None or state.frozen:
                held.append(name)
    return held


def _labels_to_apply(
    plan_labels: Mapping[str, str],
    namespace: NamespaceState,
    owners: Mapping[str, OwnerState],
) -> dict[str, str] | None:
    wanted = desired_namespace_labels(plan_labels, namespace, owners)
    current = namespace.labels
    missing = any(current.get(key) != value for key, value in wanted.items())
    if namespace.owned_label_keys is not None:
        ours = set(namespace.owned_label_keys)
    else:
        ours = {key for key in current if key.startswith(APPLIED_PREFIX)}
        if ours:
            ours |= {key for key in current if key.startswith(PSA_PREFIX)}
    stale = any(key not in wanted for key in ours)
    return wanted if missing or stale else None

"""What to write so that what is in a namespace becomes what the baselines want.

`diff_namespace` compares a NamespacePlan with the objects observed in the
namespace (from watches, never from reads per object) and returns the writes:
applies (server-side apply or replace), deletes with a uid precondition, and
conflicts to report.
Its rules are the safety rules of DESIGN.md:

- an object is in place when it does exactly what the desired one does: their
  essences (policy.normalize: after the server's defaulting, every field that acts,
  not only those the operator sent) are equal; a repair over fields another manager
  wrote is a replace (`Repair.REPLACE`), which server-side apply cannot do;
- only objects the operator made are deleted or overwritten as its own: the
  managed-by label (which anyone can copy) *and* the operator's field manager in
  managedFields *and* a name the baseline generates; anything else carrying the
  labels is a conflict, and an object of a wanted name that the operator did not
  make is a conflict unless `adopt` allows (`IfIdentical`: the same essence);
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

from baseline_operator.api.sharing import (
    EMPTY_MAPPING,
    interned_labels,
    shared_digests,
    shared_keys,
    shared_labels,
    shared_str,
)
from baseline_operator.api.spec import AdoptPolicy, CleanupPolicy
from baseline_operator.policy.names import (
    APPLIED_PREFIX,
    DESIRED_HASH_KEY,
    FIELD_MANAGER,
    could_generate,
    is_managed,
    owning_baseline,
)
from baseline_operator.policy.normalize import essence_digest, field_digests
from baseline_operator.policy.objects import Body, DesiredObject, ObjectRef, Ownership
from baseline_operator.policy.podsecurity import MODES, PSA_PREFIX, merge_stricter, rank

# ----------------------------------------------------------------------------- observations


@dataclass(frozen=True, slots=True)
class ObservedObject:
    """An object as a watch last saw it, reduced to what the diff needs.

    Compact on purpose (tens of thousands are kept): no body, only its essence's digest
    (policy.normalize) and the facts that decide ownership and how to write over it.
    """

    ref: ObjectRef
    uid: str | None
    labels: Mapping[str, str]
    # policy.normalize.essence_digest of the object: what it does, after defaulting.
    essence: str = ""
    # Its managedFields show a write by the operator's field manager: the proof that the
    # operator made it (labels can be copied by anyone; managedFields cannot be forged
    # under another's name without writing as that manager, which the protect policy
    # refuses to anyone but the operator).
    operator_applied: bool = False
    # Another field manager wrote it too: a server-side apply cannot take back fields
    # another manager owns, so a repair must replace the whole object.
    other_managers: bool = False
    # Top-level fields the operator's field manager owns by server-side apply (from
    # managedFields); what it set on objects it does not own, e.g. the default ServiceAccount.
    owned_fields: frozenset[str] = frozenset()
    # Per top-level essence field digests, kept for objects the operator does not own
    # (it compares only the fields it sets there); empty for its own objects.
    field_digests: Mapping[str, str] = field(default_factory=dict)
    # What a PUT over this object must carry: the version it replaces, and finalizers of
    # others (the External Secrets Operator's), which are not the operator's to drop.
    resource_version: str | None = None
    finalizers: tuple[str, ...] = ()

    @property
    def managed(self) -> bool:
        """It carries the managed-by label (which anyone can copy: see `operator_applied`)."""
        return is_managed(dict(self.labels))

    @property
    def owner(self) -> str | None:
        return owning_baseline(dict(self.labels))


def observe(body: Body) -> ObservedObject:
    """Reduce a watched body to its compact observation (equal parts shared: api.sharing)."""
    metadata = body.get("metadata") or {}
    uid = metadata.get("uid")
    managed_fields = metadata.get("managedFields")
    managers = _managers(managed_fields)
    version = metadata.get("resourceVersion")
    finalizers = metadata.get("finalizers") or ()
    labels = metadata.get("labels") or {}
    kind = str(body.get("kind"))
    return ObservedObject(
        ref=ObjectRef.of(body),
        uid=uid if isinstance(uid, str) else None,
        labels=shared_labels(labels),
        essence=shared_str(essence_digest(kind, body)),
        operator_applied=FIELD_MANAGER in managers,
        other_managers=bool(managers - {FIELD_MANAGER}),
        owned_fields=shared_keys(owned_top_fields(managed_fields, FIELD_MANAGER)),
        field_digests=(
            EMPTY_MAPPING if is_managed(labels) else shared_digests(field_digests(kind, body))
        ),
        resource_version=version if isinstance(version, str) else None,
        finalizers=tuple(shared_str(str(item)) for item in finalizers) if finalizers else (),
    )


def _managers(managed_fields: Any) -> frozenset[str]:
    """Field managers that wrote the object itself (writes of its status are not counted)."""
    if not isinstance(managed_fields, list):
        return frozenset()
    return frozenset(
        str(entry.get("manager"))
        for entry in managed_fields
        if isinstance(entry, dict) and entry.get("manager") and not entry.get("subresource")
    )


@dataclass(frozen=True, slots=True)
class NamespaceState:
    """A namespace as a watch last saw it."""

    name: str
    uid: str | None
    labels: Mapping[str, str]
    terminating: bool
    # Label keys the operator's field manager owns, read from managedFields; None when the
    # server did not say (then the operator's own keys are recognised by their prefixes).
    owned_label_keys: frozenset[str] | None
    # Pod Security label keys another field manager set (Argo CD, a person): the operator
    # does not take them over; where they are weaker than a baseline wants, it says so.
    others_psa_keys: frozenset[str] = frozenset()
    resource_version: str | None = None


def observe_namespace(body: Body, manager: str) -> NamespaceState:
    metadata = body.get("metadata") or {}
    status = body.get("status") or {}
    owned = owned_label_keys(metadata.get("managedFields"), manager)
    return NamespaceState(
        name=shared_str(metadata["name"]),
        uid=metadata.get("uid"),
        labels=interned_labels(metadata.get("labels") or {}),
        terminating=bool(metadata.get("deletionTimestamp")) or status.get("phase") == "Terminating",
        owned_label_keys=None if owned is None else shared_keys(owned),
        others_psa_keys=shared_keys(_others_psa_keys(metadata.get("managedFields"), manager)),
        resource_version=metadata.get("resourceVersion"),
    )


def _others_psa_keys(managed_fields: Any, manager: str) -> frozenset[str]:
    if not isinstance(managed_fields, list):
        return frozenset()
    ours: set[str] = set()
    theirs: set[str] = set()
    for entry in managed_fields:
        if not isinstance(entry, dict):
            continue
        labels = ((entry.get("fieldsV1") or {}).get("f:metadata") or {}).get("f:labels") or {}
        keys = {
            key.removeprefix("f:")
            for key in labels
            if key.startswith("f:") and key.removeprefix("f:").startswith(PSA_PREFIX)
        }
        (ours if entry.get("manager") == manager else theirs).update(keys)
    return frozenset(theirs - ours)


def pod_security_held_by_others(
    plan_labels: Mapping[str, str], namespace: NamespaceState
) -> list[str]:
    """Pod Security levels another manager set weaker than the baselines want (not forced)."""
    weaker = []
    for key in sorted(namespace.others_psa_keys):
        mode = key.removeprefix(PSA_PREFIX)
        if mode not in MODES or key not in plan_labels:
            continue
        theirs = namespace.labels.get(key)
        if rank(theirs) < rank(plan_labels[key]):
            weaker.append(
                f"namespace {namespace.name}: label {key}={theirs} is set by another field"
                f" manager, weaker than {plan_labels[key]}; not overridden"
            )
    return weaker


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
    # A removal held by the brake (see controller/brake.py): nothing of it is deleted.
    hold_removal: bool = False


# ----------------------------------------------------------------------------- changes


class ApplyReason(StrEnum):
    CREATE = "create"
    UPDATE = "update"  # drift repaired, or the baseline changed
    ADOPT = "adopt"  # an object the operator did not make, taken over as `adopt` allows
    RELEASE = "release"  # fields the operator set on an object it does not own, given back


class Repair(StrEnum):
    """How to write an Apply."""

    # A server-side apply (field manager baseline-operator): a create, or a change of what
    # the baseline wants on an object no other field manager wrote.
    APPLY = "apply"
    # A replace (PUT) of the whole object carrying `resource_version` (and the finalizers
    # of others): the object differs from what it should be and another manager wrote it,
    # so an apply would leave that manager's fields (a widened selector, one more subject)
    # in place. A conflict (409) means it changed since it was seen: look again.
    REPLACE = "replace"


@dataclass(frozen=True)
class Apply:
    desired: DesiredObject
    body: Body = field(compare=False)
    reason: ApplyReason
    repair: Repair = Repair.APPLY
    # For REPLACE: the version replaced and the finalizers it must keep.
    resource_version: str | None = None
    finalizers: tuple[str, ...] = ()


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
    """The body to apply: the desired object plus its digest (owned objects only).

    The digest annotation is informative (what the operator last wanted); drift is judged
    on the essence (`in_sync`), never on it.
    """
    if desired.ownership is not Ownership.OBJECT:
        return desired.body
    body = json.loads(json.dumps(desired.body))
    annotations = body["metadata"].setdefault("annotations", {})
    annotations[DESIRED_HASH_KEY] = desired_hash(desired.body)
    return dict(body)


def in_sync(observed: ObservedObject, desired: DesiredObject) -> bool:
    """The live object does exactly what the desired one does (policy.normalize).

    For an object the operator does not own (Ownership.FIELDS), only the fields it sets.
    """
    kind = desired.ref.kind.kind
    if desired.ownership is Ownership.FIELDS:
        wanted = field_digests(kind, desired.body)
        fields = [key for key in desired.body if key not in ("apiVersion", "kind", "metadata")]
        return all(observed.field_digests.get(key) == wanted.get(key) for key in fields)
    return observed.essence == essence_digest(kind, desired.body)


def identical(observed: ObservedObject, desired: DesiredObject) -> bool:
    """What `adopt: IfIdentical` asks: the same essence, apart from the operator's labels."""
    kind = desired.ref.kind.kind
    body = desired.body
    unlabelled = {**body, "metadata": {**body.get("metadata", {}), "labels": observed.labels}}
    return observed.essence == essence_digest(kind, unlabelled)


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

    The operator rewrites or deletes an object as its own only when it is one it made:
    its managedFields show the operator's writes (`operator_applied`) and its name is one
    the baseline generates (`names.could_generate`). Anything else carrying a baseline's
    labels is a Conflict: reported, never deleted.
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
            if not in_sync(current, item):
                applies.append(Apply(item, item.body, ApplyReason.UPDATE))
            continue
        if _made_by_operator(current):
            holder = owners.get(current.owner or "")
            if current.owner == item.baseline or (holder is not None and not holder.frozen):
                # Its own object, or one layering now gives to this baseline.
                if not in_sync(current, item):
                    applies.append(_update(item, current, ApplyReason.UPDATE))
                continue
            message = (
                f"{item.ref} is held by baseline {current.owner}, which the operator cannot"
                " judge now; left alone"
            )
            conflicts.append(Conflict(item.ref, item.baseline, message))
            continue
        policy = owners.get(item.baseline or "", OwnerState()).adopt
        if policy is AdoptPolicy.FORCE or (
            policy is AdoptPolicy.IF_IDENTICAL and identical(current, item)
        ):
            repair = (
                Repair.REPLACE
                if policy is AdoptPolicy.FORCE and not identical(current, item)
                else Repair.APPLY
            )
            applies.append(_write(item, current, ApplyReason.ADOPT, repair))
        else:
            conflicts.append(Conflict(item.ref, item.baseline, _conflict_message(item, policy)))

    deletes: list[Delete] = []
    for ref, current in sorted(observed.items()):
        if ref in desired_refs:
            continue
        if not current.managed:
            if current.owned_fields and release_fields:
                # Applying just the identity gives up every field the operator set there.
                bare = DesiredObject(ref, _identity(ref), None, Ownership.FIELDS)
                applies.append(Apply(bare, bare.body, ApplyReason.RELEASE))
            continue
        owner = current.owner
        state = owners.get(owner) if owner is not None else None
        if state is None or state.frozen or state.hold_removal:
            continue  # a baseline the operator cannot judge now: leave its objects alone
        if not (state.active or state.cleanup is CleanupPolicy.DELETE):
            continue
        if owner is not None and _made_by_operator(current) and _generates(owner, ref):
            deletes.append(Delete(ref, current.uid, owner))
        else:
            conflicts.append(Conflict(ref, owner, _copy_message(ref, owner)))
    return tuple(applies), tuple(deletes), tuple(conflicts)


def made_for(current: ObservedObject, baseline: str) -> bool:
    """An object the operator made for `baseline`: its labels say so, its managedFields show
    the operator's writes, and its name is one the baseline generates. Only these are
    ever rewritten or deleted as the baseline's (and waited for by its finalizer)."""
    return (
        current.owner == baseline
        and _made_by_operator(current)
        and _generates(baseline, current.ref)
    )


def _made_by_operator(current: ObservedObject) -> bool:
    return current.managed and current.operator_applied


def _generates(baseline: str, ref: ObjectRef) -> bool:
    return could_generate(baseline, ref.kind.kind, ref.name)


def _update(item: DesiredObject, current: ObservedObject, reason: ApplyReason) -> Apply:
    # Only the operator wrote it: applying the new body removes what it no longer wants.
    # Someone else wrote it too: only a replace removes their fields.
    repair = Repair.REPLACE if current.other_managers else Repair.APPLY
    return _write(item, current, reason, repair)


def _write(
    item: DesiredObject, current: ObservedObject, reason: ApplyReason, repair: Repair
) -> Apply:
    if repair is Repair.APPLY:
        return Apply(item, with_desired_hash(item), reason)
    return Apply(
        item,
        with_desired_hash(item),
        reason,
        Repair.REPLACE,
        resource_version=current.resource_version,
        finalizers=current.finalizers,
    )


def _copy_message(ref: ObjectRef, owner: str | None) -> str:
    return (
        f"{ref} carries the labels of baseline {owner} but is not an object baseline-operator"
        " made for it (its name or managedFields say otherwise); left alone"
    )


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


def _identity(ref: ObjectRef) -> Body:
    identity: Body = {"name": ref.name}
    if ref.namespace:
        identity["namespace"] = ref.namespace
    return {"apiVersion": ref.kind.api_version, "kind": ref.kind.kind, "metadata": identity}


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
    # Pod Security labels someone else set are theirs: never forced, taken or removed.
    labels = {
        key: value for key, value in plan_labels.items() if key not in namespace.others_psa_keys
    }
    held_back = _held_back_baselines(namespace, owners)
    for name in held_back:
        labels[f"{APPLIED_PREFIX}{name}"] = namespace.labels[f"{APPLIED_PREFIX}{name}"]
    if held_back:
        # A frozen or unknown baseline may have set Pod Security levels: never lower them here.
        current_psa = {
            key: value
            for key, value in namespace.labels.items()
            if key.startswith(PSA_PREFIX) and key not in namespace.others_psa_keys
        }
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

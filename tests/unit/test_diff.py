"""The diff: what to write, and above all what never to touch."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from baseline_operator.api.spec import AdoptPolicy, CleanupPolicy
from baseline_operator.policy.diff import (
    ApplyReason,
    NamespaceState,
    OwnerState,
    Repair,
    desired_hash,
    diff_namespace,
    observe,
    observe_namespace,
    owned_label_keys,
    pod_security_held_by_others,
    with_desired_hash,
)
from baseline_operator.policy.names import DESIRED_HASH_KEY, managed_labels
from baseline_operator.policy.objects import (
    NETWORK_POLICY,
    SERVICE_ACCOUNT,
    DesiredObject,
    ObjectRef,
    Ownership,
)

NS = "team-a"


def policy(name: str, baseline: str = "prod", ingress: bool = True) -> DesiredObject:
    body = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": NS, "labels": managed_labels(baseline)},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"] if ingress else ["Egress"]},
    }
    return DesiredObject(ObjectRef(NETWORK_POLICY, NS, name), body, baseline)


def namespace(
    labels: dict[str, str] | None = None, owned: frozenset[str] | None = None
) -> NamespaceState:
    return NamespaceState(NS, "uid-ns", labels or {}, terminating=False, owned_label_keys=owned)


OPERATOR_APPLY = {"manager": "baseline-operator", "operation": "Apply", "fieldsV1": {}}


def live(body: dict[str, Any], uid: str = "uid-1", extra: dict[str, Any] | None = None) -> Any:
    """As the operator's own apply left it: managedFields name its field manager."""
    metadata = {**body["metadata"], "uid": uid, "resourceVersion": "7"}
    metadata["managedFields"] = [OPERATOR_APPLY]
    copied = {**body, "metadata": metadata}
    if extra:
        copied["spec"] = {**copied["spec"], **extra}
    return observe(copied)


def as_applied(desired: DesiredObject) -> dict[str, Any]:
    return with_desired_hash(desired)


ACTIVE = {"prod": OwnerState(active=True)}


def test_missing_objects_are_created_with_their_digest() -> None:
    wanted = policy("prod-default-deny")
    changes = diff_namespace({}, (wanted,), namespace(), {}, ACTIVE)
    (apply,) = changes.applies
    assert apply.reason is ApplyReason.CREATE
    assert apply.body["metadata"]["annotations"][DESIRED_HASH_KEY] == desired_hash(wanted.body)
    assert changes.deletes == () and changes.conflicts == ()


def test_objects_in_place_cost_nothing() -> None:
    wanted = policy("prod-default-deny")
    observed = {wanted.ref: live(as_applied(wanted))}
    changes = diff_namespace({}, (wanted,), namespace(), observed, ACTIVE)
    assert changes.in_place and changes.writes == 0


def test_server_defaults_are_not_drift() -> None:
    wanted = policy("prod-default-deny")
    observed = {wanted.ref: live(as_applied(wanted), extra={"ingress": []})}
    assert diff_namespace({}, (wanted,), namespace(), observed, ACTIVE).in_place


def test_an_edited_object_is_repaired() -> None:
    wanted = policy("prod-default-deny")
    observed = {wanted.ref: live(as_applied(wanted), extra={"policyTypes": ["Egress"]})}
    (apply,) = diff_namespace({}, (wanted,), namespace(), observed, ACTIVE).applies
    assert apply.reason is ApplyReason.UPDATE


def test_a_changed_baseline_updates() -> None:
    old = policy("prod-default-deny")
    new_body = {**old.body, "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}}
    new = DesiredObject(old.ref, new_body, "prod")
    observed = {old.ref: live(as_applied(old))}
    (apply,) = diff_namespace({}, (new,), namespace(), observed, ACTIVE).applies
    assert apply.reason is ApplyReason.UPDATE
    assert apply.repair is Repair.APPLY  # only the operator wrote it: an apply suffices


def test_a_baseline_change_to_what_the_server_defaults_anyway_is_no_write() -> None:
    old = policy("prod-default-deny")
    same = DesiredObject(old.ref, {**old.body, "spec": {"podSelector": {}}}, "prod")
    observed = {old.ref: live(as_applied(old))}
    assert diff_namespace({}, (same,), namespace(), observed, ACTIVE).in_place


def foreign(desired: DesiredObject, **spec: Any) -> Any:
    body = {**desired.body, "metadata": {"name": desired.ref.name, "namespace": NS}}
    if spec:
        body["spec"] = {**body["spec"], **spec}
    return observe(body)


def test_a_foreign_object_is_never_touched_by_default() -> None:
    wanted = policy("prod-default-deny")
    observed = {wanted.ref: foreign(wanted)}
    changes = diff_namespace({}, (wanted,), namespace(), observed, ACTIVE)
    assert changes.applies == () and changes.deletes == ()
    (conflict,) = changes.conflicts
    assert conflict.baseline == "prod" and "not made by baseline-operator" in conflict.message


def test_if_identical_adopts_only_identical_objects() -> None:
    wanted = policy("prod-default-deny")
    owners = {"prod": OwnerState(adopt=AdoptPolicy.IF_IDENTICAL, active=True)}
    same = diff_namespace({}, (wanted,), namespace(), {wanted.ref: foreign(wanted)}, owners)
    assert [a.reason for a in same.applies] == [ApplyReason.ADOPT]
    different = diff_namespace(
        {}, (wanted,), namespace(), {wanted.ref: foreign(wanted, policyTypes=["Egress"])}, owners
    )
    assert different.applies == () and len(different.conflicts) == 1


def test_force_adopts_anything() -> None:
    wanted = policy("prod-default-deny")
    owners = {"prod": OwnerState(adopt=AdoptPolicy.FORCE, active=True)}
    observed = {wanted.ref: foreign(wanted, policyTypes=["Egress"])}
    changes = diff_namespace({}, (wanted,), namespace(), observed, owners)
    assert [a.reason for a in changes.applies] == [ApplyReason.ADOPT]


def test_objects_no_longer_wanted_by_an_active_baseline_are_deleted() -> None:
    gone = policy("prod-ingress-web")
    observed = {gone.ref: live(as_applied(gone), uid="uid-9")}
    (delete,) = diff_namespace({}, (), namespace(), observed, ACTIVE).deletes
    assert (delete.ref, delete.uid, delete.baseline) == (gone.ref, "uid-9", "prod")


@pytest.mark.parametrize(
    ("owner", "deleted"),
    [
        (OwnerState(active=False, cleanup=CleanupPolicy.DELETE), True),
        (OwnerState(active=False, cleanup=CleanupPolicy.ORPHAN), False),
        (OwnerState(frozen=True), False),
        (None, False),  # a baseline the operator does not know
    ],
    ids=["left-delete", "left-orphan", "frozen", "unknown"],
)
def test_cleanup_follows_the_owner(owner: OwnerState | None, deleted: bool) -> None:
    stale = policy("prod-default-deny")
    owners = {"prod": owner} if owner else {}
    changes = diff_namespace({}, (), namespace(), {stale.ref: live(as_applied(stale))}, owners)
    assert bool(changes.deletes) is deleted


def test_unlabelled_objects_are_never_deleted() -> None:
    wanted = policy("prod-default-deny")
    changes = diff_namespace({}, (), namespace(), {wanted.ref: foreign(wanted)}, ACTIVE)
    assert changes.deletes == ()


def test_namespace_labels_are_applied_only_when_they_differ() -> None:
    wanted = {
        "applied.security.baseline.dev/prod": "true",
        "pod-security.kubernetes.io/enforce": "restricted",
    }
    fresh = diff_namespace(wanted, (), namespace({"team": "a"}), {}, ACTIVE)
    assert fresh.labels == wanted
    settled = diff_namespace(wanted, (), namespace({"team": "a", **wanted}), {}, ACTIVE)
    assert settled.labels is None and settled.in_place


def test_stale_operator_labels_are_removed_by_applying_without_them() -> None:
    current = {
        "applied.security.baseline.dev/old": "true",
        "pod-security.kubernetes.io/enforce": "restricted",
        "team": "a",
    }
    owned = frozenset({"applied.security.baseline.dev/old", "pod-security.kubernetes.io/enforce"})
    owners = {"old": OwnerState(active=False)}
    changes = diff_namespace({}, (), namespace(current, owned), {}, owners)
    assert changes.labels == {}


def test_labels_of_frozen_baselines_stay_and_psa_is_not_lowered() -> None:
    current = {
        "applied.security.baseline.dev/broken": "true",
        "pod-security.kubernetes.io/enforce": "restricted",
    }
    owners = {"broken": OwnerState(frozen=True), "prod": OwnerState(active=True)}
    plan = {
        "applied.security.baseline.dev/prod": "true",
        "pod-security.kubernetes.io/enforce": "baseline",
    }
    changes = diff_namespace(plan, (), namespace(current), {}, owners)
    assert changes.labels == {
        "applied.security.baseline.dev/prod": "true",
        "applied.security.baseline.dev/broken": "true",
        "pod-security.kubernetes.io/enforce": "restricted",
    }


def test_fields_owned_on_a_foreign_object_are_applied_without_labels() -> None:
    body = {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": "default", "namespace": NS},
        "automountServiceAccountToken": False,
    }
    wanted = DesiredObject(ObjectRef(SERVICE_ACCOUNT, NS, "default"), body, None, Ownership.FIELDS)
    existing = observe({**body, "automountServiceAccountToken": True})
    (apply,) = diff_namespace({}, (wanted,), namespace(), {wanted.ref: existing}, ACTIVE).applies
    assert apply.body == body  # no digest, no labels: the object is not the operator's
    in_place = observe(body)
    assert diff_namespace({}, (wanted,), namespace(), {wanted.ref: in_place}, ACTIVE).in_place


def test_owned_label_keys_come_from_apply_entries_of_our_manager() -> None:
    managed_fields = [
        {
            "manager": "baseline-operator",
            "operation": "Apply",
            "fieldsV1": {
                "f:metadata": {
                    "f:labels": {
                        "f:applied.security.baseline.dev/a": {},
                        "f:pod-security.kubernetes.io/warn": {},
                    }
                }
            },
        },
        {
            "manager": "kubectl",
            "operation": "Update",
            "fieldsV1": {"f:metadata": {"f:labels": {"f:team": {}}}},
        },
        {
            "manager": "baseline-operator",
            "operation": "Update",
            "fieldsV1": {"f:metadata": {"f:labels": {"f:other": {}}}},
        },
    ]
    assert owned_label_keys(managed_fields, "baseline-operator") == {
        "applied.security.baseline.dev/a",
        "pod-security.kubernetes.io/warn",
    }
    assert owned_label_keys(None, "baseline-operator") is None


@given(st.lists(st.sampled_from(["prod", "org", "team"]), max_size=3, unique=True), st.booleans())
def test_no_delete_is_ever_planned_for_an_unlabelled_object(
    owners_present: list[str], forced: bool
) -> None:
    wanted = policy("prod-default-deny")
    observed = {wanted.ref: foreign(wanted)}
    adopt = AdoptPolicy.FORCE if forced else AdoptPolicy.NEVER
    owners = {name: OwnerState(adopt=adopt, active=False) for name in owners_present}
    assert diff_namespace({}, (), namespace(), observed, owners).deletes == ()


# ----------------------------------------------------------------------------- ownership, repair


def _with_managers(body: dict[str, Any], *managers: str) -> Any:
    metadata = {**body["metadata"], "uid": "uid-1", "resourceVersion": "9"}
    metadata["managedFields"] = [
        {"manager": manager, "operation": "Apply" if manager == "baseline-operator" else "Update"}
        for manager in managers
    ]
    return observe({**body, "metadata": metadata})


def test_a_field_another_manager_added_is_repaired_by_a_replace() -> None:
    # Issue 7, item 1: `kubectl patch` narrows the default deny's podSelector.
    wanted = policy("prod-default-deny")
    body = as_applied(wanted)
    narrowed = {**body, "spec": {**body["spec"], "podSelector": {"matchLabels": {"x": "y"}}}}
    observed = {wanted.ref: _with_managers(narrowed, "baseline-operator", "kubectl-patch")}
    (apply,) = diff_namespace({}, (wanted,), namespace(), observed, ACTIVE).applies
    assert apply.reason is ApplyReason.UPDATE
    assert apply.repair is Repair.REPLACE
    assert apply.resource_version == "9"


def test_a_replace_keeps_the_finalizers_of_others() -> None:
    wanted = policy("prod-default-deny")
    body = as_applied(wanted)
    body = {**body, "metadata": {**body["metadata"], "finalizers": ["example.com/x"]}}
    edited = {**body, "spec": {**body["spec"], "ingress": [{}]}}
    observed = {wanted.ref: _with_managers(edited, "baseline-operator", "kubectl-edit")}
    (apply,) = diff_namespace({}, (wanted,), namespace(), observed, ACTIVE).applies
    assert apply.finalizers == ("example.com/x",)


def test_a_copy_carrying_the_labels_is_reported_never_deleted() -> None:
    # Issue 7, item 4: a tenant copies a generated RoleBinding under another name.
    copied = policy("my-own-policy")
    observed = {copied.ref: _with_managers(copied.body, "kubectl-create")}
    changes = diff_namespace({}, (), namespace(), observed, ACTIVE)
    assert changes.deletes == ()
    (conflict,) = changes.conflicts
    assert conflict.ref == copied.ref and conflict.baseline == "prod"
    assert "left alone" in conflict.message


def test_a_generated_name_without_the_operators_apply_is_not_deleted() -> None:
    lookalike = policy("prod-ingress-web")
    observed = {lookalike.ref: _with_managers(lookalike.body, "kubectl-create")}
    changes = diff_namespace({}, (), namespace(), observed, ACTIVE)
    assert changes.deletes == () and len(changes.conflicts) == 1


def test_an_operator_applied_object_of_a_name_it_does_not_generate_is_not_deleted() -> None:
    odd = policy("something-else")
    observed = {odd.ref: _with_managers(odd.body, "baseline-operator")}
    changes = diff_namespace({}, (), namespace(), observed, ACTIVE)
    assert changes.deletes == () and len(changes.conflicts) == 1


def test_a_labelled_object_at_a_wanted_name_without_the_operators_apply_is_foreign() -> None:
    wanted = policy("prod-default-deny")
    widened = {**wanted.body, "spec": {**wanted.body["spec"], "ingress": [{}]}}
    observed = {wanted.ref: _with_managers(widened, "kubectl-create")}
    changes = diff_namespace({}, (wanted,), namespace(), observed, ACTIVE)
    assert changes.applies == ()
    assert "not made by baseline-operator" in changes.conflicts[0].message


def test_if_identical_refuses_a_widened_object() -> None:
    wanted = policy("prod-default-deny")
    owners = {"prod": OwnerState(adopt=AdoptPolicy.IF_IDENTICAL, active=True)}
    widened = foreign(wanted, podSelector={"matchLabels": {"nothing": "here"}})
    changes = diff_namespace({}, (wanted,), namespace(), {wanted.ref: widened}, owners)
    assert changes.applies == () and len(changes.conflicts) == 1


def test_force_replaces_a_different_foreign_object() -> None:
    wanted = policy("prod-default-deny")
    owners = {"prod": OwnerState(adopt=AdoptPolicy.FORCE, active=True)}
    observed = {wanted.ref: foreign(wanted, ingress=[{}])}
    (apply,) = diff_namespace({}, (wanted,), namespace(), observed, owners).applies
    assert apply.reason is ApplyReason.ADOPT and apply.repair is Repair.REPLACE


def test_observations_keep_no_body() -> None:
    observed = live(as_applied(policy("prod-default-deny")))
    assert not hasattr(observed, "body") and not hasattr(observed, "__dict__")
    assert observed.operator_applied and not observed.other_managers
    assert observed.field_digests == {}


def _namespace_with_managers(labels: dict[str, str], others: list[str]) -> NamespaceState:
    """A namespace as the server shows it: `others` label keys set by Argo CD."""

    def fields(keys: list[str]) -> dict[str, Any]:
        return {"f:metadata": {"f:labels": {f"f:{key}": {} for key in keys}}}

    ours = [key for key in labels if key not in others]
    body = {
        "metadata": {
            "name": "team-a",
            "labels": labels,
            "managedFields": [
                {"manager": "argocd-controller", "operation": "Apply", "fieldsV1": fields(others)},
                {"manager": "baseline-operator", "operation": "Apply", "fieldsV1": fields(ours)},
            ],
        }
    }
    return observe_namespace(body, "baseline-operator")


def test_pod_security_labels_another_manager_set_are_not_forced() -> None:
    enforce = "pod-security.kubernetes.io/enforce"
    state = _namespace_with_managers(
        {enforce: "privileged", "applied.security.baseline.dev/prod": "true"}, [enforce]
    )
    plan = {enforce: "restricted", "applied.security.baseline.dev/prod": "true"}
    owners = {"prod": OwnerState(active=True)}
    changes = diff_namespace(plan, (), state, {}, owners)
    assert changes.labels is None  # nothing to take over: the operator's label is in place
    assert pod_security_held_by_others(plan, state) == [
        f"namespace team-a: label {enforce}=privileged is set by another field manager,"
        " weaker than restricted; not overridden"
    ]
    # A stricter level someone else set is no conflict, and still not taken over.
    stricter = _namespace_with_managers({enforce: "restricted"}, [enforce])
    assert pod_security_held_by_others({enforce: "baseline"}, stricter) == []
    assert enforce not in (
        diff_namespace({enforce: "baseline"}, (), stricter, {}, owners).labels or {}
    )

"""Tamper protection (`<baseline>-protect`), evaluated: only the operator's identity passes.

The harness is the one tests/unit/test_admission_cel.py uses (the Rust CEL interpreter,
strict about missing fields as the API server is). Every case names who sends the
request and what it carries; nothing a request carries may stand in for who sent it.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from baseline_operator.policy.admission import (
    CLUSTER_CONTROLLER_USERNAMES,
    EXTERNAL_SECRETS_USERNAME,
    protect_message,
    render_cluster_objects,
)
from baseline_operator.policy.objects import VALIDATING_ADMISSION_POLICY
from tests.unit.conftest import make_baseline
from tests.unit.test_admission_cel import OPERATOR, Request, Verdict, evaluate_policy

NAMESPACE_CONTROLLER = "system:serviceaccount:kube-system:namespace-controller"
GARBAGE_COLLECTOR = "system:serviceaccount:kube-system:generic-garbage-collector"
EDITOR = "tenant-admin@example.com"
RBAC = "rbac.authorization.k8s.io"
ESO_FINALIZER = "externalsecrets.external-secrets.io/externalsecret-cleanup"
MANAGED = {
    "app.kubernetes.io/managed-by": "baseline-operator",
    "security.baseline.dev/baseline": "prod",
}


def protect_policy(
    operator: str = OPERATOR, eso: str = EXTERNAL_SECRETS_USERNAME
) -> dict[str, Any]:
    baseline = make_baseline("prod", protectGeneratedObjects=True)
    (policy,) = [
        item.body
        for item in render_cluster_objects(baseline, operator, eso)
        if item.ref.kind == VALIDATING_ADMISSION_POLICY
    ]
    return policy


PROTECT = protect_policy()


def _protect(request: Request) -> Verdict:
    return evaluate_policy(PROTECT, request)


def _allowed(request: Request) -> bool:
    verdict = _protect(request)
    assert verdict.matched
    return verdict.failed == []


def _role(labels: dict[str, str] | None = None, **metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {
            "name": "prod-sa.app",
            "namespace": "team-a",
            "uid": "1",
            "resourceVersion": "10",
            "labels": dict(MANAGED if labels is None else labels),
            "managedFields": [{"manager": "baseline-operator", "operation": "Apply"}],
            **metadata,
        },
        "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}],
    }


def _external_secret(**metadata: Any) -> dict[str, Any]:
    return {
        "apiVersion": "external-secrets.io/v1",
        "kind": "ExternalSecret",
        "metadata": {
            "name": "db",
            "namespace": "team-a",
            "uid": "2",
            "resourceVersion": "20",
            "labels": dict(MANAGED),
            **metadata,
        },
        "spec": {"secretStoreRef": {"name": "vault", "kind": "ClusterSecretStore"}},
    }


def _edited(obj: dict[str, Any], **changes: Any) -> dict[str, Any]:
    edited = copy.deepcopy(obj)
    edited["rules"][0]["verbs"] = ["*"]
    edited["metadata"] = {**edited["metadata"], **changes}
    return edited


def _with_finalizers(obj: dict[str, Any], *finalizers: str, **metadata: Any) -> dict[str, Any]:
    changed = copy.deepcopy(obj)
    changed["metadata"].update(finalizers=list(finalizers), resourceVersion="11", **metadata)
    return changed


APPLY_AS_OPERATOR = {
    "kind": "PatchOptions",
    "apiVersion": "meta.k8s.io/v1",
    "fieldManager": "baseline-operator",
    "force": True,
}
DELETE_WITH_UID = {
    "kind": "DeleteOptions",
    "apiVersion": "meta.k8s.io/v1",
    "propagationPolicy": "Background",
    "preconditions": {"uid": "1"},
}


# ----------------------------------------------------------------------------
# What is protected


@pytest.mark.parametrize(
    ("labels", "matched"),
    [
        (MANAGED, True),
        ({**MANAGED, "security.baseline.dev/baseline": "other"}, False),
        ({"app.kubernetes.io/managed-by": "baseline-operator"}, False),
        ({"security.baseline.dev/baseline": "prod"}, False),
        ({}, False),
    ],
)
def test_only_objects_of_this_baseline_are_protected(labels: dict[str, str], matched: bool) -> None:
    role = _role(labels)
    assert _protect(Request("UPDATE", _edited(role), role)).matched is matched
    assert _protect(Request("DELETE", None, role)).matched is matched
    assert _protect(Request("CREATE", role)).matched is matched


def test_an_object_without_labels_at_all_is_not_protected() -> None:
    role = _role()
    del role["metadata"]["labels"]
    assert not _protect(Request("DELETE", None, role)).matched


def test_stripping_the_labels_does_not_escape_protection() -> None:
    role = _role()
    verdict = _protect(Request("UPDATE", _edited(role, labels={}), role))
    assert verdict.matched
    assert verdict.messages == [protect_message("prod")]


def test_putting_the_labels_on_a_foreign_object_is_refused() -> None:
    foreign = _role(labels={})
    assert not _allowed(Request("UPDATE", _role(), foreign))


# ----------------------------------------------------------------------------
# Who passes: identity only


def test_an_editor_may_not_edit_relabel_or_delete() -> None:
    role = _role()
    relabelled = copy.deepcopy(role)
    relabelled["metadata"]["labels"]["x"] = "y"
    for request in (
        Request("UPDATE", _edited(role), role, username=EDITOR),
        Request("UPDATE", relabelled, role, username=EDITOR),
        Request("DELETE", None, role, username=EDITOR),
    ):
        assert _protect(request).messages == [protect_message("prod")]


def test_naming_the_operators_field_manager_is_no_pass() -> None:
    # Issue 7, item 2: `kubectl apply --server-side --field-manager=baseline-operator`.
    role = _role()
    request = Request("UPDATE", _edited(role), role, username=EDITOR, options=APPLY_AS_OPERATOR)
    assert not _allowed(request)


def test_a_delete_with_a_uid_precondition_is_no_pass() -> None:
    request = Request("DELETE", None, _role(), username=EDITOR, options=DELETE_WITH_UID)
    assert not _allowed(request)


def test_the_operator_may_create_edit_and_delete_whatever_it_sends() -> None:
    role = _role()
    for request in (
        Request("CREATE", role, username=OPERATOR),
        Request("UPDATE", _edited(role), role, username=OPERATOR),
        Request("UPDATE", _edited(role), role, username=OPERATOR, options=APPLY_AS_OPERATOR),
        Request("UPDATE", _with_finalizers(role, "x"), role, username=OPERATOR),
        Request("DELETE", None, role, username=OPERATOR),
        Request("DELETE", None, role, username=OPERATOR, options=DELETE_WITH_UID),
    ):
        assert _allowed(request), request


@pytest.mark.parametrize("username", CLUSTER_CONTROLLER_USERNAMES)
def test_the_cluster_controllers_may_delete_so_namespace_deletion_works(username: str) -> None:
    role = _role()
    assert _allowed(Request("DELETE", None, role, username=username))
    # The garbage collector removes the foregroundDeletion finalizer with an update.
    deleting = _with_finalizers(role, "foregroundDeletion", deletionTimestamp="t")
    released = _with_finalizers(deleting, deletionTimestamp="t")
    assert _allowed(Request("UPDATE", released, deleting, username=username))


@pytest.mark.parametrize("username", CLUSTER_CONTROLLER_USERNAMES)
def test_the_cluster_controllers_never_create_look_alikes(username: str) -> None:
    assert not _allowed(Request("CREATE", _role(), username=username))


def test_another_service_account_of_the_operators_namespace_is_refused() -> None:
    role = _role()
    request = Request("DELETE", None, role, username=OPERATOR.replace("baseline-operator", "x", 1))
    assert not _allowed(request)


def test_the_operator_is_whoever_the_caller_names() -> None:
    # Run from a workstation, the operator passes the user it authenticates as.
    workstation = "platform-admin@example.com"
    policy = protect_policy(operator=workstation)
    role = _role()
    assert evaluate_policy(policy, Request("DELETE", None, role, workstation)).failed == []
    assert evaluate_policy(policy, Request("DELETE", None, role, OPERATOR)).failed == [0]


# ----------------------------------------------------------------------------
# Copies: ownership labels cannot be put on new objects


def test_a_copy_carrying_the_managed_labels_is_refused_on_create() -> None:
    # Issue 7, item 4: get -o yaml, a new name, new subjects, create.
    copied = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "my-admins", "namespace": "team-a", "labels": dict(MANAGED)},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "admin",
        },
        "subjects": [{"kind": "User", "name": "mallory", "apiGroup": "rbac.authorization.k8s.io"}],
    }
    verdict = _protect(Request("CREATE", copied, username=EDITOR))
    assert verdict.matched and verdict.messages == [protect_message("prod")]
    assert _allowed(Request("CREATE", copied, username=OPERATOR))


def test_a_copy_with_only_one_of_the_labels_is_not_this_baselines_business() -> None:
    half = _role(labels={"app.kubernetes.io/managed-by": "baseline-operator"})
    assert not _protect(Request("CREATE", half, username=EDITOR)).matched


# ----------------------------------------------------------------------------
# Finalizers


def test_an_editor_may_not_add_or_remove_a_finalizer() -> None:
    role = _role()
    finalized = _with_finalizers(role, "example.com/hold")
    assert not _allowed(Request("UPDATE", finalized, role, username=EDITOR))
    assert not _allowed(Request("UPDATE", role, finalized, username=EDITOR))


def test_eso_may_add_and_remove_its_own_finalizer_on_external_secrets() -> None:
    secret = _external_secret()
    finalized = _with_finalizers(secret, ESO_FINALIZER)
    eso = EXTERNAL_SECRETS_USERNAME
    assert _allowed(Request("UPDATE", finalized, secret, username=eso))
    deleting = _with_finalizers(secret, ESO_FINALIZER, deletionTimestamp="t")
    released = _with_finalizers(secret, deletionTimestamp="t")
    assert _allowed(Request("UPDATE", released, deleting, username=eso))


def test_only_eso_may_touch_the_eso_finalizer() -> None:
    secret = _external_secret()
    finalized = _with_finalizers(secret, ESO_FINALIZER)
    assert not _allowed(Request("UPDATE", finalized, secret, username=EDITOR))


@pytest.mark.parametrize(
    "change",
    [
        lambda obj: obj["metadata"].update(finalizers=["example.com/hold"]),
        lambda obj: obj["metadata"].update(finalizers=[ESO_FINALIZER], annotations={"a": "b"}),
        lambda obj: obj["metadata"].update(ownerReferences=[{"kind": "ConfigMap", "name": "c"}]),
        lambda obj: obj["spec"].update(target={"name": "elsewhere"}),
        lambda obj: obj["metadata"]["labels"].pop("security.baseline.dev/baseline"),
    ],
    ids=["foreign-finalizer", "finalizer-and-annotation", "owner-reference", "spec", "label"],
)
def test_eso_may_change_nothing_else(change: Any) -> None:
    secret = _external_secret()
    changed = copy.deepcopy(secret)
    change(changed)
    assert not _allowed(Request("UPDATE", changed, secret, username=EXTERNAL_SECRETS_USERNAME))


def test_eso_may_not_touch_other_kinds_or_delete() -> None:
    role = _role()
    finalized = _with_finalizers(role, ESO_FINALIZER)
    eso = EXTERNAL_SECRETS_USERNAME
    assert not _allowed(Request("UPDATE", finalized, role, username=eso))
    assert not _allowed(Request("DELETE", None, _external_secret(), username=eso))
    assert not _allowed(Request("CREATE", _external_secret(), username=eso))


def test_the_eso_user_is_configurable() -> None:
    other = "system:serviceaccount:eso:eso"
    policy = protect_policy(eso=other)
    secret = _external_secret()
    finalized = _with_finalizers(secret, ESO_FINALIZER)
    assert evaluate_policy(policy, Request("UPDATE", finalized, secret, other)).failed == []
    default = Request("UPDATE", finalized, secret, EXTERNAL_SECRETS_USERNAME)
    assert evaluate_policy(policy, default).failed == [0]


def test_creates_updates_and_deletes_are_matched_for_every_generated_kind() -> None:
    rules = PROTECT["spec"]["matchConstraints"]["resourceRules"]
    assert all(rule["operations"] == ["CREATE", "UPDATE", "DELETE"] for rule in rules)
    resources = {resource for rule in rules for resource in rule["resources"]}
    assert resources == {
        "serviceaccounts",
        "limitranges",
        "resourcequotas",
        "networkpolicies",
        "roles",
        "rolebindings",
        "externalsecrets",
    }

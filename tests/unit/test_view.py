"""The view's bookkeeping of the operator's own writes, and the sharing of cache entries."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from baseline_operator.api.kinds import NAMESPACE, NETWORK_POLICY, SERVICE_ACCOUNT, ObjectRef
from baseline_operator.controller.informer import Informer
from baseline_operator.controller.view import ClusterView
from baseline_operator.kube.client import WatchEvent
from baseline_operator.policy.diff import observe, observe_namespace

MANAGED = {
    "app.kubernetes.io/managed-by": "baseline-operator",
    "security.baseline.dev/baseline": "prod",
}


def policy(namespace: str, version: str, uid: str = "u-1") -> dict[str, Any]:
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": "default-deny",
            "namespace": namespace,
            "uid": uid,
            "resourceVersion": version,
            "labels": dict(MANAGED),
            "managedFields": [{"manager": "baseline-operator", "operation": "Update"}],
        },
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }


def view() -> tuple[ClusterView, Informer[Any]]:
    def informer(kind: Any, transform: Any) -> Informer[Any]:
        return Informer(None, kind, transform, lambda key, old, new: None)  # type: ignore[arg-type]

    policies = informer(NETWORK_POLICY, observe)
    subject = ClusterView(
        informer(None, lambda body: None),
        informer(NAMESPACE, lambda body: observe_namespace(body, "baseline-operator")),
        {NETWORK_POLICY: policies},
        informer(SERVICE_ACCOUNT, observe),
    )
    return subject, policies


def test_the_watch_showing_the_written_version_reuses_the_entry_made_from_the_answer() -> None:
    subject, _ = view()
    ref = ObjectRef(NETWORK_POLICY, "team-a", "default-deny")
    subject.wrote(ref, policy("team-a", "7"))

    echoed = subject.observed(policy("team-a", "7"))
    assert echoed is subject.objects_in("team-a")[ref]  # not observed a second time
    assert subject.echoes_own_write(ref, echoed)

    later = subject.observed(policy("team-a", "8"))  # someone wrote after the operator
    assert later is not echoed
    assert later.resource_version == "8"
    assert not subject.echoes_own_write(ref, later)


def test_a_watched_event_with_no_write_pending_is_observed_and_is_news() -> None:
    subject, _ = view()
    ref = ObjectRef(NETWORK_POLICY, "team-a", "default-deny")
    entry = subject.observed(policy("team-a", "3"))
    assert entry == observe(policy("team-a", "3"))
    assert not subject.echoes_own_write(ref, entry)


def test_the_watch_showing_the_operators_delete_is_an_echo_and_a_recreation_is_not() -> None:
    subject, policies = view()
    ref = ObjectRef(NETWORK_POLICY, "team-a", "default-deny")
    policies._apply(WatchEvent("ADDED", policy("team-a", "3")))
    subject.wrote(ref, None)  # the operator deleted it
    assert subject.echoes_own_write(ref, None)
    assert not subject.echoes_own_write(ref, observe(policy("team-a", "9", uid="u-2")))


def test_equal_parts_of_entries_in_different_namespaces_are_held_once() -> None:
    # Parsed apart, as two watch events are: equal strings are distinct objects.
    one = observe(copy.deepcopy(policy("team-a", "3", uid="u-1")))
    two = observe(copy.deepcopy(policy("team-b", "4", uid="u-2")))
    assert one.labels == two.labels == MANAGED
    assert one.labels is two.labels
    assert one.essence is two.essence
    assert one.ref.name is two.ref.name
    assert one.owned_fields is two.owned_fields
    assert one.uid != two.uid
    assert one.ref.namespace != two.ref.namespace


def test_shared_label_sets_cannot_be_changed_through_an_entry() -> None:
    entry = observe(policy("team-a", "3"))
    with pytest.raises(TypeError):
        entry.labels["app.kubernetes.io/managed-by"] = "someone"  # type: ignore[index]
    assert observe(policy("team-b", "4")).labels == MANAGED

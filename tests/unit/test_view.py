"""The view's bookkeeping of the operator's own writes, and the sharing of cache entries."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from baseline_operator.api.kinds import NAMESPACE, NETWORK_POLICY, SERVICE_ACCOUNT, ObjectRef
from baseline_operator.api.sharing import shared_label_items
from baseline_operator.controller.informer import Informer
from baseline_operator.controller.view import ClusterView
from baseline_operator.kube.client import WatchEvent
from baseline_operator.policy.controls import _kept_ref
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
        return Informer(
            None,  # type: ignore[arg-type]
            kind,
            transform,
            lambda key, old, new: None,
            lambda entry: entry.resource_version,
        )

    policies = informer(NETWORK_POLICY, observe)
    subject = ClusterView(
        informer(None, lambda body: None),
        informer(NAMESPACE, lambda body: observe_namespace(body, "baseline-operator")),
        {NETWORK_POLICY: policies},
        informer(SERVICE_ACCOUNT, observe),
    )
    return subject, policies


def test_the_watch_showing_the_written_version_reuses_the_entry_made_from_the_answer() -> None:
    subject, policies = view()
    ref = ObjectRef(NETWORK_POLICY, "team-a", "default-deny")
    subject.wrote(ref, policy("team-a", "7"), seen=None)

    echoed = subject.observed(policy("team-a", "7"))
    assert echoed is subject.objects_in("team-a")[ref]  # not observed a second time
    policies._apply(WatchEvent("ADDED", policy("team-a", "7")))
    assert subject.settle(ref, echoed)
    assert subject.pending_writes() == 0  # the watch shows it: nothing kept for it

    later = subject.observed(policy("team-a", "8"))  # someone wrote after the operator
    assert later is not echoed
    assert later.resource_version == "8"
    assert not subject.settle(ref, later)


def test_a_watched_event_with_no_write_pending_is_observed_and_is_news() -> None:
    subject, _ = view()
    ref = ObjectRef(NETWORK_POLICY, "team-a", "default-deny")
    entry = subject.observed(policy("team-a", "3"))
    assert entry == observe(policy("team-a", "3"))
    assert not subject.settle(ref, entry)


def test_the_watch_showing_the_operators_delete_is_an_echo_and_a_recreation_is_not() -> None:
    subject, policies = view()
    ref = ObjectRef(NETWORK_POLICY, "team-a", "default-deny")
    policies._apply(WatchEvent("ADDED", policy("team-a", "3")))
    subject.wrote(ref, None, seen="3")  # the operator deleted it
    assert not subject.settle(ref, observe(policy("team-a", "9", uid="u-2")))

    subject.wrote(ref, None, seen="3")
    policies._apply(WatchEvent("DELETED", policy("team-a", "9", uid="u-2")))
    assert subject.settle(ref, None)
    assert subject.pending_writes() == 0


def test_a_write_the_watch_has_not_shown_is_kept_and_read() -> None:
    subject, policies = view()
    ref = ObjectRef(NETWORK_POLICY, "team-a", "default-deny")
    policies._apply(WatchEvent("ADDED", policy("team-a", "3")))
    subject.wrote(ref, policy("team-a", "5"), seen="3")
    # An event of an earlier version (the watch is behind): the answer still wins.
    assert not subject.settle(ref, observe(policy("team-a", "3")))
    assert subject.objects_in("team-a")[ref].resource_version == "5"
    assert subject.pending_writes() == 1


def test_an_answer_that_arrives_after_the_watch_moved_on_hides_nothing() -> None:
    # The operator creates a ResourceQuota; before its answer is taken, the watch shows
    # the creation and the kube-controller-manager's status write after it. The answer
    # (the older version) must not stand in for the newer one: every PUT over it would
    # be refused as stale, for as long as nothing else changed the object.
    subject, policies = view()
    ref = ObjectRef(NETWORK_POLICY, "team-a", "default-deny")
    seen = subject.watched_version(ref)
    assert seen is None
    policies._apply(WatchEvent("ADDED", policy("team-a", "7")))
    policies._apply(WatchEvent("MODIFIED", policy("team-a", "8")))
    subject.wrote(ref, policy("team-a", "7"), seen=seen)
    assert subject.pending_writes() == 0
    assert subject.version_of(ref) == "8"
    assert subject.objects_in("team-a")[ref].resource_version == "8"

    # A second write sent at "8", answered "9", while the watch still shows "8": kept.
    subject.wrote(ref, policy("team-a", "9"), seen=subject.watched_version(ref))
    assert subject.version_of(ref) == "9"
    # A third sent at "8" whose answer comes once the watch shows "9": the earlier
    # answer kept for the object goes too, and the watch is the truth again.
    policies._apply(WatchEvent("MODIFIED", policy("team-a", "9")))
    subject.wrote(ref, policy("team-a", "10"), seen="8")
    assert subject.pending_writes() == 0
    assert subject.version_of(ref) == "9"


def test_a_kind_no_longer_served_takes_the_operators_recent_writes_of_it_along() -> None:
    # The operator created objects, then their CRD went away: none may come back to life
    # from a write's answer (a baseline's finalizer would wait on it for good).
    subject, policies = view()
    shown = ObjectRef(NETWORK_POLICY, "team-a", "default-deny")
    unshown = ObjectRef(NETWORK_POLICY, "team-b", "default-deny")
    subject.wrote(shown, policy("team-a", "7"), seen=None)
    subject.wrote(unshown, policy("team-b", "8"), seen=None)
    policies._apply(WatchEvent("ADDED", policy("team-a", "7")))
    assert subject.settle(shown, policies.get("team-a", "default-deny"))

    policies._not_served()
    assert subject.objects_in("team-a") == {}
    # Not shown by the watch before it stopped: the answer holds until a write finds the
    # kind gone (the writer tells the view).
    subject.kind_not_served(NETWORK_POLICY)
    assert subject.objects_in("team-b") == {}
    assert subject.pending_writes() == 0


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


def test_the_labels_a_baseline_sets_are_kept_once_for_every_namespace() -> None:
    # The Pod Security preview of each namespace is remembered with the labels it was
    # made for: equal sets, built afresh for each namespace, are one tuple.
    def wanted() -> dict[str, str]:
        return {
            "pod-security.kubernetes.io/enforce": "restricted",
            "security.baseline.dev/applied-prod": "true",
        }

    first, second = shared_label_items(wanted()), shared_label_items(wanted())
    assert first is second
    assert first == tuple(sorted(wanted().items()))
    assert shared_label_items({"a": "1"}) != first


def test_the_controls_kept_for_a_namespace_share_their_names() -> None:
    deny = ObjectRef(NETWORK_POLICY, "".join(["team-", "a"]), "".join(["prod-", "deny"]))
    again = ObjectRef(NETWORK_POLICY, "".join(["team-", "a"]), "".join(["prod-", "deny"]))
    assert deny.name is not again.name
    kept = [_kept_ref(ref) for ref in (deny, again)]
    assert kept[0] == deny
    assert kept[0].name is kept[1].name
    assert kept[0].namespace is kept[1].namespace

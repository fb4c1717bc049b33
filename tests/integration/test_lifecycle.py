"""Namespaces converge, drift is repaired, cleanup is exact, status tells the truth."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from baseline_operator.api.resource import parse_baseline
from baseline_operator.controller.namespaces import NamespaceReconciler
from baseline_operator.demo.emulator import write_requests
from baseline_operator.policy.layering import plan_namespace
from baseline_operator.policy.names import is_managed
from baseline_operator.policy.objects import (
    LIMIT_RANGE,
    NAMESPACE,
    NAMESPACED_KINDS,
    NETWORK_POLICY,
    POLICY_REPORT,
    ROLE_BINDING,
    SECURITY_BASELINE,
    SERVICE_ACCOUNT,
    VALIDATING_ADMISSION_POLICY,
    ObjectRef,
)
from baseline_operator.policy.workloads import POLICY_REPORT_NAME
from tests.support.cluster import (
    FULL_SPEC,
    Cluster,
    baseline,
    eventually,
    running_operator,
)

APPLIED = "applied.security.baseline.dev/prod"
ENFORCE = "pod-security.kubernetes.io/enforce"


def expected_refs(body: dict[str, Any], namespace: str) -> set[ObjectRef]:
    plan = plan_namespace(namespace, [parse_baseline(body)])
    return {item.ref for item in plan.objects if item.baseline is not None}


async def managed_refs(
    cluster: Cluster, namespace: str, owner: str | None = None
) -> set[ObjectRef]:
    refs = set()
    for kind in NAMESPACED_KINDS:
        for item in await cluster.list(kind, namespace):
            labels = item["metadata"].get("labels") or {}
            if is_managed(labels) and (
                owner is None or labels.get("security.baseline.dev/baseline") == owner
            ):
                refs.add(ObjectRef(kind, namespace, item["metadata"]["name"]))
    return refs


def namespace_patches(cluster: Cluster, namespace: str) -> list[bool]:
    """Whether each PATCH of a namespace sent so far was a dry run, in order."""
    path = f"/api/v1/namespaces/{namespace}"
    return [
        request.dry_run
        for request in write_requests(cluster.emulator, include_dry_run=True)
        if request.method == "PATCH" and request.path == path
    ]


async def test_a_new_namespace_gets_every_object_with_one_write_each(cluster: Cluster) -> None:
    async with running_operator(cluster) as operator:
        body = baseline(**FULL_SPEC)
        await cluster.create_baseline(body)
        await operator.settled()
        before = len(cluster.writes())

        await cluster.create_namespace("team-a", env="prod")
        wanted = expected_refs(body, "team-a")

        async def converged() -> bool:
            return await managed_refs(cluster, "team-a") == wanted

        await eventually(converged)
        await operator.settled()
        labels = await cluster.labels("team-a")
        assert labels[APPLIED] == "true"
        assert labels[ENFORCE] == "restricted"
        default_sa = await cluster.get(SERVICE_ACCOUNT, "team-a", "default")
        assert default_sa is not None
        assert default_sa["automountServiceAccountToken"] is False

        # the test's own: the namespace; the PolicyReport is the namespace's report, not posture
        new_writes = [
            w
            for w in cluster.writes()[before:]
            if w.path != "/api/v1/namespaces"
            and "/policyreports/" not in w.path
            and "/securitybaselines/" not in w.path  # kopf's own bookkeeping, if it lags
        ]
        # one create per generated object; the default ServiceAccount's field and the labels
        # by server-side apply
        assert len(new_writes) == len(wanted) + 2, [w.path for w in new_writes]
        assert all(("fieldManager", "baseline-operator") in w.query for w in new_writes)
        assert sorted(w.method for w in new_writes) == ["PATCH"] * 2 + ["POST"] * len(wanted)
        ready = await cluster.condition("prod", "Ready")
        assert ready["status"] == "True"
        assert ready["observedGeneration"] == 1
        assert (await cluster.status("prod"))["namespaces"]["compliant"] == 1


async def test_raising_the_enforce_level_is_one_write_whose_answer_is_the_preview(
    cluster: Cluster,
) -> None:
    # The API server checks the running pods against a raised enforce level in the label
    # write itself and answers with a warning for each it would reject (the same check a
    # dry run makes): no dry run first. tests/e2e/test_podsecurity.py shows those warnings
    # reaching the status and an Event on a real API server.
    async with running_operator(cluster) as operator:
        await cluster.create_baseline(baseline(**FULL_SPEC))
        await operator.settled()
        await cluster.create_namespace("team-a", env="prod")

        async def raised() -> bool:
            return (await cluster.labels("team-a")).get(ENFORCE) == "restricted"

        await eventually(raised)
        await operator.settled()
    assert namespace_patches(cluster, "team-a") == [False]  # not a dry run


async def test_an_audit_baseline_looks_at_the_enforce_level_with_a_dry_run_only(
    cluster: Cluster,
) -> None:
    # Audit mode writes nothing: what a raised enforce level would reject is asked of the
    # API server with a dry run of the label change.
    async with running_operator(cluster) as operator:
        await cluster.create_namespace("team-a", env="prod")
        await cluster.create_baseline(baseline(**FULL_SPEC, mode="Audit"))

        async def audited() -> bool:
            return (await cluster.condition("prod", "Ready")).get("reason") == "Audited"

        await eventually(audited)
        await operator.settled()
    assert namespace_patches(cluster, "team-a") == [True]  # a dry run only
    assert ENFORCE not in await cluster.labels("team-a")


async def test_relabelled_namespace_loses_the_baselines_objects_and_labels(
    cluster: Cluster,
) -> None:
    async with running_operator(cluster) as operator:
        await cluster.create_namespace("team-a", env="prod", team="a")
        await cluster.create_baseline(baseline(**FULL_SPEC))

        async def applied() -> bool:
            return APPLIED in await cluster.labels("team-a")

        await eventually(applied)
        await operator.settled()
        await cluster.merge_patch(
            NAMESPACE, None, "team-a", {"metadata": {"labels": {"env": None}}}
        )

        async def cleaned() -> bool:
            labels = await cluster.labels("team-a")
            return not await managed_refs(cluster, "team-a") and APPLIED not in labels

        await eventually(cleaned)
        labels = await cluster.labels("team-a")
        assert ENFORCE not in labels
        assert labels["team"] == "a"  # labels the operator did not set are untouched
        await operator.settled()
        assert (await cluster.status("prod"))["namespaces"]["selected"] == 0


async def test_baseline_edits_update_add_and_remove_objects(cluster: Cluster) -> None:
    async with running_operator(cluster):
        await cluster.create_namespace("team-a", env="prod")
        body = baseline(**FULL_SPEC)
        await cluster.create_baseline(body)

        async def converged() -> bool:
            return await managed_refs(cluster, "team-a") == expected_refs(body, "team-a")

        await eventually(converged)
        edited = copy.deepcopy(body["spec"])
        edited["podSecurity"] = {"enforce": "baseline"}
        edited["networkPolicy"]["ingress"] = [{"name": "from-api", "ports": [{"port": 9000}]}]
        del edited["resources"]
        await cluster.merge_patch(
            SECURITY_BASELINE,
            None,
            "prod",
            {
                "spec": {
                    "podSecurity": {"enforce": "baseline", "warn": None},
                    "networkPolicy": {"ingress": edited["networkPolicy"]["ingress"]},
                    "resources": None,
                }
            },
        )
        body["spec"] = edited

        await eventually(converged)
        labels = await cluster.labels("team-a")
        assert labels[ENFORCE] == "baseline"
        assert "pod-security.kubernetes.io/warn" not in labels
        policy = await cluster.get(NETWORK_POLICY, "team-a", "prod-ingress-from-api")
        assert policy is not None
        assert policy["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 9000}]
        assert await cluster.get(LIMIT_RANGE, "team-a", "prod-limits") is None


async def test_deleted_and_edited_objects_are_repaired(cluster: Cluster) -> None:
    async with running_operator(cluster) as operator:
        await cluster.create_namespace("team-a", env="prod")
        await cluster.create_baseline(baseline(**FULL_SPEC))

        async def has_binding() -> bool:
            return await cluster.get(ROLE_BINDING, "team-a", "prod-viewers") is not None

        await eventually(has_binding)
        await operator.settled()

        await cluster.delete(NETWORK_POLICY, "team-a", "prod-default-deny")
        await cluster.merge_patch(
            ROLE_BINDING,
            "team-a",
            "prod-viewers",
            {
                "subjects": [
                    {"kind": "Group", "name": "everyone", "apiGroup": "rbac.authorization.k8s.io"}
                ]
            },
        )
        await cluster.merge_patch(
            NAMESPACE, None, "team-a", {"metadata": {"labels": {ENFORCE: "privileged"}}}
        )

        async def repaired() -> bool:
            policy = await cluster.get(NETWORK_POLICY, "team-a", "prod-default-deny")
            binding = await cluster.get(ROLE_BINDING, "team-a", "prod-viewers")
            labels = await cluster.labels("team-a")
            return (
                policy is not None
                and binding is not None
                and binding["subjects"][0]["name"] == "team"
                and labels.get(ENFORCE) == "restricted"
            )

        await eventually(repaired)


async def test_foreign_object_with_our_name_is_untouched_and_reported(cluster: Cluster) -> None:
    async with running_operator(cluster) as operator:
        await cluster.create_namespace("team-a", env="prod")
        theirs = {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {
                "name": "prod-default-deny",
                "namespace": "team-a",
                "labels": {"owner": "ops"},
            },
            "spec": {"podSelector": {"matchLabels": {"app": "x"}}, "policyTypes": ["Ingress"]},
        }
        await cluster.kube.create(NETWORK_POLICY, "team-a", copy.deepcopy(theirs))
        await cluster.create_baseline(baseline(**FULL_SPEC))

        async def reported() -> bool:
            return (await cluster.condition("prod", "Conflicted")).get("status") == "True"

        await eventually(reported)
        await operator.settled()
        policy = await cluster.get(NETWORK_POLICY, "team-a", "prod-default-deny")
        assert policy is not None
        assert policy["spec"] == theirs["spec"]
        assert policy["metadata"]["labels"] == {"owner": "ops"}
        assert not any("/networkpolicies/prod-default-deny" in w.path for w in cluster.writes())
        status = await cluster.status("prod")
        assert status["namespaces"]["conflicted"] == 1
        assert status["nonCompliant"][0]["namespace"] == "team-a"
        assert "not made by baseline-operator" in status["nonCompliant"][0]["message"]
        # everything else was still applied
        assert await cluster.get(ROLE_BINDING, "team-a", "prod-viewers") is not None


async def test_deleted_baseline_removes_everything_and_its_finalizer(cluster: Cluster) -> None:
    async with running_operator(cluster) as operator:
        await cluster.create_namespace("team-a", env="prod", team="a")
        await cluster.create_namespace("team-b", env="prod")
        await cluster.create_baseline(
            baseline(**FULL_SPEC, admission={"denyPrivileged": True}, protectGeneratedObjects=True)
        )

        async def applied() -> bool:
            return all(
                [
                    APPLIED in await cluster.labels("team-a"),
                    APPLIED in await cluster.labels("team-b"),
                ]
            )

        await eventually(applied)
        body = await cluster.get(SECURITY_BASELINE, None, "prod")
        assert body is not None
        assert "security.baseline.dev/finalizer" in body["metadata"]["finalizers"]
        await operator.settled()
        await cluster.delete(NAMESPACE, None, "team-b")  # already gone when the baseline goes
        await cluster.delete(SECURITY_BASELINE, None, "prod")

        async def gone() -> bool:
            return await cluster.get(SECURITY_BASELINE, None, "prod") is None

        await eventually(gone)
        assert await managed_refs(cluster, "team-a") == set()
        labels = await cluster.labels("team-a")
        assert labels == {"team": "a", "env": "prod", "kubernetes.io/metadata.name": "team-a"} or (
            APPLIED not in labels and ENFORCE not in labels
        )
        assert await cluster.list(VALIDATING_ADMISSION_POLICY) == []
        sa = await cluster.get(SERVICE_ACCOUNT, "team-a", "default")
        assert sa is None or "automountServiceAccountToken" not in sa


async def test_orphan_cleanup_leaves_objects(cluster: Cluster) -> None:
    async with running_operator(cluster) as operator:
        await cluster.create_namespace("team-a", env="prod")
        await cluster.create_baseline(baseline(**FULL_SPEC, cleanupPolicy="Orphan"))

        async def applied() -> bool:
            return APPLIED in await cluster.labels("team-a")

        await eventually(applied)
        await operator.settled()
        made = await managed_refs(cluster, "team-a")
        await cluster.delete(SECURITY_BASELINE, None, "prod")

        async def gone() -> bool:
            return await cluster.get(SECURITY_BASELINE, None, "prod") is None

        await eventually(gone)
        assert await managed_refs(cluster, "team-a") == made
        assert APPLIED not in await cluster.labels("team-a")


async def test_audit_mode_writes_nothing_and_reports(cluster: Cluster) -> None:
    async with running_operator(cluster) as operator:
        await cluster.create_namespace("team-a", env="prod")
        await operator.settled()
        before = len(cluster.writes())
        await cluster.create_baseline(baseline(**FULL_SPEC, mode="Audit"))

        async def audited() -> bool:
            return (await cluster.condition("prod", "Ready")).get("reason") == "Audited"

        await eventually(audited)
        await operator.settled()
        # Nothing in namespaces or their objects; only the test's own creation of the baseline,
        # kopf's bookkeeping (finalizer, last-handled configuration) on the baseline itself,
        # and the namespace's PolicyReport, which reports the audit (skip, what would change).
        writes = [
            w
            for w in cluster.writes()[before:]
            if "/securitybaselines" not in w.path and "/policyreports/" not in w.path
        ]
        assert writes == []
        report = await cluster.get(POLICY_REPORT, "team-a", POLICY_REPORT_NAME)
        assert report is not None
        (audit,) = [r for r in report["results"] if r.get("category") == "posture"]
        assert (audit["rule"], audit["result"]) == ("audit-mode", "skip")
        status = await cluster.status("prod")
        assert status["namespaces"]["drifted"] == 1
        report = status["nonCompliant"][0]
        assert report["reason"] == "WouldChange"
        assert (
            f"would create {len(expected_refs(baseline(**FULL_SPEC), 'team-a'))} objects:"
            in report["message"]
        )
        assert "NetworkPolicy prod-default-deny" in report["message"]
        assert "pod-security.kubernetes.io/enforce=restricted" in report["message"]


async def test_a_resync_in_sync_writes_nothing(cluster: Cluster) -> None:
    await cluster.create_namespace("team-a", env="prod")
    await cluster.create_namespace("team-b", env="prod")
    await cluster.create_baseline(baseline(**FULL_SPEC))
    async with running_operator(cluster, resync_seconds=0.5) as operator:
        await operator.settled(quiet=1.0)
        before = len(write_requests_all(cluster))
        reconciled = operator.runtime.namespace_reconciler.reconciled
        count = reconciled["team-a"]
        await asyncio.sleep(1.6)  # three resync periods
        await operator.settled()
        assert reconciled["team-a"] >= count + 2  # the resyncs did run
        assert write_requests_all(cluster)[before:] == []


async def test_a_restart_in_sync_writes_nothing(cluster: Cluster) -> None:
    await cluster.create_namespace("team-a", env="prod")
    await cluster.create_baseline(baseline(**FULL_SPEC))
    async with running_operator(cluster) as operator:

        async def applied() -> bool:
            return (await cluster.condition("prod", "Ready")).get("status") == "True"

        await eventually(applied)
        await operator.settled(quiet=1.0)
    before = len(write_requests_all(cluster))
    async with running_operator(cluster) as operator:
        await operator.settled(quiet=1.0)
        assert "team-a" in operator.runtime.status.outcomes_of("prod")
    assert write_requests_all(cluster)[before:] == []


async def test_a_restart_serves_a_namespace_created_while_it_was_down_first(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    for index in range(5):
        await cluster.create_namespace(f"a-{index}", env="prod")
    await cluster.create_baseline(baseline(**FULL_SPEC))
    async with running_operator(cluster) as operator:
        await operator.settled(quiet=1.0)
    # Last in name order: queued by name, it would wait behind every namespace in place.
    await cluster.create_namespace("z-new", env="prod")
    order: list[str] = []
    reconcile = NamespaceReconciler.reconcile

    async def recorded(self: NamespaceReconciler, name: str) -> None:
        order.append(name)
        await reconcile(self, name)

    monkeypatch.setattr(NamespaceReconciler, "reconcile", recorded)
    async with running_operator(cluster) as operator:
        await operator.settled(quiet=1.0)
    assert order[0] == "z-new", order
    assert (await cluster.labels("z-new")).get(ENFORCE) == "restricted"
    assert {"a-0", "a-4"} <= set(order)  # the rest is still looked at


async def test_injected_429_and_500_still_converge(cluster: Cluster) -> None:
    async with running_operator(cluster) as operator:
        from baseline_operator.demo.emulator import fail_next

        await operator.settled()
        fail_next(
            cluster.emulator,
            "patch",
            "networking.k8s.io/v1/networkpolicies",
            times=3,
            status=429,
            retry_after=0,
        )
        fail_next(cluster.emulator, "patch", "v1/namespaces", times=2, status=500, retry_after=None)
        body = baseline(**FULL_SPEC)
        await cluster.create_baseline(body)
        await cluster.create_namespace("team-a", env="prod")

        async def converged() -> bool:
            labels = await cluster.labels("team-a")
            return APPLIED in labels and await managed_refs(cluster, "team-a") == expected_refs(
                body, "team-a"
            )

        await eventually(converged)
        await operator.settled()
        assert (await cluster.condition("prod", "Ready"))["status"] == "True"


async def test_invalid_spec_changes_nothing(cluster: Cluster) -> None:
    async with running_operator(cluster) as operator:
        await cluster.create_namespace("team-a", env="prod")
        await cluster.create_baseline(baseline(**FULL_SPEC))

        async def applied() -> bool:
            return (await cluster.condition("prod", "Ready")).get("status") == "True"

        await eventually(applied)
        await operator.settled()
        made = await managed_refs(cluster, "team-a")
        labels = await cluster.labels("team-a")
        before = len(cluster.writes())
        # A rule the schema cannot check: except outside cidr.
        await cluster.merge_patch(
            SECURITY_BASELINE,
            None,
            "prod",
            {
                "spec": {
                    "networkPolicy": {
                        "egress": [
                            {
                                "name": "ext",
                                "to": [
                                    {
                                        "ipBlock": {
                                            "cidr": "10.0.0.0/8",
                                            "except": ["192.168.0.0/16"],
                                        }
                                    }
                                ],
                            }
                        ],
                    },
                    "resources": None,
                }
            },
        )

        async def refused() -> bool:
            return (await cluster.condition("prod", "Ready")).get("reason") == "InvalidSpec"

        await eventually(refused)
        await operator.settled()
        ready = await cluster.condition("prod", "Ready")
        assert "spec.networkPolicy.egress[0].to[0].ipBlock" in ready["message"]
        assert ready["observedGeneration"] == 2
        assert [w for w in cluster.writes()[before:] if "/securitybaselines" not in w.path] == []
        assert await managed_refs(cluster, "team-a") == made
        assert await cluster.labels("team-a") == labels


async def test_layered_baselines_share_a_namespace(cluster: Cluster) -> None:
    async with running_operator(cluster) as operator:
        await cluster.create_namespace("team-a", env="prod", team="a")
        await cluster.create_baseline(
            baseline(
                "org",
                namespaceSelector={},
                priority=10,
                podSecurity={"enforce": "baseline"},
                resources={"limitRange": {"default": {"cpu": "1"}}},
            )
        )
        await cluster.create_baseline(
            baseline(
                "team",
                namespaceSelector={"matchLabels": {"team": "a"}},
                priority=5,
                podSecurity={"enforce": "restricted"},
                resources={"limitRange": {"default": {"cpu": "2"}}},
                networkPolicy={"defaultDeny": ["Ingress"]},
            )
        )

        async def layered() -> bool:
            labels = await cluster.labels("team-a")
            return (
                labels.get(ENFORCE) == "restricted"
                and (await cluster.condition("team", "Conflicted")).get("reason") == "Superseded"
            )

        await eventually(layered)
        await operator.settled()
        assert await cluster.get(LIMIT_RANGE, "team-a", "org-limits") is not None
        assert await cluster.get(LIMIT_RANGE, "team-a", "team-limits") is None
        assert await cluster.get(NETWORK_POLICY, "team-a", "team-default-deny") is not None
        assert "org" in (await cluster.condition("team", "Conflicted"))["message"]
        assert (await cluster.status("team"))["namespaces"]["superseded"] == 1


async def test_namespace_deletion_is_never_blocked(cluster: Cluster) -> None:
    async with running_operator(cluster) as operator:
        await cluster.create_namespace("team-a", env="prod")
        await cluster.create_baseline(baseline(**FULL_SPEC))

        async def applied() -> bool:
            return APPLIED in await cluster.labels("team-a")

        await eventually(applied)
        namespace = await cluster.get(NAMESPACE, None, "team-a")
        assert namespace is not None
        assert not namespace["metadata"].get("finalizers")
        assert not any(
            key.startswith("kopf") for key in namespace["metadata"].get("annotations", {})
        )
        await cluster.delete(NAMESPACE, None, "team-a")

        async def gone() -> bool:
            return await cluster.get(NAMESPACE, None, "team-a") is None

        await eventually(gone)
        await operator.settled()
        assert (await cluster.status("prod"))["namespaces"]["selected"] == 0


def write_requests_all(cluster: Cluster) -> list[Any]:
    """Every write, Events and status included: at rest there must be none at all."""
    assert cluster.emulator is not None
    return write_requests(cluster.emulator)


async def test_a_restart_repeats_no_warning(cluster: Cluster) -> None:
    """A conflict that status already reports is no news after a restart: no new Event."""
    from baseline_operator.policy.objects import EVENT

    await cluster.create_namespace("team-a", env="prod")
    await cluster.kube.create(
        NETWORK_POLICY,
        "team-a",
        {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {"name": "prod-default-deny", "namespace": "team-a"},
            "spec": {"podSelector": {}},
        },
    )
    await cluster.create_baseline(baseline(**FULL_SPEC))

    async def warnings() -> list[str]:
        return [e["reason"] for e in await cluster.list(EVENT, "default") if e["type"] == "Warning"]

    async with running_operator(cluster) as operator:

        async def reported() -> bool:
            return (await cluster.condition("prod", "Conflicted")).get("status") == "True"

        await eventually(reported)
        await operator.settled(quiet=1.2)
    first = await warnings()
    assert first.count("Conflict") == 2  # one on the namespace, one on the baseline
    async with running_operator(cluster) as operator:
        await operator.settled(quiet=1.2)
    assert await warnings() == first

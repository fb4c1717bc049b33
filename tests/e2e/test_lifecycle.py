"""Namespaces converge, drift is repaired, cleanup is exact: on a real API server.

The same scenarios as tests/integration/test_lifecycle.py (against the emulator), asserted
on what a real kube-apiserver stores and answers.
"""

from __future__ import annotations

import asyncio
import copy
import time
from typing import Any

import pytest
import yaml

from baseline_operator.api.resource import parse_baseline
from baseline_operator.policy.layering import plan_namespace
from baseline_operator.policy.names import applied_label
from baseline_operator.policy.objects import (
    EXTERNAL_SECRET,
    LIMIT_RANGE,
    NAMESPACE,
    NETWORK_POLICY,
    RESOURCE_QUOTA,
    ROLE_BINDING,
    SECURITY_BASELINE,
    SERVICE_ACCOUNT,
    VALIDATING_ADMISSION_POLICY,
    VALIDATING_ADMISSION_POLICY_BINDING,
    Kind,
    ObjectRef,
)
from tests.e2e.conftest import (
    E2E,
    ROOT,
    SPEC,
    contains,
    converged_on,
    eventually,
    expected_refs,
    kubectl,
    list_items,
    namespace_deleted,
    record_timing,
    served,
)

pytestmark = pytest.mark.e2e

PRODUCTION_EXAMPLE = (ROOT / "manifests/examples/production.yaml").read_text()

ENFORCE = "pod-security.kubernetes.io/enforce"
WARN = "pod-security.kubernetes.io/warn"


async def test_a_new_namespace_gets_every_object(e2e: E2E) -> None:
    async with e2e.operator() as operator:
        body = e2e.baseline_body(**SPEC)
        name = await e2e.create_baseline(body)
        await operator.settled()

        started = time.monotonic()
        namespace = await e2e.create_namespace("a", env="prod")
        await eventually(lambda: converged_on(e2e, body, [namespace]), what="convergence")
        record_timing("1 namespace: creation to every object and label", time.monotonic() - started)

        async def reported() -> bool:
            status = await e2e.cluster.status(name)
            ready = await e2e.cluster.condition(name, "Ready")
            return ready.get("status") == "True" and status["namespaces"]["compliant"] == 1

        await eventually(reported, what="status Ready")
        record_timing("1 namespace: creation to status Ready", time.monotonic() - started)
        ready = await e2e.cluster.condition(name, "Ready")
        assert ready["reason"] == "Converged"
        assert ready["observedGeneration"] == 1

        # What the server stores holds everything the operator rendered.
        plan = plan_namespace(namespace, [parse_baseline(body)])
        for item in plan.objects:
            live = await e2e.cluster.get(item.ref.kind, namespace, item.ref.name)
            assert live is not None, item.ref
            assert contains(live, item.body) == [], item.ref
        labels = await e2e.cluster.labels(namespace)
        assert labels[applied_label(name)] == "true"
        assert labels[ENFORCE] == "restricted"
        assert labels[WARN] == "restricted"
        namespace_body = await e2e.cluster.get(NAMESPACE, None, namespace)
        assert namespace_body is not None
        assert not namespace_body["metadata"].get("finalizers")
        assert not namespace_body["metadata"].get("annotations")


async def test_fifty_namespaces_at_once(e2e: E2E) -> None:
    async with e2e.operator() as operator:
        body = e2e.baseline_body(**SPEC)
        name = await e2e.create_baseline(body)
        await operator.settled()

        started = time.monotonic()
        namespaces = await asyncio.gather(
            *(e2e.create_namespace(f"n{index:02d}", env="prod") for index in range(50))
        )
        await eventually(
            lambda: converged_on(e2e, body, list(namespaces)), limit=120, what="convergence"
        )
        record_timing(
            "50 namespaces: creation to every object and label", time.monotonic() - started
        )

        async def reported() -> bool:
            status = await e2e.cluster.status(name)
            return bool(status.get("namespaces", {}).get("compliant") == 50)

        await eventually(reported, what="status compliant=50")
        record_timing("50 namespaces: creation to status", time.monotonic() - started)

        # Deleting a baseline that 50 namespaces hold is a mass removal: it waits for an
        # acknowledgement, and everything stays in place meanwhile.
        await e2e.cluster.delete(SECURITY_BASELINE, None, name)

        async def held() -> bool:
            return (await e2e.cluster.condition(name, "Ready")).get("reason") == "RemovalHeld"

        await eventually(held, what="the removal held")
        assert len(await e2e.owned_refs(name)) == len(
            set().union(*(expected_refs(body, namespace) for namespace in namespaces))
        )
        started = time.monotonic()
        await e2e.delete_baselines()
        record_timing("50 namespaces: baseline deletion (finalizer)", time.monotonic() - started)
        assert await e2e.owned_refs(name) == set()


async def test_the_production_example_converges(e2e: E2E) -> None:
    """The shipped example, with every RBAC section, as the shipped ClusterRole allows."""
    (example,) = yaml.safe_load_all(PRODUCTION_EXAMPLE)
    spec = example["spec"]
    del spec["namespaceSelector"], spec["excludeNamespaces"]
    if not await served(e2e.kube, EXTERNAL_SECRET):
        del spec["externalSecrets"]  # see test_external_secrets
    namespace = await e2e.create_namespace("a", env="prod")
    body = e2e.baseline_body("production", **spec)
    name = await e2e.create_baseline(body)
    async with e2e.operator():
        await eventually(lambda: converged_on(e2e, body, [namespace]), what="convergence")

        async def ready() -> dict[str, Any]:
            condition = await e2e.cluster.condition(name, "Ready")
            return condition if condition.get("reason") == "Converged" else {}

        await eventually(ready, what="Ready reason Converged")
        kinds = {ref.kind.kind for ref in await e2e.owned_refs(name)}
        assert {"Role", "RoleBinding", "ServiceAccount", "NetworkPolicy"} <= kinds


async def test_a_baseline_with_the_longest_name(e2e: E2E) -> None:
    """63 characters: generated names are shortened with a hash, the label key still fits."""
    suffix = "x" * (63 - len(e2e.prefix) - 1)
    namespace = await e2e.create_namespace("a", env="prod")
    body = e2e.baseline_body(suffix, **SPEC, admission={"denyPrivileged": True})
    name = await e2e.create_baseline(body)
    assert len(name) == 63
    async with e2e.operator():
        await eventually(lambda: converged_on(e2e, body, [namespace]), what="convergence")
        assert all(len(ref.name) <= 63 for ref in await e2e.owned_refs(name))
        await e2e.delete_baselines()
        assert await e2e.owned_refs(name) == set()
        assert applied_label(name) not in await e2e.cluster.labels(namespace)


async def test_relabelled_namespace_loses_the_objects_and_labels(e2e: E2E) -> None:
    async with e2e.operator() as operator:
        namespace = await e2e.create_namespace("a", env="prod", team="a")
        body = e2e.baseline_body(**SPEC)
        name = await e2e.create_baseline(body)
        await eventually(lambda: converged_on(e2e, body, [namespace]), what="convergence")
        await operator.settled()

        await e2e.cluster.merge_patch(
            NAMESPACE, None, namespace, {"metadata": {"labels": {"env": None}}}
        )

        async def cleaned() -> bool:
            labels = await e2e.cluster.labels(namespace)
            return not await e2e.owned_refs(name) and applied_label(name) not in labels

        await eventually(cleaned, what="cleanup")
        labels = await e2e.cluster.labels(namespace)
        assert not any(key.startswith("pod-security.kubernetes.io/") for key in labels)
        assert labels["team"] == "a"  # labels the operator did not set are kept
        assert labels["kubernetes.io/metadata.name"] == namespace
        account = await e2e.cluster.get(SERVICE_ACCOUNT, namespace, "default")
        assert account is not None
        assert "automountServiceAccountToken" not in account  # the field is released

        async def unselected() -> bool:
            status = await e2e.cluster.status(name)
            return bool(status.get("namespaces", {}).get("selected") == 0)

        await eventually(unselected, what="status selected=0")


async def test_baseline_edits_update_add_and_remove_objects(e2e: E2E) -> None:
    async with e2e.operator():
        namespace = await e2e.create_namespace("a", env="prod")
        body = e2e.baseline_body(**SPEC)
        name = await e2e.create_baseline(body)
        await eventually(lambda: converged_on(e2e, body, [namespace]), what="convergence")

        ingress = [{"name": "from-api", "ports": [{"port": 9000}]}]
        await e2e.cluster.merge_patch(
            SECURITY_BASELINE,
            None,
            name,
            {
                "spec": {
                    "podSecurity": {"enforce": "baseline", "warn": None},
                    "networkPolicy": {"ingress": ingress},
                    "resources": None,
                }
            },
        )
        edited = copy.deepcopy(body)
        edited["spec"]["podSecurity"] = {"enforce": "baseline"}
        edited["spec"]["networkPolicy"]["ingress"] = ingress
        del edited["spec"]["resources"]

        await eventually(lambda: converged_on(e2e, edited, [namespace]), what="the edit applied")
        labels = await e2e.cluster.labels(namespace)
        assert labels[ENFORCE] == "baseline"
        assert WARN not in labels
        policy = await e2e.cluster.get(NETWORK_POLICY, namespace, f"{name}-ingress-from-api")
        assert policy is not None
        assert policy["spec"]["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 9000}]
        assert await e2e.cluster.get(NETWORK_POLICY, namespace, f"{name}-ingress-from-web") is None
        assert await e2e.cluster.get(LIMIT_RANGE, namespace, f"{name}-limits") is None
        assert await list_items(e2e.kube, RESOURCE_QUOTA, namespace) == []

        async def reported() -> bool:
            ready = await e2e.cluster.condition(name, "Ready")
            return ready.get("status") == "True" and ready.get("observedGeneration") == 2

        await eventually(reported, what="Ready for generation 2")


async def test_deleted_and_edited_objects_are_repaired(e2e: E2E) -> None:
    async with e2e.operator() as operator:
        namespace = await e2e.create_namespace("a", env="prod")
        body = e2e.baseline_body(**SPEC)
        name = await e2e.create_baseline(body)
        await eventually(lambda: converged_on(e2e, body, [namespace]), what="convergence")
        await operator.settled()

        await e2e.cluster.delete(NETWORK_POLICY, namespace, f"{name}-default-deny")
        await e2e.cluster.merge_patch(
            ROLE_BINDING,
            namespace,
            f"{name}-viewers",
            {
                "subjects": [
                    {"kind": "Group", "name": "everyone", "apiGroup": "rbac.authorization.k8s.io"}
                ]
            },
        )
        await e2e.cluster.merge_patch(
            NAMESPACE,
            None,
            namespace,
            {"metadata": {"labels": {ENFORCE: "privileged", WARN: None}}},
        )
        await e2e.cluster.merge_patch(
            SERVICE_ACCOUNT, namespace, "default", {"automountServiceAccountToken": True}
        )

        async def repaired() -> bool:
            policy = await e2e.cluster.get(NETWORK_POLICY, namespace, f"{name}-default-deny")
            binding = await e2e.cluster.get(ROLE_BINDING, namespace, f"{name}-viewers")
            account = await e2e.cluster.get(SERVICE_ACCOUNT, namespace, "default")
            labels = await e2e.cluster.labels(namespace)
            return (
                policy is not None
                and binding is not None
                and [s["name"] for s in binding["subjects"]] == ["team"]
                and labels.get(WARN) == "restricted"
                and account is not None
                and account.get("automountServiceAccountToken") is False
            )

        await eventually(repaired, what="repair")

        # The enforce label another field manager set (a platform admin, Argo CD) is theirs:
        # not forced back (two managers forcing would flap), but reported, naming it.
        async def reported() -> bool:
            conflicted = await e2e.cluster.condition(name, "Conflicted")
            return conflicted.get("status") == "True" and ENFORCE in conflicted.get("message", "")

        await eventually(reported, what="the weaker enforce label reported")
        assert (await e2e.cluster.labels(namespace)).get(ENFORCE) == "privileged"


async def test_a_rule_added_to_a_generated_policy_is_removed(e2e: E2E) -> None:
    namespace = await e2e.create_namespace("a", env="prod")
    body = e2e.baseline_body(networkPolicy={"defaultDeny": ["Ingress", "Egress"]})
    name = await e2e.create_baseline(body)
    async with e2e.operator() as operator:
        await eventually(lambda: converged_on(e2e, body, [namespace]), what="convergence")
        await operator.settled()
        policy = f"{name}-default-deny"
        await e2e.cluster.merge_patch(
            NETWORK_POLICY, namespace, policy, {"spec": {"ingress": [{}]}}
        )

        async def repaired() -> bool:
            live = await e2e.cluster.get(NETWORK_POLICY, namespace, policy)
            return live is not None and not live["spec"].get("ingress")

        await eventually(repaired, limit=10, what="the allow-all rule removed")


async def test_adopt_if_identical_takes_over_an_identical_object(e2e: E2E) -> None:
    namespace = await e2e.create_namespace("a", env="prod")
    body = e2e.baseline_body(
        networkPolicy={"defaultDeny": ["Ingress", "Egress"]}, adopt="IfIdentical"
    )
    name = body["metadata"]["name"]
    (wanted,) = plan_namespace(namespace, [parse_baseline(body)]).objects
    theirs = copy.deepcopy(wanted.body)
    theirs["metadata"]["labels"] = {"owner": "ops"}
    await e2e.kube.create(NETWORK_POLICY, namespace, theirs)
    await e2e.create_baseline(body)
    async with e2e.operator():
        await eventually(lambda: converged_on(e2e, body, [namespace]), what="adoption")

        async def compliant() -> bool:
            status = await e2e.cluster.status(name)
            return bool(status.get("namespaces", {}).get("compliant") == 1)

        await eventually(compliant, what="status compliant")
        live = await e2e.cluster.get(NETWORK_POLICY, namespace, f"{name}-default-deny")
        assert live is not None
        assert contains(live, wanted.body) == []


async def test_adopt_force_leaves_nothing_of_the_foreign_object(e2e: E2E) -> None:
    namespace = await e2e.create_namespace("a", env="prod")
    body = e2e.baseline_body(networkPolicy={"defaultDeny": ["Ingress", "Egress"]}, adopt="Force")
    name = body["metadata"]["name"]
    policy = f"{name}-default-deny"
    theirs = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": policy, "namespace": namespace},
        "spec": {
            "podSelector": {"matchLabels": {"app": "x"}},
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"namespaceSelector": {}}]}],
        },
    }
    await e2e.kube.create(NETWORK_POLICY, namespace, theirs)
    await e2e.create_baseline(body)
    async with e2e.operator():
        await eventually(lambda: converged_on(e2e, body, [namespace]), what="adoption")
        live = await e2e.cluster.get(NETWORK_POLICY, namespace, policy)
        assert live is not None
        assert live["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


async def test_foreign_object_with_a_wanted_name_is_untouched(e2e: E2E) -> None:
    async with e2e.operator() as operator:
        namespace = await e2e.create_namespace("a", env="prod")
        body = e2e.baseline_body(**SPEC)
        name = body["metadata"]["name"]
        theirs = {
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": {
                "name": f"{name}-default-deny",
                "namespace": namespace,
                "labels": {"owner": "ops"},
            },
            "spec": {"podSelector": {"matchLabels": {"app": "x"}}, "policyTypes": ["Ingress"]},
        }
        created = await e2e.kube.create(NETWORK_POLICY, namespace, copy.deepcopy(theirs))
        await e2e.create_baseline(body)

        async def reported() -> dict[str, Any]:
            conflicted = await e2e.cluster.condition(name, "Conflicted")
            return conflicted if conflicted.get("status") == "True" else {}

        conflicted = await eventually(reported, what="Conflicted")
        await operator.settled()
        assert conflicted["reason"] == "ForeignObject"
        assert f"{name}-default-deny" in conflicted["message"]
        policy = await e2e.cluster.get(NETWORK_POLICY, namespace, f"{name}-default-deny")
        assert policy is not None
        assert policy["spec"] == theirs["spec"]
        assert policy["metadata"]["labels"] == {"owner": "ops"}
        assert policy["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
        assert [entry["manager"] for entry in policy["metadata"]["managedFields"]] == [
            entry["manager"] for entry in created["metadata"]["managedFields"]
        ]
        status = await e2e.cluster.status(name)
        assert status["namespaces"]["conflicted"] == 1
        report = status["nonCompliant"][0]
        assert report["namespace"] == namespace
        assert "not made by baseline-operator" in report["message"]
        assert f"{name}-default-deny" in report["message"]
        described = kubectl("describe", "securitybaseline", name)
        if described is not None:  # the conditions and the Warning Event
            assert described.returncode == 0, described.stderr
            assert "ForeignObject" in described.stdout
            assert "Conflict" in described.stdout.split("Events:")[-1]
        # Everything else was applied.
        wanted = expected_refs(body, namespace) - {
            ObjectRef(NETWORK_POLICY, namespace, f"{name}-default-deny")
        }
        assert await e2e.owned_refs(name) == wanted


async def _cluster_objects_of(e2e: E2E, name: str) -> list[str]:
    found = []
    for kind in (VALIDATING_ADMISSION_POLICY, VALIDATING_ADMISSION_POLICY_BINDING):
        found += [
            f"{kind.kind} {item['metadata']['name']}"
            for item in await list_items(
                e2e.kube, kind, labelSelector=f"security.baseline.dev/baseline={name}"
            )
        ]
    return found


async def test_deleted_baseline_removes_everything_even_with_a_namespace_gone(e2e: E2E) -> None:
    async with e2e.operator() as operator:
        first = await e2e.create_namespace("a", env="prod", team="a")
        second = await e2e.create_namespace("b", env="prod")
        body = e2e.baseline_body(
            **SPEC, admission={"denyPrivileged": True}, protectGeneratedObjects=True
        )
        name = await e2e.create_baseline(body)
        await eventually(lambda: converged_on(e2e, body, [first, second]), what="convergence")
        assert len(await _cluster_objects_of(e2e, name)) == 4
        stored = await e2e.cluster.get(SECURITY_BASELINE, None, name)
        assert stored is not None
        assert "security.baseline.dev/finalizer" in stored["metadata"]["finalizers"]
        await operator.settled()

        # The second namespace goes first (still terminating when the baseline goes).
        await e2e.cluster.delete(NAMESPACE, None, second)
        await e2e.cluster.delete(SECURITY_BASELINE, None, name)

        async def gone(kind: Kind, name: str) -> bool:
            return await e2e.cluster.get(kind, None, name) is None

        started = time.monotonic()
        await eventually(lambda: gone(SECURITY_BASELINE, name), what="the baseline's finalizer")
        record_timing(
            "baseline deletion with 2 namespaces (one terminating)", time.monotonic() - started
        )
        await namespace_deleted(e2e.kube, second)
        assert await e2e.owned_refs(name) == set()
        assert await _cluster_objects_of(e2e, name) == []
        labels = await e2e.cluster.labels(first)
        assert labels == {
            "kubernetes.io/metadata.name": first,
            "env": "prod",
            "team": "a",
            **e2e.scope_labels,
        }
        account = await e2e.cluster.get(SERVICE_ACCOUNT, first, "default")
        assert account is not None
        assert "automountServiceAccountToken" not in account
        managers = {entry["manager"] for entry in account["metadata"].get("managedFields", [])}
        assert "baseline-operator" not in managers


async def test_orphan_cleanup_leaves_the_objects(e2e: E2E) -> None:
    async with e2e.operator() as operator:
        namespace = await e2e.create_namespace("a", env="prod")
        body = e2e.baseline_body(**SPEC, cleanupPolicy="Orphan")
        name = await e2e.create_baseline(body)
        await eventually(lambda: converged_on(e2e, body, [namespace]), what="convergence")
        await operator.settled()
        made = await e2e.owned_refs(name)
        await e2e.cluster.delete(SECURITY_BASELINE, None, name)

        async def gone() -> bool:
            return await e2e.cluster.get(SECURITY_BASELINE, None, name) is None

        await eventually(gone, what="the baseline's finalizer")
        assert await e2e.owned_refs(name) == made
        assert applied_label(name) not in await e2e.cluster.labels(namespace)


async def test_layered_baselines_share_a_namespace(e2e: E2E) -> None:
    async with e2e.operator() as operator:
        namespace = await e2e.create_namespace("a", env="prod", team="a")
        org = await e2e.create_baseline(
            e2e.baseline_body(
                "org",
                selector={},
                priority=10,
                podSecurity={"enforce": "baseline", "warn": "restricted"},
                resources={"limitRange": {"default": {"cpu": "1"}}},
            )
        )
        team = await e2e.create_baseline(
            e2e.baseline_body(
                "team",
                selector={"matchLabels": {"team": "a"}},
                priority=5,
                podSecurity={"enforce": "restricted", "warn": "baseline"},
                resources={"limitRange": {"default": {"cpu": "2"}}},
                networkPolicy={"defaultDeny": ["Ingress"]},
            )
        )

        async def layered() -> bool:
            conflicted = await e2e.cluster.condition(team, "Conflicted")
            labels = await e2e.cluster.labels(namespace)
            return (
                labels.get(ENFORCE) == "restricted"
                and labels.get(WARN) == "restricted"
                and conflicted.get("reason") == "Superseded"
                and await e2e.cluster.get(NETWORK_POLICY, namespace, f"{team}-default-deny")
                is not None
            )

        await eventually(layered, what="layering")
        await operator.settled()
        limits = await list_items(e2e.kube, LIMIT_RANGE, namespace)
        assert [item["metadata"]["name"] for item in limits] == [f"{org}-limits"]
        assert limits[0]["spec"]["limits"][0]["default"] == {"cpu": "1"}
        conflicted = await e2e.cluster.condition(team, "Conflicted")
        assert org in conflicted["message"]
        assert "LimitRange" in conflicted["message"]
        assert (await e2e.cluster.status(team))["namespaces"]["superseded"] == 1
        assert (await e2e.cluster.condition(org, "Conflicted"))["status"] == "False"
        labels = await e2e.cluster.labels(namespace)
        assert labels[applied_label(org)] == labels[applied_label(team)] == "true"

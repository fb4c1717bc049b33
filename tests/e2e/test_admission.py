"""The admission policies a baseline generates, enforced by a real API server."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from baseline_operator.api.spec import AdmissionSection
from baseline_operator.kube.client import KubeApi
from baseline_operator.policy.admission import protect_message, workload_rules
from baseline_operator.policy.checklist import ADMISSION_CHECK_IDS, ChecklistConfig, check_object
from baseline_operator.policy.names import applied_label
from baseline_operator.policy.objects import (
    NAMESPACE,
    NETWORK_POLICY,
    POD,
    SECURITY_BASELINE,
    SERVICE_ACCOUNT,
    VALIDATING_ADMISSION_POLICY,
    Kind,
)
from tests.e2e.conftest import (
    CLUSTER_ROLE_BINDING,
    E2E,
    ROOT,
    Answer,
    attempt,
    close,
    converged_on,
    eventually,
    namespace_deleted,
    new_kube,
    object_path,
)

pytestmark = pytest.mark.e2e

ADMISSION: dict[str, Any] = {
    "denyPrivileged": True,
    "denyHostNamespaces": True,
    "denyHostPath": True,
    "allowedRegistries": ["registry.example.com/"],
    "requiredLabels": ["app"],
    "requireResourceRequests": True,
    "requireRunAsNonRoot": True,
    "validationActions": ["Deny"],
}
RULES = {rule.check_id: rule for rule in workload_rules(AdmissionSection.model_validate(ADMISSION))}
CHECKLIST = ChecklistConfig(
    tuple(ADMISSION["allowedRegistries"]), tuple(ADMISSION["requiredLabels"])
)
DEPLOYMENT = Kind("apps", "v1", "Deployment", "deployments")
CORPUS = sorted((ROOT / "tests/corpus/pods").glob("*.yaml"))
CORPUS_TEXTS = {path: path.read_text() for path in CORPUS}


def compliant_pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {
            "securityContext": {"runAsNonRoot": True},
            "containers": [
                {
                    "name": "app",
                    "image": "registry.example.com/team/web:1.0",
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                }
            ],
        },
    }


def breaking(rule: str) -> tuple[dict[str, Any], str]:
    """A pod that breaks exactly one rule, and what the refusal names."""
    pod = compliant_pod(f"breaks-{rule}")
    container = pod["spec"]["containers"][0]
    match rule:
        case "privileged":
            container["securityContext"] = {"privileged": True}
            return pod, "app"
        case "host-namespaces":
            pod["spec"]["hostNetwork"] = True
            return pod, "hostNetwork"
        case "host-path":
            pod["spec"]["volumes"] = [{"name": "host", "hostPath": {"path": "/var/run"}}]
            return pod, "host"
        case "allowed-registries":
            container["image"] = "docker.io/library/nginx:1.27"
            return pod, "app (docker.io/library/nginx:1.27)"
        case "required-labels":
            pod["metadata"]["labels"] = {"tier": "web"}
            return pod, "app"
        case "resource-requests":
            del container["resources"]
            return pod, "app"
        case "run-as-non-root":
            del pod["spec"]["securityContext"]
            return pod, "app"
    raise AssertionError(rule)


def everything_wrong(name: str) -> dict[str, Any]:
    """Privileged, a hostPath, an image from elsewhere, no labels, no requests, root."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "volumes": [{"name": "host", "hostPath": {"path": "/"}}],
            "containers": [
                {
                    "name": "app",
                    "image": "docker.io/library/nginx:1.27",
                    "securityContext": {"privileged": True},
                    "volumeMounts": [{"name": "host", "mountPath": "/host"}],
                }
            ],
        },
    }


def deployment(name: str, pod: dict[str, Any]) -> dict[str, Any]:
    labels = pod["metadata"].get("labels") or {"run": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": pod["spec"]},
        },
    }


async def dry_run_create(kube: KubeApi, kind: Kind, namespace: str, body: dict[str, Any]) -> Answer:
    return await attempt(
        kube,
        "POST",
        f"{object_path(kind, namespace, '')[:-1]}",
        body,
        [("dryRun", "All"), ("fieldValidation", "Strict")],
    )


async def admission_ready(e2e: E2E, namespaces: list[str]) -> None:
    """Every namespace has its default ServiceAccount (pods need it to be admitted)."""
    for namespace in namespaces:

        async def made(namespace: str = namespace) -> bool:
            return await e2e.cluster.get(SERVICE_ACCOUNT, namespace, "default") is not None

        await eventually(made, what=f"the default ServiceAccount of {namespace}")


async def in_force(e2e: E2E, namespace: str) -> Answer:
    """Wait until the API server enforces the policy (it loads new policies asynchronously)."""

    async def refused() -> Answer | None:
        answer = await dry_run_create(e2e.kube, POD, namespace, everything_wrong("probe"))
        return answer if answer.status in (403, 422) else None

    return await eventually(refused, what="the workload policy in force")


async def test_workload_rules_refuse_in_bound_namespaces_only(e2e: E2E) -> None:
    bound = await e2e.create_namespace("bound", env="prod")
    free = await e2e.create_namespace("free")
    body = e2e.baseline_body(admission=ADMISSION, protectGeneratedObjects=True)
    name = await e2e.create_baseline(body)
    policy = f"{name}-workload-rules"
    await admission_ready(e2e, [bound, free])
    async with e2e.operator():
        await eventually(lambda: converged_on(e2e, body, [bound]), what="convergence")
        assert applied_label(name) not in await e2e.cluster.labels(free)
        refused = await in_force(e2e, bound)

        # Everything wrong: refused, naming the first rule it breaks.
        assert refused.status == 403, refused.message
        assert f"ValidatingAdmissionPolicy '{policy}' with binding '{policy}'" in refused.message
        assert RULES["privileged"].validation["message"] + ": app" in refused.message

        # Each rule alone, with its own message and reason.
        for check_id, rule in RULES.items():
            pod, offenders = breaking(check_id)
            answer = await dry_run_create(e2e.kube, POD, bound, pod)
            code = 403 if rule.validation["reason"] == "Forbidden" else 422
            assert answer.status == code, (check_id, answer.message)
            assert f"{rule.validation['message']}: {offenders}" in answer.message, answer.message

        # The same pod where the baseline does not apply, and a compliant pod where it does.
        assert (await dry_run_create(e2e.kube, POD, free, everything_wrong("x"))).status == 201
        admitted = await dry_run_create(e2e.kube, POD, bound, compliant_pod("fine"))
        assert admitted.status == 201, admitted.message

        # Pod templates of controllers are judged too.
        pod, offenders = breaking("allowed-registries")
        answer = await dry_run_create(e2e.kube, DEPLOYMENT, bound, deployment("web", pod))
        assert answer.status == 403, answer.message
        assert 'deployments.apps "web" is forbidden' in answer.message
        assert offenders in answer.message
        fine = deployment("web", compliant_pod("web"))
        assert (await dry_run_create(e2e.kube, DEPLOYMENT, bound, fine)).status == 201

        # The server type-checked both policies without a warning.
        for policy_name in (f"{name}-workload-rules", f"{name}-protect"):
            checked = await type_checked(e2e, policy_name)
            assert not (checked.get("typeChecking") or {}).get("expressionWarnings"), checked


async def type_checked(e2e: E2E, name: str) -> dict[str, Any]:
    """The status of a policy, once the controller manager has type-checked its generation."""

    async def checked() -> dict[str, Any]:
        vap = await e2e.cluster.get(VALIDATING_ADMISSION_POLICY, None, name)
        assert vap is not None
        status: dict[str, Any] = vap.get("status") or {}
        seen = status.get("observedGeneration") == vap["metadata"]["generation"]
        return status if seen else {}

    status: dict[str, Any] = await eventually(checked, what=f"type checking of {name}")
    return status


def _corpus_object(path: Path) -> dict[str, Any]:
    (obj,) = [doc for doc in yaml.safe_load_all(CORPUS_TEXTS[path]) if doc is not None]
    copied: dict[str, Any] = copy.deepcopy(obj)
    copied["metadata"].pop("namespace", None)
    return copied


def _creatable(path: Path) -> bool:
    # A Pod cannot be created with ephemeral containers; they are added to running pods.
    return "ephemeralContainers" not in CORPUS_TEXTS[path]


def as_the_server_defaults(obj: dict[str, Any]) -> dict[str, Any]:
    """A Pod as admission sees it: the API server defaults a container's requests to its
    limits (Pod defaulting runs before admission; pod templates are not defaulted so)."""
    if obj["kind"] != "Pod":
        return obj
    obj = copy.deepcopy(obj)
    for container in [*obj["spec"].get("containers", []), *obj["spec"].get("initContainers", [])]:
        limits = (container.get("resources") or {}).get("limits") or {}
        if limits:
            requests = container["resources"].setdefault("requests", {})
            for resource, quantity in limits.items():
                requests.setdefault(resource, quantity)
    return obj


async def test_the_api_server_refuses_what_the_checklist_predicts_on_the_pod_corpus(
    e2e: E2E,
) -> None:
    """The corpus the unit tests evaluate the CEL on, against the API server's own CEL: the
    offline checklist, applied to the object as the server defaults it, predicts admission."""
    bound = await e2e.create_namespace("bound", env="prod")
    free = await e2e.create_namespace("free")
    body = e2e.baseline_body(admission=ADMISSION)
    await e2e.create_baseline(body)
    await admission_ready(e2e, [bound, free])
    order = list(RULES)
    wrong: dict[str, str] = {}
    tried = 0
    async with e2e.operator():
        await eventually(lambda: converged_on(e2e, body, [bound]), what="convergence")
        await in_force(e2e, bound)
        for path in filter(_creatable, CORPUS):
            obj = _corpus_object(path)
            kind = POD if obj["kind"] == "Pod" else _kind_of(obj)
            if (await dry_run_create(e2e.kube, kind, free, obj)).status != 201:
                continue  # not a valid object (see the test below)
            tried += 1
            findings = check_object(as_the_server_defaults(obj), CHECKLIST)
            expected = {finding.check_id for finding in findings} & ADMISSION_CHECK_IDS
            answer = await dry_run_create(e2e.kube, kind, bound, obj)
            if not expected:
                if answer.status != 201:
                    wrong[path.stem] = f"refused: {answer.message}"
                continue
            first = min(expected, key=order.index)  # the server names the first rule broken
            message = RULES[first].validation["message"]
            if answer.status not in (403, 422) or message not in answer.message:
                wrong[path.stem] = f"expected {first}, got {answer.status}: {answer.message}"
    assert tried >= 30
    assert wrong == {}, "\n".join(f"{stem}: {problem}" for stem, problem in wrong.items())


async def test_every_object_of_the_pod_corpus_is_valid(e2e: E2E) -> None:
    free = await e2e.create_namespace("free")
    await admission_ready(e2e, [free])
    invalid = {}
    for path in filter(_creatable, CORPUS):
        obj = _corpus_object(path)
        kind = POD if obj["kind"] == "Pod" else _kind_of(obj)
        answer = await dry_run_create(e2e.kube, kind, free, obj)
        if answer.status != 201:
            invalid[path.stem] = answer.message
    assert invalid == {}


def _kind_of(obj: dict[str, Any]) -> Kind:
    group, _, version = obj["apiVersion"].rpartition("/")
    plural = {
        "ReplicationController": "replicationcontrollers",
        "Deployment": "deployments",
        "StatefulSet": "statefulsets",
        "DaemonSet": "daemonsets",
        "ReplicaSet": "replicasets",
        "Job": "jobs",
        "CronJob": "cronjobs",
    }[obj["kind"]]
    return Kind(group, version, obj["kind"], plural)


async def test_generated_objects_are_protected_while_the_operator_is_down(e2e: E2E) -> None:
    namespace = await e2e.create_namespace("a", env="prod")
    body = e2e.baseline_body(
        networkPolicy={"defaultDeny": ["Ingress", "Egress"], "allowDNS": True},
        protectGeneratedObjects=True,
    )
    name = await e2e.create_baseline(body)
    async with e2e.operator(cleanup=False):
        await eventually(lambda: converged_on(e2e, body, [namespace]), what="convergence")
        assert await e2e.cluster.get(VALIDATING_ADMISSION_POLICY, None, f"{name}-protect")

    # The operator is down. Someone with cluster-admin rights, but not the operator:
    intruder = e2e.name("intruder")
    await e2e.kube.create(
        CLUSTER_ROLE_BINDING,
        None,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": intruder},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "cluster-admin",
            },
            "subjects": [
                {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": intruder}
            ],
        },
    )
    e2e.track(CLUSTER_ROLE_BINDING, intruder)
    as_intruder = new_kube(e2e.run.admin, headers={"Impersonate-User": intruder})
    policy = f"{name}-default-deny"
    path = object_path(NETWORK_POLICY, namespace, policy)
    try:
        before = await e2e.cluster.get(NETWORK_POLICY, namespace, policy)
        assert before is not None
        edit = {"spec": {"podSelector": {"matchLabels": {"app": "nothing"}}}}

        # The API server loads new policies asynchronously: wait (with dry runs, which change
        # nothing) until this one is in force, before trying for real.
        async def in_force() -> bool:
            answer = await attempt(
                as_intruder,
                "PATCH",
                path,
                edit,
                [("dryRun", "All")],
                content_type="application/merge-patch+json",
            )
            return protect_message(name) in answer.message

        await eventually(in_force, what="the protect policy in force")
        refused = await attempt(
            as_intruder, "PATCH", path, edit, content_type="application/merge-patch+json"
        )
        assert refused.status == 403, refused.message
        assert protect_message(name) in refused.message
        assert f"ValidatingAdmissionPolicy '{name}-protect'" in refused.message
        deleted = await attempt(as_intruder, "DELETE", path)
        assert deleted.status == 403
        assert protect_message(name) in deleted.message
        after = await e2e.cluster.get(NETWORK_POLICY, namespace, policy)
        assert after is not None
        assert after["metadata"]["resourceVersion"] == before["metadata"]["resourceVersion"]

        # Deleting the whole namespace is never blocked: the namespace controller is exempt.
        gone = await attempt(as_intruder, "DELETE", object_path(NAMESPACE, None, namespace))
        assert gone.status == 200, gone.message

        await namespace_deleted(e2e.kube, namespace)
    finally:
        await close(as_intruder)

    async with e2e.operator():  # the finalizer removes the policies; the namespace is gone
        pass
    assert await e2e.cluster.get(SECURITY_BASELINE, None, name) is None
    assert await e2e.cluster.get(VALIDATING_ADMISSION_POLICY, None, f"{name}-protect") is None

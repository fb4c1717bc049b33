"""The red-team suite of issue 7, on a real API server.

For each class of attack, the command a namespace editor runs (the tenant holding the
built-in `admin` ClusterRole through a RoleBinding in its namespace, as tenants do; an
`edit` holder where it matters; a cluster administrator who is not the operator) or the
baseline that tries it, and the operator's answer, asserted: refused by the API server
(tamper protection, the CRD, the ceiling policy), repaired (the time from the edit to the
repair is recorded, never asserted), or reported (Conflicted, with the object named).

1. drift that widens access: refused under protection; repaired exactly without it,
   and never reported Converged while it differs; `adopt: IfIdentical` adopts no
   weakened look-alike;
2. tamper protection cannot be walked around (a field manager's name, a uid
   precondition, a finalizer, a new object carrying the labels), the operator still
   works and a namespace can still be deleted;
3. a baseline cannot hand out anything: the CRD and the ceiling policy;
4. ownership is not a label: a copied RoleBinding is refused, or reported and kept
   (also under a name the baseline generates, with the generated one's managedFields
   sent along);
5. a mass removal (a selector typo) is held until acknowledged; Pod Security labels
   someone else set are neither forced nor removed;
6. name collisions between baselines are reported, never silently dropped;
7. registries match on a host boundary.

The tenant is the plain user the session's own control plane provides (`run.tenant`);
on an external cluster the tests that need it are skipped and say so.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import yaml

from baseline_operator.api.resource import parse_baseline
from baseline_operator.api.spec import GrantRisk, risk_message, rule_risks
from baseline_operator.kube.client import APPLY_CONTENT_TYPE, Endpoint, KubeApi
from baseline_operator.policy.admission import protect_message
from baseline_operator.policy.layering import plan_namespace
from baseline_operator.policy.names import (
    BASELINE_KEY,
    FIELD_MANAGER,
    MANAGED_BY_KEY,
    OPERATOR_SERVICE_ACCOUNT,
    applied_label,
    managed_labels,
)
from baseline_operator.policy.normalize import essence
from baseline_operator.policy.objects import (
    EVENT,
    NAMESPACE,
    NETWORK_POLICY,
    POD,
    RESOURCE_QUOTA,
    ROLE,
    ROLE_BINDING,
    SECURITY_BASELINE,
    SERVICE_ACCOUNT,
    VALIDATING_ADMISSION_POLICY,
    VALIDATING_ADMISSION_POLICY_BINDING,
    Kind,
    ObjectRef,
)
from tests.e2e.conftest import (
    CLUSTER_ROLE_BINDING,
    E2E,
    ROOT,
    Answer,
    Run,
    attempt,
    close,
    converged_on,
    eventually,
    namespace_deleted,
    new_kube,
    object_path,
    record_timing,
    server_side_apply,
)
from tests.support.control_plane import TENANT_USER

pytestmark = pytest.mark.e2e

NO_TENANT = (
    "no tenant user: the cluster is an external one (BASELINE_E2E_KUBECONFIG), and the "
    "tenant's credentials exist only when the session starts its own control plane"
)
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
RBAC_GROUP = "rbac.authorization.k8s.io"
CEILING_FILE = ROOT / "manifests/base/admission-ceiling.yaml"
SHIPPED_OPERATOR_USER = "system:serviceaccount:baseline-operator-system:baseline-operator"

# What a tenant's baseline holds: a default deny, the same-namespace peer, a namespace
# admin binding and a quota (the four things case 1 tries to widen).
POSTURE: dict[str, Any] = {
    "networkPolicy": {"defaultDeny": ["Ingress", "Egress"], "allowSameNamespace": True},
    "rbac": {"admins": [{"kind": "User", "name": "alice"}]},
    "resources": {"quota": {"hard": {"pods": "10"}}},
}


# ----------------------------------------------------------------------------- who acts


@pytest.fixture
def tenant(run: Run) -> Endpoint:
    if run.tenant is None:
        pytest.skip(reason=NO_TENANT)
    return run.tenant


@pytest_asyncio.fixture()
async def clients() -> AsyncIterator[list[KubeApi]]:
    """Clients a test opens (tenant, editor, intruder, operator), closed at the end."""
    opened: list[KubeApi] = []
    try:
        yield opened
    finally:
        for kube in opened:
            await close(kube)


async def allowed(
    e2e: E2E, user: str, namespace: str, verb: str, group: str, resource: str
) -> bool:
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user,
            "groups": ["system:authenticated"],
            "resourceAttributes": {
                "namespace": namespace,
                "verb": verb,
                "group": group,
                "resource": resource,
            },
        },
    }
    answer = await e2e.kube.request(
        "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body=review
    )
    return bool((answer.body.get("status") or {}).get("allowed"))


async def grant(e2e: E2E, namespace: str, user: str, cluster_role: str) -> None:
    """Bind `user` to a built-in ClusterRole in one namespace, as a tenant is bound."""
    await e2e.kube.create(
        ROLE_BINDING,
        namespace,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": f"{user}-{cluster_role}", "namespace": namespace},
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": cluster_role},
            "subjects": [{"apiGroup": RBAC_GROUP, "kind": "User", "name": user}],
        },
    )

    async def effective() -> bool:
        return await allowed(e2e, user, namespace, "patch", "networking.k8s.io", "networkpolicies")

    await eventually(effective, what=f"{user} holding {cluster_role} in {namespace}")


async def as_tenant(e2e: E2E, tenant: Endpoint, namespace: str, clients: list[KubeApi]) -> KubeApi:
    """The tenant, holding the built-in `admin` ClusterRole in `namespace`."""
    await grant(e2e, namespace, TENANT_USER, "admin")
    kube = new_kube(tenant)
    clients.append(kube)
    return kube


async def as_editor(e2e: E2E, namespace: str, clients: list[KubeApi]) -> KubeApi:
    """A user holding the built-in `edit` ClusterRole in `namespace` (impersonated)."""
    user = e2e.name("editor")
    await grant(e2e, namespace, user, "edit")
    kube = new_kube(e2e.run.admin, headers={"Impersonate-User": user})
    clients.append(kube)
    return kube


async def as_intruder(e2e: E2E, clients: list[KubeApi]) -> KubeApi:
    """A cluster administrator who is not the operator (impersonated)."""
    user = e2e.name("intruder")
    await e2e.kube.create(
        CLUSTER_ROLE_BINDING,
        None,
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": user},
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"apiGroup": RBAC_GROUP, "kind": "User", "name": user}],
        },
    )
    e2e.track(CLUSTER_ROLE_BINDING, user)

    async def effective() -> bool:
        return await allowed(e2e, user, "default", "delete", "", "namespaces")

    await eventually(effective, what=f"{user} being cluster-admin")
    kube = new_kube(e2e.run.admin, headers={"Impersonate-User": user})
    clients.append(kube)
    return kube


# ----------------------------------------------------------------------------- requests


async def merge_patch(kube: KubeApi, ref: ObjectRef, patch: Any, dry_run: bool = False) -> Answer:
    query = [("dryRun", "All")] if dry_run else []
    return await attempt(
        kube, "PATCH", object_path(ref.kind, ref.namespace, ref.name), patch, query, MERGE
    )


async def create(
    kube: KubeApi, kind: Kind, namespace: str, body: dict[str, Any], dry_run: bool = False
) -> Answer:
    query = [("fieldValidation", "Strict")] + ([("dryRun", "All")] if dry_run else [])
    path = object_path(kind, namespace, "x")[: -len("/x")]
    return await attempt(kube, "POST", path, body, query)


def desired_bodies(body: dict[str, Any], namespace: str) -> dict[ObjectRef, dict[str, Any]]:
    """What the operator renders for one baseline alone in a namespace."""
    plan = plan_namespace(namespace, [parse_baseline(body)])
    return {item.ref: item.body for item in plan.objects if item.baseline is not None}


def ref_of(body: dict[str, Any], namespace: str, kind: Kind, suffix: str) -> ObjectRef:
    return ObjectRef(kind, namespace, f"{body['metadata']['name']}-{suffix}")


async def live(e2e: E2E, ref: ObjectRef) -> dict[str, Any]:
    found = await e2e.cluster.get(ref.kind, ref.namespace, ref.name)
    assert found is not None, f"{ref} is missing"
    return found


def stripped(body: dict[str, Any]) -> dict[str, Any]:
    """An object as `kubectl get -o yaml` shows it, made ready to create again."""
    copied = copy.deepcopy(body)
    for key in ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields"):
        copied["metadata"].pop(key, None)
    copied.pop("status", None)
    return copied


async def ready(e2e: E2E, name: str) -> dict[str, Any]:
    return await e2e.cluster.condition(name, "Ready")


def strings(node: Any) -> list[str]:
    """Every string in a status (messages, reasons), as written."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [text for value in node.values() for text in strings(value)]
    if isinstance(node, list):
        return [text for value in node for text in strings(value)]
    return []


async def reports(e2e: E2E, name: str, reason: str, *fragments: str) -> dict[str, Any]:
    """Wait until a baseline's Ready is False with `reason` and the condition named by the
    reason (or Ready itself) says every fragment; return the status."""

    last: dict[str, Any] = {}

    async def said() -> dict[str, Any]:
        nonlocal last
        status = last = await e2e.cluster.status(name)
        conditions = {c["type"]: c for c in status.get("conditions") or []}
        ready_now = conditions.get("Ready") or {}
        if ready_now.get("status") != "False" or ready_now.get("reason") != reason:
            return {}
        text = "\n".join(strings(status))
        return status if all(fragment in text for fragment in fragments) else {}

    try:
        found: dict[str, Any] = await eventually(
            said, what=f"{name} reporting {reason} naming {', '.join(fragments)}"
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the last status: {json.dumps(last)}") from None
    return found


async def converged(e2e: E2E, name: str) -> None:
    async def says() -> bool:
        condition = await ready(e2e, name)
        return condition.get("status") == "True" and condition.get("reason") == "Converged"

    await eventually(says, what=f"{name} Ready=True Converged")


async def protect_in_force(e2e: E2E, kube: KubeApi, name: str, ref: ObjectRef) -> None:
    """The API server loads a new policy asynchronously: wait, by dry runs that change
    nothing, until the baseline's protect policy refuses `kube` a change of `ref`."""
    started = time.monotonic()

    async def refused() -> bool:
        answer = await merge_patch(
            kube, ref, {"metadata": {"annotations": {"probe": "1"}}}, dry_run=True
        )
        return answer.status == 403 and protect_message(name) in answer.message

    await eventually(refused, what=f"the protect policy of {name} in force")
    record_timing("protect policy: converged to in force", time.monotonic() - started)


def assert_protect_refused(answer: Answer, name: str, what: str) -> None:
    assert answer.status == 403, f"{what}: {answer.status} {answer.message}"
    assert protect_message(name) in answer.message, f"{what}: {answer.message}"
    assert f"ValidatingAdmissionPolicy '{name}-protect'" in answer.message, what


# ----------------------------------------------------------------------------- 1. drift


def widening_edits(body: dict[str, Any], namespace: str) -> list[tuple[str, ObjectRef, str, Any]]:
    """(what, object, content type, patch): the four edits that widen access."""
    return [
        (
            "default-deny podSelector narrowed to select no pod",
            ref_of(body, namespace, NETWORK_POLICY, "default-deny"),
            MERGE,
            {"spec": {"podSelector": {"matchLabels": {"nothing": "selected"}}}},
        ),
        (
            "namespaceSelector: {} added to the same-namespace peer",
            ref_of(body, namespace, NETWORK_POLICY, "allow-same-namespace"),
            JSON_PATCH,
            [{"op": "add", "path": "/spec/ingress/0/from/0/namespaceSelector", "value": {}}],
        ),
        (
            "a subject added to the admins RoleBinding",
            ref_of(body, namespace, ROLE_BINDING, "admins"),
            JSON_PATCH,
            [
                {
                    "op": "add",
                    "path": "/subjects/-",
                    "value": {"apiGroup": RBAC_GROUP, "kind": "User", "name": "mallory"},
                }
            ],
        ),
        (
            "the quota raised from 10 to 1000 pods",
            ref_of(body, namespace, RESOURCE_QUOTA, "quota"),
            MERGE,
            {"spec": {"hard": {"pods": "1000"}}},
        ),
    ]


async def edit(kube: KubeApi, ref: ObjectRef, content_type: str, patch: Any) -> Answer:
    path = object_path(ref.kind, ref.namespace, ref.name)
    return await attempt(kube, "PATCH", path, patch, (), content_type)


async def test_drift_that_widens_access_is_refused_under_protection(
    e2e: E2E, tenant: Endpoint, clients: list[KubeApi]
) -> None:
    namespace = await e2e.create_namespace("a", env="prod")
    body = e2e.baseline_body(**POSTURE, protectGeneratedObjects=True)
    name = await e2e.create_baseline(body)
    tenant_kube = await as_tenant(e2e, tenant, namespace, clients)
    editor = await as_editor(e2e, namespace, clients)
    intruder = await as_intruder(e2e, clients)
    edits = widening_edits(body, namespace)
    async with e2e.operator():
        await eventually(lambda: converged_on(e2e, body, [namespace]), what="convergence")
        await protect_in_force(e2e, tenant_kube, name, edits[0][1])
        before = {
            ref: (await live(e2e, ref))["metadata"]["resourceVersion"] for _, ref, _, _ in edits
        }

        for what, ref, content_type, patch in edits:
            answer = await edit(tenant_kube, ref, content_type, patch)
            if ref.kind == RESOURCE_QUOTA:
                # `admin` may only read quotas: RBAC refuses the tenant before admission.
                assert answer.status == 403, f"tenant, {what}: {answer.message}"
                assert "cannot patch resource" in answer.message, answer.message
            else:
                assert_protect_refused(answer, name, f"tenant (admin), {what}")
            if ref.kind == NETWORK_POLICY:  # `edit` may write NetworkPolicies, not RBAC
                answer = await edit(editor, ref, content_type, patch)
                assert_protect_refused(answer, name, f"editor (edit), {what}")
            answer = await edit(intruder, ref, content_type, patch)
            assert_protect_refused(answer, name, f"cluster-admin, {what}")

        after = {
            ref: (await live(e2e, ref))["metadata"]["resourceVersion"] for _, ref, _, _ in edits
        }
        assert after == before, "a refused edit changed an object"
        await converged(e2e, name)


async def repair_watched(
    e2e: E2E, name: str, ref: ObjectRef, desired: dict[str, Any], baseline_version: str
) -> list[dict[str, Any]]:
    """Wait until `ref` does exactly what `desired` does again; return every Ready
    condition written since `baseline_version` (the baseline's resourceVersion before the
    edit) that said Converged while the object still differed. The baseline is read before
    the object, so a Converged listed here was written after the edit and the object
    still differed after it was written."""
    false_reports: list[dict[str, Any]] = []

    async def repaired() -> bool:
        baseline = await e2e.cluster.get(SECURITY_BASELINE, None, name) or {}
        current = await live(e2e, ref)
        same = essence(ref.kind.kind, current) == essence(ref.kind.kind, desired)
        conditions = (baseline.get("status") or {}).get("conditions") or []
        condition: dict[str, Any] = next((c for c in conditions if c["type"] == "Ready"), {})
        written_since = baseline["metadata"]["resourceVersion"] != baseline_version
        if not same and written_since and condition.get("reason") == "Converged":
            false_reports.append(condition)
        return same

    await eventually(repaired, what=f"repair of {ref}")
    return false_reports


async def test_drift_that_widens_access_is_repaired_exactly(
    e2e: E2E, tenant: Endpoint, clients: list[KubeApi]
) -> None:
    namespace = await e2e.create_namespace("a", env="prod")
    body = e2e.baseline_body(**POSTURE, protectGeneratedObjects=False)
    name = await e2e.create_baseline(body)
    tenant_kube = await as_tenant(e2e, tenant, namespace, clients)
    intruder = await as_intruder(e2e, clients)
    wanted = desired_bodies(body, namespace)
    async with e2e.operator() as operator:
        await eventually(lambda: converged_on(e2e, body, [namespace]), what="convergence")
        await converged(e2e, name)

        for what, ref, content_type, patch in widening_edits(body, namespace):
            desired = wanted[ref]
            await operator.settled()
            baseline_version = (await e2e.cluster.get(SECURITY_BASELINE, None, name) or {})[
                "metadata"
            ]["resourceVersion"]
            editor = tenant_kube
            if ref.kind == RESOURCE_QUOTA:
                # `admin` may only read quotas; a cluster administrator can raise one.
                refused = await edit(tenant_kube, ref, content_type, patch)
                assert refused.status == 403, refused.message
                editor = intruder
            answer = await edit(editor, ref, content_type, patch)
            edited = time.monotonic()
            assert answer.status == 200, f"{what}: {answer.status} {answer.message}"
            assert essence(ref.kind.kind, answer.body) != essence(ref.kind.kind, desired), what

            false_reports = await repair_watched(e2e, name, ref, desired, baseline_version)
            record_timing(f"drift repaired ({what}): edit to repair", time.monotonic() - edited)
            assert false_reports == [], f"{what}: Converged reported while it differed"

            # Exactly: the widened field is gone, not merely joined by the wanted one; and it
            # was the operator that put it back, after the edit.
            current = await live(e2e, ref)
            assert (
                current["metadata"]["resourceVersion"] != answer.body["metadata"]["resourceVersion"]
            ), f"{what}: not written since the edit"
            managers = {  # writes of the status (the quota controller's) are not counted
                entry["manager"]
                for entry in current["metadata"]["managedFields"]
                if not entry.get("subresource")
            }
            assert managers == {FIELD_MANAGER}, f"{what}: fields of others remain: {managers}"
            if ref.kind == NETWORK_POLICY and ref.name.endswith("default-deny"):
                assert not (current["spec"].get("podSelector") or {}), current["spec"]
            elif ref.kind == NETWORK_POLICY:
                peers = [peer for rule in current["spec"]["ingress"] for peer in rule["from"]]
                assert all("namespaceSelector" not in peer for peer in peers), peers
            elif ref.kind == ROLE_BINDING:
                assert [s["name"] for s in current["subjects"]] == ["alice"], current["subjects"]
            else:
                assert current["spec"]["hard"] == {"pods": "10"}, current["spec"]
        await converged(e2e, name)


def weakened_look_alikes(body: dict[str, Any], namespace: str) -> dict[str, dict[str, Any]]:
    """The baseline's NetworkPolicies as a tenant would pre-create them, unlabelled:
    `identical` exactly as rendered, `weakened` with access widened."""
    rendered = desired_bodies(body, namespace)
    deny = copy.deepcopy(rendered[ref_of(body, namespace, NETWORK_POLICY, "default-deny")])
    same = copy.deepcopy(rendered[ref_of(body, namespace, NETWORK_POLICY, "allow-same-namespace")])
    for item in (deny, same):
        del item["metadata"]["labels"]
    narrowed = copy.deepcopy(deny)
    narrowed["spec"]["podSelector"] = {"matchLabels": {"nothing": "selected"}}
    widened = copy.deepcopy(same)
    widened["spec"]["ingress"][0]["from"][0]["namespaceSelector"] = {}
    return {"identical": deny, "narrowed": narrowed, "widened": widened}


async def test_adopt_if_identical_does_not_adopt_a_weakened_look_alike(e2e: E2E) -> None:
    weak = await e2e.create_namespace("weak", env="prod")
    same = await e2e.create_namespace("same", env="prod")
    body = e2e.baseline_body(networkPolicy=POSTURE["networkPolicy"], adopt="IfIdentical")
    # Pre-created before the baseline, by someone who is not the operator.
    in_weak = weakened_look_alikes(body, weak)
    in_same = weakened_look_alikes(body, same)
    for item in (in_weak["narrowed"], in_weak["widened"], in_same["identical"]):
        answer = await create(e2e.kube, NETWORK_POLICY, item["metadata"]["namespace"], item)
        assert answer.status == 201, answer.message
    versions = {
        ObjectRef.of(item): (await live(e2e, ObjectRef.of(item)))["metadata"]["resourceVersion"]
        for item in (in_weak["narrowed"], in_weak["widened"])
    }
    name = await e2e.create_baseline(body)
    async with e2e.operator():
        # The identical one is taken over; both weakened ones are reported, not adopted.
        identical = ObjectRef.of(in_same["identical"])

        async def adopted() -> bool:
            current = await e2e.cluster.get(NETWORK_POLICY, same, identical.name) or {}
            labels = current.get("metadata", {}).get("labels") or {}
            return labels.get(BASELINE_KEY) == name

        await eventually(adopted, what="adoption of the identical look-alike")
        narrowed, widened = ObjectRef.of(in_weak["narrowed"]), ObjectRef.of(in_weak["widened"])
        # Both reported (the first by name, sorted by object, and the other counted).
        status = await reports(e2e, name, "Conflicted", str(min(narrowed, widened)), "(+1 more)")
        assert status["namespaces"]["conflicted"] == 1, status["namespaces"]
        assert any("adopt: IfIdentical" in text for text in strings(status))

        for ref in (narrowed, widened):
            current = await live(e2e, ref)
            assert current["metadata"]["resourceVersion"] == versions[ref], f"{ref} was written"
            assert MANAGED_BY_KEY not in (current["metadata"].get("labels") or {}), ref
            managers = {  # writes of the status (the quota controller's) are not counted
                entry["manager"]
                for entry in current["metadata"]["managedFields"]
                if not entry.get("subresource")
            }
            assert FIELD_MANAGER not in managers, ref


# ----------------------------------------------------------------------------- 2. walk-arounds


async def tamper_attempts(kube: KubeApi, e2e: E2E, name: str, namespace: str) -> dict[str, Answer]:
    """Every way around the protect policy tried so far, by `kube`, for real."""
    deny = ObjectRef(NETWORK_POLICY, namespace, f"{name}-default-deny")
    path = object_path(NETWORK_POLICY, namespace, deny.name)
    current = await live(e2e, deny)
    widened = copy.deepcopy(current)
    widened["spec"]["podSelector"] = {"matchLabels": {"nothing": "selected"}}
    widened["metadata"].pop("managedFields", None)
    applied = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": deny.name, "namespace": namespace, "labels": managed_labels(name)},
        "spec": {"podSelector": {"matchLabels": {"nothing": "selected"}}},
    }
    look_alike = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": f"{name}-allow-everything", "labels": managed_labels(name)},
        "spec": {"podSelector": {}, "ingress": [{}], "egress": [{}]},
    }
    as_operator = [("fieldManager", FIELD_MANAGER)]
    return {
        "PUT with fieldManager=baseline-operator": await attempt(
            kube, "PUT", path, widened, as_operator
        ),
        "server-side apply as baseline-operator": await attempt(
            kube, "PATCH", path, applied, [*as_operator, ("force", "true")], APPLY_CONTENT_TYPE
        ),
        "DELETE with a uid precondition": await attempt(
            kube,
            "DELETE",
            path,
            {
                "apiVersion": "v1",
                "kind": "DeleteOptions",
                "preconditions": {"uid": current["metadata"]["uid"]},
            },
        ),
        "DELETE of the whole collection": await attempt(
            kube,
            "DELETE",
            object_path(NETWORK_POLICY, namespace, "x")[: -len("/x")],
            query=[("labelSelector", f"{BASELINE_KEY}={name}")],
        ),
        "a finalizer added": await merge_patch(
            kube, deny, {"metadata": {"finalizers": ["example.com/hold"]}}
        ),
        "the labels stripped": await merge_patch(
            kube, deny, {"metadata": {"labels": {MANAGED_BY_KEY: None, BASELINE_KEY: None}}}
        ),
        "a new object carrying the labels": await create(
            kube, NETWORK_POLICY, namespace, look_alike
        ),
    }


async def test_tamper_protection_cannot_be_walked_around(
    e2e: E2E, tenant: Endpoint, clients: list[KubeApi]
) -> None:
    namespace = await e2e.create_namespace("a", env="prod")
    body = e2e.baseline_body(**POSTURE, protectGeneratedObjects=True)
    name = await e2e.create_baseline(body)
    tenant_kube = await as_tenant(e2e, tenant, namespace, clients)
    intruder = await as_intruder(e2e, clients)
    async with e2e.operator():
        await eventually(lambda: converged_on(e2e, body, [namespace]), what="convergence")
        deny = ref_of(body, namespace, NETWORK_POLICY, "default-deny")
        await protect_in_force(e2e, tenant_kube, name, deny)
        await protect_in_force(e2e, intruder, name, deny)
        before = {
            ref: (await live(e2e, ref))["metadata"]["resourceVersion"]
            for ref in desired_bodies(body, namespace)
        }

        for who, kube in (("tenant (admin)", tenant_kube), ("cluster-admin", intruder)):
            for what, answer in (await tamper_attempts(kube, e2e, name, namespace)).items():
                assert_protect_refused(answer, name, f"{who}: {what}")

        after = {ref: (await live(e2e, ref))["metadata"]["resourceVersion"] for ref in before}
        assert after == before, "a refused request changed an object"
        assert await e2e.cluster.get(NETWORK_POLICY, namespace, f"{name}-allow-everything") is None

        # The operator itself still writes: a changed baseline reaches the protected objects.
        changed = copy.deepcopy(body)
        changed["spec"]["rbac"]["admins"].append({"kind": "User", "name": "bob"})
        changed["spec"]["resources"]["quota"]["hard"]["pods"] = "20"
        started = time.monotonic()
        await e2e.cluster.merge_patch(
            SECURITY_BASELINE,
            None,
            name,
            {"spec": {"rbac": changed["spec"]["rbac"], "resources": changed["spec"]["resources"]}},
        )
        await eventually(lambda: converged_on(e2e, changed, [namespace]), what="the change")

        async def changed_everywhere() -> bool:
            # Each object is written on its own: wait for both, not the first.
            admins = await live(e2e, ref_of(body, namespace, ROLE_BINDING, "admins"))
            quota = await live(e2e, ref_of(body, namespace, RESOURCE_QUOTA, "quota"))
            subjects = [subject["name"] for subject in admins["subjects"]]
            return subjects == ["alice", "bob"] and quota["spec"]["hard"] == {"pods": "20"}

        await eventually(changed_everywhere, what="the change in both objects")
        record_timing("protected objects: baseline change to applied", time.monotonic() - started)

        # Deleting the namespace is never blocked (the namespace controller is exempt).
        started = time.monotonic()
        gone = await attempt(intruder, "DELETE", object_path(NAMESPACE, None, namespace))
        assert gone.status == 200, gone.message
        await namespace_deleted(e2e.kube, namespace)
        record_timing("protected namespace: delete to gone", time.monotonic() - started)


# ----------------------------------------------------------------------------- 3. the ceiling

CEILING_CASES: dict[str, tuple[dict[str, list[str]], GrantRisk]] = {
    "wildcard-group": (
        {"apiGroups": ["*"], "resources": ["configmaps"], "verbs": ["get"]},
        GrantRisk.WILDCARD,
    ),
    "wildcard-resource": (
        {"apiGroups": [""], "resources": ["*"], "verbs": ["get"]},
        GrantRisk.WILDCARD,
    ),
    "wildcard-subresource": (
        {"apiGroups": [""], "resources": ["pods/*"], "verbs": ["get"]},
        GrantRisk.WILDCARD,
    ),
    "wildcard-verb": (
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["*"]},
        GrantRisk.WILDCARD,
    ),
    "secrets": ({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}, GrantRisk.SECRETS),
    "token": (
        {"apiGroups": [""], "resources": ["serviceaccounts/token"], "verbs": ["create"]},
        GrantRisk.SERVICE_ACCOUNT_TOKENS,
    ),
    "exec": (
        {"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]},
        GrantRisk.POD_EXEC,
    ),
    "attach": (
        {"apiGroups": [""], "resources": ["pods/attach"], "verbs": ["create"]},
        GrantRisk.POD_EXEC,
    ),
    "portforward": (
        {"apiGroups": [""], "resources": ["pods/portforward"], "verbs": ["create"]},
        GrantRisk.POD_EXEC,
    ),
    "impersonate": (
        {"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"]},
        GrantRisk.IMPERSONATE,
    ),
    "escalate": (
        {"apiGroups": [RBAC_GROUP], "resources": ["roles"], "verbs": ["escalate"]},
        GrantRisk.ESCALATE,
    ),
    "bind": (
        {"apiGroups": [RBAC_GROUP], "resources": ["clusterroles"], "verbs": ["bind"]},
        GrantRisk.BIND,
    ),
    "rbac-write": (
        {"apiGroups": [RBAC_GROUP], "resources": ["rolebindings"], "verbs": ["create"]},
        GrantRisk.RBAC_WRITE,
    ),
}


def granting(run: Run, case: str, rule: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "security.baseline.dev/v1alpha1",
        "kind": "SecurityBaseline",
        "metadata": {"name": f"{run.prefix}-ceiling-{case}"},
        "spec": {
            "namespaceSelector": {"matchLabels": {"e2e.baseline-operator.test/none": "x"}},
            "rbac": {"serviceAccounts": [{"name": "app", "rules": [rule]}]},
        },
    }


@pytest.mark.parametrize("case", list(CEILING_CASES))
async def test_the_crd_refuses_a_grant_above_the_ceiling(
    run: Run, admin: KubeApi, case: str
) -> None:
    rule, risk = CEILING_CASES[case]
    body = granting(run, case, dict(rule))
    answer = await create(admin, SECURITY_BASELINE, "", body, dry_run=True)
    assert answer.status == 422, (answer.status, answer.message)
    assert "spec.rbac.serviceAccounts[0].rules[0]" in answer.message, answer.message
    assert risk_message(risk) in answer.message, answer.message

    # The one deliberate exception: the rule names every risk it takes.
    risks = rule_risks(rule["apiGroups"], rule["resources"], rule["verbs"])
    acknowledged = granting(run, case, {**rule, "acknowledgeRisks": [str(r) for r in risks]})
    answer = await create(admin, SECURITY_BASELINE, "", acknowledged, dry_run=True)
    assert answer.status == 201, answer.message


def adapted_ceiling(run: Run, name: str) -> list[dict[str, Any]]:
    """manifests/base/admission-ceiling.yaml for this run's operator namespace, renamed."""
    text = CEILING_FILE.read_text()
    assert SHIPPED_OPERATOR_USER in text, "the ceiling no longer names the shipped operator"
    text = text.replace("baseline-operator-system", run.operator_namespace)
    assert f"system:serviceaccount:{run.operator_namespace}:{OPERATOR_SERVICE_ACCOUNT}" in text
    policy, binding = [doc for doc in yaml.safe_load_all(text) if doc]
    assert policy["kind"] == "ValidatingAdmissionPolicy"
    assert binding["kind"] == "ValidatingAdmissionPolicyBinding"
    policy["metadata"]["name"] = binding["metadata"]["name"] = name
    binding["spec"]["policyName"] = name
    return [policy, binding]


def role(name: str, namespace: str, *rules: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": name, "namespace": namespace},
        "rules": list(rules),
    }


def binding(name: str, namespace: str, kind: str, role_name: str) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": namespace},
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": kind, "name": role_name},
        "subjects": [{"apiGroup": RBAC_GROUP, "kind": "User", "name": "someone"}],
    }


READ_CONFIGMAPS = {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}


async def test_the_ceiling_policy_refuses_the_operator_above_it(
    e2e: E2E, clients: list[KubeApi]
) -> None:
    risky_ns = await e2e.create_namespace("risky", env="risky")
    fine_ns = await e2e.create_namespace("fine", env="prod")
    operator_kube = new_kube(e2e.run.operator)
    clients.append(operator_kube)
    ceiling = e2e.name("ceiling")
    policy, ceiling_binding = adapted_ceiling(e2e.run, ceiling)
    own = e2e.run.operator_namespace

    # Without the ceiling, RBAC alone lets the operator write a Role in kube-system.
    probe = role(e2e.name("probe"), "kube-system", READ_CONFIGMAPS)
    assert (await create(operator_kube, ROLE, "kube-system", probe, dry_run=True)).status == 201

    e2e.track(VALIDATING_ADMISSION_POLICY_BINDING, ceiling)
    e2e.track(VALIDATING_ADMISSION_POLICY, ceiling)
    try:
        for item, kind in (
            (policy, VALIDATING_ADMISSION_POLICY),
            (ceiling_binding, VALIDATING_ADMISSION_POLICY_BINDING),
        ):
            applied = await server_side_apply(e2e.kube, kind, item)
            assert applied.status in (200, 201), applied.message

        async def in_force() -> bool:
            answer = await create(operator_kube, ROLE, "kube-system", probe, dry_run=True)
            return answer.status == 403 and ceiling in answer.message

        await eventually(in_force, what="the ceiling policy in force")

        # As the operator's ServiceAccount (dry runs: nothing lands even if one passed).
        expected_refusals = {
            "a Role in kube-system": (ROLE, "kube-system", probe, "may not write in kube-system"),
            "a Role in the operator's own namespace": (
                ROLE,
                own,
                role("x", own, READ_CONFIGMAPS),
                "its own namespace",
            ),
            **{
                f"a Role granting {case}": (
                    ROLE,
                    fine_ns,
                    role(f"x-{case}", fine_ns, dict(rule)),
                    "may not",
                )
                for case, (rule, _) in CEILING_CASES.items()
            },
            "a RoleBinding to a Role it does not generate": (
                ROLE_BINDING,
                fine_ns,
                binding("x", fine_ns, "Role", "hand-made"),
                "may refer only to the ClusterRoles admin and view",
            ),
        }
        wrong = {}
        for what, (kind, namespace, item, fragment) in expected_refusals.items():
            answer = await create(operator_kube, kind, namespace, item, dry_run=True)
            if (
                answer.status != 403
                or ceiling not in answer.message
                or fragment not in (answer.message)
            ):
                wrong[what] = f"{answer.status}: {answer.message}"
        # A RoleBinding to cluster-admin or edit: RBAC refuses first (no bind on them).
        for cluster_role in ("cluster-admin", "edit"):
            item = binding("x", fine_ns, "ClusterRole", cluster_role)
            answer = await create(operator_kube, ROLE_BINDING, fine_ns, item, dry_run=True)
            if answer.status != 403:
                wrong[f"a RoleBinding to {cluster_role}"] = f"{answer.status}: {answer.message}"
        # Under the ceiling, as the operator generates: admitted.
        admitted = {
            "a Role reading configmaps": (ROLE, role("x", fine_ns, READ_CONFIGMAPS)),
            "a RoleBinding to admin": (ROLE_BINDING, binding("x", fine_ns, "ClusterRole", "admin")),
            "a RoleBinding to view": (ROLE_BINDING, binding("x", fine_ns, "ClusterRole", "view")),
            "a RoleBinding to <baseline>-sa.<account>": (
                ROLE_BINDING,
                binding("x", fine_ns, "Role", "some-baseline-sa.app"),
            ),
        }
        for what, (kind, item) in admitted.items():
            answer = await create(operator_kube, kind, fine_ns, item, dry_run=True)
            if answer.status != 201:
                wrong[what] = f"{answer.status}: {answer.message}"
        assert wrong == {}, "\n".join(f"{what}: {why}" for what, why in wrong.items())

        # Two parties must agree: a baseline that acknowledges a risk passes the CRD, and
        # the ceiling still refuses the Role; the baseline says so. A baseline under the
        # ceiling converges beside it (the ceiling admits every name the operator makes).
        secret_rule = {
            "apiGroups": [""],
            "resources": ["secrets"],
            "verbs": ["get"],
            "acknowledgeRisks": ["Secrets"],
        }
        risky = e2e.baseline_body(
            "risky",
            selector={"matchLabels": {"env": "risky"}},
            rbac={"serviceAccounts": [{"name": "reader", "rules": [secret_rule]}]},
        )
        fine = e2e.baseline_body(
            "fine",
            rbac={
                "serviceAccounts": [{"name": "app", "rules": [READ_CONFIGMAPS]}],
                "admins": [{"kind": "User", "name": "alice"}],
                "viewers": [{"kind": "Group", "name": "team"}],
                "deployers": [{"kind": "User", "name": "ci"}],
            },
        )
        risky_name = await e2e.create_baseline(risky)
        fine_name = await e2e.create_baseline(fine)
        async with e2e.operator():
            await eventually(lambda: converged_on(e2e, fine, [fine_ns]), what="convergence")
            await converged(e2e, fine_name)
            await reports(e2e, risky_name, "ApplyFailed", ceiling, "may not grant secrets")
            degraded = await e2e.cluster.condition(risky_name, "Degraded")
            assert degraded.get("status") == "True", degraded
            assert await e2e.cluster.get(ROLE, risky_ns, f"{risky_name}-sa.reader") is None
    finally:
        for kind in (VALIDATING_ADMISSION_POLICY_BINDING, VALIDATING_ADMISSION_POLICY):
            await attempt(e2e.kube, "DELETE", object_path(kind, None, ceiling))


# ----------------------------------------------------------------------------- 4. ownership


def copies_of(generated: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A generated RoleBinding copied under new names with new subjects: as `kubectl get
    -o yaml` shows it (no managedFields), and with its managedFields kept (forged proof)."""
    plain = stripped(generated)
    plain["metadata"]["name"] = "copied-admins"
    plain["subjects"] = [{"apiGroup": RBAC_GROUP, "kind": "User", "name": "mallory"}]
    forged = copy.deepcopy(generated)
    for key in ("uid", "resourceVersion", "creationTimestamp"):
        forged["metadata"].pop(key, None)
    forged["metadata"]["name"] = "forged-admins"
    forged["subjects"] = [{"apiGroup": RBAC_GROUP, "kind": "User", "name": "mallory"}]
    return {"copied-admins": plain, "forged-admins": forged}


async def remove_copies(kube: KubeApi, namespace: str, names: list[str]) -> None:
    """The tenant takes its copies back (so that the baseline's finalizer can finish)."""
    for copy_name in names:
        await attempt(kube, "DELETE", object_path(ROLE_BINDING, namespace, copy_name))


async def leave(e2e: E2E, name: str, namespace: str, generated: ObjectRef) -> None:
    """Relabel the namespace out of the baseline; wait until what the operator made is gone."""
    await e2e.cluster.merge_patch(
        NAMESPACE, None, namespace, {"metadata": {"labels": {"env": "dev"}}}
    )

    async def cleaned() -> bool:
        labels = await e2e.cluster.labels(namespace)
        made = await e2e.cluster.get(generated.kind, namespace, generated.name)
        return made is None and applied_label(name) not in labels

    await eventually(cleaned, what="cleanup of the namespace leaving")


async def test_a_copied_role_binding_is_refused_or_reported_never_deleted(
    e2e: E2E, tenant: Endpoint, clients: list[KubeApi]
) -> None:
    namespace = await e2e.create_namespace("a", env="prod")
    body = e2e.baseline_body(rbac=POSTURE["rbac"], protectGeneratedObjects=True)
    name = await e2e.create_baseline(body)
    tenant_kube = await as_tenant(e2e, tenant, namespace, clients)
    admins = ref_of(body, namespace, ROLE_BINDING, "admins")
    async with e2e.operator() as operator:
        await eventually(lambda: converged_on(e2e, body, [namespace]), what="convergence")
        await protect_in_force(e2e, tenant_kube, name, admins)
        copies = copies_of(await live(e2e, admins))

        # Protected: the copy is refused (it carries the baseline's labels).
        for copy_name, item in copies.items():
            answer = await create(tenant_kube, ROLE_BINDING, namespace, item)
            assert_protect_refused(answer, name, f"tenant creating {copy_name}")

        # The glass broken (protection off): the copies can be created ...
        await e2e.cluster.merge_patch(
            SECURITY_BASELINE, None, name, {"spec": {"protectGeneratedObjects": False}}
        )

        async def unprotected() -> bool:
            item = copies["copied-admins"]
            answer = await create(tenant_kube, ROLE_BINDING, namespace, item, dry_run=True)
            return answer.status == 201

        await eventually(unprotected, what="protection lifted")
        uids = {}
        try:
            for copy_name, item in copies.items():
                answer = await create(tenant_kube, ROLE_BINDING, namespace, item)
                assert answer.status == 201, f"{copy_name}: {answer.message}"
                uids[copy_name] = answer.body["metadata"]["uid"]
            forged = await live(e2e, ObjectRef(ROLE_BINDING, namespace, "forged-admins"))
            managers = sorted(e["manager"] for e in forged["metadata"].get("managedFields", []))
            print(f"the forged copy's field managers, as the server kept them: {managers}")

            # ... and are reported, named, not adopted, not deleted.
            copied = ObjectRef(ROLE_BINDING, namespace, "copied-admins")
            await reports(e2e, name, "Conflicted", str(copied), "(+1 more)")

            # The namespace leaves the baseline: what the operator made goes, the copies stay.
            await operator.settled()
            started = time.monotonic()
            await leave(e2e, name, namespace, admins)
            record_timing("namespace leaving: relabel to cleanup", time.monotonic() - started)
            await operator.settled()
            for copy_name, uid in uids.items():
                kept = await e2e.cluster.get(ROLE_BINDING, namespace, copy_name)
                assert kept is not None, f"the operator deleted the tenant's {copy_name}"
                assert kept["metadata"]["uid"] == uid, copy_name
                assert [s["name"] for s in kept["subjects"]] == ["mallory"], copy_name
        finally:
            await remove_copies(tenant_kube, namespace, list(uids))


async def test_a_forged_copy_under_a_generated_name_is_not_deleted(
    e2e: E2E, tenant: Endpoint, clients: list[KubeApi]
) -> None:
    """The hardest copy: a name the baseline could generate (`<baseline>-sa.<account>` for
    an account it does not declare) and the generated binding's managedFields sent along,
    so that the object looks written by the operator's field manager."""
    namespace = await e2e.create_namespace("a", env="prod")
    body = e2e.baseline_body(rbac=POSTURE["rbac"])
    name = await e2e.create_baseline(body)
    tenant_kube = await as_tenant(e2e, tenant, namespace, clients)
    admins = ref_of(body, namespace, ROLE_BINDING, "admins")
    ghost = ObjectRef(ROLE_BINDING, namespace, f"{name}-sa.ghost")
    async with e2e.operator() as operator:
        try:
            await eventually(lambda: converged_on(e2e, body, [namespace]), what="convergence")
            await operator.settled()
            forged = copies_of(await live(e2e, admins))["forged-admins"]
            forged["metadata"]["name"] = ghost.name
            answer = await create(tenant_kube, ROLE_BINDING, namespace, forged)
            assert answer.status == 201, answer.message
            uid = answer.body["metadata"]["uid"]
            managers = {e["manager"] for e in answer.body["metadata"].get("managedFields", [])}
            print(f"field managers of the forged copy as stored: {sorted(managers)}")

            # The operator did not make it: reported, and still there once it has looked.
            await reports(e2e, name, "Conflicted", str(ghost))
            await operator.settled()
            kept = await e2e.cluster.get(ROLE_BINDING, namespace, ghost.name)
            assert kept is not None and kept["metadata"]["uid"] == uid, (
                f"the operator deleted the tenant's {ghost} (stored managers: {sorted(managers)})"
            )
        finally:
            await remove_copies(tenant_kube, namespace, [ghost.name])


async def test_a_copy_left_behind_by_a_leaving_namespace_is_still_reported(
    e2e: E2E, tenant: Endpoint, clients: list[KubeApi]
) -> None:
    namespace = await e2e.create_namespace("a", env="prod")
    body = e2e.baseline_body(rbac=POSTURE["rbac"])
    name = await e2e.create_baseline(body)
    tenant_kube = await as_tenant(e2e, tenant, namespace, clients)
    admins = ref_of(body, namespace, ROLE_BINDING, "admins")
    copied = ObjectRef(ROLE_BINDING, namespace, "copied-admins")
    async with e2e.operator() as operator:
        try:
            await eventually(lambda: converged_on(e2e, body, [namespace]), what="convergence")
            item = copies_of(await live(e2e, admins))["copied-admins"]
            answer = await create(tenant_kube, ROLE_BINDING, namespace, item)
            assert answer.status == 201, answer.message
            await reports(e2e, name, "Conflicted", str(copied))
            await operator.settled()
            left_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1))
            await leave(e2e, name, namespace, admins)
            assert await e2e.cluster.get(ROLE_BINDING, namespace, copied.name) is not None

            async def status_after_leaving() -> dict[str, Any]:
                status = await e2e.cluster.status(name)
                return status if (status.get("namespaces") or {}).get("selected") == 0 else {}

            status = await eventually(status_after_leaving, what="the status after leaving")
            conflicted = next(c for c in status["conditions"] if c["type"] == "Conflicted")
            # Events about a namespace (a cluster-scoped object) are stored in `default`.
            events = [
                event
                for event in await e2e.cluster.list(EVENT, "default")
                if event.get("reason") == "Conflict"
                and (event.get("involvedObject") or {}).get("name") == namespace
                and str(copied) in event.get("message", "")
                and event["metadata"]["creationTimestamp"] >= left_at
            ]
            in_status = conflicted["status"] == "True" and str(copied) in conflicted["message"]
            assert in_status or events, (
                f"nothing reports {copied} after the namespace left: {conflicted}"
            )
        finally:
            await remove_copies(tenant_kube, namespace, [copied.name])


async def test_a_copy_does_not_block_the_deletion_of_its_baseline(
    e2e: E2E, tenant: Endpoint, clients: list[KubeApi]
) -> None:
    namespace = await e2e.create_namespace("a", env="prod")
    body = e2e.baseline_body(rbac=POSTURE["rbac"])
    name = await e2e.create_baseline(body)
    tenant_kube = await as_tenant(e2e, tenant, namespace, clients)
    admins = ref_of(body, namespace, ROLE_BINDING, "admins")
    copied = ObjectRef(ROLE_BINDING, namespace, "copied-admins")
    async with e2e.operator():
        try:
            await eventually(lambda: converged_on(e2e, body, [namespace]), what="convergence")
            item = copies_of(await live(e2e, admins))["copied-admins"]
            answer = await create(tenant_kube, ROLE_BINDING, namespace, item)
            assert answer.status == 201, answer.message
            await reports(e2e, name, "Conflicted", str(copied))
            started = time.monotonic()
            await e2e.cluster.delete(SECURITY_BASELINE, None, name)

            async def gone() -> bool:
                return await e2e.cluster.get(SECURITY_BASELINE, None, name) is None

            await eventually(gone, limit=30, what="the baseline's deletion, a copy remaining")
            record_timing("baseline deletion with a copy remaining", time.monotonic() - started)
            assert await e2e.cluster.get(ROLE_BINDING, namespace, admins.name) is None
            assert await e2e.cluster.get(ROLE_BINDING, namespace, copied.name) is not None
        finally:
            await remove_copies(tenant_kube, namespace, [copied.name])


# ----------------------------------------------------------------------------- 5. mass removal


async def holding(e2e: E2E, name: str, namespaces: list[str]) -> list[str]:
    """The namespaces that carry the baseline's applied label."""
    label = applied_label(name)
    return [ns for ns in namespaces if label in await e2e.cluster.labels(ns)]


async def test_a_mass_removal_is_held_until_acknowledged(e2e: E2E) -> None:
    namespaces = [await e2e.create_namespace(f"n{index}", env="prod") for index in range(6)]
    body = e2e.baseline_body(**POSTURE)
    name = await e2e.create_baseline(body)
    async with e2e.operator() as operator:
        await eventually(lambda: converged_on(e2e, body, namespaces), what="convergence")
        await converged(e2e, name)

        # One namespace of six leaving is no mass removal: it goes at once.
        await operator.settled()
        await leave(e2e, name, namespaces[-1], ref_of(body, namespaces[-1], ROLE_BINDING, "admins"))
        held_by = namespaces[:-1]
        await eventually(lambda: converged_on(e2e, body, held_by), what="five namespaces left")
        before = await e2e.owned_refs(name)

        # A typo in the selector would take the posture out of all five: held.
        await operator.settled()
        typo = {"spec": {"namespaceSelector": {"matchLabels": {"env": "prdo"}}}}
        await e2e.cluster.merge_patch(SECURITY_BASELINE, None, name, typo)
        generation = (await e2e.cluster.get(SECURITY_BASELINE, None, name) or {})["metadata"][
            "generation"
        ]
        acknowledgement = f'acknowledge-removal="{generation}"'
        status = await reports(e2e, name, "RemovalHeld", "5 of the 5", acknowledgement)
        await operator.settled()
        assert await e2e.owned_refs(name) == before, "something was removed while held"
        assert await holding(e2e, name, held_by) == held_by, "a namespace was unlabelled"

        async def warned() -> list[dict[str, Any]]:
            return [
                event
                for event in await e2e.cluster.list(EVENT)
                if (event.get("involvedObject") or {}).get("name") == name
                and event.get("type") == "Warning"
                and acknowledgement in event.get("message", "")
            ]

        await eventually(warned, what="a Warning Event about the held removal")

        # Acknowledged for this generation: the removal goes ahead.
        started = time.monotonic()
        await e2e.acknowledge_removal(name)

        async def removed() -> bool:
            return not await e2e.owned_refs(name) and not await holding(e2e, name, held_by)

        await eventually(removed, what="the acknowledged removal")
        record_timing(
            "mass removal of 5 namespaces: acknowledgement to removal", time.monotonic() - started
        )
        print(f"held status: {json.dumps(status['conditions'])}")


PSA_ENFORCE = "pod-security.kubernetes.io/enforce"


async def test_a_pod_security_label_someone_else_set_is_neither_forced_nor_removed(
    e2e: E2E,
) -> None:
    namespace = await e2e.create_namespace("a", env="prod")
    # Set by someone else (the tests' own field manager) before any baseline.
    labelled = await server_side_apply(
        e2e.kube,
        NAMESPACE,
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace, "labels": {PSA_ENFORCE: "privileged"}},
        },
    )
    assert labelled.status == 200, labelled.message
    body = e2e.baseline_body(podSecurity={"enforce": "restricted"}, **POSTURE)
    name = await e2e.create_baseline(body)
    async with e2e.operator() as operator:
        # Not forced: the label stays as its owner set it, and the baseline says so.
        await reports(e2e, name, "Conflicted", f"{PSA_ENFORCE}=privileged")
        labels = await e2e.cluster.labels(namespace)
        assert labels[PSA_ENFORCE] == "privileged"
        assert labels.get(applied_label(name)) == "true"

        # Not removed when the namespace leaves the baseline.
        await operator.settled()
        await leave(e2e, name, namespace, ref_of(body, namespace, ROLE_BINDING, "admins"))
        await operator.settled()
        assert (await e2e.cluster.labels(namespace)).get(PSA_ENFORCE) == "privileged"


# ----------------------------------------------------------------------------- 6. collisions


async def test_name_collisions_between_baselines_are_reported(e2e: E2E) -> None:
    namespace = await e2e.create_namespace("a", env="prod")
    # The collision of the issue: ServiceAccount `admins` of `c` against the admin binding
    # of `c-sa`. Each keeps its grant (the account's is `c-sa.admins`, the binding
    # `c-sa-admins`), and both are Converged.
    with_account = e2e.baseline_body(
        "c", rbac={"serviceAccounts": [{"name": "admins", "rules": [READ_CONFIGMAPS]}]}
    )
    with_admins = e2e.baseline_body("c-sa", rbac={"admins": [{"kind": "User", "name": "alice"}]})
    # A collision that names still allow: baseline `n`'s ingress rule `x-default-deny` and
    # the default deny of baseline `n-ingress-x` are both NetworkPolicy n-ingress-x-default-deny.
    with_rule = e2e.baseline_body(
        "n",
        networkPolicy={"ingress": [{"name": "x-default-deny", "from": [{"podSelector": {}}]}]},
    )
    with_deny = e2e.baseline_body("n-ingress-x", networkPolicy={"defaultDeny": ["Ingress"]})
    names = [
        await e2e.create_baseline(item)
        for item in (with_account, with_admins, with_rule, with_deny)
    ]
    account_baseline, admins_baseline, rule_baseline, deny_baseline = names
    contested = ObjectRef(NETWORK_POLICY, namespace, f"{deny_baseline}-default-deny")
    assert contested.name == f"{rule_baseline}-ingress-x-default-deny"
    async with e2e.operator():
        for item in (with_account, with_admins, with_rule):
            await eventually(
                lambda item=item: converged_on(e2e, item, [namespace]),  # type: ignore[misc]
                what=f"convergence of {item['metadata']['name']}",
            )
        for baseline_name in (account_baseline, admins_baseline, rule_baseline):
            await converged(e2e, baseline_name)
        grant_of_account = await live(
            e2e, ObjectRef(ROLE_BINDING, namespace, f"{account_baseline}-sa.admins")
        )
        assert grant_of_account["roleRef"]["name"] == f"{account_baseline}-sa.admins"
        assert [s["name"] for s in grant_of_account["subjects"]] == ["admins"]
        admin_binding = await live(
            e2e, ObjectRef(ROLE_BINDING, namespace, f"{admins_baseline}-admins")
        )
        assert admin_binding["roleRef"]["name"] == "admin"
        assert [s["name"] for s in admin_binding["subjects"]] == ["alice"]

        # The loser is Conflicted, with the object and the holder named.
        await reports(e2e, deny_baseline, "Conflicted", str(contested), rule_baseline)
        conflicted = await e2e.cluster.condition(deny_baseline, "Conflicted")
        assert conflicted.get("status") == "True", conflicted
        assert str(contested) in conflicted["message"], conflicted
        held = await live(e2e, contested)
        assert held["metadata"]["labels"][BASELINE_KEY] == rule_baseline
        assert held["spec"].get("ingress"), "the holder's allow rule, not the loser's deny"


# ----------------------------------------------------------------------------- 7. registries


def pod(name: str, image: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": image}]},
    }


async def test_registries_match_on_a_host_boundary(e2e: E2E) -> None:
    namespace = await e2e.create_namespace("a", env="prod")
    body = e2e.baseline_body(
        admission={"allowedRegistries": ["registry.example.com"], "validationActions": ["Deny"]}
    )
    name = await e2e.create_baseline(body)

    async def account() -> bool:
        return await e2e.cluster.get(SERVICE_ACCOUNT, namespace, "default") is not None

    await eventually(account, what="the default ServiceAccount")
    async with e2e.operator():
        await eventually(lambda: converged_on(e2e, body, [namespace]), what="convergence")

        async def in_force() -> bool:
            probe = pod("probe", "docker.io/library/nginx:1.27")
            answer = await create(e2e.kube, POD, namespace, probe, dry_run=True)
            return answer.status == 403

        await eventually(in_force, what="the workload policy in force")
        verdicts = {}
        for image in (
            "registry.example.com.evil.test/x",
            "registry.example.com.evil.test/registry.example.com/x",
            "registry.example.com:5000/x",
            "registry.example.comx/x",
            "registry.example.com/team/x:1.0",
            "registry.example.com/x@sha256:" + "a" * 64,
        ):
            answer = await create(e2e.kube, POD, namespace, pod("p", image), dry_run=True)
            verdicts[image] = answer.status
            if answer.status == 403:
                assert f"ValidatingAdmissionPolicy '{name}-workload-rules'" in answer.message
                assert image in answer.message, answer.message
        assert verdicts == {
            "registry.example.com.evil.test/x": 403,
            "registry.example.com.evil.test/registry.example.com/x": 403,
            "registry.example.com:5000/x": 403,
            "registry.example.comx/x": 403,
            "registry.example.com/team/x:1.0": 201,
            "registry.example.com/x@sha256:" + "a" * 64: 201,
        }

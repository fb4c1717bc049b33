"""Every namespaced object one baseline wants in one namespace, as plain bodies.

The section modules (`render_network`, `render_rbac`, `render_secrets`,
`render_resources`) say what each object is; this module says where it lives and
whose it is: the namespace and the managed labels are stamped here, once, so no
generated object can miss them. Namespace labels and the namespace's default
ServiceAccount are namespace-level and belong to `policy.layering`.
"""

from __future__ import annotations

from typing import Any

from baseline_operator.api.resource import SecurityBaseline
from baseline_operator.policy.names import managed_labels
from baseline_operator.policy.objects import Body, DesiredObject, ObjectRef, Ownership
from baseline_operator.policy.render_network import render_network_policies
from baseline_operator.policy.render_rbac import render_rbac
from baseline_operator.policy.render_resources import render_resources
from baseline_operator.policy.render_secrets import render_external_secrets

# At most this many objects per namespace for one baseline: every list of the spec is
# bounded by the CRD, but together they could still ask for hundreds of objects in every
# selected namespace. A baseline above it is reported InvalidSpec and changes nothing.
MAX_OBJECTS_PER_NAMESPACE = 100


def too_many_objects(baseline: SecurityBaseline) -> str | None:
    """Why a baseline asks for too many objects per namespace, or None."""
    count = len(render_namespace_objects(baseline, "any"))
    if count <= MAX_OBJECTS_PER_NAMESPACE:
        return None
    return (
        f"spec: renders {count} objects in every selected namespace, more than"
        f" {MAX_OBJECTS_PER_NAMESPACE}; split it into several baselines"
    )


def render_namespace_objects(baseline: SecurityBaseline, namespace: str) -> list[DesiredObject]:
    """NetworkPolicies, ServiceAccounts, Roles, RoleBindings, ExternalSecrets, LimitRange and
    ResourceQuota of one baseline in one namespace, sorted by ref."""
    spec = baseline.spec
    bodies = [
        *render_network_policies(baseline.name, spec.network_policy),
        *render_rbac(baseline.name, spec.rbac, namespace),
        *render_external_secrets(spec.external_secrets, namespace),
        *render_resources(baseline.name, spec.resources),
    ]
    objects = [_owned_by(baseline.name, namespace, body) for body in bodies]
    return sorted(objects, key=lambda item: item.ref)


def _owned_by(baseline: str, namespace: str, body: Body) -> DesiredObject:
    """The body placed in the namespace with the managed labels, and nothing else in metadata."""
    declared = body["metadata"]
    metadata: dict[str, Any] = {
        "name": declared["name"],
        "namespace": namespace,
        "labels": managed_labels(baseline),
    }
    if declared.get("annotations"):
        metadata["annotations"] = dict(declared["annotations"])
    stamped = {**body, "metadata": metadata}
    return DesiredObject(ObjectRef.of(stamped), stamped, baseline, Ownership.OBJECT)

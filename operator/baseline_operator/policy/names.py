"""The fixed names of DESIGN.md: labels, the field manager, generated object names."""

from __future__ import annotations

import hashlib
import re

from baseline_operator.api.kinds import FIELD_MANAGER as FIELD_MANAGER  # noqa: PLC0414

OPERATOR_NAMESPACE = "baseline-operator-system"
OPERATOR_SERVICE_ACCOUNT = "baseline-operator"

MANAGED_BY_KEY = "app.kubernetes.io/managed-by"
MANAGED_BY_VALUE = "baseline-operator"
BASELINE_KEY = "security.baseline.dev/baseline"
APPLIED_PREFIX = "applied.security.baseline.dev/"
# Set on generated objects: a digest of what the operator wanted when it last wrote them,
# so that a changed baseline is noticed even where the server keeps extra fields.
DESIRED_HASH_KEY = "security.baseline.dev/desired-hash"

ALWAYS_EXCLUDED_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})

# Argo CD's tracking marks: never copied onto anything the operator generates.
ARGOCD_TRACKING_KEYS = frozenset(
    {"app.kubernetes.io/instance", "argocd.argoproj.io/tracking-id", "argocd.argoproj.io/instance"}
)

MAX_NAME_LENGTH = 63
_HASH_LENGTH = 8


def applied_label(baseline: str) -> str:
    """The namespace label key that says a baseline applies there."""
    return f"{APPLIED_PREFIX}{baseline}"


def managed_labels(baseline: str) -> dict[str, str]:
    """The labels every generated object carries."""
    return {MANAGED_BY_KEY: MANAGED_BY_VALUE, BASELINE_KEY: baseline}


def is_managed(labels: dict[str, str] | None) -> bool:
    return bool(labels) and labels.get(MANAGED_BY_KEY) == MANAGED_BY_VALUE  # type: ignore[union-attr]


def owning_baseline(labels: dict[str, str] | None) -> str | None:
    """The baseline a generated object belongs to, or None for objects the operator did not make."""
    if not labels or labels.get(MANAGED_BY_KEY) != MANAGED_BY_VALUE:
        return None
    return labels.get(BASELINE_KEY)


def object_name(baseline: str, suffix: str) -> str:
    """`<baseline>-<suffix>`, shortened with a stable hash when it would exceed 63 characters.

    63 is the strictest limit among the kinds generated (a DNS-1123 label); the
    hash keeps two long names that share a prefix apart.
    """
    full = f"{baseline}-{suffix}"
    if len(full) <= MAX_NAME_LENGTH:
        return full
    digest = hashlib.sha256(full.encode()).hexdigest()[:_HASH_LENGTH]
    head = full[: MAX_NAME_LENGTH - _HASH_LENGTH - 1].rstrip("-.")
    return f"{head}-{digest}"


# Suffixes of the names a baseline generates, per kind ("*" ends a suffix that goes on
# with a user-given name). Variable parts after a dot (`sa.`) cannot meet another
# baseline's names; the dashed forms are kept where object names are public (the
# NetworkPolicies of DESIGN.md) and, for cleanup, where an older release used them.
GENERATED_SUFFIXES: dict[str, tuple[str, ...]] = {
    "NetworkPolicy": ("default-deny", "allow-dns", "allow-same-namespace", "ingress-*", "egress-*"),
    "Role": ("deployer", "sa.*", "sa-*"),
    "RoleBinding": ("admins", "viewers", "deployers", "sa.*", "sa-*"),
    "LimitRange": ("limits",),
    "ResourceQuota": ("quota",),
    "ValidatingAdmissionPolicy": ("workload-rules", "protect"),
    "ValidatingAdmissionPolicyBinding": ("workload-rules", "protect"),
}
# Kinds whose names come from the spec (a ServiceAccount, an ExternalSecret): any name.
USER_NAMED_KINDS = frozenset({"ServiceAccount", "ExternalSecret"})
_HASHED = re.compile(r"^(?P<head>.+)-[0-9a-f]{8}$")


def could_generate(baseline: str, kind: str, name: str) -> bool:
    """Whether `name` is one baseline `baseline` generates, or once generated, for `kind`.

    With proof in managedFields that the operator applied the object, this is what
    lets it delete or rewrite the object: labels alone can be copied by anyone.
    """
    if kind in USER_NAMED_KINDS:
        return True
    for suffix in GENERATED_SUFFIXES.get(kind, ()):
        stem = f"{baseline}-{suffix.removesuffix('*')}"
        if suffix.endswith("*"):
            if name.startswith(stem) and len(name) > len(stem):
                return True
        elif name == stem:
            return True
    # A name shortened with a hash (object_name): its head is the start of the full name.
    hashed = _HASHED.match(name)
    if hashed is None or len(name) < MAX_NAME_LENGTH - 4:  # hashed names fill the 63
        return False
    head, stem = hashed["head"], f"{baseline}-"
    return head.startswith(stem) or stem.startswith(head)

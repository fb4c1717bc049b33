"""Desired objects: what a baseline wants in a namespace (or the cluster), and who owns it.

The kinds, references and bodies themselves live in the bottom layer (api.kinds) and are
re-exported here for the pure core.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from baseline_operator.api.kinds import (
    ALL_KINDS,
    CLUSTER_KINDS,
    EVENT,
    EXTERNAL_SECRET,
    LEASE,
    LIMIT_RANGE,
    NAMESPACE,
    NAMESPACED_KINDS,
    NETWORK_POLICY,
    POD,
    POLICY_REPORT,
    RESOURCE_QUOTA,
    ROLE,
    ROLE_BINDING,
    SECURITY_BASELINE,
    SERVICE_ACCOUNT,
    VALIDATING_ADMISSION_POLICY,
    VALIDATING_ADMISSION_POLICY_BINDING,
    Body,
    Kind,
    ObjectRef,
    kind_of,
)


class Ownership(StrEnum):
    OBJECT = "object"  # the operator made the whole object: it labels it and may delete it
    FIELDS = "fields"  # the object belongs to someone else; the operator owns some fields


@dataclass(frozen=True)
class DesiredObject:
    """One object as a baseline wants it in a namespace (or the cluster)."""

    ref: ObjectRef
    body: Body = field(compare=False, hash=False)
    baseline: str | None
    ownership: Ownership = Ownership.OBJECT


__all__ = [
    "ALL_KINDS",
    "CLUSTER_KINDS",
    "EVENT",
    "EXTERNAL_SECRET",
    "LEASE",
    "LIMIT_RANGE",
    "NAMESPACE",
    "NAMESPACED_KINDS",
    "NETWORK_POLICY",
    "POD",
    "POLICY_REPORT",
    "RESOURCE_QUOTA",
    "ROLE",
    "ROLE_BINDING",
    "SECURITY_BASELINE",
    "SERVICE_ACCOUNT",
    "VALIDATING_ADMISSION_POLICY",
    "VALIDATING_ADMISSION_POLICY_BINDING",
    "Body",
    "DesiredObject",
    "Kind",
    "ObjectRef",
    "Ownership",
    "kind_of",
]

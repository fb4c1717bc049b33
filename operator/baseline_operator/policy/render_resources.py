"""The LimitRange and ResourceQuota of one baseline.

Bodies are returned without namespace and labels; `policy.render` stamps those.
Quantities are sent as strings: the API server returns a plain integer quantity
as a string, so sending the string keeps what is sent equal to what is read back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from baseline_operator.api.spec import LimitRangeSpec, QuotaSpec, ResourcesSection
from baseline_operator.policy.names import object_name
from baseline_operator.policy.objects import LIMIT_RANGE, RESOURCE_QUOTA, Body


def render_resources(baseline: str, section: ResourcesSection | None) -> list[Body]:
    if section is None:
        return []
    objects: list[Body] = []
    if section.limit_range is not None:
        objects.append(_limit_range(baseline, section.limit_range))
    if section.quota is not None:
        objects.append(_quota(baseline, section.quota))
    return objects


def _limit_range(baseline: str, limits: LimitRangeSpec) -> Body:
    container: dict[str, Any] = {"type": "Container"}
    for key, values in (
        ("default", limits.default),
        ("defaultRequest", limits.default_request),
        ("max", limits.max),
        ("min", limits.min),
        ("maxLimitRequestRatio", limits.max_limit_request_ratio),
    ):
        if values is not None:
            container[key] = quantities(values)
    return {
        "apiVersion": LIMIT_RANGE.api_version,
        "kind": LIMIT_RANGE.kind,
        "metadata": {"name": object_name(baseline, "limits")},
        "spec": {"limits": [container]},
    }


def _quota(baseline: str, quota: QuotaSpec) -> Body:
    return {
        "apiVersion": RESOURCE_QUOTA.api_version,
        "kind": RESOURCE_QUOTA.kind,
        "metadata": {"name": object_name(baseline, "quota")},
        "spec": {"hard": quantities(quota.hard)},
    }


def quantities(values: Mapping[str, int | str]) -> dict[str, str]:
    """A resource list with every quantity as a string (2 -> "2", "500m" stays)."""
    return {resource: str(value) for resource, value in values.items()}

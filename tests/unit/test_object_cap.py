"""A baseline that would put more than the documented number of objects in every namespace
is invalid: reported, and nothing of it is written."""

from __future__ import annotations

from typing import Any

from baseline_operator.api.resource import parse_baseline
from baseline_operator.controller.baselines import baseline_entry
from baseline_operator.policy.render import MAX_OBJECTS_PER_NAMESPACE, too_many_objects
from tests.support.cluster import baseline


def rules(prefix: str, count: int, peer: str) -> list[dict[str, Any]]:
    return [
        {"name": f"{prefix}-{index}", peer: [{"podSelector": {"matchLabels": {"app": "x"}}}]}
        for index in range(count)
    ]


def with_allow_rules(count: int) -> dict[str, Any]:
    half = count // 2
    return baseline(
        networkPolicy={
            "defaultDeny": ["Ingress", "Egress"],
            "ingress": rules("in", half, "from"),
            "egress": rules("out", count - half, "to"),
        }
    )


def test_a_baseline_within_the_cap_is_valid() -> None:
    body = with_allow_rules(MAX_OBJECTS_PER_NAMESPACE - 1)  # + the default deny
    assert too_many_objects(parse_baseline(body)) is None
    assert baseline_entry(body).valid


def test_a_baseline_over_the_cap_is_invalid_and_says_why() -> None:
    body = with_allow_rules(MAX_OBJECTS_PER_NAMESPACE)
    entry = baseline_entry(body)
    assert not entry.valid
    (error,) = entry.errors
    assert f"renders {MAX_OBJECTS_PER_NAMESPACE + 1} objects" in error
    assert f"more than {MAX_OBJECTS_PER_NAMESPACE}" in error

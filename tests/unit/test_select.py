"""Which namespaces a restart serves first."""

from __future__ import annotations

from baseline_operator.api.resource import parse_baseline
from baseline_operator.policy.select import unserved_first
from tests.support.cluster import baseline

PROD = parse_baseline(baseline("prod", namespaceSelector={"matchLabels": {"env": "prod"}}))
TEAM = parse_baseline(baseline("team", namespaceSelector={"matchLabels": {"team": "a"}}))
APPLIED = "applied.security.baseline.dev/"


def test_a_selected_namespace_without_its_mark_comes_first_and_the_order_holds_otherwise() -> None:
    namespaces = [
        ("served-1", {"env": "prod", f"{APPLIED}prod": "1"}),
        ("unselected", {"env": "dev"}),
        ("new-1", {"env": "prod"}),
        ("served-2", {"env": "prod", f"{APPLIED}prod": "1"}),
        ("new-2", {"env": "prod"}),
    ]
    assert unserved_first(namespaces, [PROD]) == [
        "new-1",
        "new-2",
        "served-1",
        "unselected",
        "served-2",
    ]


def test_a_namespace_missing_the_mark_of_any_one_selecting_baseline_is_unserved() -> None:
    labels = {"env": "prod", "team": "a", f"{APPLIED}prod": "1"}
    served = {**labels, f"{APPLIED}team": "1"}
    assert unserved_first([("both", served), ("half", labels)], [PROD, TEAM]) == ["half", "both"]


def test_the_operators_own_namespace_is_never_unserved() -> None:
    namespaces = [("other", {"env": "dev"}), ("baseline-system", {"env": "prod"})]
    assert unserved_first(namespaces, [PROD], "baseline-system") == ["other", "baseline-system"]


def test_with_no_baseline_the_order_is_unchanged() -> None:
    assert unserved_first([("b", {}), ("a", {"env": "prod"})], []) == ["b", "a"]

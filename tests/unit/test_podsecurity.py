from __future__ import annotations

import pytest

from baseline_operator.policy.podsecurity import enforce_raised, merge_stricter

E, EV = "pod-security.kubernetes.io/enforce", "pod-security.kubernetes.io/enforce-version"


def test_merge_keeps_the_stricter_level_with_its_version() -> None:
    merged = merge_stricter({E: "baseline", EV: "v1.29"}, {E: "restricted"})
    assert merged == {E: "restricted"}
    assert merge_stricter({E: "restricted"}, {E: "baseline", EV: "v1.30"}) == {E: "restricted"}


@pytest.mark.parametrize(
    ("current", "wanted", "raised"),
    [
        ({}, {E: "restricted"}, True),
        ({E: "baseline"}, {E: "restricted"}, True),
        ({E: "restricted"}, {E: "baseline"}, False),
        ({E: "restricted"}, {E: "restricted"}, False),
        ({E: "restricted", EV: "v1.29"}, {E: "restricted"}, True),
        ({E: "restricted"}, {}, False),
    ],
)
def test_enforce_raised(current: dict[str, str], wanted: dict[str, str], raised: bool) -> None:
    assert enforce_raised(current, wanted) is raised

"""Leader election decisions (the Lease arithmetic), without a server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from baseline_operator.controller.leader import claim, format_time

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def lease(holder: str, renewed: datetime, transitions: int = 0) -> dict:
    return {
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": 15,
            "acquireTime": format_time(renewed),
            "renewTime": format_time(renewed),
            "leaseTransitions": transitions,
        }
    }


def test_a_free_lease_is_taken() -> None:
    spec = claim(None, "a", 15, NOW)
    assert spec is not None and spec["holderIdentity"] == "a" and spec["leaseTransitions"] == 0


def test_a_live_lease_of_another_is_respected() -> None:
    assert claim(lease("b", NOW - timedelta(seconds=5)), "a", 15, NOW) is None


def test_an_expired_lease_is_taken_over_and_counted() -> None:
    spec = claim(lease("b", NOW - timedelta(seconds=16), transitions=2), "a", 15, NOW)
    assert spec is not None
    assert spec["holderIdentity"] == "a" and spec["leaseTransitions"] == 3
    assert spec["acquireTime"] == format_time(NOW)


def test_the_holder_renews_without_a_transition() -> None:
    before = NOW - timedelta(seconds=5)
    spec = claim(lease("a", before, transitions=1), "a", 15, NOW)
    assert spec is not None
    assert spec["leaseTransitions"] == 1
    assert spec["acquireTime"] == format_time(before) and spec["renewTime"] == format_time(NOW)

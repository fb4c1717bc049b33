"""The README's first command: the demo converges, repairs drift and reports, in-process."""

from __future__ import annotations

import io

from baseline_operator.demo.run import counted, demo


async def test_the_demo_shows_the_operator_doing_its_job() -> None:
    out = io.StringIO()
    assert await demo(8, out) == 0
    text = out.getvalue()
    assert "3/3 baselines report" in text
    assert "recreated after" in text
    assert "restored to restricted after" in text
    assert "repaired after" in text
    # the foreign object is left alone and reported
    assert "payments: Conflicted: NetworkPolicy payments/production-default-deny exists" in text
    # layering: both baselines apply to `batch`
    assert "production,starter" in text
    assert "shop/legacy-worker:" in text
    # counts agree with their nouns and verbs
    assert "5 namespaces carry a baseline; 3/3 baselines report" in text
    assert "1 namespace holds objects the operator did not make: payments:" in text
    assert "1 of 4 namespaces does not hold the posture" in text
    assert "2 pods checked, 1 fails hardening checks (10 findings)" in text
    assert "0 pods checked, 0 fail hardening checks (0 findings)" in text
    assert "1 namespaces" not in text and "1 pods" not in text


async def test_a_demo_of_one_namespace_speaks_in_the_singular() -> None:
    out = io.StringIO()
    assert await demo(1, out) == 0
    text = out.getvalue()
    assert "1 namespace carries a baseline; 3/3 baselines report" in text
    assert "the 1 namespace selected holds the posture" in text  # production selects shop
    assert "1 namespaces" not in text


def test_counted_agrees_with_the_number() -> None:
    assert counted(1, "namespace carries", "namespaces carry") == "1 namespace carries"
    assert counted(0, "namespace carries", "namespaces carry") == "0 namespaces carry"
    assert counted(2, "pod") == "2 pods"
    assert counted(1, "finding") == "1 finding"

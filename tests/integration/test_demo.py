"""The README's first command: the demo converges, repairs drift and reports, in-process."""

from __future__ import annotations

import io

from baseline_operator.demo.run import demo


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

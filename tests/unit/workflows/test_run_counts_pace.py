"""How often workflows reads its per-workflow run counts for /metrics."""

from __future__ import annotations

import pytest

from services.workflows.consumers import COUNTS_SHARE, next_count_after


def test_a_quick_read_waits_the_configured_interval() -> None:
    assert next_count_after(15.0, 0.004) == 15.0


@pytest.mark.parametrize("took", [0.5, 2.0, 30.0])
def test_a_slow_read_is_spaced_to_take_at_most_its_share_of_the_time(took: float) -> None:
    wait = next_count_after(15.0, took)
    assert wait > 15.0
    assert took / (took + wait) == pytest.approx(COUNTS_SHARE)

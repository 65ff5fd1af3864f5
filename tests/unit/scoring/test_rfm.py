"""RFM: quintiles on a small data set computed by hand, segments, churn risk and its timer."""

from __future__ import annotations

import pytest

from services.scoring.rfm.domain import (
    DAY,
    Activity,
    Breakpoints,
    assess,
    band_of,
    breakpoints,
    next_change_at,
    quintile,
    record_activity,
    risk_value,
    segment_of,
    workspace_breakpoints,
)

NOW = 1_767_225_600.0


class TestQuintiles:
    def test_breakpoints_of_ten_values(self) -> None:
        # Sorted 1..10: nearest ranks ceil(2), ceil(4), ceil(6), ceil(8) → 2, 4, 6, 8.
        assert breakpoints([7, 3, 10, 1, 5, 9, 2, 8, 4, 6]) == [2, 4, 6, 8]

    def test_breakpoints_of_seven_values(self) -> None:
        # n=7: ranks ceil(1.4)=2, ceil(2.8)=3, ceil(4.2)=5, ceil(5.6)=6 → 20, 30, 50, 60.
        assert breakpoints([10, 20, 30, 40, 50, 60, 70]) == [20, 30, 50, 60]

    @pytest.mark.parametrize(("value", "score"), [(1, 1), (2, 1), (3, 2), (6, 3), (7, 4), (10, 5)])
    def test_higher_is_better(self, value: float, score: int) -> None:
        assert quintile(value, [2, 4, 6, 8]) == score

    @pytest.mark.parametrize(("days", "score"), [(1, 5), (2, 5), (3, 4), (8, 2), (9, 1)])
    def test_recency_fewer_days_is_better(self, days: float, score: int) -> None:
        assert quintile(days, [2, 4, 6, 8], lower_is_better=True) == score

    def test_a_workspace_by_hand(self) -> None:
        # Five customers: last active 1, 5, 10, 20, 40 days ago; 10, 6, 4, 2, 1 activities;
        # spent 500, 300, 200, 100, 0.
        people = {
            "ann": Activity(NOW - 400 * DAY, NOW - 1 * DAY, 10, 5, 500.0),
            "ben": Activity(NOW - 300 * DAY, NOW - 5 * DAY, 6, 3, 300.0),
            "cat": Activity(NOW - 200 * DAY, NOW - 10 * DAY, 4, 2, 200.0),
            "dan": Activity(NOW - 100 * DAY, NOW - 20 * DAY, 2, 1, 100.0),
            "eve": Activity(NOW - 40 * DAY, NOW - 40 * DAY, 1, 0, 0.0),
        }
        points = workspace_breakpoints(list(people.values()), NOW)
        # n=5: ranks 1..4 of each sorted list.
        assert points == Breakpoints([1, 5, 10, 20], [1, 2, 4, 6], [0, 100, 200, 300])
        scored = {name: assess(a, points, NOW) for name, a in people.items()}
        assert {n: (s.r, s.f, s.m) for n, s in scored.items()} == {
            "ann": (5, 5, 5),
            "ben": (4, 4, 4),
            "cat": (3, 3, 3),
            "dan": (2, 2, 2),
            "eve": (1, 1, 1),
        }
        assert {n: s.segment for n, s in scored.items()} == {
            "ann": "champions",
            "ben": "champions",
            "cat": "loyal",
            "dan": "hibernating",
            "eve": "lost",
        }


class TestSegments:
    @pytest.mark.parametrize(
        ("rfm", "segment"),
        [
            ((5, 5, 4), "champions"),
            ((3, 4, 3), "loyal"),
            ((5, 1, 1), "potential"),
            ((2, 5, 5), "at_risk"),
            ((2, 1, 2), "hibernating"),
            ((1, 2, 1), "lost"),
        ],
    )
    def test_segment_of_scores(self, rfm: tuple[int, int, int], segment: str) -> None:
        assert segment_of(*rfm) == segment


class TestChurnRisk:
    def test_risk_rises_with_inactivity(self) -> None:
        stats = Activity(NOW - 70 * DAY, NOW, 11, 0, 0.0, 7 * DAY)  # weekly rhythm
        assert risk_value(stats, NOW) == pytest.approx(0)
        assert risk_value(stats, NOW + 14 * DAY) == pytest.approx(50)  # two rhythms overdue
        assert risk_value(stats, NOW + 28 * DAY) == pytest.approx(75)

    def test_falling_frequency_raises_risk(self) -> None:
        steady = Activity(NOW - 70 * DAY, NOW, 11, 0, 0.0, 7 * DAY)
        slowing = Activity(NOW - 70 * DAY, NOW, 11, 0, 0.0, 14 * DAY)
        assert risk_value(slowing, NOW + DAY) > risk_value(steady, NOW + DAY)

    def test_recording_activity_tracks_intervals(self) -> None:
        stats = None
        for day in (0, 7, 14, 28):
            stats = record_activity(stats, NOW + day * DAY, "purchase", 10)
        assert stats is not None
        assert (stats.count, stats.purchases, stats.monetary) == (4, 4, 40.0)
        assert stats.mean_interval_s == pytest.approx(28 / 3 * DAY)
        assert stats.recent_interval_s == pytest.approx((0.3 * 14 + 0.7 * 7) * DAY)

    def test_bands(self) -> None:
        assert [band_of(r) for r in (0, 33.9, 34, 66.9, 67, 100)] == [
            "low",
            "low",
            "medium",
            "medium",
            "high",
            "high",
        ]

    def test_next_change_is_the_band_instant(self) -> None:
        stats = Activity(NOW - 70 * DAY, NOW, 11, 0, 0.0, 7 * DAY)
        points = Breakpoints([], [], [])
        due = next_change_at(stats, points, NOW)
        assert due is not None
        assert band_of(risk_value(stats, due - 2)) == "low"
        assert band_of(risk_value(stats, due)) == "medium"

    def test_next_change_includes_the_recency_breakpoint(self) -> None:
        stats = Activity(NOW - 70 * DAY, NOW, 11, 0, 0.0, 7 * DAY)
        points = Breakpoints([3, 30, 60, 90], [], [])
        due = next_change_at(stats, points, NOW)
        assert due is not None
        assert due == pytest.approx(NOW + 3 * DAY + 1)
        assert assess(stats, points, due).r == assess(stats, points, NOW).r - 1

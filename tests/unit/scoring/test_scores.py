"""Scores: points, frequency limits, caps, exact decay at chosen instants, hysteresis both
ways, the instant of a decay-driven crossing, replay and explain."""

from __future__ import annotations

from typing import Any

import pytest

from services.scoring.rules.domain import RuleSet, parse_rule_set
from services.scoring.scores.domain import (
    DAY,
    ContactScore,
    LedgerEntry,
    award,
    check_thresholds,
    explain,
    group_score,
    ledger_totals,
    next_decay_timer,
    replay,
    replay_totals,
    scores_at,
)

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


def rule_set(**body: Any) -> RuleSet:
    body.setdefault("groups", [{"name": "overall", "half_life_days": 30}])
    body.setdefault(
        "rules",
        [
            {"id": "demo", "kind": "engagement", "event": "demo.requested", "points": 30},
            {
                "id": "open",
                "kind": "engagement",
                "event": "email.opened",
                "points": 1,
                "limit": {"times": 5, "per_days": 30},
            },
            {
                "id": "title",
                "kind": "fit",
                "when": [{"field": "job_title", "op": "contains", "value": "VP"}],
                "points": 15,
            },
        ],
    )
    return RuleSet(1, parse_rule_set(body))


def hit(
    score: ContactScore, rules: RuleSet, event: str, occurred: float, now: float | None = None
) -> list[str]:
    return award(score, rules, rules.matching_engagement(event, {}), occurred, now or occurred)


def overall(score: ContactScore, rules: RuleSet, at: float) -> float:
    return scores_at(score, rules, at)["overall"]


class TestPointsAndLimits:
    def test_engagement_points_add_up(self) -> None:
        rules, score = rule_set(), ContactScore()
        hit(score, rules, "demo.requested", T0)
        hit(score, rules, "email.opened", T0)
        assert overall(score, rules, T0) == pytest.approx(31)

    def test_frequency_limit_awards_at_most_n_times_per_window(self) -> None:
        rules, score = rule_set(), ContactScore()
        awarded = [hit(score, rules, "email.opened", T0 + i * 3600) for i in range(8)]
        assert [bool(a) for a in awarded] == [True] * 5 + [False] * 3
        # 30 days after the first open the window has room again.
        assert hit(score, rules, "email.opened", T0 + 30 * DAY + 1)

    def test_cap_bounds_the_group(self) -> None:
        rules = rule_set(groups=[{"name": "overall", "cap": 50}])
        score = ContactScore()
        for i in range(3):
            hit(score, rules, "demo.requested", T0 + i)
        assert overall(score, rules, T0 + 3) == 50

    def test_fit_points_follow_attributes_and_do_not_decay(self) -> None:
        from services.scoring.scores.domain import apply_attributes

        rules, score = rule_set(), ContactScore()
        apply_attributes(score, rules, {"job_title": "VP Marketing"})
        assert overall(score, rules, T0 + 365 * DAY) == 15
        apply_attributes(score, rules, {"job_title": "Intern"})
        assert overall(score, rules, T0) == 0


class TestDecay:
    @pytest.mark.parametrize(
        ("days", "expected"), [(0, 30.0), (15, 30 / 2**0.5), (30, 15.0), (60, 7.5), (90, 3.75)]
    )
    def test_points_halve_every_half_life(self, days: float, expected: float) -> None:
        rules, score = rule_set(), ContactScore()
        hit(score, rules, "demo.requested", T0)
        assert overall(score, rules, T0 + days * DAY) == pytest.approx(expected)

    def test_an_old_event_arrives_already_decayed(self) -> None:
        rules, score = rule_set(), ContactScore()
        hit(score, rules, "demo.requested", T0, now=T0 + 30 * DAY)
        assert overall(score, rules, T0 + 30 * DAY) == pytest.approx(15)

    def test_group_half_life_is_per_group(self) -> None:
        rules = rule_set(
            groups=[{"name": "overall", "half_life_days": 10}],
        )
        score = ContactScore()
        hit(score, rules, "demo.requested", T0)
        assert overall(score, rules, T0 + 20 * DAY) == pytest.approx(7.5)

    def test_state_round_trips_through_json(self) -> None:
        rules, score = rule_set(), ContactScore()
        hit(score, rules, "demo.requested", T0)
        hit(score, rules, "email.opened", T0 + DAY)
        again = ContactScore.from_json(score.to_json())
        assert overall(again, rules, T0 + 40 * DAY) == overall(score, rules, T0 + 40 * DAY)


THRESHOLDS = [{"name": "mql", "at": 50, "margin": 5}, {"name": "sql", "at": 80, "margin": 5}]


class TestHysteresis:
    def test_crossing_up_then_not_down_within_the_margin(self) -> None:
        rules, score = rule_set(thresholds=THRESHOLDS), ContactScore()
        hit(score, rules, "demo.requested", T0)
        hit(score, rules, "demo.requested", T0)
        up = check_thresholds(score, rules, T0)
        assert [(c.threshold, c.direction) for c in up] == [("mql", "up")]
        # 60 → 48 after ~9.7 days: below 50 but within the margin of 5: no crossing.
        assert check_thresholds(score, rules, T0 + 9.7 * DAY) == []
        down = check_thresholds(score, rules, T0 + 12 * DAY)  # 60·2^(-12/30) ≈ 45.5 < 45? no
        assert down == []
        later = check_thresholds(score, rules, T0 + 13 * DAY)  # ≈ 44.4 < 45: down
        assert [(c.threshold, c.direction) for c in later] == [("mql", "down")]

    def test_the_decay_timer_fires_at_the_exact_instant(self) -> None:
        rules, score = rule_set(thresholds=THRESHOLDS), ContactScore()
        for _ in range(3):
            hit(score, rules, "demo.requested", T0)
        assert [c.threshold for c in check_thresholds(score, rules, T0)] == ["mql", "sql"]
        due = next_decay_timer(score, rules, "overall")
        assert due is not None
        # 90 · 2^(-d/30) = 75  ⇔  d = 30 · log2(90/75)
        import math

        assert due - T0 == pytest.approx(30 * DAY * math.log2(90 / 75), abs=0.01)
        assert check_thresholds(score, rules, due - 1) == []
        fired = check_thresholds(score, rules, due)
        assert [(c.threshold, c.direction) for c in fired] == [("sql", "down")]
        assert fired[0].score < 75
        # Next: the MQL crossing, 90 · 2^(-d/30) = 45.
        following = next_decay_timer(score, rules, "overall")
        assert following is not None
        assert following - T0 == pytest.approx(30 * DAY, abs=0.01)

    def test_fit_points_keep_a_floor_no_timer_needed(self) -> None:
        rules = rule_set(thresholds=[{"name": "mql", "at": 10, "margin": 0}])
        score = ContactScore()
        from services.scoring.scores.domain import apply_attributes

        apply_attributes(score, rules, {"job_title": "VP"})
        check_thresholds(score, rules, T0)
        assert next_decay_timer(score, rules, "overall") is None

    def test_cap_does_not_move_the_decay_instant(self) -> None:
        rules = rule_set(
            groups=[{"name": "overall", "cap": 50}],
            thresholds=[{"name": "mql", "at": 40, "margin": 0}],
        )
        score = ContactScore()
        for _ in range(4):
            hit(score, rules, "demo.requested", T0)
        check_thresholds(score, rules, T0)
        due = next_decay_timer(score, rules, "overall")
        assert due is not None
        assert group_score(score.group("overall"), rules.groups["overall"], due) < 40
        assert group_score(score.group("overall"), rules.groups["overall"], due - 1) >= 40


class TestReplayAndExplain:
    def test_replay_matches_live_scoring(self) -> None:
        rules, live = rule_set(), ContactScore()
        times = [T0, T0 + DAY, T0 + 2 * DAY, T0 + 10 * DAY]
        for t in times:
            hit(live, rules, "email.opened", t)
        hit(live, rules, "demo.requested", T0 + 3 * DAY)
        entries = [LedgerEntry("email.opened", t, {}) for t in times] + [
            LedgerEntry("demo.requested", T0 + 3 * DAY, {})
        ]
        now = T0 + 20 * DAY
        replayed = replay(rules, entries, {}, now)
        assert overall(replayed, rules, now) == pytest.approx(overall(live, rules, now))

    def test_replay_from_summed_entries_equals_replay_entry_by_entry(self) -> None:
        """A rescore replays from the ledger summed by type and data (limits and conditions,
        two groups of different half-lives, an entry from the future clamped to now)."""
        rules = rule_set(
            groups=[
                {"name": "overall", "half_life_days": 30},
                {"name": "product", "half_life_days": 7, "cap": 40},
            ],
            rules=[
                {"id": "demo", "kind": "engagement", "event": "demo.requested", "points": 30},
                {
                    "id": "pricing",
                    "kind": "engagement",
                    "event": "page.viewed",
                    "when": [{"field": "url", "op": "contains", "value": "/pricing"}],
                    "points": 10,
                    "group": "product",
                },
                {"id": "viewed", "kind": "engagement", "event": "page.viewed", "points": 0.5},
                {
                    "id": "open",
                    "kind": "engagement",
                    "event": "email.opened",
                    "points": 1,
                    "limit": {"times": 2, "per_days": 10},
                },
            ],
        )
        now = T0 + 40 * DAY
        entries = [
            LedgerEntry("email.opened", T0 + d * DAY, {}) for d in (0, 1, 2, 3, 12, 13, 14, 30)
        ] + [
            LedgerEntry("page.viewed", T0 + d * DAY, {"url": url})
            for d, url in ((1, "/pricing"), (5, "/blog"), (9, "/pricing"), (39, "/pricing"))
        ]
        entries += [LedgerEntry("demo.requested", T0 + 2 * DAY, {})]
        entries += [LedgerEntry("demo.requested", now + DAY, {})]
        one_by_one = replay(rules, entries, {}, now)
        totals = ledger_totals(entries, now, {1 / (30 * DAY), 1 / (7 * DAY)}, ["email.opened"])
        summed = replay_totals(rules, totals, {}, now)
        assert len(totals) == 4  # opened, /pricing, /blog, demo
        for name, state in one_by_one.groups.items():
            other = summed.groups[name]
            assert list(other.engagement) == list(state.engagement)
            for rule_id, c in state.engagement.items():
                assert other.engagement[rule_id].value == pytest.approx(c.value, rel=1e-12)
                assert other.engagement[rule_id].awarded == pytest.approx(c.awarded)
                assert other.engagement[rule_id].hits == c.hits
        assert scores_at(summed, rules, now) == pytest.approx(scores_at(one_by_one, rules, now))

    def test_replay_under_new_rules(self) -> None:
        entries = [LedgerEntry("demo.requested", T0, {})]
        richer = rule_set(
            rules=[{"id": "demo", "kind": "engagement", "event": "demo.requested", "points": 50}]
        )
        assert overall(replay(richer, entries, {}, T0), richer, T0) == 50

    def test_explain_lists_rules_with_points_and_decay(self) -> None:
        rules, score = rule_set(thresholds=THRESHOLDS), ContactScore()
        from services.scoring.scores.domain import apply_attributes

        hit(score, rules, "demo.requested", T0)
        apply_attributes(score, rules, {"job_title": "VP"})
        [group] = explain(score, rules, T0 + 30 * DAY)
        assert group["score"] == pytest.approx(30)
        by_rule = {r["rule_id"]: r for r in group["rules"]}
        assert by_rule["demo"]["points"] == 30
        assert by_rule["demo"]["value"] == pytest.approx(15)
        assert by_rule["demo"]["decayed"] == pytest.approx(15)
        assert by_rule["title"] == {
            "rule_id": "title",
            "kind": "fit",
            "points": 15,
            "value": 15,
            "decayed": 0.0,
        }
        assert [t["name"] for t in group["thresholds"]] == ["mql", "sql"]

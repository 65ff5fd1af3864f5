"""A contact's scores: per-group state with exact exponential decay, frequency limits, caps,
thresholds with hysteresis, the instant decay alone takes a score down across a threshold,
replay from the ledger, and explain. Pure: no I/O; every function takes the time it needs.

Decay is exact because exponential decay is linear: a group's engagement value is kept as
(value at `as_of`), and its value at any later instant t is value · 2^(-(t - as_of) / half-life).
New points are added after bringing the value forward, so nothing is ever rewritten by a job.
Times are seconds since the epoch (floats) inside the domain.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from services.scoring.rules.domain import Group, Rule, RuleSet

DAY = 86400.0
# A timer is set this far past the computed instant, so that at its firing the score is
# strictly below the level despite floating-point rounding.
TIMER_SLACK_S = 0.001


def decay_factor(elapsed_s: float, half_life_days: float) -> float:
    """How much of a point is left after `elapsed_s` with the given half-life."""
    if elapsed_s <= 0:
        return 1.0
    return float(2.0 ** (-elapsed_s / (half_life_days * DAY)))


@dataclass
class RuleContribution:
    """What one engagement rule gave a group: its value at the group's `as_of`, the points
    awarded (undecayed) and the times of its recent awards (for its frequency limit)."""

    value: float = 0.0
    awarded: float = 0.0
    hits: list[float] = field(default_factory=list)


@dataclass
class GroupState:
    """One score group of a contact."""

    as_of: float = 0.0
    engagement: dict[str, RuleContribution] = field(default_factory=dict)
    fit: dict[str, float] = field(default_factory=dict)  # fit and negative rules matching now
    above: dict[str, bool] = field(default_factory=dict)  # threshold name → currently above

    def engagement_at(self, at: float, half_life_days: float) -> float:
        factor = decay_factor(at - self.as_of, half_life_days)
        return sum(c.value for c in self.engagement.values()) * factor

    def advance(self, to: float, half_life_days: float) -> None:
        """Bring every contribution forward to `to` (never backwards)."""
        if to <= self.as_of:
            return
        factor = decay_factor(to - self.as_of, half_life_days)
        for contribution in self.engagement.values():
            contribution.value *= factor
        self.as_of = to


@dataclass
class ContactScore:
    """Every group of one contact, and the rule-set version that produced it."""

    version: int = 0
    groups: dict[str, GroupState] = field(default_factory=dict)

    def group(self, name: str) -> GroupState:
        state = self.groups.get(name)
        if state is None:
            state = self.groups[name] = GroupState()
        return state

    def to_json(self) -> dict[str, Any]:
        return {
            "v": self.version,
            "g": {
                name: {
                    "t": g.as_of,
                    "e": {r: [c.value, c.awarded, c.hits] for r, c in g.engagement.items()},
                    "f": g.fit,
                    "a": [name for name, above in g.above.items() if above],
                }
                for name, g in self.groups.items()
            },
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any] | None) -> ContactScore:
        if not raw:
            return cls()
        return cls(
            int(raw["v"]),
            {
                name: GroupState(
                    float(g["t"]),
                    {r: RuleContribution(v, a, list(h)) for r, (v, a, h) in g["e"].items()},
                    dict(g["f"]),
                    dict.fromkeys(g["a"], True),
                )
                for name, g in raw["g"].items()
            },
        )


def group_score(state: GroupState, group: Group, at: float) -> float:
    """The group's score at `at`: fit points plus decayed engagement, within the cap."""
    total = sum(state.fit.values()) + state.engagement_at(at, group.half_life_days)
    return min(total, group.cap) if group.cap is not None else total


def scores_at(score: ContactScore, rules: RuleSet, at: float) -> dict[str, float]:
    return {name: group_score(score.group(name), g, at) for name, g in rules.groups.items()}


@dataclass(frozen=True)
class Change:
    """A group's score moved from `before` to `after` at one instant."""

    group: str
    before: float
    after: float


@dataclass(frozen=True)
class Crossing:
    """A threshold crossed at `at`, up by points or down by points or decay."""

    group: str
    threshold: str
    level: float
    score: float
    direction: Literal["up", "down"]
    at: float


def _limited(rule: Rule, contribution: RuleContribution, occurred: float) -> bool:
    """Whether the rule already awarded its allowance in the window ending at `occurred`."""
    if rule.limit is None:
        return False
    window_start = occurred - rule.limit.per_days * DAY
    recent = [h for h in contribution.hits if window_start < h <= occurred]
    return len(recent) >= rule.limit.times


def _record_hit(rule: Rule, contribution: RuleContribution, occurred: float) -> None:
    if rule.limit is None:
        return
    contribution.hits.append(occurred)
    contribution.hits.sort()
    # Only the latest `times` awards can decide a later event's window.
    del contribution.hits[: -rule.limit.times]


def award(
    score: ContactScore, rules: RuleSet, matched: Iterable[Rule], occurred: float, now: float
) -> list[str]:
    """Add matching engagement rules' points for an event that occurred at `occurred`, seen at
    `now`; rules over their frequency limit award nothing. Returns the ids of rules that awarded."""
    awarded = []
    occurred = min(occurred, now)  # a clock ahead of ours must not award undecayed points later
    for rule in matched:
        group = rules.groups[rule.group]
        state = score.group(rule.group)
        contribution = state.engagement.setdefault(rule.id, RuleContribution())
        if _limited(rule, contribution, occurred):
            continue
        state.advance(max(now, state.as_of), group.half_life_days)
        contribution.value += rule.points * decay_factor(
            state.as_of - occurred, group.half_life_days
        )
        contribution.awarded += rule.points
        _record_hit(rule, contribution, occurred)
        awarded.append(rule.id)
    return awarded


def apply_attributes(score: ContactScore, rules: RuleSet, attributes: Mapping[str, Any]) -> None:
    """Set each group's fit and negative points from the contact's current attributes."""
    matched = rules.matching_attributes(attributes)
    for name in rules.groups:
        score.group(name).fit = {r.id: r.points for r in matched if r.group == name}


def check_thresholds(
    score: ContactScore, rules: RuleSet, at: float, only: str | None = None
) -> list[Crossing]:
    """Crossings at `at` with hysteresis: up at `at ≥ level`, down only below `level - margin`
    (of every group, or `only` one). Updates each threshold's side."""
    crossings = []
    for name, group in rules.groups.items():
        if only is not None and name != only:
            continue
        state = score.group(name)
        value = group_score(state, group, at)
        for threshold in rules.thresholds(name):
            above = state.above.get(threshold.name, False)
            if not above and value >= threshold.at:
                state.above[threshold.name] = True
                crossings.append(Crossing(name, threshold.name, threshold.at, value, "up", at))
            elif above and value < threshold.at - threshold.margin:
                state.above.pop(threshold.name, None)
                crossings.append(Crossing(name, threshold.name, threshold.at, value, "down", at))
    return crossings


def decay_crossing_at(state: GroupState, group: Group, level: float) -> float | None:
    """The instant decay alone takes the score below `level`, or None if it never does.

    Solves fit + E · 2^(-(t - as_of)/h) = level for t, E being the engagement value at
    `as_of`; a cap does not move the instant (the capped score only leaves the cap earlier).
    """
    fit = sum(state.fit.values())
    engagement = sum(c.value for c in state.engagement.values())
    if fit >= level or engagement <= 0:
        return None  # never falls below: only fit points, or engagement that only recovers
    if fit + engagement < level:
        return state.as_of  # already below
    elapsed = group.half_life_days * DAY * math.log2(engagement / (level - fit))
    return state.as_of + elapsed + TIMER_SLACK_S


def next_decay_timer(score: ContactScore, rules: RuleSet, group_name: str) -> float | None:
    """When decay next takes the group down across a threshold it is above, if ever."""
    group = rules.groups.get(group_name)
    state = score.groups.get(group_name)
    if group is None or state is None or True not in state.above.values():
        return None  # above no threshold: nothing for decay to cross (most contacts)
    instants = [
        instant
        for t in rules.thresholds(group_name)
        if state.above.get(t.name)
        and (instant := decay_crossing_at(state, group, t.at - t.margin)) is not None
    ]
    return min(instants) if instants else None


@dataclass(frozen=True)
class LedgerEntry:
    """One recorded engagement event, as kept for rescoring."""

    type: str
    occurred_at: float
    data: Mapping[str, Any]


_occurred = operator.attrgetter("occurred_at")


def replay(
    rules: RuleSet,
    entries: Iterable[LedgerEntry],
    attributes: Mapping[str, Any] | None,
    now: float,
    previous: ContactScore | None = None,
) -> ContactScore:
    """A contact's score under `rules` from its whole ledger, as of `now`. Threshold sides are
    carried over from `previous` so a rescore reports only real crossings."""
    score = ContactScore(rules.version)
    # `award` with `now` fixed, unrolled: every contribution is kept as its value at `now`.
    rate = decay_rates(rules)
    for name in rules.groups:
        score.group(name).as_of = now
    for entry in sorted(entries, key=_occurred):
        matched = rules.matching_engagement(entry.type, entry.data)
        if not matched:
            continue
        occurred = min(entry.occurred_at, now)
        for rule in matched:
            engagement = score.groups[rule.group].engagement
            contribution = engagement.get(rule.id)
            if contribution is None:
                contribution = engagement[rule.id] = RuleContribution()
            if rule.limit is not None:
                if _limited(rule, contribution, occurred):
                    continue
                _record_hit(rule, contribution, occurred)
            contribution.value += rule.points * 2.0 ** ((occurred - now) * rate[rule.group])
            contribution.awarded += rule.points
    apply_attributes(score, rules, attributes or {})
    _carry_sides(score, rules, previous)
    return score


def decay_rates(rules: RuleSet) -> dict[str, float]:
    """Each group's decay rate: halvings per second."""
    return {name: 1.0 / (g.half_life_days * DAY) for name, g in rules.groups.items()}


def timed_types(rules: RuleSet) -> list[str]:
    """Event types some frequency-limited rule matches: their entries' times are needed."""
    return sorted({r.event for r in rules.body.rules if r.limit is not None and r.event})


@dataclass(frozen=True)
class LedgerTotal:
    """A contact's ledger entries of one type with the same data, summed (a rescore reads
    these, summed by the database, instead of every entry): how many, the earliest time, the
    sum of their decay factors at `now` per decay rate, and their times in order when a
    frequency-limited rule may match them. Times are clamped to `now`."""

    type: str
    data: Mapping[str, Any]
    count: int
    first: float
    decayed: Mapping[float, float]
    times: Sequence[float] | None


def ledger_totals(
    entries: Iterable[LedgerEntry], now: float, rates: Iterable[float], timed: Iterable[str]
) -> list[LedgerTotal]:
    """The sums of `LedgerTotal` made here from entries (where the database does not)."""
    timed_set = set(timed)
    rate_list = sorted(set(rates))
    groups: dict[tuple[str, bytes], list[float]] = {}
    datas: dict[tuple[str, bytes], Mapping[str, Any]] = {}
    for entry in entries:
        key = (entry.type, repr(sorted(entry.data.items())).encode())
        groups.setdefault(key, []).append(min(entry.occurred_at, now))
        datas[key] = entry.data
    totals = []
    for key, times in groups.items():
        times.sort()
        decayed = {r: sum(2.0 ** max((t - now) * r, -1000.0) for t in times) for r in rate_list}
        totals.append(
            LedgerTotal(
                key[0],
                datas[key],
                len(times),
                times[0],
                decayed,
                times if key[0] in timed_set else None,
            )
        )
    return totals


def replay_totals(
    rules: RuleSet,
    totals: Iterable[LedgerTotal],
    attributes: Mapping[str, Any] | None,
    now: float,
    previous: ContactScore | None = None,
) -> ContactScore:
    """`replay` from summed ledger entries: a rule without a frequency limit awards its points
    times the count, decayed by the summed factors; a limited rule goes through the times of
    every entry it matches, in order, as `replay` does."""
    score = ContactScore(rules.version)
    rate = decay_rates(rules)
    for name in rules.groups:
        score.group(name).as_of = now
    first: dict[str, float] = {}
    limited: dict[str, list[float]] = {}
    for total in totals:
        for rule in rules.matching_engagement(total.type, total.data):
            first[rule.id] = min(first.get(rule.id, total.first), total.first)
            engagement = score.groups[rule.group].engagement
            contribution = engagement.get(rule.id)
            if contribution is None:
                contribution = engagement[rule.id] = RuleContribution()
            if rule.limit is not None:
                limited.setdefault(rule.id, []).extend(total.times or ())
                continue
            contribution.value += rule.points * total.decayed[rate[rule.group]]
            contribution.awarded += rule.points * total.count
    for rule_id, times in limited.items():
        rule = rules.rules_by_id[rule_id]
        contribution = score.groups[rule.group].engagement[rule_id]
        for occurred in sorted(times):
            if _limited(rule, contribution, occurred):
                continue
            _record_hit(rule, contribution, occurred)
            contribution.value += rule.points * 2.0 ** ((occurred - now) * rate[rule.group])
            contribution.awarded += rule.points
    for state in score.groups.values():
        # Contributions in the order their rules first awarded, as `replay` leaves them.
        state.engagement = dict(sorted(state.engagement.items(), key=lambda c: first[c[0]]))
    apply_attributes(score, rules, attributes or {})
    _carry_sides(score, rules, previous)
    return score


def _carry_sides(score: ContactScore, rules: RuleSet, previous: ContactScore | None) -> None:
    """Threshold sides from `previous` (still valid thresholds only)."""
    for name in rules.groups:
        state = score.group(name)
        if previous is not None and name in previous.groups:
            valid = {t.name for t in rules.thresholds(name)}
            state.above = {t: True for t in previous.groups[name].above if t in valid}


def changes_between(
    before: Mapping[str, float], after: Mapping[str, float], precision: int = 2
) -> list[Change]:
    """Groups whose score changed visibly (at the precision scores are shown with)."""
    return [
        Change(name, round(before.get(name, 0.0), precision), round(value, precision))
        for name, value in after.items()
        if round(before.get(name, 0.0), precision) != round(value, precision)
    ]


def explain(score: ContactScore, rules: RuleSet, at: float) -> list[dict[str, Any]]:
    """Each group's score at `at` with its contributing rules: points awarded, value now and
    how much has decayed away."""
    groups = []
    for name, group in rules.groups.items():
        state = score.group(name)
        factor = decay_factor(at - state.as_of, group.half_life_days)
        contributions: list[dict[str, Any]] = [
            {
                "rule_id": rule_id,
                "kind": rules.rules_by_id[rule_id].kind if rule_id in rules.rules_by_id else "fit",
                "points": points,
                "value": points,
                "decayed": 0.0,
            }
            for rule_id, points in state.fit.items()
        ]
        for rule_id, c in state.engagement.items():
            if c.awarded == 0:
                continue
            value = c.value * factor
            contributions.append(
                {
                    "rule_id": rule_id,
                    "kind": "engagement",
                    "points": c.awarded,
                    "value": round(value, 4),
                    "decayed": round(c.awarded - value, 4),
                }
            )
        uncapped = sum(state.fit.values()) + state.engagement_at(at, group.half_life_days)
        groups.append(
            {
                "group": name,
                "score": round(group_score(state, group, at), 2),
                "uncapped": round(uncapped, 2),
                "cap": group.cap,
                "half_life_days": group.half_life_days,
                "thresholds": [
                    {
                        "name": t.name,
                        "at": t.at,
                        "margin": t.margin,
                        "above": bool(state.above.get(t.name)),
                    }
                    for t in rules.thresholds(name)
                ],
                "rules": contributions,
            }
        )
    return groups

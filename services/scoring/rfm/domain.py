"""RFM and churn risk, from `purchase.completed` and `product.login`. Pure: no I/O.

- Recency: days since the customer's last purchase or login. Frequency: how many purchases
  and logins. Monetary: the sum of purchase amounts (in the workspace's currency; amounts in
  several currencies are added as they come, unconverted).
- Each is scored 1-5 by quintile within the workspace: four breakpoints (the values at the
  20th, 40th, 60th and 80th percentile, nearest rank) split the customers; a value's score is
  one plus the breakpoints it exceeds (for recency, fewer days is better: five minus that).
- Segments from R and FM (the rounded-up mean of F and M).
- Churn risk 0-100 rises with inactivity measured against the customer's own rhythm (days since
  the last activity over the mean interval between activities) and with a falling frequency
  (recent intervals longer than the mean). With no new activity it only rises, so the instant it
  enters the next band is known in closed form: that, and the instant the recency score drops,
  are the customer's next timer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

DAY = 86400.0
DEFAULT_INTERVAL_DAYS = 14.0  # the rhythm assumed until a customer has two activities
EWMA_WEIGHT = 0.3  # weight of the newest interval in the recent-interval average
RISK_HALF_POINT = 2.0  # inactivity (in rhythms) at which risk reaches 50
BANDS: tuple[tuple[str, float], ...] = (("high", 67.0), ("medium", 34.0), ("low", 0.0))
SEGMENTS = ("champions", "loyal", "potential", "at_risk", "hibernating", "lost")

Band = Literal["low", "medium", "high"]


@dataclass(frozen=True)
class Activity:
    """A customer's RFM stats (times in epoch seconds)."""

    first_at: float
    last_at: float
    count: int  # purchases and logins
    purchases: int
    monetary: float
    recent_interval_s: float | None = None  # an exponentially weighted mean of intervals

    @property
    def mean_interval_s(self) -> float:
        if self.count < 2 or self.last_at <= self.first_at:
            return DEFAULT_INTERVAL_DAYS * DAY
        return (self.last_at - self.first_at) / (self.count - 1)


def record_activity(
    stats: Activity | None, at: float, kind: Literal["purchase", "login"], amount: float = 0.0
) -> Activity:
    """Stats after one more purchase or login at `at` (late events count, without moving the
    last activity back)."""
    spent = amount if kind == "purchase" else 0.0
    bought = 1 if kind == "purchase" else 0
    if stats is None:
        return Activity(at, at, 1, bought, spent)
    recent = stats.recent_interval_s
    if at > stats.last_at:
        interval = at - stats.last_at
        recent = interval if recent is None else EWMA_WEIGHT * interval + (1 - EWMA_WEIGHT) * recent
    return replace(
        stats,
        first_at=min(stats.first_at, at),
        last_at=max(stats.last_at, at),
        count=stats.count + 1,
        purchases=stats.purchases + bought,
        monetary=stats.monetary + spent,
        recent_interval_s=recent,
    )


def breakpoints(values: Sequence[float]) -> list[float]:
    """The quintile breakpoints of a workspace's values (nearest rank at 20/40/60/80 %)."""
    if not values:
        return []
    ordered = sorted(values)
    n = len(ordered)
    return [ordered[math.ceil(k * n / 5) - 1] for k in (1, 2, 3, 4)]


def quintile(value: float, points: Sequence[float], lower_is_better: bool = False) -> int:
    """1-5: one plus the breakpoints `value` exceeds (reversed when lower is better)."""
    if not points:
        return 3  # no distribution yet: the middle
    above = sum(1 for b in points if value > b)
    return 5 - above if lower_is_better else 1 + above


@dataclass(frozen=True)
class Breakpoints:
    """A workspace's quintile breakpoints: recency in days, frequency, monetary."""

    recency_days: list[float]
    frequency: list[float]
    monetary: list[float]


def workspace_breakpoints(customers: Sequence[Activity], now: float) -> Breakpoints:
    return Breakpoints(
        breakpoints([days_since(c, now) for c in customers]),
        breakpoints([float(c.count) for c in customers]),
        breakpoints([c.monetary for c in customers]),
    )


def days_since(stats: Activity, now: float) -> float:
    return max(0.0, now - stats.last_at) / DAY


def segment_of(r: int, f: int, m: int) -> str:
    """The RFM segment of a customer's quintile scores."""
    fm = math.ceil((f + m) / 2)
    if r >= 4 and fm >= 4:
        return "champions"
    if r >= 3 and fm >= 3:
        return "loyal"
    if r >= 3:
        return "potential"
    if r == 1 and fm <= 2:
        return "lost"
    if fm >= 3:
        return "at_risk"
    return "hibernating"


def _slowdown(stats: Activity) -> float:
    """How much longer recent intervals are than the mean (0 when not slower)."""
    if stats.recent_interval_s is None:
        return 0.0
    return max(0.0, stats.recent_interval_s / stats.mean_interval_s - 1.0)


def _pressure(stats: Activity, now: float) -> float:
    overdue = max(0.0, now - stats.last_at) / stats.mean_interval_s
    return overdue + _slowdown(stats)


def risk_value(stats: Activity, now: float) -> float:
    """Churn risk 0-100 (unrounded): 50 once the customer is two rhythms overdue."""
    return 100.0 * (1.0 - float(2.0 ** (-_pressure(stats, now) / RISK_HALF_POINT)))


def band_of(risk: float) -> Band:
    for name, floor in BANDS:
        if risk >= floor:
            return name  # type: ignore[return-value]
    return "low"


@dataclass(frozen=True)
class Assessment:
    """A customer's RFM scores, segment and churn risk at one instant."""

    r: int
    f: int
    m: int
    segment: str
    risk: int
    band: Band


def assess(stats: Activity, points: Breakpoints, now: float) -> Assessment:
    r = quintile(days_since(stats, now), points.recency_days, lower_is_better=True)
    f = quintile(float(stats.count), points.frequency)
    m = quintile(stats.monetary, points.monetary)
    risk = risk_value(stats, now)
    return Assessment(r, f, m, segment_of(r, f, m), round(risk), band_of(risk))


def next_change_at(stats: Activity, points: Breakpoints, now: float) -> float | None:
    """The next instant, with no new activity, at which the band or the recency score changes:
    the customer's timer (its firing reassesses and sets the next one)."""
    candidates = []
    days = days_since(stats, now)
    later = [b for b in points.recency_days if b >= days]
    if later:
        candidates.append(stats.last_at + min(later) * DAY + 1.0)  # R drops once days > b
    risk = risk_value(stats, now)
    for _, floor in BANDS:
        if floor > risk:
            # risk ≥ floor ⇔ pressure ≥ -h·log2(1 - floor/100); solve for the instant.
            pressure = -RISK_HALF_POINT * math.log2(1.0 - floor / 100.0)
            overdue = pressure - _slowdown(stats)
            candidates.append(stats.last_at + overdue * stats.mean_interval_s + 1.0)
    future = [c for c in candidates if c > now]
    return min(future) if future else None

"""Events published by scoring on `leadwire.scores.v1`. Public contracts: add optional fields
only. Keyed by `workspace:contact_id`, so one contact's score events stay in order."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal

from shared.events.envelope import EventPayload

Direction = Literal["up", "down"]


class ScoreChanged(EventPayload):
    """Emitted when a contact's score in a group changes by a rule, a rescore or a merge."""

    event_type: ClassVar[str] = "score.changed"

    contact_id: str
    group: str  # score group, `overall` by default
    before: float
    after: float
    cause: str  # the event type or `rescore`, `merge`, `fit`
    rule_set_version: int | None = None


class ScoreThresholdCrossed(EventPayload):
    """Emitted when a score crosses a threshold (with hysteresis), up by points or down by decay."""

    event_type: ClassVar[str] = "score.threshold_crossed"

    contact_id: str
    group: str
    threshold: str  # the threshold's name: `mql`, `sql`, …
    value: float  # the threshold's level
    score: float  # the score at the instant of the crossing
    direction: Direction
    crossed_at: datetime


class ChurnRiskChanged(EventPayload):
    """Emitted when a customer's RFM segment or churn-risk band changes (by events or by time)."""

    event_type: ClassVar[str] = "churn_risk.changed"

    contact_id: str
    risk: int  # 0 to 100, higher is likelier to churn
    band: Literal["low", "medium", "high"]
    segment: str  # champions, loyal, potential, at_risk, hibernating, lost
    previous_band: str | None = None
    previous_segment: str | None = None


SCORE_EVENT_TYPES: dict[str, type[EventPayload]] = {
    cls.event_type: cls for cls in (ScoreChanged, ScoreThresholdCrossed, ChurnRiskChanged)
}

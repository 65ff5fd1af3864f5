"""scoring's request and response models."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictFloat

from services.scoring.rules.domain import RuleSetBody
from shared.api_types import StrictInt, UtcDateTime


class RescoreRead(BaseModel):
    """A rescore after a new rule-set version: how far it got."""

    id: str
    version: int
    status: str  # pending, running, done, superseded, failed
    total: int
    done: int
    changed: int
    created_at: UtcDateTime
    finished_at: UtcDateTime | None = None


class RuleSetRead(BaseModel):
    """The workspace's current rule set (version 0 is the built-in default)."""

    version: int
    default: bool
    rules: dict[str, Any]


class RuleSetSaved(BaseModel):
    version: int
    rescore: RescoreRead


class SimulateIn(BaseModel):
    """A proposed rule set, and whom to score with it: one contact, or everyone engaged in the
    last `days` (30 when neither is given)."""

    model_config = ConfigDict(extra="forbid")

    rules: RuleSetBody
    contact_id: str | None = None
    days: StrictFloat | None = Field(default=None, gt=0, le=3650)
    sample: StrictInt = Field(default=10, ge=0, le=100)


class SimulateSample(BaseModel):
    contact_id: str
    before: dict[str, float]
    after: dict[str, float]


class ThresholdCount(BaseModel):
    rules: str  # `before` (current rules) or `after` (proposed)
    group: str
    threshold: str
    at_or_above: int


class SimulateRead(BaseModel):
    """What the proposed rules would change; nothing was saved."""

    contacts: int
    changed: int
    sample: list[SimulateSample]
    thresholds: list[ThresholdCount]
    explain: list[dict[str, Any]] | None = None


class ScoreRead(BaseModel):
    """A contact's scores now, each with its contributing rules and their decay, and RFM."""

    contact_id: str
    rule_set_version: int
    scored_with_version: int
    at: UtcDateTime
    groups: list[dict[str, Any]]
    rfm: dict[str, Any] | None = None


class RfmSummary(BaseModel):
    customers: int
    segments: dict[str, int]
    bands: dict[str, int]

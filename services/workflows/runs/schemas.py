"""Request and response models of the runs API."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, model_validator


class EnrollIn(BaseModel):
    """One contact, or every member of a segment."""

    contact_id: str | None = None
    segment_id: str | None = None

    @model_validator(mode="after")
    def _one(self) -> EnrollIn:
        if (self.contact_id is None) == (self.segment_id is None):
            raise ValueError("give exactly one of contact_id and segment_id")
        return self


class EnrollOut(BaseModel):
    enrolled: list[str]  # enrollment ids
    skipped: dict[str, int]  # reason → contacts


class StepRead(BaseModel):
    step: str
    type: str
    outcome: str
    at: datetime
    detail: dict[str, Any]
    error: str | None = None


class EnrollmentRead(BaseModel):
    id: str
    workflow_id: str
    version: int
    contact_id: str
    status: str
    trigger: str
    step: str | None
    wait_event: str | None
    wait_until: datetime | None
    error: str | None
    enrolled_at: datetime
    updated_at: datetime
    ended_at: datetime | None
    steps: list[StepRead] | None = None


class EnrollmentPage(BaseModel):
    items: list[EnrollmentRead]
    next_cursor: str | None


class WorkflowStats(BaseModel):
    """Runs of a workflow by where they stand."""

    workflow_id: str
    enrolled: int
    active: int  # not ended: running or waiting
    waiting: int
    completed: int
    goal_met: int
    exited: int
    failed: int

"""Request and response models of the runs API."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from shared.api_types import UtcDateTime


class EnrollIn(BaseModel):
    """One contact, or every member of a segment."""

    # Exactly one of the two is a string (the other absent or null), said in the schema too.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {"properties": {key: {"type": "string"}}, "required": [key]}
                for key in ("contact_id", "segment_id")
            ]
        },
    )

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
    at: UtcDateTime
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
    wait_until: UtcDateTime | None
    error: str | None
    enrolled_at: UtcDateTime
    updated_at: UtcDateTime
    ended_at: UtcDateTime | None
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

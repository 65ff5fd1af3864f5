"""Request and response models of the definitions API."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.api_types import StrictInt, UtcDateTime


class WorkflowRead(BaseModel):
    id: str
    name: str
    enabled: bool
    version: int
    trigger: str
    created_at: UtcDateTime
    updated_at: UtcDateTime
    document: dict[str, Any]


class WorkflowSummary(BaseModel):
    id: str
    name: str
    enabled: bool
    version: int
    trigger: str
    updated_at: UtcDateTime


class WorkflowList(BaseModel):
    items: list[WorkflowSummary]


class VersionRead(BaseModel):
    version: int
    created_at: UtcDateTime
    document: dict[str, Any]


class VersionList(BaseModel):
    items: list[VersionRead]


class DryRunIn(BaseModel):
    """A contact id from the projection, or a contact given inline (its fields)."""

    model_config = ConfigDict(extra="forbid")

    contact_id: str | None = None
    contact: dict[str, Any] | None = None
    version: StrictInt | None = Field(default=None, ge=1)
    # Events a wait-for-event step should take as arrived; other waits time out.
    events: list[str] = Field(default_factory=list)


class DryRunOut(BaseModel):
    workflow_id: str
    version: int
    status: str
    error: str | None = None
    path: list[dict[str, Any]]

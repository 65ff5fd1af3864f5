"""access's request and response models."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class WorkspaceCreate(BaseModel):
    id: str = Field(description="2-63 lower-case letters, digits or dashes", examples=["acme"])
    name: str = Field(min_length=1, max_length=200)


class WorkspaceRead(BaseModel):
    id: str
    name: str
    created_at: datetime


class ApiKeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200, examples=["website forms"])
    scopes: list[str] = Field(min_length=1, examples=[["forms:write", "leads:write"]])
    expires_at: datetime | None = None
    ttl_days: int | None = Field(default=None, ge=1, le=3650)


class ApiKeyRead(BaseModel):
    id: str
    workspace: str
    name: str
    scopes: list[str]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class ApiKeyCreated(ApiKeyRead):
    key: str = Field(description="The key itself: shown this once, stored nowhere")

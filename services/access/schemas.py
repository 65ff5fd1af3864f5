"""access's request and response models."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from services.access.domain import SCOPE_RE
from shared.api_types import RequestDateTime, StrictInt, UtcDateTime
from shared.auth import WORKSPACE_RE


class WorkspaceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(
        pattern=WORKSPACE_RE.pattern,
        description="2-63 lower-case letters, digits or dashes",
        examples=["acme"],
    )
    name: str = Field(min_length=1, max_length=200)


class WorkspaceRead(BaseModel):
    id: str
    name: str
    created_at: UtcDateTime


class ApiKeyCreate(BaseModel):
    # An instant or a number of days, not both: the schema says it as the handler does (a
    # null is as good as absent).
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "not": {
                "properties": {"expires_at": {"type": "string"}, "ttl_days": {"type": "integer"}},
                "required": ["expires_at", "ttl_days"],
            }
        },
    )

    name: str = Field(min_length=1, max_length=200, examples=["website forms"])
    scopes: list[str] = Field(
        min_length=1,
        json_schema_extra={"items": {"type": "string", "pattern": SCOPE_RE.pattern}},
        examples=[["forms:write", "leads:write"]],
    )
    expires_at: RequestDateTime | None = None
    ttl_days: StrictInt | None = Field(default=None, ge=1, le=3650)


class ApiKeyRead(BaseModel):
    id: str
    workspace: str
    name: str
    scopes: list[str]
    created_at: UtcDateTime
    expires_at: UtcDateTime | None
    revoked_at: UtcDateTime | None
    last_used_at: UtcDateTime | None


class ApiKeyCreated(ApiKeyRead):
    key: str = Field(description="The key itself: shown this once, stored nowhere")

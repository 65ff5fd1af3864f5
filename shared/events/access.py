"""Events of the access service: workspaces and API keys (`leadwire.access.v1`, compacted, keyed
by `workspace:key_id`, each event the key's whole state) and key use reported by every service
(`leadwire.access-usage.v1`). Public contracts: add optional fields only."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from pydantic import Field

from shared.events.envelope import EventPayload


class WorkspaceCreated(EventPayload):
    """Emitted when an operator registers a workspace."""

    event_type: ClassVar[str] = "workspace.created"

    workspace: str
    name: str
    created_at: datetime


class ApiKeyState(EventPayload):
    """A key as every service needs it to authenticate a request: never the secret itself,
    only its SHA-256 (the secret is 256 random bits, so the digest cannot be reversed)."""

    key_id: str
    workspace: str
    name: str
    scopes: list[str] = Field(default_factory=list)
    secret_sha256: str
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None


class ApiKeyCreated(ApiKeyState):
    """Emitted when a key is created for an integration."""

    event_type: ClassVar[str] = "api_key.created"


class ApiKeyRevoked(ApiKeyState):
    """Emitted when a key is revoked: every service refuses it from then on."""

    event_type: ClassVar[str] = "api_key.revoked"


class ApiKeyUsed(EventPayload):
    """Emitted by a service, at most every few seconds per key, when a key authenticated
    requests there; the access service keeps the latest time as the key's last use."""

    event_type: ClassVar[str] = "api_key.used"

    key_id: str
    service: str
    last_used_at: datetime
    requests: int


KEY_EVENT_TYPES: dict[str, type[ApiKeyState]] = {
    ApiKeyCreated.event_type: ApiKeyCreated,
    ApiKeyRevoked.event_type: ApiKeyRevoked,
}

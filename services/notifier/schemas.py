"""Request and response models of notifier's HTTP API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.api_types import StrictBool, StrictInt, UtcDateTime
from shared.events.notifications import Purpose
from shared.json_limits import LimitedJsonList, LimitedJsonObject

Kind = Literal["slack", "email", "webhook", "log"]
# An hour and minute of the day, 00:00 to 23:59.
CLOCK_TIME = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ChannelIn(_In):
    """A channel to create or replace; `secrets` are write-only: stored sealed, never returned."""

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
    kind: Kind
    config: LimitedJsonObject = Field(default_factory=dict)
    secrets: dict[str, str] = Field(default_factory=dict)


class ChannelRead(BaseModel):
    id: str
    name: str
    kind: Kind
    config: dict[str, Any]
    secrets_set: list[str]  # names of the secrets stored, never their values
    created_at: UtcDateTime
    updated_at: UtcDateTime


class TemplateIn(_In):
    """A template: each part is a sandboxed Jinja2 text; `blocks` is Block Kit JSON whose
    strings are templates."""

    name: str = Field(min_length=1, max_length=100)
    subject: str | None = Field(default=None, max_length=2_000)
    html: str | None = Field(default=None, max_length=500_000)
    text: str | None = Field(default=None, max_length=100_000)
    blocks: LimitedJsonList | None = None


class TemplateRead(TemplateIn):
    id: str
    created_at: UtcDateTime
    updated_at: UtcDateTime


class PreviewIn(_In):
    """Render against a contact of the projection, or sample data when none is given."""

    contact_id: str | None = None
    variables: LimitedJsonObject = Field(default_factory=dict)


class Preview(BaseModel):
    subject: str | None = None
    html: str | None = None
    text: str | None = None
    blocks: list[Any] | None = None


class NotificationIn(_In):
    """Ask for a notification over HTTP, as `notification.requested` does over Kafka."""

    idempotency_key: str = Field(min_length=1, max_length=300)
    contact_id: str | None = None
    channel: str
    template: str | None = None
    content: LimitedJsonObject = Field(default_factory=dict)
    purpose: Purpose = "transactional"
    recipient: str | None = None
    variables: LimitedJsonObject = Field(default_factory=dict)


class AttemptRead(BaseModel):
    number: int
    started_at: UtcDateTime
    finished_at: UtcDateTime | None
    outcome: str | None
    status_code: int | None
    response: str | None


class NotificationRead(BaseModel):
    id: str
    idempotency_key: str
    contact_id: str | None
    channel: str
    channel_id: str | None
    kind: str
    purpose: str
    recipient: str | None
    status: str
    reason: str | None
    attempts: int
    provider_message_id: str | None
    created_at: UtcDateTime
    first_attempt_at: UtcDateTime | None
    finished_at: UtcDateTime | None
    next_attempt_at: UtcDateTime | None
    attempt_log: list[AttemptRead]


class NotificationPage(BaseModel):
    items: list[NotificationRead]
    next_cursor: str | None = None


class OwnerAddress(_In):
    name: str | None = None
    email: str | None = None
    slack: str | None = None  # a Slack user or channel id for bot-token channels


class QuietHoursIn(_In):
    start: str = Field(pattern=CLOCK_TIME)
    end: str = Field(pattern=CLOCK_TIME)
    timezone: str = "UTC"


class WorkspaceSettingsIn(_In):
    """A workspace's delivery policy."""

    tracking: StrictBool = True  # open pixel and click tracking in marketing mail
    marketing_daily_cap: StrictInt = Field(default=3, ge=0, le=1000)  # per contact, 24 h; 0 = none
    quiet_hours: QuietHoursIn | None = None  # marketing mail waits until they end
    owners: dict[str, OwnerAddress] = Field(default_factory=dict)  # owner id → addresses


class UnsubscribeResult(BaseModel):
    status: Literal["unsubscribed"]


SuppressionReason = Literal["complained", "bounced", "unsubscribed"]
# One address, no spaces, something on both sides of a single `@` (as notifier mails it).
EMAIL = r"^[^@\s]+@[^@\s]+$"


class SuppressionIn(_In):
    """An address that must get no marketing mail, e.g. from a mailbox provider's complaint
    (feedback-loop) report; recorded again, it is the same suppression."""

    email: str = Field(min_length=3, max_length=320, pattern=EMAIL)
    reason: SuppressionReason
    detail: str | None = Field(default=None, max_length=1000)


class SuppressionRead(BaseModel):
    email: str  # as normalised: trimmed, lower-cased
    reason: str
    detail: str | None
    contact_id: str | None
    created_at: UtcDateTime

"""Notification requests (`leadwire.notification-requests.v1`, sent by workflows and others) and
their outcomes (`leadwire.notifications.v1`, published by notifier). Public contracts: add
optional fields only."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from shared.events.envelope import EventPayload

ChannelKind = Literal["slack", "email", "webhook", "log"]
Purpose = Literal["transactional", "marketing"]


class NotificationRequested(EventPayload):
    """Sent to ask notifier for one message; `idempotency_key` makes a second copy a no-op."""

    event_type: ClassVar[str] = "notification.requested"

    idempotency_key: str  # e.g. `workflow:<enrollment>:<step>:<attempt>`; never sent twice
    contact_id: str | None = None
    channel: str  # a channel id or name configured in notifier for this workspace
    template: str | None = None  # a template id or name in notifier
    # Inline content when no stored template is named: keys `subject`, `html`, `text`, `blocks`.
    content: dict[str, Any] = Field(default_factory=dict)
    purpose: Purpose = "transactional"
    # Where it goes when not to the contact: `owner` (the contact's owner), an email address,
    # or a Slack user/channel; None means the contact (email) or the channel's default (Slack).
    recipient: str | None = None
    variables: dict[str, Any] = Field(default_factory=dict)  # extra template variables
    requested_by: str | None = None  # `workflow:<id>:v<version>`, `api`, …


class NotificationOutcome(EventPayload):
    """Base of notifier's outcome events: which request and which delivery."""

    event_type: ClassVar[str] = "notification.outcome"

    notification_id: str
    idempotency_key: str
    contact_id: str | None = None
    channel: str
    kind: ChannelKind


class NotificationSent(NotificationOutcome):
    """Emitted when the provider accepted a message (Slack 2xx, SMTP 250, webhook 2xx)."""

    event_type: ClassVar[str] = "notification.sent"

    attempts: int = 1
    provider_message_id: str | None = None


class NotificationFailed(NotificationOutcome):
    """Emitted when a message will not be delivered: permanent refusal or retries exhausted."""

    event_type: ClassVar[str] = "notification.failed"

    reason: str
    attempts: int = 1


class NotificationSuppressed(NotificationOutcome):
    """Emitted when a message was not sent by policy: unsubscribed, bounced, cap, quiet hours."""

    event_type: ClassVar[str] = "notification.suppressed"

    reason: str


REQUEST_TYPES: dict[str, type[EventPayload]] = {
    NotificationRequested.event_type: NotificationRequested
}
NOTIFICATION_EVENT_TYPES: dict[str, type[EventPayload]] = {
    cls.event_type: cls for cls in (NotificationSent, NotificationFailed, NotificationSuppressed)
}

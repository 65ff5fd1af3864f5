"""Events published by ingest: captured leads (`leadwire.leads.v1`) and engagement
(`leadwire.engagement.v1`). Public contracts: add optional fields only."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, Field

from shared.events.envelope import EventPayload


class Utm(BaseModel):
    source: str | None = None
    medium: str | None = None
    campaign: str | None = None
    term: str | None = None
    content: str | None = None


class Consent(BaseModel):
    granted: bool
    text: str | None = None
    granted_at: datetime | None = None


class LeadCaptured(EventPayload):
    """Emitted when a form post, webhook or API call yields a valid, normalised lead."""

    event_type: ClassVar[str] = "lead.captured"

    submission_id: str
    source: Literal["form", "webhook", "api"]
    source_id: str | None = None  # form id or webhook source id
    # The normalised identity the event is keyed by: `email:<addr>` or `phone:<e164>`.
    dedupe_key: str
    email: str | None = None  # trimmed, IDNA, domain lower-cased
    phone: str | None = None  # E.164
    first_name: str | None = None
    last_name: str | None = None
    company: str | None = None
    job_title: str | None = None
    country: str | None = None  # ISO 3166-1 alpha-2
    custom_fields: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    utm: Utm = Field(default_factory=Utm)
    referrer: str | None = None
    page_url: str | None = None
    consent: Consent | None = None
    captured_at: datetime


class Engagement(EventPayload):
    """Base of engagement events: who (email or contact id) did what, when."""

    event_type: ClassVar[str] = "engagement"

    engagement_id: str
    email: str | None = None
    contact_id: str | None = None
    occurred_at: datetime
    properties: dict[str, Any] = Field(default_factory=dict)


class PageViewed(Engagement):
    """A tracked page was viewed."""

    event_type: ClassVar[str] = "page.viewed"
    url: str | None = None


class EmailOpened(Engagement):
    """A marketing or sequence email was opened."""

    event_type: ClassVar[str] = "email.opened"


class EmailClicked(Engagement):
    """A link in an email was clicked."""

    event_type: ClassVar[str] = "email.clicked"
    url: str | None = None


class ContentDownloaded(Engagement):
    """Gated content (e-book, white paper) was downloaded."""

    event_type: ClassVar[str] = "content.downloaded"


class WebinarRegistered(Engagement):
    """Someone registered for a webinar."""

    event_type: ClassVar[str] = "webinar.registered"


class MeetingBooked(Engagement):
    """A meeting was booked."""

    event_type: ClassVar[str] = "meeting.booked"


class DemoRequested(Engagement):
    """A product demo was requested."""

    event_type: ClassVar[str] = "demo.requested"


class PurchaseCompleted(Engagement):
    """A purchase was completed, with its amount and ISO 4217 currency."""

    event_type: ClassVar[str] = "purchase.completed"
    amount: Decimal
    currency: str


class ProductLogin(Engagement):
    """The person logged into the product."""

    event_type: ClassVar[str] = "product.login"


ENGAGEMENT_TYPES: dict[str, type[Engagement]] = {
    cls.event_type: cls
    for cls in (
        PageViewed,
        EmailOpened,
        EmailClicked,
        ContentDownloaded,
        WebinarRegistered,
        MeetingBooked,
        DemoRequested,
        PurchaseCompleted,
        ProductLogin,
    )
}

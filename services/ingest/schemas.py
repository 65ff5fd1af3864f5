"""Request and response models of the ingest API."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator

from services.ingest import domain
from services.ingest.forms import domain as forms_domain
from services.ingest.forms.domain import ConsentSpec, FormField
from services.ingest.webhooks import domain as webhooks_domain
from shared.api_types import RequestDateTime, StrictBool, UtcDateTime
from shared.events.ingest import ENGAGEMENT_TYPES
from shared.json_limits import LimitedJsonObject

MAX_LEADS = 500
MAX_EVENTS = 1000


def _origin(value: str) -> str:
    if value == "*":
        return value
    parts = urlsplit(value.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
        raise ValueError(f"{value!r} is not an origin like https://example.com")
    return f"{parts.scheme}://{parts.netloc}".lower()


def _http_url(value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an absolute http(s) URL")
    return value


def _secret(value: str | None) -> str | None:
    if value is not None:
        webhooks_domain.secret_key(value)
    return value


class FormSettings(BaseModel):
    """Everything about a form but its name and secret; stored as the form's definition."""

    title: str | None = Field(default=None, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    submit_label: str = Field(default="Submit", min_length=1, max_length=100)
    success_message: str = Field(default="Thank you! We will be in touch.", max_length=500)
    fields: list[FormField] = Field(min_length=1, max_length=100)
    consent: ConsentSpec | None = None
    default_region: str | None = None
    allowed_origins: list[str] = Field(default_factory=list, max_length=50)
    redirect_url: str | None = Field(default=None, max_length=2000)
    honeypot_field: str = Field(default="website", pattern=domain.FIELD_NAME_RE)

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        return sorted({_origin(v) for v in value})

    @field_validator("redirect_url")
    @classmethod
    def _redirect(cls, value: str | None) -> str | None:
        return _http_url(value)

    @field_validator("default_region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        return domain.check_region(value)

    @model_validator(mode="after")
    def _rules_hold(self) -> FormSettings:
        forms_domain.FormRules.model_validate(self.model_dump(include=RULE_KEYS))
        return self


RULE_KEYS = {"fields", "consent", "default_region", "honeypot_field"}


class FormCreate(FormSettings):
    name: str = Field(min_length=1, max_length=200)
    # `whsec_<base64>`: lets a server post to the public endpoint with a Standard Webhooks
    # signature, which skips the origin check and the per-client rate limit.
    signing_secret: str | None = None

    @field_validator("signing_secret")
    @classmethod
    def _valid_secret(cls, value: str | None) -> str | None:
        return _secret(value)


class FormUpdate(BaseModel):
    """Any subset of a form's attributes; `null` clears an optional one."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    title: str | None = None
    description: str | None = None
    submit_label: str | None = None
    success_message: str | None = None
    fields: list[FormField] | None = None
    consent: ConsentSpec | None = None
    default_region: str | None = None
    allowed_origins: list[str] | None = None
    redirect_url: str | None = None
    honeypot_field: str | None = None
    signing_secret: str | None = None

    @field_validator("signing_secret")
    @classmethod
    def _valid_secret(cls, value: str | None) -> str | None:
        return _secret(value)


class FormRead(FormSettings):
    id: str
    name: str
    version: int
    has_signing_secret: bool
    hosted_url: str
    embed_url: str
    submit_url: str
    created_at: UtcDateTime
    updated_at: UtcDateTime


class FormPage(BaseModel):
    items: list[FormRead]
    next_cursor: str | None = None


class WebhookSourceCreate(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    # lead field (`email`, `first_name`, `custom.plan`, `utm_source`, …) → dotted payload path
    mapping: dict[str, str] = Field(default_factory=dict)
    default_region: str | None = None
    secret: str | None = None  # generated when absent

    @field_validator("mapping")
    @classmethod
    def _targets(cls, value: dict[str, str]) -> dict[str, str]:
        for target, path in value.items():
            if not domain.is_lead_target(target):
                raise ValueError(f"{target!r} is not a lead field")
            if not path or len(path) > 500:
                raise ValueError(f"the path for {target!r} must be 1-500 characters")
        return value

    @field_validator("default_region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        return domain.check_region(value)

    @field_validator("secret")
    @classmethod
    def _valid_secret(cls, value: str | None) -> str | None:
        return _secret(value)


class WebhookSourceUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    mapping: dict[str, str] | None = None
    default_region: str | None = None

    @field_validator("mapping")
    @classmethod
    def _targets(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        # Runs only for a mapping that was sent: an explicit null is refused (a source always
        # has a mapping; `{}` empties it), not stored to break every later read.
        if value is None:
            raise ValueError("mapping cannot be null; send {} for no mapping")
        return WebhookSourceCreate._targets(value)

    @field_validator("default_region")
    @classmethod
    def _region(cls, value: str | None) -> str | None:
        return domain.check_region(value)


class WebhookSourceRead(BaseModel):
    id: str
    name: str
    mapping: dict[str, str]
    default_region: str | None
    url: str
    created_at: UtcDateTime
    updated_at: UtcDateTime


class WebhookSourceCreated(WebhookSourceRead):
    secret: str  # shown once


class UtmIn(BaseModel):
    source: str | None = None
    medium: str | None = None
    campaign: str | None = None
    term: str | None = None
    content: str | None = None


class ConsentIn(BaseModel):
    granted: StrictBool
    text: str | None = Field(default=None, max_length=2000)


IDENTITY_REQUIRED: list[JsonValue] = [
    {"required": [name], "properties": {name: {"type": "string", "minLength": 1}}}
    for name in ("email", "phone")
]


class LeadIn(BaseModel):
    """One lead pushed over the API; values are normalised and checked on arrival."""

    # An e-mail address or a phone number is required (`identity_required`), said in the
    # schema too so that a generated client knows it.
    model_config = ConfigDict(extra="forbid", json_schema_extra={"anyOf": IDENTITY_REQUIRED})

    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    company: str | None = None
    job_title: str | None = None
    country: str | None = None
    default_region: str | None = None
    custom_fields: LimitedJsonObject = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    utm: UtmIn = Field(default_factory=UtmIn)
    referrer: str | None = None
    page_url: str | None = None
    consent: ConsentIn | None = None

    def values(self) -> dict[str, Any]:
        """Flat lead-field values, as the domain rules read them."""
        data = self.model_dump(exclude={"utm"}, exclude_none=True)
        for key, value in self.utm.model_dump(exclude_none=True).items():
            data[f"utm_{key}"] = value
        return data


class LeadBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    leads: list[LeadIn] = Field(min_length=1, max_length=MAX_LEADS)


class LeadResult(BaseModel):
    submission_id: str
    status: Literal["accepted"]
    dedupe_key: str


class LeadsAccepted(BaseModel):
    results: list[LeadResult]


class SubmissionAccepted(BaseModel):
    submission_id: str
    status: Literal["accepted"] = "accepted"


class EngagementIn(BaseModel):
    """One engagement event, about a person known by e-mail or contact id."""

    model_config = ConfigDict(extra="forbid")

    # Checked by the handler (its 422 lists the types); documented here as their enum.
    type: str = Field(json_schema_extra={"enum": list[JsonValue](sorted(ENGAGEMENT_TYPES))})
    id: str | None = Field(default=None, max_length=64)  # the sender's id, for dedupe
    email: str | None = None
    contact_id: str | None = Field(default=None, max_length=64)
    occurred_at: RequestDateTime | None = None
    properties: LimitedJsonObject = Field(default_factory=dict)
    url: str | None = Field(default=None, max_length=2048)
    amount: Decimal | None = None
    currency: str | None = None


class EngagementBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[EngagementIn] = Field(min_length=1, max_length=MAX_EVENTS)


class EngagementAccepted(BaseModel):
    accepted: int
    engagement_ids: list[str]


class QuarantineItem(BaseModel):
    id: str
    source: str
    source_id: str | None
    status: str
    reason: str | None
    errors: list[dict[str, str]]
    content_type: str
    data: Any
    client_address: str | None
    origin: str | None
    created_at: UtcDateTime


class QuarantinePage(BaseModel):
    items: list[QuarantineItem]
    next_cursor: str | None = None


class ReleaseResult(BaseModel):
    submission_id: str
    status: Literal["released"]
    dedupe_key: str

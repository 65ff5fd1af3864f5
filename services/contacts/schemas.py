"""Request and response models of the contacts API (separate from tables and events)."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, JsonValue

from services.contacts.domain import FIELD_NAME_RE, RESERVED_FIELD_NAMES
from shared.api_types import RequestDate, StrictBool, StrictFloat, StrictInt, UtcDateTime
from shared.json_limits import LimitedJsonObject

Stage = Literal["subscriber", "lead", "mql", "sql", "opportunity", "customer", "churned"]
ChurnReason = Literal["budget", "missing_feature", "competitor", "service", "other"]
SubscriptionStatus = Literal["subscribed", "unsubscribed", "bounced"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ContactCreate(_In):
    email: str | None = Field(default=None, max_length=320)
    phone: str | None = Field(default=None, max_length=40)
    first_name: str | None = Field(default=None, max_length=200)
    last_name: str | None = Field(default=None, max_length=200)
    company: str | None = Field(default=None, max_length=200)
    job_title: str | None = Field(default=None, max_length=200)
    country: str | None = Field(default=None, max_length=100)
    source: str | None = Field(default=None, max_length=100)
    lifecycle_stage: Stage | None = None
    churn_reason: ChurnReason | None = None
    churn_reason_text: str | None = Field(default=None, max_length=2000)
    subscription_status: SubscriptionStatus | None = None
    owner_id: str | None = None
    custom_fields: LimitedJsonObject = Field(default_factory=dict)
    tags: list[Annotated[str, Field(max_length=100)]] = Field(default_factory=list, max_length=100)
    # A list name needs a letter, digit or _ (domain.normalise_list_name, code invalid_list).
    lists: list[str] = Field(
        default_factory=list,
        max_length=100,
        json_schema_extra={"items": {"type": "string", "pattern": "[A-Za-z0-9_]"}},
    )


class ContactUpdate(_In):
    """Only the fields sent change; `null` clears a field."""

    email: str | None = Field(default=None, max_length=320)
    phone: str | None = Field(default=None, max_length=40)
    first_name: str | None = Field(default=None, max_length=200)
    last_name: str | None = Field(default=None, max_length=200)
    company: str | None = Field(default=None, max_length=200)
    job_title: str | None = Field(default=None, max_length=200)
    country: str | None = Field(default=None, max_length=100)
    source: str | None = Field(default=None, max_length=100)
    lifecycle_stage: Stage | None = None
    churn_reason: ChurnReason | None = None
    churn_reason_text: str | None = Field(default=None, max_length=2000)
    subscription_status: SubscriptionStatus | None = None
    owner_id: str | None = None
    custom_fields: LimitedJsonObject | None = None


class ContactRead(BaseModel):
    id: str
    email: str | None
    phone: str | None
    first_name: str | None
    last_name: str | None
    company: str | None
    job_title: str | None
    country: str | None
    source: str | None
    lifecycle_stage: str
    owner_id: str | None
    subscription_status: str
    churn_reason: str | None
    churn_reason_text: str | None
    score: float | None
    custom_fields: dict[str, Any]
    tags: list[str]
    lists: list[str]
    created_at: UtcDateTime
    updated_at: UtcDateTime
    last_interaction_at: UtcDateTime | None


class ContactPage(BaseModel):
    items: list[ContactRead]
    next_cursor: str | None


class Count(BaseModel):
    count: int


class TagIn(_In):
    tag: str = Field(min_length=1, max_length=100)


class ListIn(_In):
    list: str = Field(min_length=1, max_length=100)


class NoteIn(_In):
    text: str = Field(min_length=1, max_length=20_000)


class TimelineItem(BaseModel):
    id: str
    kind: str
    occurred_at: UtcDateTime
    data: dict[str, Any]


class TimelinePage(BaseModel):
    items: list[TimelineItem]
    next_cursor: str | None


class MergeIn(_In):
    survivor_id: str
    merged_id: str
    choices: dict[str, Literal["survivor", "merged"]] = Field(default_factory=dict)


MAX_FIELD_LENGTH = 1_000_000


class FieldIn(_In):
    # The handler's rule (domain.check_definition, code invalid_name), documented here.
    name: str = Field(
        min_length=1,
        max_length=63,
        json_schema_extra={
            "pattern": FIELD_NAME_RE.pattern,
            "not": {"enum": list[JsonValue](sorted(RESERVED_FIELD_NAMES))},
        },
    )
    type: Literal["text", "number", "date", "boolean", "select", "multi_select"]
    label: str | None = Field(default=None, max_length=200)
    required: StrictBool = False
    options: list[str] = Field(default_factory=list, max_length=500)
    min: StrictFloat | None = None
    max: StrictFloat | None = None
    # Bounded by the column (a 32-bit integer) with room to spare: a text value past a
    # million characters is no field of a contact.
    max_length: StrictInt | None = Field(default=None, ge=1, le=MAX_FIELD_LENGTH)
    pattern: str | None = Field(default=None, max_length=500)


class FieldRead(BaseModel):
    name: str
    type: str
    label: str | None
    required: bool
    options: list[str]
    min: float | None
    max: float | None
    max_length: int | None
    pattern: str | None


class SegmentIn(_In):
    name: str = Field(min_length=1, max_length=200)
    filter: dict[str, Any]


class FilterIn(_In):
    filter: dict[str, Any]


class SegmentRead(BaseModel):
    id: str
    name: str
    filter: dict[str, Any]
    time_based: bool
    created_at: UtcDateTime
    members: int | None = None


class TeamIn(_In):
    name: str = Field(min_length=1, max_length=200)
    rule: Literal["round_robin", "weighted"] = "round_robin"


class TeamRead(BaseModel):
    id: str
    name: str
    rule: str


class CaptureAssignmentIn(_In):
    team_id: str = Field(min_length=1, max_length=36)


class CaptureAssignmentRead(BaseModel):
    """New contacts get their owner at capture from this team's rotation."""

    team_id: str
    team_name: str
    rule: str
    updated_at: UtcDateTime


class OwnerIn(_In):
    name: str = Field(min_length=1, max_length=200)
    email: EmailStr | None = None
    team_id: str | None = None
    weight: StrictInt = Field(default=1, ge=0, le=1000)
    active: StrictBool = True


class OwnerUpdate(_In):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    email: EmailStr | None = None
    team_id: str | None = None
    weight: StrictInt | None = Field(default=None, ge=0, le=1000)
    active: StrictBool | None = None


class OwnerRead(BaseModel):
    id: str
    name: str
    email: str | None
    team_id: str | None
    weight: int
    active: bool


class AssignIn(_In):
    # An owner, or a team whose rotation picks one (the owner wins when both are given).
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": [
                {"properties": {key: {"type": "string"}}, "required": [key]}
                for key in ("owner_id", "team_id")
            ]
        },
    )

    owner_id: str | None = None
    team_id: str | None = None


class TaskIn(_In):
    contact_id: str
    title: str = Field(min_length=1, max_length=500)
    description: str | None = Field(default=None, max_length=20_000)
    due_date: RequestDate | None = None
    assignee_id: str | None = None


class TaskUpdate(_In):
    title: str | None = Field(default=None, min_length=1, max_length=500)
    description: str | None = None
    due_date: RequestDate | None = None
    assignee_id: str | None = None
    status: Literal["open", "done"] | None = None


class TaskRead(BaseModel):
    id: str
    contact_id: str
    title: str
    description: str | None
    due_date: date | None
    assignee_id: str | None
    status: str
    created_at: UtcDateTime
    completed_at: UtcDateTime | None

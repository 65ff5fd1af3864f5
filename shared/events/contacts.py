"""Events published by contacts on `leadwire.contacts.v1`. Public contracts: add optional fields
only. Every contact event carries what a consumer needs to keep its own projection."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any, ClassVar

from pydantic import BaseModel, Field

from shared.events.envelope import Envelope, EventPayload, PreparedEnvelope


class ContactSnapshot(BaseModel):
    """The full current state of a contact (event-carried state transfer)."""

    id: str
    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    company: str | None = None
    job_title: str | None = None
    country: str | None = None
    source: str | None = None
    lifecycle_stage: str
    owner_id: str | None = None
    subscription_status: str
    churn_reason: str | None = None
    churn_reason_text: str | None = None
    score: float | None = None
    custom_fields: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    lists: list[str] = Field(default_factory=list)
    created_at: datetime
    updated_at: datetime
    last_interaction_at: datetime | None = None


class FieldChange(BaseModel):
    """One changed field: its value before and after the change."""

    before: Any = None
    after: Any = None


class ContactCreated(EventPayload):
    """Emitted when a new contact exists: first capture of a person, or created over the API."""

    event_type: ClassVar[str] = "contact.created"

    contact: ContactSnapshot
    cause: str  # `lead.captured`, `api`
    submission_id: str | None = None
    # Who the owner is when the contact is created with one (assigned at capture), so a
    # consumer can name them without waiting for `contact.owner_assigned`.
    owner_name: str | None = None
    owner_email: str | None = None


class ContactUpdated(EventPayload):
    """Emitted when a contact's fields, tags or lists change, with before/after and a snapshot."""

    event_type: ClassVar[str] = "contact.updated"

    contact_id: str
    changes: dict[str, FieldChange]
    contact: ContactSnapshot
    cause: str
    submission_id: str | None = None


class ContactMerged(EventPayload):
    """Emitted when duplicate `merged_id` is folded into `survivor_id`, which it redirects to."""

    event_type: ClassVar[str] = "contact.merged"

    survivor_id: str
    merged_id: str
    chosen: dict[str, Any]
    contact: ContactSnapshot


class ContactDeleted(EventPayload):
    """Tombstone emitted when a contact is erased (right to be forgotten): every consumer deletes
    everything it holds on the person, its projection, history and undelivered work alike.

    The person is `contact_id` and the ids in `merged_ids` (duplicates once merged into it), and
    whoever is known by one of `identity_digests`: `shared.erasure.identity_digest(workspace,
    identity)` of every e-mail and phone the person was known by (identities as in
    `shared.erasure`: `email:<lower-cased address>`, `phone:<E.164>`), so rows keyed by an
    address rather than a contact id are found without the tombstone naming anyone.
    `submission_ids` are ingest's submissions that became this contact. A consumer keeps only
    the digests, with `deleted_at` (`shared.erasure.record_erasures`), and drops data about them
    captured up to `deleted_at` if it arrives again later (replays); later captures are new.
    """

    event_type: ClassVar[str] = "contact.deleted"

    contact_id: str
    deleted_at: datetime
    merged_ids: list[str] = Field(default_factory=list)
    identity_digests: list[str] = Field(default_factory=list)
    submission_ids: list[str] = Field(default_factory=list)


class ContactOwnerAssigned(EventPayload):
    """Emitted when a contact gets an owner, explicitly or by a team's rotation rule."""

    event_type: ClassVar[str] = "contact.owner_assigned"

    contact_id: str
    owner_id: str
    previous_owner_id: str | None = None
    team_id: str | None = None
    rule: str  # `explicit`, `round_robin`, `weighted`
    # Who the owner is, so a consumer can name them (an alert "for Ada") without a lookup.
    owner_name: str | None = None
    owner_email: str | None = None
    contact: ContactSnapshot


class ContactLifecycleChanged(EventPayload):
    """Emitted when a contact moves to another lifecycle stage (churn carries its reason)."""

    event_type: ClassVar[str] = "contact.lifecycle_changed"

    contact_id: str
    from_stage: str | None = None
    to_stage: str
    changed_at: datetime
    churn_reason: str | None = None
    churn_reason_text: str | None = None
    contact: ContactSnapshot


class SegmentEntered(EventPayload):
    """Emitted when a contact starts matching a segment (on change or by the periodic sweep)."""

    event_type: ClassVar[str] = "segment.entered"

    segment_id: str
    segment_name: str
    contact_id: str
    at: datetime
    contact: ContactSnapshot | None = None


class SegmentExited(EventPayload):
    """Emitted when a contact stops matching a segment, or is erased or merged away."""

    event_type: ClassVar[str] = "segment.exited"

    segment_id: str
    segment_name: str
    contact_id: str
    at: datetime


class TaskSnapshot(BaseModel):
    """A task on a contact."""

    id: str
    contact_id: str
    title: str
    description: str | None = None
    due_date: date | None = None
    assignee_id: str | None = None
    status: str  # `open`, `done`
    created_at: datetime
    completed_at: datetime | None = None


class TaskCreated(EventPayload):
    """Emitted when a task is created over the API or by a `contact.create_task` command."""

    event_type: ClassVar[str] = "task.created"

    task: TaskSnapshot


class TaskCompleted(EventPayload):
    """Emitted when a task is marked done."""

    event_type: ClassVar[str] = "task.completed"

    task: TaskSnapshot


class ContactCommandRejected(EventPayload):
    """Emitted when contacts refuses a command from `leadwire.contact-commands.v1` (unknown
    contact, invalid value); the command is also dead-lettered. Its sender (a workflow run)
    learns why from `command_id`, the refused envelope's id."""

    event_type: ClassVar[str] = "contact.command_rejected"

    command_id: str
    command_type: str
    contact_id: str | None = None
    code: str
    reason: str


CONTACT_EVENT_TYPES: dict[str, type[EventPayload]] = {
    cls.event_type: cls
    for cls in (
        ContactCreated,
        ContactUpdated,
        ContactMerged,
        ContactDeleted,
        ContactOwnerAssigned,
        ContactLifecycleChanged,
        SegmentEntered,
        SegmentExited,
        TaskCreated,
        TaskCompleted,
        ContactCommandRejected,
    )
}


def parse_contact_event(envelope: Envelope) -> EventPayload:
    """The typed payload of an envelope read from `leadwire.contacts.v1`."""
    try:
        model = CONTACT_EVENT_TYPES[envelope.type]
    except KeyError as exc:
        raise ValueError(f"unknown contacts event type {envelope.type!r}") from exc
    return envelope.payload(model)


# --- the capture hot path's encoders, held to the models above byte for byte by a unit test --
# Building the pydantic payload, snapshot and envelope for each captured lead took about a fifth
# of a capture's time. These build the same JSON documents directly from values the capture
# already validated: the models' field order, `None` fields left out as `exclude_none=True`
# leaves them out (values inside dicts are kept, as pydantic keeps them).


SNAPSHOT_ORDER: tuple[str, ...] = tuple(ContactSnapshot.model_fields)


def contact_event(
    event_id: str,
    event_type: str,
    source: str,
    workspace: str,
    contact_id: str,
    data: dict[str, Any],
    correlationid: str,
) -> Envelope:
    """The envelope of a contact event, every attribute given (no default factories run)."""
    return PreparedEnvelope.prepare(
        event_type,
        data,
        source=source,
        workspace=workspace,
        subject=contact_id,
        correlationid=correlationid,
        event_id=event_id,
    )


def contact_snapshot_data(
    state: Mapping[str, Any], tags: Iterable[str], lists: Iterable[str]
) -> dict[str, Any]:
    """`ContactSnapshot` of a contact's column values, as `model_dump(exclude_none=True)`."""
    values = {
        **state,
        "custom_fields": state["custom_fields"] or {},
        "tags": sorted(tags),
        "lists": sorted(lists),
    }
    return {name: value for name in SNAPSHOT_ORDER if (value := values[name]) is not None}


def contact_created_data(
    snapshot: dict[str, Any],
    cause: str,
    submission_id: str | None,
    owner_name: str | None = None,
    owner_email: str | None = None,
) -> dict[str, Any]:
    """The data of a `contact.created`."""
    data: dict[str, Any] = {"contact": snapshot, "cause": cause}
    if submission_id is not None:
        data["submission_id"] = submission_id
    if owner_name is not None:
        data["owner_name"] = owner_name
    if owner_email is not None:
        data["owner_email"] = owner_email
    return data


def contact_owner_assigned_data(
    snapshot: dict[str, Any],
    owner_id: str,
    team_id: str | None,
    rule: str,
    owner_name: str | None,
    owner_email: str | None,
) -> dict[str, Any]:
    """The data of a `contact.owner_assigned` of a contact that had no owner before."""
    data: dict[str, Any] = {"contact_id": snapshot["id"], "owner_id": owner_id}
    if team_id is not None:
        data["team_id"] = team_id
    data["rule"] = rule
    if owner_name is not None:
        data["owner_name"] = owner_name
    if owner_email is not None:
        data["owner_email"] = owner_email
    data["contact"] = snapshot
    return data


def contact_updated_data(
    contact_id: str,
    changes: Mapping[str, tuple[Any, Any]],
    snapshot: dict[str, Any],
    cause: str,
    submission_id: str | None,
) -> dict[str, Any]:
    """The data of a `contact.updated`; `changes` maps each changed field to (before, after)."""
    data: dict[str, Any] = {
        "contact_id": contact_id,
        "changes": {name: _change(before, after) for name, (before, after) in changes.items()},
        "contact": snapshot,
        "cause": cause,
    }
    if submission_id is not None:
        data["submission_id"] = submission_id
    return data


def _change(before: Any, after: Any) -> dict[str, Any]:
    """A `FieldChange` without its `None` sides."""
    change = {}
    if before is not None:
        change["before"] = before
    if after is not None:
        change["after"] = after
    return change

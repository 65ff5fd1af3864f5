"""Commands contacts accepts on `leadwire.contact-commands.v1` (sent by workflows and others).
An invalid command (unknown contact, bad value) is dead-lettered with its reason."""

from __future__ import annotations

from datetime import date
from typing import Any, ClassVar

from shared.events.envelope import Envelope, EventPayload


class ContactCommand(EventPayload):
    """Base of every contact command: the contact it applies to."""

    event_type: ClassVar[str] = "contact.command"

    contact_id: str


class AddTag(ContactCommand):
    """Add a tag to a contact (a no-op when it already has it)."""

    event_type: ClassVar[str] = "contact.add_tag"
    tag: str


class RemoveTag(ContactCommand):
    """Remove a tag from a contact (a no-op when it does not have it)."""

    event_type: ClassVar[str] = "contact.remove_tag"
    tag: str


class SetField(ContactCommand):
    """Set a core or custom field; `null` clears it. Validated against the field definitions."""

    event_type: ClassVar[str] = "contact.set_field"
    field: str
    value: Any = None


class SetLifecycle(ContactCommand):
    """Move a contact to a lifecycle stage; `churned` needs a churn reason."""

    event_type: ClassVar[str] = "contact.set_lifecycle"
    stage: str
    churn_reason: str | None = None
    churn_reason_text: str | None = None


class AssignOwner(ContactCommand):
    """Give a contact an owner: `owner_id` explicitly, or `team_id` to use the team's rule."""

    event_type: ClassVar[str] = "contact.assign_owner"
    owner_id: str | None = None
    team_id: str | None = None


class CreateTask(ContactCommand):
    """Create a task on a contact."""

    event_type: ClassVar[str] = "contact.create_task"
    title: str
    description: str | None = None
    due_date: date | None = None
    assignee_id: str | None = None


class AddToList(ContactCommand):
    """Add a contact to a static list (a no-op when it is already a member)."""

    event_type: ClassVar[str] = "contact.add_to_list"
    list: str


class RemoveFromList(ContactCommand):
    """Remove a contact from a static list."""

    event_type: ClassVar[str] = "contact.remove_from_list"
    list: str


class SetSubscriptionStatus(ContactCommand):
    """Set a contact's subscription status: `subscribed`, `unsubscribed` or `bounced`."""

    event_type: ClassVar[str] = "contact.set_subscription_status"
    status: str


COMMAND_TYPES: dict[str, type[ContactCommand]] = {
    cls.event_type: cls
    for cls in (
        AddTag,
        RemoveTag,
        SetField,
        SetLifecycle,
        AssignOwner,
        CreateTask,
        AddToList,
        RemoveFromList,
        SetSubscriptionStatus,
    )
}


def parse_command(envelope: Envelope) -> ContactCommand:
    """The typed command of an envelope read from `leadwire.contact-commands.v1`."""
    try:
        model = COMMAND_TYPES[envelope.type]
    except KeyError as exc:
        raise ValueError(f"unknown contact command {envelope.type!r}") from exc
    return envelope.payload(model)

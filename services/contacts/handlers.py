"""What the use cases of every contacts area share: the core of the repository they are typed
against, the contact snapshot and its events, and finding a contact.

Each use case (in an area's `handlers.py`) takes its message first, then the transaction
(`tx.store`, a repository Protocol; `tx.emit`, the outbox) and the current time. None commits:
the door's `async with transaction(uow) as tx:` does, so an event is published if and only if
the change it describes is committed."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Protocol

from services.contacts.domain import RuleViolation
from services.contacts.models import Contact, TaskRow
from shared.errors import Conflict, InvalidInput, NotFound
from shared.events import topics
from shared.events.contacts import (
    ContactLifecycleChanged,
    ContactSnapshot,
    TaskSnapshot,
)
from shared.events.envelope import Envelope, EventPayload, source_of
from shared.ids import uuid7 as new_id
from shared.uow import Transaction


class ContactRecords(Protocol):
    """What every area's use cases read and write of a contact: the repository's core."""

    async def add_activities(self, rows: Sequence[dict[str, Any]]) -> None: ...

    async def add_lifecycle_changes(self, rows: Sequence[dict[str, Any]]) -> None: ...

    async def contact(
        self, workspace: str, contact_id: str, lock: bool = False
    ) -> Contact | None: ...

    async def flush(self, on_conflict: Exception | None = None) -> None: ...

    async def lists_of(self, ids: Iterable[str]) -> dict[str, list[str]]: ...

    async def tags_of(self, ids: Iterable[str]) -> dict[str, list[str]]: ...


SOURCE = source_of("contacts")
SNAPSHOT_FIELDS: tuple[str, ...] = (
    "email",
    "phone",
    "first_name",
    "last_name",
    "company",
    "job_title",
    "country",
    "source",
    "lifecycle_stage",
    "owner_id",
    "subscription_status",
    "churn_reason",
    "churn_reason_text",
    "score",
    "custom_fields",
    "created_at",
    "updated_at",
    "last_interaction_at",
)


@contextmanager
def checked() -> Iterator[None]:
    """Turn a broken domain rule into a 422 naming each field."""
    try:
        yield
    except RuleViolation as exc:
        raise InvalidInput(str(exc), errors=exc.errors) from exc


# --- helpers --------------------------------------------------------------------------------


def values_of(contact: Contact) -> dict[str, Any]:
    return {name: getattr(contact, name) for name in ("id", *SNAPSHOT_FIELDS)}


def snapshot(contact: Contact, tags: Sequence[str], lists: Sequence[str]) -> ContactSnapshot:
    return ContactSnapshot(
        **values_of(contact) | {"custom_fields": dict(contact.custom_fields or {})},
        tags=sorted(tags),
        lists=sorted(lists),
    )


async def snapshot_of(store: ContactRecords, contact: Contact) -> ContactSnapshot:
    tags = await store.tags_of([contact.id])
    lists = await store.lists_of([contact.id])
    return snapshot(contact, tags[contact.id], lists[contact.id])


def publish(
    tx: Transaction[ContactRecords], workspace: str, contact_id: str, payload: EventPayload
) -> None:
    """Queue an event on `leadwire.contacts.v1`, keyed so one contact's events stay in order."""
    envelope = Envelope.of(payload, source=SOURCE, workspace=workspace, subject=contact_id)
    tx.emit(topics.CONTACTS, topics.contact_key(workspace, contact_id), envelope)


def activity(
    workspace: str,
    contact_id: str,
    kind: str,
    at: datetime,
    data: Mapping[str, Any],
    row_id: str | None = None,
) -> dict[str, Any]:
    return {
        "id": row_id or new_id(),
        "workspace": workspace,
        "contact_id": contact_id,
        "kind": kind,
        "occurred_at": at,
        "data": dict(data),
    }


def lifecycle_row(
    workspace: str,
    contact_id: str,
    from_stage: str | None,
    to_stage: str,
    at: datetime,
    reason: str | None = None,
    text: str | None = None,
    row_id: str | None = None,
) -> dict[str, Any]:
    return {
        "id": row_id or new_id(),
        "workspace": workspace,
        "contact_id": contact_id,
        "from_stage": from_stage,
        "to_stage": to_stage,
        "changed_at": at,
        "churn_reason": reason,
        "churn_reason_text": text,
    }


async def live_contact(store: ContactRecords, workspace: str, contact_id: str) -> Contact:
    """A contact of this workspace that was not merged away, locked for the transaction."""
    contact = await store.contact(workspace, contact_id, lock=True)
    if contact is None or contact.merged_into is not None:
        extra = {"merged_into": contact.merged_into} if contact is not None else {}
        raise NotFound(f"contact {contact_id} not found", **extra)
    return contact


async def resolve_contact(store: ContactRecords, workspace: str, contact_id: str) -> Contact:
    """The contact, following merge redirects: commands and events about a merged id apply to
    its survivor."""
    for _ in range(10):
        contact = await store.contact(workspace, contact_id, lock=True)
        if contact is None:
            break
        if contact.merged_into is None:
            return contact
        contact_id = contact.merged_into
    raise NotFound(f"contact {contact_id} not found in workspace {workspace}")


async def flush_unique(store: ContactRecords) -> None:
    """Flush; a unique (workspace, email|phone) violation means another contact holds it."""
    await store.flush(on_conflict=Conflict("another contact already has this email or phone"))


# --- contacts over the API ------------------------------------------------------------------


async def record_lifecycle(
    store: ContactRecords,
    tx: Transaction[ContactRecords],
    contact: Contact,
    from_stage: str | None,
    now: datetime,
    snap: ContactSnapshot,
) -> None:
    workspace = contact.workspace
    await store.add_lifecycle_changes(
        [
            lifecycle_row(
                workspace,
                contact.id,
                from_stage,
                contact.lifecycle_stage,
                now,
                contact.churn_reason,
                contact.churn_reason_text,
            )
        ]
    )
    await store.add_activities(
        [
            activity(
                workspace,
                contact.id,
                ContactLifecycleChanged.event_type,
                now,
                {
                    "from": from_stage,
                    "to": contact.lifecycle_stage,
                    "churn_reason": contact.churn_reason,
                    "churn_reason_text": contact.churn_reason_text,
                },
            )
        ]
    )
    publish(
        tx,
        workspace,
        contact.id,
        ContactLifecycleChanged(
            contact_id=contact.id,
            from_stage=from_stage,
            to_stage=contact.lifecycle_stage,
            changed_at=now,
            churn_reason=contact.churn_reason,
            churn_reason_text=contact.churn_reason_text,
            contact=snap,
        ),
    )


# --- tasks ----------------------------------------------------------------------------------


def task_snapshot(task: TaskRow) -> TaskSnapshot:
    return TaskSnapshot(
        id=task.id,
        contact_id=task.contact_id,
        title=task.title,
        description=task.description,
        due_date=task.due_date,
        assignee_id=task.assignee_id,
        status=task.status,
        created_at=task.created_at,
        completed_at=task.completed_at,
    )


# --- reports --------------------------------------------------------------------------------

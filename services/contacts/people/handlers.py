"""Use cases of people: contacts created, read, found and changed over the API, their tags,
lists, notes and timeline, and the workspace's custom field definitions."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from services.contacts import domain
from services.contacts.domain import FieldDefinition, RuleViolation
from services.contacts.handlers import (
    activity,
    checked,
    flush_unique,
    lifecycle_row,
    live_contact,
    publish,
    record_lifecycle,
    resolve_contact,
    snapshot,
    snapshot_of,
    values_of,
)
from services.contacts.models import (
    Activity,
    Contact,
    LifecycleChangeRow,
    Owner,
)
from services.contacts.segments.handlers import SegmentsRepository, refresh_segments
from shared.errors import Conflict, InvalidInput, NotFound
from shared.events.contacts import (
    ContactCreated,
    ContactOwnerAssigned,
    ContactSnapshot,
    ContactUpdated,
    FieldChange,
)
from shared.ids import uuid7 as new_id
from shared.uow import Transaction


class PeopleRepository(SegmentsRepository, Protocol):
    """The repository as the people use cases use it."""

    async def add_tags(self, workspace: str, pairs: Iterable[tuple[str, str]]) -> None: ...

    async def add_to_list(self, workspace: str, contact_id: str, name: str) -> None: ...

    async def contact_by_identity(
        self, workspace: str, email: str | None = None, phone: str | None = None
    ) -> Contact | None: ...

    async def delete_field_definition(self, workspace: str, name: str) -> bool: ...

    async def lifecycle_history(self, contact_id: str) -> list[LifecycleChangeRow]: ...

    async def lists(self, workspace: str) -> list[tuple[str, int]]: ...

    async def owner(self, workspace: str, owner_id: str) -> Owner | None: ...

    async def remove_from_list(self, contact_id: str, name: str) -> None: ...

    async def remove_tag(self, contact_id: str, tag: str) -> None: ...

    async def save_field_definition(self, workspace: str, d: FieldDefinition) -> None: ...

    async def tags(self, workspace: str) -> list[tuple[str, int]]: ...

    async def timeline(
        self, contact_id: str, cursor: str | None, limit: int
    ) -> tuple[list[Activity], str | None]: ...


@dataclass(frozen=True)
class Moved:
    """A merged-away contact: reads redirect to the survivor."""

    survivor_id: str


def diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, FieldChange]:
    return {
        name: FieldChange(before=before.get(name), after=after.get(name))
        for name in after
        if name != "updated_at" and before.get(name) != after.get(name)
    }


def validated_values(
    data: Mapping[str, Any],
    definitions: Mapping[str, FieldDefinition],
    current: Contact | None,
) -> tuple[dict[str, Any], domain.LifecycleChange | None]:
    """Column values for a create or update, validated; RuleViolation lists every failure."""
    errors: list[dict[str, str]] = []
    values: dict[str, Any] = {}
    lifecycle: domain.LifecycleChange | None = None
    country = data.get("country") or (current.country if current else None)
    for name in domain.WRITABLE_CORE_FIELDS:
        if name not in data:
            continue
        raw = data[name]
        try:
            if raw is not None and not isinstance(raw, str):
                raise domain.violation(name, "not_text", "must be a string")
            if name == "email":
                values[name] = domain.normalise_email(raw)
            elif name == "phone":
                values[name] = domain.normalise_phone(raw, country)
            else:
                values[name] = (raw or "").strip() or None
        except RuleViolation as exc:
            errors.extend(exc.errors)
    if "lifecycle_stage" in data or "churn_reason" in data:
        try:
            lifecycle = domain.check_lifecycle_change(
                data.get("lifecycle_stage") or (current.lifecycle_stage if current else "lead"),
                data.get("churn_reason"),
                data.get("churn_reason_text"),
            )
        except RuleViolation as exc:
            errors.extend(exc.errors)
    if data.get("subscription_status") is not None:
        try:
            values["subscription_status"] = domain.check_subscription_status(
                data["subscription_status"]
            )
        except RuleViolation as exc:
            errors.extend(exc.errors)
    if "custom_fields" in data or current is None:
        try:
            values["custom_fields"] = domain.validate_custom_fields(
                data.get("custom_fields") or {},
                definitions,
                existing=current.custom_fields if current else {},
                check_required=current is None,
            )
        except RuleViolation as exc:
            errors.extend(exc.errors)
    if errors:
        raise RuleViolation(errors)
    return values, lifecycle


async def _check_identity_free(
    store: PeopleRepository, workspace: str, values: Mapping[str, Any], contact_id: str | None
) -> None:
    for name in ("email", "phone"):
        value = values.get(name)
        if not value:
            continue
        holder = await store.contact_by_identity(workspace, **{name: value})
        if holder is not None and holder.id != contact_id:
            raise Conflict(f"another contact has this {name}", field=name, contact_id=holder.id)


async def _check_owner(store: PeopleRepository, workspace: str, owner_id: str | None) -> None:
    if owner_id is not None and await store.owner(workspace, owner_id) is None:
        raise InvalidInput(
            "unknown owner",
            errors=[{"field": "owner_id", "code": "unknown_owner", "message": "no such owner"}],
        )


async def create_contact(
    workspace: str, data: Mapping[str, Any], tx: Transaction[PeopleRepository], now: datetime
) -> Contact:
    """Create a contact; its email and phone must be free in the workspace, fields valid."""
    store = tx.store
    definitions = await store.field_definitions(workspace)
    with checked():
        values, lifecycle = validated_values(data, definitions, None)
        tag_names = [domain.normalise_tag(t) for t in data.get("tags") or [] if t.strip()]
        list_names = [domain.normalise_list_name(n) for n in data.get("lists") or []]
    if not values.get("email") and not values.get("phone"):
        raise InvalidInput(
            "a contact needs an email or a phone",
            errors=[{"field": "email", "code": "required", "message": "email or phone needed"}],
        )
    await _check_identity_free(store, workspace, values, None)
    await _check_owner(store, workspace, data.get("owner_id"))
    stage = lifecycle.to_stage if lifecycle else "lead"
    contact = Contact(
        id=new_id(),
        workspace=workspace,
        lifecycle_stage=stage,
        subscription_status=values.pop("subscription_status", "subscribed"),
        churn_reason=lifecycle.churn_reason if lifecycle else None,
        churn_reason_text=lifecycle.churn_reason_text if lifecycle else None,
        owner_id=data.get("owner_id"),
        created_at=now,
        updated_at=now,
        **values,
    )
    store.add(contact)
    await flush_unique(store)
    await store.add_tags(workspace, [(contact.id, t) for t in tag_names])
    for name in list_names:
        await store.add_to_list(workspace, contact.id, name)
    await store.add_lifecycle_changes(
        [
            lifecycle_row(
                workspace,
                contact.id,
                None,
                stage,
                now,
                contact.churn_reason,
                contact.churn_reason_text,
            )
        ]
    )
    await store.add_activities([activity(workspace, contact.id, "contact.created", now, {})])
    publish(
        tx,
        workspace,
        contact.id,
        ContactCreated(contact=snapshot(contact, tag_names, list_names), cause="api"),
    )
    await refresh_segments({contact.id}, workspace, tx, now, definitions)
    return contact


async def read_contact(
    workspace: str, contact_id: str, tx: Transaction[PeopleRepository]
) -> Contact | Moved:
    """A contact of the workspace; a merged-away id answers with where it went."""
    store = tx.store
    contact = await store.contact(workspace, contact_id)
    if contact is None:
        raise NotFound(f"contact {contact_id} not found")
    if contact.merged_into is not None:
        return Moved(contact.merged_into)
    return contact


async def lookup_contact(
    workspace: str, email: str | None, phone: str | None, tx: Transaction[PeopleRepository]
) -> Contact:
    """Find a contact by its normalised email or phone."""
    store = tx.store
    with checked():
        clean_email = domain.normalise_email(email)
        clean_phone = domain.normalise_phone(phone)
    if not clean_email and not clean_phone:
        raise InvalidInput(
            "give an email or a phone",
            errors=[{"field": "email", "code": "required", "message": "email or phone"}],
        )
    contact = await store.contact_by_identity(workspace, clean_email, clean_phone)
    if contact is None:
        raise NotFound("no contact with this email or phone")
    return contact


async def update_contact(
    workspace: str,
    contact_id: str,
    data: Mapping[str, Any],
    tx: Transaction[PeopleRepository],
    now: datetime,
    cause: str = "api",
) -> Contact:
    """Change a contact's fields; publishes what changed (before and after) and the snapshot."""
    store = tx.store
    contact = await live_contact(store, workspace, contact_id)
    return await apply_changes(store, contact, data, tx, now, cause)


async def apply_changes(
    store: PeopleRepository,
    contact: Contact,
    data: Mapping[str, Any],
    tx: Transaction[PeopleRepository],
    now: datetime,
    cause: str,
) -> Contact:
    workspace = contact.workspace
    definitions = await store.field_definitions(workspace)
    with checked():
        values, lifecycle = validated_values(data, definitions, contact)
    await _check_identity_free(store, workspace, values, contact.id)
    if "owner_id" in data:
        await _check_owner(store, workspace, data["owner_id"])
        values["owner_id"] = data["owner_id"]
    if ("email" in values or "phone" in values) and not (
        values.get("email", contact.email) or values.get("phone", contact.phone)
    ):
        raise InvalidInput(
            "a contact keeps an email or a phone",
            errors=[{"field": "email", "code": "required", "message": "email or phone needed"}],
        )
    before = values_of(contact)
    for name, value in values.items():
        setattr(contact, name, value)
    if lifecycle is not None:
        contact.lifecycle_stage = lifecycle.to_stage
        contact.churn_reason = lifecycle.churn_reason
        contact.churn_reason_text = lifecycle.churn_reason_text
    changes = diff(before, values_of(contact))
    if not changes:
        return contact
    contact.updated_at = now
    await flush_unique(store)
    snap = await snapshot_of(store, contact)
    if "lifecycle_stage" in changes or "churn_reason" in changes:
        await record_lifecycle(store, tx, contact, before["lifecycle_stage"], now, snap)
    if "owner_id" in changes and contact.owner_id is not None:
        owner = await store.owner(workspace, contact.owner_id)
        publish(
            tx,
            workspace,
            contact.id,
            ContactOwnerAssigned(
                contact_id=contact.id,
                owner_id=contact.owner_id,
                previous_owner_id=before["owner_id"],
                rule="explicit",
                owner_name=owner.name if owner else None,
                owner_email=owner.email if owner else None,
                contact=snap,
            ),
        )
    publish(
        tx,
        workspace,
        contact.id,
        ContactUpdated(contact_id=contact.id, changes=changes, contact=snap, cause=cause),
    )
    await refresh_segments({contact.id}, workspace, tx, now, definitions)
    return contact


async def change_membership(
    workspace: str,
    contact_id: str,
    kind: str,
    name: str,
    add: bool,
    tx: Transaction[PeopleRepository],
    now: datetime,
    cause: str = "api",
    follow_merges: bool = False,
) -> Contact:
    """Add or remove a tag (`kind="tags"`) or a static list membership (`kind="lists"`)."""
    store = tx.store
    contact = await (
        resolve_contact(store, workspace, contact_id)
        if follow_merges
        else live_contact(store, workspace, contact_id)
    )
    with checked():
        clean = domain.normalise_tag(name) if kind == "tags" else domain.normalise_list_name(name)
    if not clean:
        raise InvalidInput(
            "a name is required",
            errors=[{"field": kind, "code": "required", "message": "empty name"}],
        )
    current = (await (store.tags_of if kind == "tags" else store.lists_of)([contact.id]))[
        contact.id
    ]
    if (clean in current) == add:
        return contact
    if kind == "tags":
        if add:
            await store.add_tags(workspace, [(contact.id, clean)])
        else:
            await store.remove_tag(contact.id, clean)
    elif add:
        await store.add_to_list(workspace, contact.id, clean)
    else:
        await store.remove_from_list(contact.id, clean)
    after = sorted({*current, clean} if add else set(current) - {clean})
    contact.updated_at = now
    publish(
        tx,
        workspace,
        contact.id,
        ContactUpdated(
            contact_id=contact.id,
            changes={kind: FieldChange(before=sorted(current), after=after)},
            contact=await snapshot_of(store, contact),
            cause=cause,
        ),
    )
    await refresh_segments({contact.id}, workspace, tx, now)
    return contact


async def add_note(
    workspace: str,
    contact_id: str,
    text: str,
    author: str,
    tx: Transaction[PeopleRepository],
    now: datetime,
) -> dict[str, Any]:
    """Write a note on the contact's timeline."""
    store = tx.store
    contact = await live_contact(store, workspace, contact_id)
    row = activity(workspace, contact.id, "note", now, {"text": text, "author": author})
    await store.add_activities([row])
    return row


async def timeline(
    workspace: str,
    contact_id: str,
    cursor: str | None,
    limit: int,
    tx: Transaction[PeopleRepository],
) -> tuple[list[dict[str, Any]], str | None]:
    """The whole history of a contact, newest first."""
    store = tx.store
    contact = await store.contact(workspace, contact_id)
    if contact is None or contact.merged_into is not None:
        raise NotFound(f"contact {contact_id} not found")
    with checked():
        items, nxt = await store.timeline(contact.id, cursor, limit)
    return [
        {"id": a.id, "kind": a.kind, "occurred_at": a.occurred_at, "data": a.data} for a in items
    ], nxt


async def lifecycle_history(
    workspace: str, contact_id: str, tx: Transaction[PeopleRepository], now: datetime
) -> list[dict[str, Any]]:
    """Every lifecycle move with its time and how long the contact stayed in that stage."""
    store = tx.store
    contact = await store.contact(workspace, contact_id)
    if contact is None or contact.merged_into is not None:
        raise NotFound(f"contact {contact_id} not found")
    rows = await store.lifecycle_history(contact.id)
    history = []
    for i, row in enumerate(rows):
        until = rows[i + 1].changed_at if i + 1 < len(rows) else now
        history.append(
            {
                "from": row.from_stage,
                "to": row.to_stage,
                "changed_at": row.changed_at,
                "churn_reason": row.churn_reason,
                "churn_reason_text": row.churn_reason_text,
                "time_in_stage_s": max((until - row.changed_at).total_seconds(), 0.0),
            }
        )
    return history


async def define_field(
    workspace: str, definition: FieldDefinition, tx: Transaction[PeopleRepository]
) -> None:
    """Create or redefine a custom field of the workspace."""
    with checked():
        domain.check_definition(definition)
    await tx.store.save_field_definition(workspace, definition)


async def list_fields(workspace: str, tx: Transaction[PeopleRepository]) -> list[FieldDefinition]:
    definitions = await tx.store.field_definitions(workspace)
    return sorted(definitions.values(), key=lambda d: d.name)


async def delete_field(workspace: str, name: str, tx: Transaction[PeopleRepository]) -> None:
    """Forget a workspace's definition (an out-of-the-box field returns to its default)."""
    if not await tx.store.delete_field_definition(workspace, name):
        raise NotFound(f"no custom field {name!r} defined in this workspace")


async def describe_contact(contact: Contact, tx: Transaction[PeopleRepository]) -> ContactSnapshot:
    """A contact with its tags and lists."""
    return await snapshot_of(tx.store, contact)


async def tag_counts(workspace: str, tx: Transaction[PeopleRepository]) -> list[tuple[str, int]]:
    """Tags in use in the workspace, with how many contacts carry each."""
    return await tx.store.tags(workspace)


async def list_counts(workspace: str, tx: Transaction[PeopleRepository]) -> list[tuple[str, int]]:
    """Static lists of the workspace, with their member counts."""
    return await tx.store.lists(workspace)

"""Use cases of the contacts service. Each takes its message first, then the unit of work and
the current time; none commits (the door's `async with uow:` does), every event goes through
`uow.emit` so it is published if and only if the change is committed."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from services.contacts import domain
from services.contacts.captures import domain as captures_domain
from services.contacts.domain import FieldDefinition, RuleViolation
from services.contacts.duplicates import domain as duplicates_domain
from services.contacts.models import (
    Contact,
    MergeRecord,
    Owner,
    Segment,
    TaskRow,
    Team,
)
from services.contacts.owners import domain as owners_domain
from services.contacts.reports import domain as reports_domain
from services.contacts.segments import domain as segments_domain
from services.contacts.segments.store import Page
from services.contacts.store import ContactsStore
from shared import erasure
from shared.errors import Conflict, InvalidInput, NotFound
from shared.events import topics
from shared.events.contact_commands import (
    AddTag,
    AddToList,
    AssignOwner,
    ContactCommand,
    CreateTask,
    RemoveFromList,
    RemoveTag,
    SetField,
    SetLifecycle,
    SetSubscriptionStatus,
)
from shared.events.contacts import (
    ContactCommandRejected,
    ContactCreated,
    ContactDeleted,
    ContactLifecycleChanged,
    ContactMerged,
    ContactOwnerAssigned,
    ContactSnapshot,
    ContactUpdated,
    FieldChange,
    SegmentEntered,
    SegmentExited,
    TaskCompleted,
    TaskCreated,
    TaskSnapshot,
    contact_created_data,
    contact_event,
    contact_snapshot_data,
    contact_updated_data,
)
from shared.events.envelope import Envelope, EventPayload
from shared.events.envelope import new_id as new_event_id
from shared.events.ingest import Engagement, LeadCaptured
from shared.events.scores import ScoreChanged
from shared.export import PersonRef
from shared.ids import uuid7 as new_id
from shared.ids import uuid7s as random_ids
from shared.logs import correlation_id_var
from shared.uow import UnitOfWork

log = logging.getLogger(__name__)
SOURCE = "/leadwire/contacts"
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
# The columns a capture may change on an existing contact (`capture_changes` plus the
# timestamps).
CAPTURE_UPDATED_COLUMNS: tuple[str, ...] = (
    "email",
    "phone",
    *(name for name in domain.TEXT_FIELDS if name != "source"),
    "custom_fields",
    "updated_at",
    "last_interaction_at",
)
PERSONAL_FIELDS: tuple[str, ...] = (
    *domain.WRITABLE_CORE_FIELDS,
    "churn_reason_text",
    "owner_id",
    "score",
    "last_interaction_at",
)


@contextmanager
def checked() -> Iterator[None]:
    """Turn a broken domain rule into a 422 naming each field."""
    try:
        yield
    except RuleViolation as exc:
        raise InvalidInput(str(exc), errors=exc.errors) from exc


@dataclass(frozen=True)
class Moved:
    """A merged-away contact: reads redirect to the survivor."""

    survivor_id: str


# --- helpers --------------------------------------------------------------------------------


def values_of(contact: Contact) -> dict[str, Any]:
    return {name: getattr(contact, name) for name in ("id", *SNAPSHOT_FIELDS)}


def snapshot(contact: Contact, tags: Sequence[str], lists: Sequence[str]) -> ContactSnapshot:
    return ContactSnapshot(
        **values_of(contact) | {"custom_fields": dict(contact.custom_fields or {})},
        tags=sorted(tags),
        lists=sorted(lists),
    )


async def snapshot_of(store: ContactsStore, contact: Contact) -> ContactSnapshot:
    tags = await store.tags_of([contact.id])
    lists = await store.lists_of([contact.id])
    return snapshot(contact, tags[contact.id], lists[contact.id])


def publish(uow: UnitOfWork, workspace: str, contact_id: str, payload: EventPayload) -> None:
    """Queue an event on `leadwire.contacts.v1`, keyed so one contact's events stay in order."""
    envelope = Envelope.of(payload, source=SOURCE, workspace=workspace, subject=contact_id)
    uow.emit(topics.CONTACTS, topics.contact_key(workspace, contact_id), envelope)


def emit_captured(
    uow: UnitOfWork,
    event_id: str,
    kind: str,
    workspace: str,
    contact_id: str,
    data: dict[str, Any],
    correlationid: str | None,
) -> None:
    """`publish` for the capture hot path: `data` (from the encoders of
    `shared.events.contacts`) is the payload of a `kind` event already in its JSON shape.
    `correlationid` is the captured lead's, so the chain that started at ingest can be
    followed (and timed) end to end."""
    envelope = contact_event(
        event_id,
        kind,
        SOURCE,
        workspace,
        contact_id,
        data,
        correlationid or correlation_id_var.get() or new_event_id(),
    )
    uow.emit(topics.CONTACTS, topics.contact_key(workspace, contact_id), envelope)


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


def diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, FieldChange]:
    return {
        name: FieldChange(before=before.get(name), after=after.get(name))
        for name in after
        if name != "updated_at" and before.get(name) != after.get(name)
    }


async def live_contact(store: ContactsStore, workspace: str, contact_id: str) -> Contact:
    """A contact of this workspace that was not merged away, locked for the transaction."""
    contact = await store.contact(workspace, contact_id, lock=True)
    if contact is None or contact.merged_into is not None:
        extra = {"merged_into": contact.merged_into} if contact is not None else {}
        raise NotFound(f"contact {contact_id} not found", **extra)
    return contact


async def resolve_contact(store: ContactsStore, workspace: str, contact_id: str) -> Contact:
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


async def flush_unique(store: ContactsStore) -> None:
    """Flush; a unique (workspace, email|phone) violation means another contact holds it."""
    await store.flush(on_conflict=Conflict("another contact already has this email or phone"))


# --- captures -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CapturedLead:
    workspace: str
    lead: LeadCaptured
    correlationid: str | None = None  # of the `lead.captured` event, carried on


async def capture_leads(leads: Sequence[CapturedLead], uow: UnitOfWork, now: datetime) -> None:
    """Upsert captured leads: same email → that contact, else same phone → that contact, else a
    new one; empty values never overwrite filled ones; every capture is a timeline activity.

    The whole batch is one transaction with one identity lookup per workspace; the rows found
    are locked, and a racing insert of the same person fails on the unique constraints, so the
    batch is retried and then finds the contact the other transaction created.
    """
    store = ContactsStore(uow.session)
    by_workspace: dict[str, list[CapturedLead]] = {}
    for item in leads:
        by_workspace.setdefault(item.workspace, []).append(item)
    for workspace, items in by_workspace.items():
        items = await _not_erased(workspace, items, store)
        if items:
            await _capture_in_workspace(workspace, items, store, uow, now)


async def _not_erased(
    workspace: str, items: Sequence[CapturedLead], store: ContactsStore
) -> list[CapturedLead]:
    """The leads that do not bring an erased person back: a lead captured before its person
    was erased (a replayed dead letter, a re-published outbox row, a re-read topic) is dropped;
    one captured afterwards is a new, consented capture."""
    found = {
        id(item): erasure.digests(
            workspace, [item.lead.dedupe_key, *erasure.identities(item.lead.email, item.lead.phone)]
        )
        for item in items
    }
    erased = await store.erasures(workspace, {d for ds in found.values() for d in ds})
    if not erased:
        return list(items)
    kept = []
    for item in items:
        if erasure.replayed_after_erasure(item.lead.captured_at, found[id(item)], erased):
            log.info("dropping a lead of an erased person", extra={"id": item.lead.submission_id})
        else:
            kept.append(item)
    return kept


async def _capture_in_workspace(
    workspace: str,
    items: Sequence[CapturedLead],
    store: ContactsStore,
    uow: UnitOfWork,
    now: datetime,
) -> None:
    leads = [item.lead for item in items]
    ids = random_ids()
    # Hot path (thousands of leads per second): contacts are plain dicts while the batch is
    # worked through; new ones are inserted in one statement, existing ones updated at the end.
    definitions = await store.field_definitions(workspace)
    captures = [
        captures_domain.capture_from_lead(
            lead.email,
            lead.phone,
            {
                "first_name": lead.first_name,
                "last_name": lead.last_name,
                "company": lead.company,
                "job_title": lead.job_title,
                "country": lead.country,
            },
            lead.custom_fields,
            lead.tags,
        )
        for lead in leads
    ]
    states = {
        row["id"]: row
        for row in await store.contact_states_by_identities(
            workspace,
            [c.email for c in captures if c.email],
            [c.phone for c in captures if c.phone],
        )
    }
    existing = list(states)
    originals = {cid: dict(state) for cid, state in states.items()}
    by_email = {s["email"]: cid for cid, s in states.items() if s["email"]}
    by_phone = {s["phone"]: cid for cid, s in states.items() if s["phone"]}
    tags = {cid: set(t) for cid, t in (await store.tags_of(existing)).items()}
    lists = await store.lists_of(existing)
    created: list[dict[str, Any]] = []
    changed: set[str] = set()
    new_tags: list[tuple[str, str]] = []
    activities: list[dict[str, Any]] = []
    stages: list[dict[str, Any]] = []

    for item, raw in zip(items, captures, strict=True):
        lead = item.lead
        if raw.email is None and raw.phone is None:
            log.warning("lead without a usable identity", extra={"id": lead.submission_id})
            continue
        custom, rejected = domain.accept_captured_fields(raw.custom_fields, definitions)
        capture = captures_domain.Capture(raw.email, raw.phone, raw.fields, custom, raw.tags)
        contact_id, matched_by = captures_domain.match_contact(capture, by_email, by_phone)
        event: tuple[str, dict[str, Any]] | None = None
        if contact_id is None:
            contact_id = next(ids)
            state = new_contact_state(contact_id, workspace, capture, lead, now)
            created.append(state)
            states[contact_id] = state
            tags[contact_id] = set(capture.tags)
            lists[contact_id] = []
            new_tags.extend((contact_id, t) for t in capture.tags)
            stages.append(lifecycle_row(workspace, contact_id, None, "lead", now, row_id=next(ids)))
            event = (
                ContactCreated.event_type,
                contact_created_data(
                    contact_snapshot_data(state, tags[contact_id], []),
                    LeadCaptured.event_type,
                    lead.submission_id,
                ),
            )
        else:
            state = states[contact_id]
            before_tags = sorted(tags[contact_id])
            changes = captures_domain.capture_changes(
                state,
                capture,
                phone_taken=by_phone.get(capture.phone or "", contact_id) != contact_id,
                email_taken=by_email.get(capture.email or "", contact_id) != contact_id,
            )
            field_changes = {name: (state.get(name), value) for name, value in changes.items()}
            state.update(changes)
            added = [t for t in capture.tags if t not in tags[contact_id]]
            tags[contact_id].update(added)
            new_tags.extend((contact_id, t) for t in added)
            seen = state["last_interaction_at"]
            if seen is None or seen < lead.captured_at:
                state["last_interaction_at"] = lead.captured_at
                changed.add(contact_id)
            if changes or added:
                state["updated_at"] = now
                changed.add(contact_id)
                if added:
                    field_changes["tags"] = (before_tags, sorted(tags[contact_id]))
                event = (
                    ContactUpdated.event_type,
                    contact_updated_data(
                        contact_id,
                        field_changes,
                        contact_snapshot_data(state, tags[contact_id], lists[contact_id]),
                        LeadCaptured.event_type,
                        lead.submission_id,
                    ),
                )
        if event is not None:
            kind, data = event
            emit_captured(uow, next(ids), kind, workspace, contact_id, data, item.correlationid)
        if state["email"]:
            by_email[state["email"]] = contact_id
        if state["phone"]:
            by_phone[state["phone"]] = contact_id
        activities.append(
            activity(
                workspace,
                contact_id,
                LeadCaptured.event_type,
                lead.captured_at,
                row_id=next(ids),
                data={
                    "submission_id": lead.submission_id,
                    "source": lead.source,
                    "source_id": lead.source_id,
                    "matched_by": matched_by,
                    "email": lead.email,
                    "phone": lead.phone,
                    "utm": {name: value for name, value in lead.utm if value is not None},
                    "page_url": lead.page_url,
                    "referrer": lead.referrer,
                    "tags": list(capture.tags),
                    "rejected_fields": rejected,
                },
            )
        )

    # Only the columns that changed are written (as the ORM did), grouped by which columns so
    # each group is one executemany.
    updates: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for cid in sorted(changed):
        if cid not in originals:
            continue
        state, original = states[cid], originals[cid]
        names = tuple(n for n in CAPTURE_UPDATED_COLUMNS if state[n] != original[n])
        if names:
            updates.setdefault(names, []).append({"id": cid, **{n: state[n] for n in names}})
    for rows in updates.values():
        await store.update_contacts(rows)
    await store.insert_contacts(created)
    await store.add_tags(workspace, new_tags)
    await store.add_activities(activities)
    await store.add_lifecycle_changes(stages)
    await refresh_segments({a["contact_id"] for a in activities}, workspace, uow, now, definitions)


def new_contact_state(
    contact_id: str,
    workspace: str,
    capture: captures_domain.Capture,
    lead: LeadCaptured,
    now: datetime,
) -> dict[str, Any]:
    """The row of a contact a first capture creates."""
    return {
        "id": contact_id,
        "workspace": workspace,
        "email": capture.email,
        "phone": capture.phone,
        **{name: capture.fields.get(name) for name in domain.TEXT_FIELDS if name != "source"},
        "source": lead.utm.source or lead.source,
        "lifecycle_stage": "lead",
        "owner_id": None,
        "subscription_status": "subscribed",
        "churn_reason": None,
        "churn_reason_text": None,
        "score": None,
        "custom_fields": capture.custom_fields,
        "created_at": now,
        "updated_at": now,
        "last_interaction_at": lead.captured_at,
        "merged_into": None,
    }


# --- contacts over the API ------------------------------------------------------------------


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
    store: ContactsStore, workspace: str, values: Mapping[str, Any], contact_id: str | None
) -> None:
    for name in ("email", "phone"):
        value = values.get(name)
        if not value:
            continue
        holder = await store.contact_by_identity(workspace, **{name: value})
        if holder is not None and holder.id != contact_id:
            raise Conflict(f"another contact has this {name}", field=name, contact_id=holder.id)


async def _check_owner(store: ContactsStore, workspace: str, owner_id: str | None) -> None:
    if owner_id is not None and await store.owner(workspace, owner_id) is None:
        raise InvalidInput(
            "unknown owner",
            errors=[{"field": "owner_id", "code": "unknown_owner", "message": "no such owner"}],
        )


async def create_contact(
    workspace: str, data: Mapping[str, Any], uow: UnitOfWork, now: datetime
) -> Contact:
    """Create a contact; its email and phone must be free in the workspace, fields valid."""
    store = ContactsStore(uow.session)
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
        uow,
        workspace,
        contact.id,
        ContactCreated(contact=snapshot(contact, tag_names, list_names), cause="api"),
    )
    await refresh_segments({contact.id}, workspace, uow, now, definitions)
    return contact


async def read_contact(workspace: str, contact_id: str, uow: UnitOfWork) -> Contact | Moved:
    """A contact of the workspace; a merged-away id answers with where it went."""
    store = ContactsStore(uow.session)
    contact = await store.contact(workspace, contact_id)
    if contact is None:
        raise NotFound(f"contact {contact_id} not found")
    if contact.merged_into is not None:
        return Moved(contact.merged_into)
    return contact


async def lookup_contact(
    workspace: str, email: str | None, phone: str | None, uow: UnitOfWork
) -> Contact:
    """Find a contact by its normalised email or phone."""
    store = ContactsStore(uow.session)
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
    uow: UnitOfWork,
    now: datetime,
    cause: str = "api",
) -> Contact:
    """Change a contact's fields; publishes what changed (before and after) and the snapshot."""
    store = ContactsStore(uow.session)
    contact = await live_contact(store, workspace, contact_id)
    return await _update(store, contact, data, uow, now, cause)


async def _update(
    store: ContactsStore,
    contact: Contact,
    data: Mapping[str, Any],
    uow: UnitOfWork,
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
        await _record_lifecycle(store, uow, contact, before["lifecycle_stage"], now, snap)
    if "owner_id" in changes and contact.owner_id is not None:
        owner = await store.owner(workspace, contact.owner_id)
        publish(
            uow,
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
        uow,
        workspace,
        contact.id,
        ContactUpdated(contact_id=contact.id, changes=changes, contact=snap, cause=cause),
    )
    await refresh_segments({contact.id}, workspace, uow, now, definitions)
    return contact


async def _record_lifecycle(
    store: ContactsStore,
    uow: UnitOfWork,
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
        uow,
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


async def change_membership(
    workspace: str,
    contact_id: str,
    kind: str,
    name: str,
    add: bool,
    uow: UnitOfWork,
    now: datetime,
    cause: str = "api",
    follow_merges: bool = False,
) -> Contact:
    """Add or remove a tag (`kind="tags"`) or a static list membership (`kind="lists"`)."""
    store = ContactsStore(uow.session)
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
        uow,
        workspace,
        contact.id,
        ContactUpdated(
            contact_id=contact.id,
            changes={kind: FieldChange(before=sorted(current), after=after)},
            contact=await snapshot_of(store, contact),
            cause=cause,
        ),
    )
    await refresh_segments({contact.id}, workspace, uow, now)
    return contact


async def add_note(
    workspace: str, contact_id: str, text: str, author: str, uow: UnitOfWork, now: datetime
) -> dict[str, Any]:
    """Write a note on the contact's timeline."""
    store = ContactsStore(uow.session)
    contact = await live_contact(store, workspace, contact_id)
    row = activity(workspace, contact.id, "note", now, {"text": text, "author": author})
    await store.add_activities([row])
    return row


# --- erase and export -----------------------------------------------------------------------


async def erase_contact(workspace: str, contact_id: str, uow: UnitOfWork, now: datetime) -> None:
    """Erase everything held on a person (right to be forgotten) and publish a tombstone."""
    store = ContactsStore(uow.session)
    contact = await live_contact(store, workspace, contact_id)
    for segment_id in await store.segments_of(contact.id):
        segment = await store.segment(workspace, segment_id)
        if segment is not None:
            publish(
                uow,
                workspace,
                contact.id,
                SegmentExited(
                    segment_id=segment.id,
                    segment_name=segment.name,
                    contact_id=contact.id,
                    at=now,
                ),
            )
    subject = await store.erasure_subject(contact.id)
    digests = erasure.digests(workspace, subject.identities)
    await store.erase(workspace, contact.id, topics.contact_key(workspace, contact.id))
    # Only digests are kept, so a replay of the person's old leads is recognised and dropped.
    await store.record_erasures(workspace, digests, now)
    publish(
        uow,
        workspace,
        contact.id,
        ContactDeleted(
            contact_id=contact.id,
            deleted_at=now,
            merged_ids=subject.merged_ids,
            identity_digests=digests,
            submission_ids=subject.submission_ids,
        ),
    )


async def person_ref(workspace: str, contact_id: str, uow: UnitOfWork) -> PersonRef:
    """How other services find the person in their own rows (see shared.export)."""
    store = ContactsStore(uow.session)
    contact = await live_contact(store, workspace, contact_id)
    subject = await store.erasure_subject(contact.id)
    return PersonRef(
        contact_id=contact.id,
        merged_ids=subject.merged_ids,
        identity_digests=erasure.digests(workspace, subject.identities),
        submission_ids=subject.submission_ids,
    )


async def export_contact(workspace: str, contact_id: str, uow: UnitOfWork) -> dict[str, Any]:
    """Everything held on a person: record, tags, lists, timeline, lifecycle, tasks, merges."""
    store = ContactsStore(uow.session)
    contact = await live_contact(store, workspace, contact_id)
    timeline, _ = await store.timeline(contact.id, None, 100_000)
    return {
        "contact": (await snapshot_of(store, contact)).model_dump(mode="json"),
        "timeline": [
            {"id": a.id, "kind": a.kind, "occurred_at": a.occurred_at.isoformat(), "data": a.data}
            for a in timeline
        ],
        "lifecycle_history": [
            {
                "from": r.from_stage,
                "to": r.to_stage,
                "changed_at": r.changed_at.isoformat(),
                "churn_reason": r.churn_reason,
                "churn_reason_text": r.churn_reason_text,
            }
            for r in await store.lifecycle_history(contact.id)
        ],
        "tasks": [
            task_snapshot(t).model_dump(mode="json") for t in await store.tasks_of(contact.id)
        ],
        "segments": await store.segments_of(contact.id),
        "merges": [
            {
                "survivor_id": m.survivor_id,
                "merged_id": m.merged_id,
                "chosen": m.chosen,
                "merged_at": m.merged_at.isoformat(),
            }
            for m in await store.merges_of(contact.id)
        ],
    }


# --- merge and duplicates -------------------------------------------------------------------


async def merge_contacts(
    workspace: str,
    survivor_id: str,
    merged_id: str,
    choices: Mapping[str, str],
    uow: UnitOfWork,
    now: datetime,
) -> Contact:
    """Fold `merged_id` into `survivor_id`: field choices (default: the most recently updated
    non-empty value), tags, lists, tasks and timeline move; the merged id then redirects."""
    if survivor_id == merged_id:
        raise InvalidInput(
            "a contact cannot be merged into itself",
            errors=[{"field": "merged_id", "code": "same_contact", "message": "same id"}],
        )
    store = ContactsStore(uow.session)
    found = {
        c.id: c for c in await store.contacts_by_ids(workspace, [survivor_id, merged_id], True)
    }
    if survivor_id not in found or merged_id not in found:
        raise NotFound("contact not found")
    survivor, merged = found[survivor_id], found[merged_id]
    for c in (survivor, merged):
        if c.merged_into is not None:
            raise Conflict(f"contact {c.id} was already merged", merged_into=c.merged_into)
    with checked():
        chosen = duplicates_domain.choose_merged_values(
            values_of(survivor), values_of(merged), choices
        )
    before_stage = survivor.lifecycle_stage
    segments_left = await store.segments_of(merged.id)
    # Free the merged contact's identities first: the survivor may take them.
    for name in PERSONAL_FIELDS:
        setattr(merged, name, None)
    merged.custom_fields = {}
    merged.churn_reason = None
    merged.merged_into = survivor.id
    merged.updated_at = now
    await store.flush()
    for name, value in chosen.items():
        setattr(survivor, name, value)
    survivor.updated_at = now
    await flush_unique(store)
    await store.move_memberships(workspace, merged.id, survivor.id)
    await store.move_history(merged.id, survivor.id)
    await store.redirect_stubs(merged.id, survivor.id)
    for segment_id in segments_left:
        segment = await store.segment(workspace, segment_id)
        await store.remove_members(segment_id, [merged.id])
        if segment is not None:
            publish(
                uow,
                workspace,
                merged.id,
                SegmentExited(
                    segment_id=segment_id,
                    segment_name=segment.name,
                    contact_id=merged.id,
                    at=now,
                ),
            )
    snap = await snapshot_of(store, survivor)
    chosen_values = {
        k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in chosen.items()
    }
    store.add(
        MergeRecord(
            id=new_id(),
            workspace=workspace,
            survivor_id=survivor.id,
            merged_id=merged.id,
            chosen=chosen_values,
            merged_at=now,
        )
    )
    await store.add_activities(
        [
            activity(
                workspace,
                survivor.id,
                ContactMerged.event_type,
                now,
                {"merged_id": merged.id, "chosen": chosen_values},
            )
        ]
    )
    if survivor.lifecycle_stage != before_stage:
        await _record_lifecycle(store, uow, survivor, before_stage, now, snap)
    publish(
        uow,
        workspace,
        survivor.id,
        ContactMerged(
            survivor_id=survivor.id,
            merged_id=merged.id,
            chosen=chosen_values,
            contact=snap,
        ),
    )
    await refresh_segments({survivor.id}, workspace, uow, now)
    return survivor


async def list_duplicates(
    workspace: str, uow: UnitOfWork, threshold: float = 85.0, scan: int = 20_000
) -> list[dict[str, Any]]:
    """Duplicate candidates with a similarity score; never merged automatically."""
    store = ContactsStore(uow.session)
    people = await store.people(workspace, scan)
    by_id = {p.id: p for p in people}
    return [
        {
            "contact_ids": [c.a, c.b],
            "score": c.score,
            "reasons": list(c.reasons),
            "contacts": [_person(by_id[c.a]), _person(by_id[c.b])],
        }
        for c in duplicates_domain.find_duplicates(people, threshold)
    ]


def _person(p: duplicates_domain.DuplicatePerson) -> dict[str, Any]:
    return {
        "id": p.id,
        "email": p.email,
        "phone": p.phone,
        "first_name": p.first_name,
        "last_name": p.last_name,
        "company": p.company,
    }


# --- owners, teams, assignment --------------------------------------------------------------


async def create_team(workspace: str, name: str, rule: str, uow: UnitOfWork) -> Team:
    """A team of owners with its assignment rule (`round_robin` or `weighted`)."""
    if rule not in domain.ROTATION_RULES:
        raise InvalidInput(
            "unknown rule",
            errors=[{"field": "rule", "code": "invalid_rule", "message": "round_robin|weighted"}],
        )
    store = ContactsStore(uow.session)
    team = Team(id=new_id(), workspace=workspace, name=name, rule=rule, last_owner_id=None)
    store.add(team)
    await store.flush(on_conflict=Conflict(f"a team named {name!r} exists"))
    return team


async def save_owner(
    workspace: str, owner_id: str | None, data: Mapping[str, Any], uow: UnitOfWork
) -> Owner:
    """Create or change an owner (a sales person): team, weight, active flag."""
    store = ContactsStore(uow.session)
    if owner_id is None:
        owner = Owner(
            id=new_id(), workspace=workspace, name=data["name"], active=True, weight=1, credit=0
        )
        store.add(owner)
    else:
        found = await store.owner(workspace, owner_id)
        if found is None:
            raise NotFound(f"owner {owner_id} not found")
        owner = found
    team_id = data.get("team_id", owner.team_id if owner_id else None)
    if team_id is not None and await store.team(workspace, team_id) is None:
        raise InvalidInput(
            "unknown team",
            errors=[{"field": "team_id", "code": "unknown_team", "message": "no such team"}],
        )
    if owner_id is None or team_id != owner.team_id:
        owner.position = await store.next_owner_position(team_id)
    owner.team_id = team_id
    for name in ("name", "email", "active", "weight"):
        if data.get(name) is not None:
            setattr(owner, name, data[name])
    if owner.weight < 0:
        raise InvalidInput(
            "weight must be positive",
            errors=[{"field": "weight", "code": "too_small", "message": "at least 0"}],
        )
    await store.flush()
    return owner


async def assign_owner(
    workspace: str,
    contact_id: str,
    owner_id: str | None,
    team_id: str | None,
    uow: UnitOfWork,
    now: datetime,
    follow_merges: bool = False,
) -> Contact:
    """Give a contact an owner: explicitly, or by the team's round-robin or weighted rotation
    (skipping inactive owners); publishes `contact.owner_assigned`."""
    store = ContactsStore(uow.session)
    contact = await (
        resolve_contact(store, workspace, contact_id)
        if follow_merges
        else live_contact(store, workspace, contact_id)
    )
    rule = "explicit"
    if owner_id is not None:
        owner = await store.owner(workspace, owner_id)
        if owner is None or not owner.active:
            raise InvalidInput(
                "unknown or inactive owner",
                errors=[{"field": "owner_id", "code": "unknown_owner", "message": "no such owner"}],
            )
        chosen = owner.id
    elif team_id is not None:
        team = await store.team(workspace, team_id, lock=True)
        if team is None:
            raise NotFound(f"team {team_id} not found")
        owners = await store.owners(workspace, team.id)
        members = [owners_domain.RotationMember(o.id, o.active, o.weight, o.credit) for o in owners]
        with checked():
            if team.rule == "weighted":
                chosen, credits = owners_domain.pick_weighted(members)
                for o in owners:
                    o.credit = credits.get(o.id, 0)
            else:
                chosen = owners_domain.pick_round_robin(members, team.last_owner_id)
        team.last_owner_id = chosen
        rule = team.rule
        owner = next(o for o in owners if o.id == chosen)
    else:
        raise InvalidInput(
            "give an owner or a team",
            errors=[{"field": "owner_id", "code": "required", "message": "owner_id or team_id"}],
        )
    previous = contact.owner_id
    contact.owner_id = chosen
    contact.updated_at = now
    await store.flush()
    snap = await snapshot_of(store, contact)
    await store.add_activities(
        [
            activity(
                workspace,
                contact.id,
                ContactOwnerAssigned.event_type,
                now,
                {"owner_id": chosen, "previous_owner_id": previous, "rule": rule},
            )
        ]
    )
    publish(
        uow,
        workspace,
        contact.id,
        ContactOwnerAssigned(
            contact_id=contact.id,
            owner_id=chosen,
            previous_owner_id=previous,
            team_id=team_id,
            rule=rule,
            owner_name=owner.name,
            owner_email=owner.email,
            contact=snap,
        ),
    )
    if previous != chosen:
        publish(
            uow,
            workspace,
            contact.id,
            ContactUpdated(
                contact_id=contact.id,
                changes={"owner_id": FieldChange(before=previous, after=chosen)},
                contact=snap,
                cause="assignment",
            ),
        )
    await refresh_segments({contact.id}, workspace, uow, now)
    return contact


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


async def create_task(
    workspace: str,
    contact_id: str,
    title: str,
    description: str | None,
    due_date: date | None,
    assignee_id: str | None,
    uow: UnitOfWork,
    now: datetime,
    follow_merges: bool = False,
) -> TaskRow:
    """A task on a contact, on its timeline; publishes `task.created`."""
    store = ContactsStore(uow.session)
    contact = await (
        resolve_contact(store, workspace, contact_id)
        if follow_merges
        else live_contact(store, workspace, contact_id)
    )
    if not title.strip():
        raise InvalidInput(
            "a task needs a title",
            errors=[{"field": "title", "code": "required", "message": "empty title"}],
        )
    if assignee_id is not None:
        await _check_assignee(store, workspace, assignee_id)
    task = TaskRow(
        id=new_id(),
        workspace=workspace,
        contact_id=contact.id,
        title=title.strip(),
        description=description,
        due_date=due_date,
        assignee_id=assignee_id or contact.owner_id,
        status="open",
        created_at=now,
        completed_at=None,
    )
    store.add(task)
    await store.flush()
    snap = task_snapshot(task)
    await store.add_activities(
        [activity(workspace, contact.id, TaskCreated.event_type, now, snap.model_dump(mode="json"))]
    )
    publish(uow, workspace, contact.id, TaskCreated(task=snap))
    return task


async def _check_assignee(store: ContactsStore, workspace: str, assignee_id: str) -> None:
    """An assignee is an owner of the same workspace (another's answers as unknown)."""
    if await store.owner(workspace, assignee_id) is None:
        raise InvalidInput(
            "unknown assignee",
            errors=[{"field": "assignee_id", "code": "unknown_owner", "message": "no such owner"}],
        )


async def update_task(
    workspace: str, task_id: str, data: Mapping[str, Any], uow: UnitOfWork, now: datetime
) -> TaskRow:
    """Change a task; marking it `done` completes it and publishes `task.completed`."""
    store = ContactsStore(uow.session)
    task = await store.task(workspace, task_id)
    if task is None:
        raise NotFound(f"task {task_id} not found")
    if data.get("assignee_id") is not None:
        await _check_assignee(store, workspace, data["assignee_id"])
    for name in ("title", "description", "due_date", "assignee_id"):
        if name in data:
            setattr(task, name, data[name])
    status = data.get("status")
    if status is not None and status not in ("open", "done"):
        raise InvalidInput(
            "unknown status",
            errors=[{"field": "status", "code": "invalid_status", "message": "open|done"}],
        )
    if status == "done" and task.status != "done":
        task.status, task.completed_at = "done", now
        snap = task_snapshot(task)
        await store.add_activities(
            [
                activity(
                    workspace,
                    task.contact_id,
                    TaskCompleted.event_type,
                    now,
                    snap.model_dump(mode="json"),
                )
            ]
        )
        publish(uow, workspace, task.contact_id, TaskCompleted(task=snap))
    elif status == "open":
        task.status, task.completed_at = "open", None
    await store.flush()
    return task


async def list_tasks(
    workspace: str,
    assignee: str | None,
    contact_id: str | None,
    status: str | None,
    overdue: bool,
    uow: UnitOfWork,
    now: datetime,
    limit: int = 500,
) -> list[TaskRow]:
    """Tasks by assignee, contact or status; `overdue`: open and due before today."""
    store = ContactsStore(uow.session)
    return await store.tasks(workspace, now.date(), assignee, contact_id, status, overdue, limit)


# --- commands and events from other services ------------------------------------------------


async def handle_command(
    workspace: str, command: ContactCommand, uow: UnitOfWork, now: datetime
) -> None:
    """Apply a command from `leadwire.contact-commands.v1`; an invalid one raises (→ DLQ)."""
    store = ContactsStore(uow.session)
    contact = await resolve_contact(store, workspace, command.contact_id)
    cause = command.event_type
    match command:
        case AddTag() | RemoveTag():
            await change_membership(
                workspace,
                contact.id,
                "tags",
                command.tag,
                isinstance(command, AddTag),
                uow,
                now,
                cause,
            )
        case AddToList() | RemoveFromList():
            await change_membership(
                workspace,
                contact.id,
                "lists",
                command.list,
                isinstance(command, AddToList),
                uow,
                now,
                cause,
            )
        case SetField():
            await _update(store, contact, _field_write(command), uow, now, cause)
        case SetLifecycle():
            await _update(
                store,
                contact,
                {
                    "lifecycle_stage": command.stage,
                    "churn_reason": command.churn_reason,
                    "churn_reason_text": command.churn_reason_text,
                },
                uow,
                now,
                cause,
            )
        case SetSubscriptionStatus():
            with checked():
                domain.check_subscription_status(command.status)
            await _update(store, contact, {"subscription_status": command.status}, uow, now, cause)
        case AssignOwner():
            await assign_owner(workspace, contact.id, command.owner_id, command.team_id, uow, now)
        case CreateTask():
            await create_task(
                workspace,
                contact.id,
                command.title,
                command.description,
                command.due_date,
                command.assignee_id,
                uow,
                now,
            )
        case _:
            raise InvalidInput(f"unsupported command {command.event_type}")


def command_rejected(envelope: Envelope, error: Exception) -> tuple[str, Envelope]:
    """The key and `contact.command_rejected` event telling a command's sender why it was
    refused; its id follows from the command's, so a repeated refusal is one event."""
    contact_id = envelope.data.get("contact_id")
    rejected = ContactCommandRejected(
        command_id=envelope.id,
        command_type=envelope.type,
        contact_id=contact_id if isinstance(contact_id, str) else None,
        code=getattr(error, "code", "invalid_command"),
        reason=str(error)[:1000],
    )
    out = Envelope.of(
        rejected, source=SOURCE, workspace=envelope.workspace, subject=rejected.contact_id
    )
    out.id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"rejected:{envelope.id}"))
    out.correlationid = envelope.correlationid
    key = topics.contact_key(envelope.workspace, rejected.contact_id or envelope.id)
    return key, out


def _field_write(command: SetField) -> dict[str, Any]:
    name = command.field
    if name in domain.WRITABLE_CORE_FIELDS or name in ("owner_id", "subscription_status"):
        return {name: command.value}
    if name == "lifecycle_stage":
        return {"lifecycle_stage": command.value}
    custom = name.removeprefix("custom_fields.")
    if custom in domain.RESERVED_FIELD_NAMES:
        raise InvalidInput(
            f"{name} cannot be set by command",
            errors=[{"field": name, "code": "read_only", "message": "not settable"}],
        )
    return {"custom_fields": {custom: command.value}}


async def record_engagement(
    workspace: str, engagement: Engagement, uow: UnitOfWork, now: datetime
) -> str | None:
    """Engagement goes on the timeline and moves `last_interaction_at`; unknown people are
    ignored (contacts are made from captures, not from page views)."""
    store = ContactsStore(uow.session)
    contact: Contact | None = None
    if engagement.contact_id:
        try:
            contact = await resolve_contact(store, workspace, engagement.contact_id)
        except NotFound:
            contact = None
    if contact is None and engagement.email:
        try:
            email = domain.normalise_email(engagement.email)
        except RuleViolation:
            email = None
        contact = await store.contact_by_identity(workspace, email=email)
    if contact is None:
        return None
    data = engagement.model_dump(mode="json", exclude={"email", "contact_id", "occurred_at"})
    await store.add_activities(
        [activity(workspace, contact.id, engagement.event_type, engagement.occurred_at, data)]
    )
    if contact.last_interaction_at is None or contact.last_interaction_at < engagement.occurred_at:
        contact.last_interaction_at = engagement.occurred_at
        await store.flush()
        await refresh_segments({contact.id}, workspace, uow, now)
    return contact.id


async def record_score(
    workspace: str, event_type: str, data: Mapping[str, Any], uow: UnitOfWork, now: datetime
) -> None:
    """The contact's current score: the `overall` group's `after` of `score.changed` on
    `leadwire.scores.v1` (not republished: scoring owns it)."""
    contact_id = data.get("contact_id")
    if not isinstance(contact_id, str):
        return
    score = None
    if event_type == ScoreChanged.event_type and data.get("group") == "overall":
        score = ScoreChanged.model_validate(data).after
    store = ContactsStore(uow.session)
    try:
        contact = await resolve_contact(store, workspace, contact_id)
    except NotFound:
        return
    if score is not None and contact.score != score:
        contact.score = score
        await store.flush()
        await refresh_segments({contact.id}, workspace, uow, now)
    if "threshold" in event_type:
        await store.add_activities([activity(workspace, contact.id, event_type, now, dict(data))])


async def record_notification(
    workspace: str, event_type: str, data: Mapping[str, Any], uow: UnitOfWork, now: datetime
) -> None:
    """A notification sent about or to a contact goes on its timeline."""
    contact_id = data.get("contact_id")
    if not isinstance(contact_id, str):
        return
    store = ContactsStore(uow.session)
    try:
        contact = await resolve_contact(store, workspace, contact_id)
    except NotFound:
        return
    keep = {k: v for k, v in data.items() if k not in ("body", "html", "text")}
    await store.add_activities([activity(workspace, contact.id, event_type, now, keep)])


# --- timeline -------------------------------------------------------------------------------


async def timeline(
    workspace: str, contact_id: str, cursor: str | None, limit: int, uow: UnitOfWork
) -> tuple[list[dict[str, Any]], str | None]:
    """The whole history of a contact, newest first."""
    store = ContactsStore(uow.session)
    contact = await store.contact(workspace, contact_id)
    if contact is None or contact.merged_into is not None:
        raise NotFound(f"contact {contact_id} not found")
    with checked():
        items, nxt = await store.timeline(contact.id, cursor, limit)
    return [
        {"id": a.id, "kind": a.kind, "occurred_at": a.occurred_at, "data": a.data} for a in items
    ], nxt


async def lifecycle_history(
    workspace: str, contact_id: str, uow: UnitOfWork, now: datetime
) -> list[dict[str, Any]]:
    """Every lifecycle move with its time and how long the contact stayed in that stage."""
    store = ContactsStore(uow.session)
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


# --- fields ---------------------------------------------------------------------------------


async def define_field(workspace: str, definition: FieldDefinition, uow: UnitOfWork) -> None:
    """Create or redefine a custom field of the workspace."""
    with checked():
        domain.check_definition(definition)
    await ContactsStore(uow.session).save_field_definition(workspace, definition)


async def list_fields(workspace: str, uow: UnitOfWork) -> list[FieldDefinition]:
    definitions = await ContactsStore(uow.session).field_definitions(workspace)
    return sorted(definitions.values(), key=lambda d: d.name)


async def delete_field(workspace: str, name: str, uow: UnitOfWork) -> None:
    """Forget a workspace's definition (an out-of-the-box field returns to its default)."""
    if not await ContactsStore(uow.session).delete_field_definition(workspace, name):
        raise NotFound(f"no custom field {name!r} defined in this workspace")


# --- reads for the API ---------------------------------------------------------------------


async def describe_contact(contact: Contact, uow: UnitOfWork) -> ContactSnapshot:
    """A contact with its tags and lists."""
    return await snapshot_of(ContactsStore(uow.session), contact)


async def tag_counts(workspace: str, uow: UnitOfWork) -> list[tuple[str, int]]:
    """Tags in use in the workspace, with how many contacts carry each."""
    return await ContactsStore(uow.session).tags(workspace)


async def list_counts(workspace: str, uow: UnitOfWork) -> list[tuple[str, int]]:
    """Static lists of the workspace, with their member counts."""
    return await ContactsStore(uow.session).lists(workspace)


async def list_segments(workspace: str, uow: UnitOfWork) -> list[Segment]:
    return await ContactsStore(uow.session).segments(workspace)


async def list_teams(workspace: str, uow: UnitOfWork) -> list[Team]:
    return await ContactsStore(uow.session).teams(workspace)


async def list_owners(workspace: str, team_id: str | None, uow: UnitOfWork) -> list[Owner]:
    return await ContactsStore(uow.session).owners(workspace, team_id)


# --- listing and segments -------------------------------------------------------------------


async def parse_filter(workspace: str, raw: Any, uow: UnitOfWork) -> segments_domain.Filter:
    definitions = await ContactsStore(uow.session).field_definitions(workspace)
    with checked():
        return segments_domain.parse_filter(raw, definitions)


async def list_contacts(
    workspace: str,
    node: segments_domain.Filter | None,
    sort: str,
    cursor: str | None,
    limit: int,
    uow: UnitOfWork,
    now: datetime,
) -> tuple[Page, dict[str, list[str]], dict[str, list[str]]]:
    """A page of contacts matching a filter, in a stable order, with their tags and lists."""
    store = ContactsStore(uow.session)
    with checked():
        page = await store.page(workspace, node, now, sort, cursor, limit)
    ids = [c.id for c in page.items]
    return page, await store.tags_of(ids), await store.lists_of(ids)


async def count_contacts(
    workspace: str, node: segments_domain.Filter | None, uow: UnitOfWork, now: datetime
) -> int:
    """How many contacts match a filter, counted in SQL."""
    return await ContactsStore(uow.session).count(workspace, node, now)


async def create_segment(
    workspace: str, name: str, raw_filter: Any, uow: UnitOfWork, now: datetime
) -> tuple[Segment, int]:
    """Save a view; its current members are recorded silently (only later changes publish
    `segment.entered`/`segment.exited`, so saving a segment never floods the workflows)."""
    node = await parse_filter(workspace, raw_filter, uow)
    store = ContactsStore(uow.session)
    segment = Segment(
        id=new_id(),
        workspace=workspace,
        name=name,
        filter=raw_filter,
        time_based=segments_domain.is_time_based(node),
        created_at=now,
    )
    store.add(segment)
    await store.flush()
    members = await store.entering(segment, node, now)
    await store.add_members(workspace, segment.id, members, now)
    return segment, len(members)


async def get_segment(workspace: str, segment_id: str, uow: UnitOfWork) -> Segment:
    segment = await ContactsStore(uow.session).segment(workspace, segment_id)
    if segment is None:
        raise NotFound(f"segment {segment_id} not found")
    return segment


async def delete_segment(workspace: str, segment_id: str, uow: UnitOfWork) -> None:
    segment = await get_segment(workspace, segment_id, uow)
    await ContactsStore(uow.session).delete_segment(segment.id)


async def refresh_segments(
    contact_ids: set[str],
    workspace: str,
    uow: UnitOfWork,
    now: datetime,
    definitions: Mapping[str, FieldDefinition] | None = None,
) -> None:
    """Keep segment membership current for contacts that just changed."""
    if not contact_ids:
        return
    store = ContactsStore(uow.session)
    segments = await store.segments(workspace)
    if not segments:
        return
    definitions = definitions or await store.field_definitions(workspace)
    snapshots: dict[str, ContactSnapshot] = {}
    for segment in segments:
        node = _segment_filter(segment, definitions)
        if node is None:
            continue
        matching = await store.matching_ids(workspace, node, now, contact_ids)
        current = await store.members_among(segment.id, contact_ids)
        await _move_members(
            store,
            uow,
            segment,
            sorted(matching - current),
            sorted(current - matching),
            now,
            snapshots,
        )


async def sweep_segments(uow: UnitOfWork, now: datetime) -> int:
    """Reconcile every segment with its filter at `now` (time-based conditions move as time
    passes); returns how many contacts entered or left."""
    store = ContactsStore(uow.session)
    moved = 0
    definitions: dict[str, Mapping[str, FieldDefinition]] = {}
    for segment in await store.segments():
        if segment.workspace not in definitions:
            definitions[segment.workspace] = await store.field_definitions(segment.workspace)
        node = _segment_filter(segment, definitions[segment.workspace])
        if node is None:
            continue
        entering = await store.entering(segment, node, now)
        leaving = await store.leaving(segment, node, now)
        await _move_members(store, uow, segment, entering, leaving, now, {})
        moved += len(entering) + len(leaving)
    return moved


def _segment_filter(
    segment: Segment, definitions: Mapping[str, FieldDefinition]
) -> segments_domain.Filter | None:
    try:
        return segments_domain.parse_filter(segment.filter, definitions)
    except RuleViolation:
        log.warning("segment filter no longer valid", extra={"segment": segment.id})
        return None


async def _move_members(
    store: ContactsStore,
    uow: UnitOfWork,
    segment: Segment,
    entering: Sequence[str],
    leaving: Sequence[str],
    now: datetime,
    snapshots: dict[str, ContactSnapshot],
) -> None:
    workspace = segment.workspace
    if entering:
        await store.add_members(workspace, segment.id, entering, now)
        missing = [i for i in entering if i not in snapshots]
        if missing:
            contacts = await store.contacts_by_ids(workspace, missing)
            tags = await store.tags_of(missing)
            lists = await store.lists_of(missing)
            for c in contacts:
                snapshots[c.id] = snapshot(c, tags[c.id], lists[c.id])
        for contact_id in entering:
            publish(
                uow,
                workspace,
                contact_id,
                SegmentEntered(
                    segment_id=segment.id,
                    segment_name=segment.name,
                    contact_id=contact_id,
                    at=now,
                    contact=snapshots.get(contact_id),
                ),
            )
    if leaving:
        await store.remove_members(segment.id, leaving)
        for contact_id in leaving:
            publish(
                uow,
                workspace,
                contact_id,
                SegmentExited(
                    segment_id=segment.id,
                    segment_name=segment.name,
                    contact_id=contact_id,
                    at=now,
                ),
            )


# --- reports --------------------------------------------------------------------------------


async def data_quality(
    workspace: str, stale_days: int, uow: UnitOfWork, now: datetime, samples: int = 5
) -> dict[str, Any]:
    """Counts and samples of contacts missing required fields, with invalid values, duplicate
    candidates, stale (no interaction for `stale_days`), unsubscribed or bounced."""
    store = ContactsStore(uow.session)
    definitions = await store.field_definitions(workspace)

    def section(found: tuple[int, list[str]]) -> dict[str, Any]:
        return {"count": found[0], "sample": found[1]}

    missing = {"email_or_phone": section(await store.missing_identity(workspace, samples))}
    for d in definitions.values():
        if d.required:
            missing[d.name] = section(await store.missing_custom(workspace, d.name, samples))
    scanned = await store.recent_custom_fields(workspace, 10_000)
    invalid = [
        (contact_id, errors)
        for contact_id, values in scanned
        if (errors := domain.invalid_custom_values(values, definitions))
    ]
    duplicates = await list_duplicates(workspace, uow)
    return {
        "missing_required": missing,
        "invalid_values": {
            "count": len(invalid),
            "scanned": len(scanned),
            "sample": [{"contact_id": c, "errors": e} for c, e in invalid[:samples]],
        },
        "duplicate_candidates": {
            "count": len(duplicates),
            "sample": [d["contact_ids"] for d in duplicates[:samples]],
        },
        "stale": {"days": stale_days}
        | section(await store.stale(workspace, now, stale_days, samples)),
        "unsubscribed": section(await store.unsubscribed(workspace, samples)),
    }


async def funnel_report(
    workspace: str, start: datetime, end: datetime, uow: UnitOfWork
) -> dict[str, Any]:
    """Contacts per lifecycle stage now, and how many entered each stage in the period with
    the conversion between consecutive stages."""
    store = ContactsStore(uow.session)
    current = await store.stage_counts(workspace)
    entered = await store.stage_entries(workspace, start, end)
    return {
        "start": start,
        "end": end,
        "stages": [
            {"stage": s, "contacts": current.get(s, 0), "entered_in_period": entered.get(s, 0)}
            for s in domain.LIFECYCLE_STAGES
        ],
        "conversions": reports_domain.funnel_conversions(entered),
    }


async def churn_report(
    workspace: str, start: datetime, end: datetime, uow: UnitOfWork
) -> dict[str, Any]:
    """Churn rate = customers churned in the period / customers at its start x 100, with reasons."""
    store = ContactsStore(uow.session)
    at_start = await store.customers_at(workspace, start)
    churned = await store.churned_between(workspace, start, end)
    reasons: dict[str, int] = {}
    for _, reason, _text in churned:
        reasons[reason or "unknown"] = reasons.get(reason or "unknown", 0) + 1
    return {
        "start": start,
        "end": end,
        "customers_at_start": at_start,
        "churned": len(churned),
        "churn_rate": reports_domain.churn_rate(at_start, len(churned)),
        "reasons": reasons,
        "other_texts": [t for _, r, t in churned if r == "other" and t],
    }


def default_period(now: datetime, days: int = 30) -> tuple[datetime, datetime]:
    return now - timedelta(days=days), now

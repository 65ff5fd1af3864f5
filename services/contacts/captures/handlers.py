"""Use cases of captures: leads captured at ingest become contacts, and what other services
report about a person (engagement, scores, notifications) reaches its contact."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from services.contacts import domain
from services.contacts.captures import domain as captures_domain
from services.contacts.captures.store import CaptureView
from services.contacts.domain import RuleViolation
from services.contacts.handlers import SOURCE, activity, lifecycle_row, resolve_contact
from services.contacts.models import Contact
from services.contacts.owners.domain import CaptureTeam, TeamOwner
from services.contacts.owners.handlers import CaptureRotation, RotationRepository
from services.contacts.segments.handlers import SegmentsRepository, refresh_segments
from shared import erasure
from shared.errors import NotFound
from shared.events import topics
from shared.events.contacts import (
    ContactCreated,
    ContactOwnerAssigned,
    ContactUpdated,
    contact_created_data,
    contact_event,
    contact_owner_assigned_data,
    contact_snapshot_data,
    contact_updated_data,
)
from shared.events.envelope import new_id as new_event_id
from shared.events.ingest import Engagement, LeadCaptured
from shared.events.scores import ScoreChanged
from shared.ids import uuid7s as random_ids
from shared.logs import correlation_id_var
from shared.uow import Transaction

log = logging.getLogger(__name__)


class CapturesRepository(SegmentsRepository, RotationRepository, Protocol):
    """The repository as captures use it."""

    async def add_tags(self, workspace: str, pairs: Iterable[tuple[str, str]]) -> None: ...

    async def capture_view(
        self,
        workspace: str,
        digests: Iterable[str],
        emails: Iterable[str],
        phones: Iterable[str],
        rotation: bool = False,
    ) -> CaptureView: ...

    async def contact_by_identity(
        self, workspace: str, email: str | None = None, phone: str | None = None
    ) -> Contact | None: ...

    async def insert_contacts(self, rows: Sequence[dict[str, Any]]) -> None: ...

    def defer_writes(self) -> None: ...

    async def update_contacts(self, rows: Sequence[dict[str, Any]]) -> None: ...


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


def emit_captured(
    tx: Transaction[CapturesRepository],
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
    tx.emit(topics.CONTACTS, topics.contact_key(workspace, contact_id), envelope)


# The largest batch of a workspace whose capture view also reads the capture rotation, its
# team's row locked from there to the commit: a round trip fewer on a lead's path at low
# rates, where it matters. A bigger batch reads it once its leads are matched, and only if
# some are new, so the lock is held no longer than the rotation needs.
ROTATION_IN_VIEW_AT_MOST = 2


@dataclass(frozen=True)
class CapturedLead:
    workspace: str
    lead: LeadCaptured
    correlationid: str | None = None  # of the `lead.captured` event, carried on


async def capture_leads(
    leads: Sequence[CapturedLead], tx: Transaction[CapturesRepository], now: datetime
) -> dict[str, bool]:
    """Upsert captured leads: same email → that contact, else same phone → that contact, else a
    new one; empty values never overwrite filled ones; every capture is a timeline activity.

    The whole batch is one transaction with one read per workspace (`capture_view`); the rows
    found are locked, and a racing insert of the same person fails on the unique constraints,
    so the batch is retried and then finds the contact the other transaction created.

    Returns, for each workspace whose leads made new contacts, whether a rotation at capture
    gave them owners (its team's row then stays locked to the commit: another transaction
    capturing in that workspace waits for this one).
    """
    store = tx.store
    by_workspace: dict[str, list[CapturedLead]] = {}
    for item in leads:
        by_workspace.setdefault(item.workspace, []).append(item)
    # Workspaces in one order, so two transactions lock their rows and teams in one order.
    batches = [await _read_batch(ws, items, store) for ws, items in sorted(by_workspace.items())]
    if not any(batch.view.segments for batch in batches):
        # Nothing reads the batch's writes back in this transaction (segment filters would,
        # in any of its workspaces): they go in the statement that ends it, with the outbox
        # rows and the inbox claim.
        store.defer_writes()
    rotated: dict[str, bool] = {}
    for batch in batches:
        if batch.items:
            locked = await _capture_in_workspace(batch, tx, now)
            if locked is not None:
                rotated[batch.workspace] = locked
    return rotated


@dataclass(frozen=True)
class _Batch:
    """A workspace's leads of a batch, not erased, with what `capture_view` read for them."""

    workspace: str
    items: list[tuple[CapturedLead, captures_domain.Capture]]
    view: CaptureView


async def _read_batch(
    workspace: str, items: Sequence[CapturedLead], store: CapturesRepository
) -> _Batch:
    raw_captures = _lead_captures(items)
    digests = {
        id(item): erasure.digests(
            workspace, [item.lead.dedupe_key, *erasure.identities(item.lead.email, item.lead.phone)]
        )
        for item in items
    }
    view = await store.capture_view(
        workspace,
        {d for ds in digests.values() for d in ds},
        [c.email for c in raw_captures if c.email],
        [c.phone for c in raw_captures if c.phone],
        rotation=len(items) <= ROTATION_IN_VIEW_AT_MOST,
    )
    kept = {id(item) for item in _not_erased(items, digests, view.erased)}
    pairs = [(item, raw) for item, raw in zip(items, raw_captures, strict=True) if id(item) in kept]
    return _Batch(workspace, pairs, view)


def _not_erased(
    items: Sequence[CapturedLead],
    digests: Mapping[int, list[str]],
    erased: dict[str, datetime],
) -> list[CapturedLead]:
    """The leads that do not bring an erased person back: a lead captured before its person
    was erased (a replayed dead letter, a re-published outbox row, a re-read topic) is dropped;
    one captured afterwards is a new, consented capture. `digests`: each item's, by `id()`."""
    if not erased:
        return list(items)
    kept = []
    for item in items:
        if erasure.replayed_after_erasure(item.lead.captured_at, digests[id(item)], erased):
            log.info("dropping a lead of an erased person", extra={"id": item.lead.submission_id})
        else:
            kept.append(item)
    return kept


@dataclass
class _NewContact:
    """A contact the batch creates, whose events wait for its owner: the rotation is read
    (and its team row locked) once the whole batch is matched, so the lock is held only from
    there to the commit (a small batch's capture view read it already, see
    `ROTATION_IN_VIEW_AT_MOST`). Its snapshots hold an `owner_id` placeholder until then."""

    item: CapturedLead
    state: dict[str, Any]
    snapshot: dict[str, Any]
    ids: tuple[str, str, str]  # assignment activity, contact.created, contact.owner_assigned
    # Its `contact.updated` of later leads of the batch: event id, data, snapshot, correlation.
    updates: list[tuple[str, dict[str, Any], dict[str, Any], str | None]] = field(
        default_factory=list
    )


# The `owner_id` of a new contact's state until the rotation gives it one (not None, so the
# snapshots built meanwhile keep the key in its place).
_OWNER_PENDING = ""


def _lead_captures(items: Sequence[CapturedLead]) -> list[captures_domain.Capture]:
    return [
        captures_domain.capture_from_lead(
            item.lead.email,
            item.lead.phone,
            {
                "first_name": item.lead.first_name,
                "last_name": item.lead.last_name,
                "company": item.lead.company,
                "job_title": item.lead.job_title,
                "country": item.lead.country,
            },
            item.lead.custom_fields,
            item.lead.tags,
        )
        for item in items
    ]


async def _capture_in_workspace(
    batch: _Batch, tx: Transaction[CapturesRepository], now: datetime
) -> bool | None:
    """Captures a workspace's leads; with new contacts, whether a rotation gave their owners
    (None without new contacts)."""
    store, workspace, view = tx.store, batch.workspace, batch.view
    # Hot path (thousands of leads per second): contacts are plain dicts while the batch is
    # worked through; new ones are inserted in one statement, existing ones updated at the end.
    # Up to seven ids a lead (contact, lifecycle row, three events, two timeline rows): drawn in
    # chunks of about the batch's need, not 256 at a time for a poll of two leads.
    ids = random_ids(chunk=min(256, 7 * len(batch.items)))
    definitions = view.definitions
    states = {row["id"]: row for row in view.contacts}
    originals = {cid: dict(state) for cid, state in states.items()}
    by_email = {s["email"]: cid for cid, s in states.items() if s["email"]}
    by_phone = {s["phone"]: cid for cid, s in states.items() if s["phone"]}
    tags = {cid: set(t) for cid, t in view.tags.items()}
    lists = dict(view.lists)
    created: list[dict[str, Any]] = []
    new_contacts: dict[str, _NewContact] = {}
    changed: set[str] = set()
    new_tags: list[tuple[str, str]] = []
    activities: list[dict[str, Any]] = []
    stages: list[dict[str, Any]] = []

    for item, raw in batch.items:
        lead = item.lead
        if raw.email is None and raw.phone is None:
            log.warning("lead without a usable identity", extra={"id": lead.submission_id})
            continue
        custom, rejected = domain.accept_captured_fields(raw.custom_fields, definitions)
        capture = captures_domain.Capture(raw.email, raw.phone, raw.fields, custom, raw.tags)
        contact_id, matched_by = captures_domain.match_contact(capture, by_email, by_phone)
        if contact_id is None:
            contact_id = next(ids)
            state = new_contact_state(contact_id, workspace, capture, lead, now)
            state["owner_id"] = _OWNER_PENDING
            created.append(state)
            states[contact_id] = state
            tags[contact_id] = set(capture.tags)
            lists[contact_id] = []
            new_tags.extend((contact_id, t) for t in capture.tags)
            stages.append(lifecycle_row(workspace, contact_id, None, "lead", now, row_id=next(ids)))
            snapshot = contact_snapshot_data(state, tags[contact_id], [])
            reserved = (next(ids), next(ids), next(ids))
            new_contacts[contact_id] = _NewContact(item, state, snapshot, reserved)
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
                snapshot = contact_snapshot_data(state, tags[contact_id], lists[contact_id])
                data = contact_updated_data(
                    contact_id,
                    field_changes,
                    snapshot,
                    LeadCaptured.event_type,
                    lead.submission_id,
                )
                event_id = next(ids)
                new = new_contacts.get(contact_id)
                if new is not None:  # created earlier in the batch: after its own events
                    new.updates.append((event_id, data, snapshot, item.correlationid))
                else:
                    kind, correlationid = ContactUpdated.event_type, item.correlationid
                    emit_captured(tx, event_id, kind, workspace, contact_id, data, correlationid)
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
    # each group is one statement.
    updates: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for cid in sorted(changed):
        if cid not in originals:
            continue
        state, original = states[cid], originals[cid]
        names = tuple(n for n in CAPTURE_UPDATED_COLUMNS if state[n] != original[n])
        if names:
            updates.setdefault(names, []).append({"id": cid, **{n: state[n] for n in names}})
    # What does not depend on the new contacts' owners is written (or encoded, when deferred)
    # before the rotation is locked; the rest after it.
    for rows in updates.values():
        await store.update_contacts(rows)
    await store.add_tags(workspace, new_tags)
    await store.add_activities(activities)
    await store.add_lifecycle_changes(stages)
    locked = None
    if new_contacts:
        rotation = (
            CaptureRotation.as_read(workspace, store, view.rotation)
            if view.rotation_read
            else CaptureRotation(workspace, store)
        )
        assignments, locked = await _assign_owners(workspace, new_contacts, rotation, tx, now)
        await store.add_activities(assignments)
    await store.insert_contacts(created)
    changed_ids = {a["contact_id"] for a in activities}
    await refresh_segments(changed_ids, workspace, tx, now, definitions, view.segments)
    return locked


async def _assign_owners(
    workspace: str,
    new_contacts: Mapping[str, _NewContact],
    rotation: CaptureRotation,
    tx: Transaction[CapturesRepository],
    now: datetime,
) -> tuple[list[dict[str, Any]], bool]:
    """Give the batch's new contacts their owners by the capture rule's rotation, in the order
    they were created, and emit each one's events (`contact.created`, `contact.owner_assigned`,
    then its updates); returns the assignments' timeline rows, and whether a rotation was
    found. Its team's row is locked from its read to the commit (the rotation moves)."""
    rows: list[dict[str, Any]] = []
    for contact_id, new in new_contacts.items():
        assigned = await rotation.next_owner()
        owner = assigned[1] if assigned is not None else None
        new.state["owner_id"] = owner.id if owner is not None else None
        for snapshot in (new.snapshot, *(update[2] for update in new.updates)):
            if owner is not None:
                snapshot["owner_id"] = owner.id
            else:
                del snapshot["owner_id"]
        activity_id, created_id, assigned_id = new.ids
        lead, correlationid = new.item.lead, new.item.correlationid
        data = contact_created_data(
            new.snapshot,
            LeadCaptured.event_type,
            lead.submission_id,
            owner.name if owner else None,
            owner.email if owner else None,
        )
        kind = ContactCreated.event_type
        emit_captured(tx, created_id, kind, workspace, contact_id, data, correlationid)
        if assigned is not None:
            team, owner = assigned
            kind, data = owner_assigned(new.snapshot, team, owner)
            emit_captured(tx, assigned_id, kind, workspace, contact_id, data, correlationid)
            rows.append(
                activity(
                    workspace,
                    contact_id,
                    ContactOwnerAssigned.event_type,
                    now,
                    {"owner_id": owner.id, "previous_owner_id": None, "rule": team.rotation.rule},
                    row_id=activity_id,
                )
            )
        for event_id, data, _, update_correlationid in new.updates:
            kind = ContactUpdated.event_type
            emit_captured(tx, event_id, kind, workspace, contact_id, data, update_correlationid)
    await rotation.save()
    return rows, rotation.locked


def owner_assigned(
    snapshot: dict[str, Any], team: CaptureTeam, owner: TeamOwner
) -> tuple[str, dict[str, Any]]:
    """The `contact.owner_assigned` of a contact the capture rule gave an owner."""
    return ContactOwnerAssigned.event_type, contact_owner_assigned_data(
        snapshot, owner.id, team.team_id, team.rotation.rule, owner.name, owner.email
    )


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


async def record_engagement(
    workspace: str, engagement: Engagement, tx: Transaction[CapturesRepository], now: datetime
) -> str | None:
    """Engagement goes on the timeline and moves `last_interaction_at`; unknown people are
    ignored (contacts are made from captures, not from page views)."""
    store = tx.store
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
        await refresh_segments({contact.id}, workspace, tx, now)
    return contact.id


@dataclass(frozen=True)
class Report:
    """An event another service published about a contact (a score, a notification)."""

    workspace: str
    event_type: str
    data: Mapping[str, Any]

    @property
    def contact_id(self) -> str | None:
        value = self.data.get("contact_id")
        return value if isinstance(value, str) else None


async def _reported_contacts(
    store: CapturesRepository, workspace: str, reports: Sequence[Report], lock: bool
) -> dict[str, Contact]:
    """Each reported contact id → its contact, through merge redirects to the survivor (one
    read for all; a merged one followed on its own); unknown ids are left out."""
    ids = {r.contact_id for r in reports if r.contact_id}
    found = {c.id: c for c in await store.contacts_by_ids(workspace, ids, lock=lock)}
    contacts: dict[str, Contact] = {}
    for contact_id in ids:
        contact = found.get(contact_id)
        if contact is not None and contact.merged_into is None:
            contacts[contact_id] = contact
            continue
        with contextlib.suppress(NotFound):
            contacts[contact_id] = await resolve_contact(store, workspace, contact_id)
    return contacts


def _by_workspace(reports: Sequence[Report]) -> dict[str, list[Report]]:
    grouped: dict[str, list[Report]] = {}
    for report in reports:
        grouped.setdefault(report.workspace, []).append(report)
    return grouped


async def record_scores(
    reports: Sequence[Report], tx: Transaction[CapturesRepository], now: datetime
) -> None:
    """Contacts' current scores: the `overall` group's `after` of `score.changed` on
    `leadwire.scores.v1` (not republished: scoring owns it); threshold crossings go on the
    timeline. A poll at once: one read of its contacts, one segment refresh."""
    store = tx.store
    for workspace, items in _by_workspace(reports).items():
        contacts = await _reported_contacts(store, workspace, items, lock=True)
        changed: set[str] = set()
        activities: list[dict[str, Any]] = []
        for report in items:
            contact = contacts.get(report.contact_id or "")
            if contact is None:
                continue
            if report.event_type == ScoreChanged.event_type and report.data.get("group") == (
                "overall"
            ):
                score = ScoreChanged.model_validate(report.data).after
                if score is not None and contact.score != score:
                    contact.score = score
                    changed.add(contact.id)
            if "threshold" in report.event_type:
                activities.append(
                    activity(workspace, contact.id, report.event_type, now, dict(report.data))
                )
        if changed:
            await store.flush()
            await refresh_segments(changed, workspace, tx, now)
        if activities:
            await store.add_activities(activities)


async def record_notifications(
    reports: Sequence[Report], tx: Transaction[CapturesRepository], now: datetime
) -> None:
    """Notifications sent about or to contacts go on their timelines (without their bodies):
    one read of the poll's contacts and one insert."""
    store = tx.store
    for workspace, items in _by_workspace(reports).items():
        contacts = await _reported_contacts(store, workspace, items, lock=False)
        rows = [
            activity(
                workspace,
                contact.id,
                report.event_type,
                now,
                {k: v for k, v in report.data.items() if k not in ("body", "html", "text")},
            )
            for report in items
            if (contact := contacts.get(report.contact_id or "")) is not None
        ]
        if rows:
            await store.add_activities(rows)

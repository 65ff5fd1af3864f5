"""Use cases of duplicates: candidates found by similarity, and two contacts merged into one."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from services.contacts import domain
from services.contacts.duplicates import domain as duplicates_domain
from services.contacts.handlers import (
    activity,
    checked,
    flush_unique,
    publish,
    record_lifecycle,
    snapshot_of,
    values_of,
)
from services.contacts.models import Contact, MergeRecord
from services.contacts.segments.handlers import SegmentsRepository, refresh_segments
from shared.errors import Conflict, InvalidInput, NotFound
from shared.events.contacts import ContactMerged, SegmentExited
from shared.ids import uuid7 as new_id
from shared.uow import Transaction


class DuplicatesRepository(SegmentsRepository, Protocol):
    """The repository as duplicates and merges use it."""

    async def move_history(self, source: str, target: str) -> None: ...

    async def move_memberships(self, workspace: str, source: str, target: str) -> None: ...

    async def people(
        self, workspace: str, limit: int
    ) -> list[duplicates_domain.DuplicatePerson]: ...

    async def redirect_stubs(self, old_survivor: str, new_survivor: str) -> None: ...

    async def segments_of(self, contact_id: str) -> list[str]: ...


PERSONAL_FIELDS: tuple[str, ...] = (
    *domain.WRITABLE_CORE_FIELDS,
    "churn_reason_text",
    "owner_id",
    "score",
    "last_interaction_at",
)


async def merge_contacts(
    workspace: str,
    survivor_id: str,
    merged_id: str,
    choices: Mapping[str, str],
    tx: Transaction[DuplicatesRepository],
    now: datetime,
) -> Contact:
    """Fold `merged_id` into `survivor_id`: field choices (default: the most recently updated
    non-empty value), tags, lists, tasks and timeline move; the merged id then redirects."""
    if survivor_id == merged_id:
        raise InvalidInput(
            "a contact cannot be merged into itself",
            errors=[{"field": "merged_id", "code": "same_contact", "message": "same id"}],
        )
    store = tx.store
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
                tx,
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
        await record_lifecycle(store, tx, survivor, before_stage, now, snap)
    publish(
        tx,
        workspace,
        survivor.id,
        ContactMerged(
            survivor_id=survivor.id,
            merged_id=merged.id,
            chosen=chosen_values,
            contact=snap,
        ),
    )
    await refresh_segments({survivor.id}, workspace, tx, now)
    return survivor


async def list_duplicates(
    workspace: str,
    tx: Transaction[DuplicatesRepository],
    threshold: float = 85.0,
    scan: int = 20_000,
) -> list[dict[str, Any]]:
    """Duplicate candidates with a similarity score; never merged automatically."""
    store = tx.store
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

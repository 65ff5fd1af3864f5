"""Use cases of filters and segments: contacts listed and counted by filter, segments saved,
and their membership kept current (`segment.entered`/`segment.exited`) as contacts change
and as time passes."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from services.contacts.domain import FieldDefinition, RuleViolation
from services.contacts.handlers import ContactRecords, checked, publish, snapshot
from services.contacts.models import Contact, Segment
from services.contacts.segments import domain as segments_domain
from services.contacts.segments.domain import Filter, Page
from shared.errors import NotFound
from shared.events.contacts import (
    ContactSnapshot,
    SegmentEntered,
    SegmentExited,
)
from shared.ids import uuid7 as new_id
from shared.uow import Transaction

log = logging.getLogger(__name__)


class SegmentsRepository(ContactRecords, Protocol):
    """The repository as filters and segments use it."""

    def add(self, row: Any) -> None: ...

    async def add_members(
        self, workspace: str, segment_id: str, ids: Iterable[str], now: datetime
    ) -> None: ...

    async def contacts_by_ids(
        self, workspace: str, ids: Iterable[str], lock: bool = False
    ) -> list[Contact]: ...

    async def count(self, workspace: str, node: Filter | None, now: datetime) -> int: ...

    async def delete_segment(self, segment_id: str) -> None: ...

    async def entering(self, segment: Segment, node: Filter, now: datetime) -> list[str]: ...

    async def field_definitions(self, workspace: str) -> dict[str, FieldDefinition]: ...

    async def leaving(self, segment: Segment, node: Filter, now: datetime) -> list[str]: ...

    async def matching_ids(
        self, workspace: str, node: Filter, now: datetime, among: Iterable[str]
    ) -> set[str]: ...

    async def members_among(self, segment_id: str, ids: Iterable[str]) -> set[str]: ...

    async def page(
        self,
        workspace: str,
        node: Filter | None,
        now: datetime,
        sort: str,
        cursor: str | None,
        limit: int,
    ) -> Page[Contact]: ...

    async def remove_members(self, segment_id: str, ids: Iterable[str]) -> None: ...

    async def segment(self, workspace: str, segment_id: str) -> Segment | None: ...

    async def segments(self, workspace: str | None = None) -> list[Segment]: ...


async def list_segments(workspace: str, tx: Transaction[SegmentsRepository]) -> list[Segment]:
    return await tx.store.segments(workspace)


async def parse_filter(
    workspace: str, raw: Any, tx: Transaction[SegmentsRepository]
) -> segments_domain.Filter:
    definitions = await tx.store.field_definitions(workspace)
    with checked():
        return segments_domain.parse_filter(raw, definitions)


async def list_contacts(
    workspace: str,
    node: segments_domain.Filter | None,
    sort: str,
    cursor: str | None,
    limit: int,
    tx: Transaction[SegmentsRepository],
    now: datetime,
) -> tuple[Page[Contact], dict[str, list[str]], dict[str, list[str]]]:
    """A page of contacts matching a filter, in a stable order, with their tags and lists."""
    store = tx.store
    with checked():
        page = await store.page(workspace, node, now, sort, cursor, limit)
    ids = [c.id for c in page.items]
    return page, await store.tags_of(ids), await store.lists_of(ids)


async def count_contacts(
    workspace: str,
    node: segments_domain.Filter | None,
    tx: Transaction[SegmentsRepository],
    now: datetime,
) -> int:
    """How many contacts match a filter, counted in SQL."""
    return await tx.store.count(workspace, node, now)


async def create_segment(
    workspace: str, name: str, raw_filter: Any, tx: Transaction[SegmentsRepository], now: datetime
) -> tuple[Segment, int]:
    """Save a view; its current members are recorded silently (only later changes publish
    `segment.entered`/`segment.exited`, so saving a segment never floods the workflows)."""
    node = await parse_filter(workspace, raw_filter, tx)
    store = tx.store
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


async def get_segment(
    workspace: str, segment_id: str, tx: Transaction[SegmentsRepository]
) -> Segment:
    segment = await tx.store.segment(workspace, segment_id)
    if segment is None:
        raise NotFound(f"segment {segment_id} not found")
    return segment


async def delete_segment(
    workspace: str, segment_id: str, tx: Transaction[SegmentsRepository]
) -> None:
    segment = await get_segment(workspace, segment_id, tx)
    await tx.store.delete_segment(segment.id)


async def refresh_segments(
    contact_ids: set[str],
    workspace: str,
    tx: Transaction[SegmentsRepository],
    now: datetime,
    definitions: Mapping[str, FieldDefinition] | None = None,
    segments: Sequence[Segment] | None = None,
) -> None:
    """Keep segment membership current for contacts that just changed (`segments`: the
    workspace's, when the caller read them already)."""
    if not contact_ids:
        return
    store = tx.store
    if segments is None:
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
            tx,
            segment,
            sorted(matching - current),
            sorted(current - matching),
            now,
            snapshots,
        )


async def sweep_segments(tx: Transaction[SegmentsRepository], now: datetime) -> int:
    """Reconcile every segment with its filter at `now` (time-based conditions move as time
    passes); returns how many contacts entered or left."""
    store = tx.store
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
        await _move_members(store, tx, segment, entering, leaving, now, {})
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
    store: SegmentsRepository,
    tx: Transaction[SegmentsRepository],
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
                tx,
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
                tx,
                workspace,
                contact_id,
                SegmentExited(
                    segment_id=segment.id,
                    segment_name=segment.name,
                    contact_id=contact_id,
                    at=now,
                ),
            )

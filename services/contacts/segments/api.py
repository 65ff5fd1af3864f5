"""The segments routes: saved filters, their counts and members."""

from __future__ import annotations

from fastapi import APIRouter, Response

from services.contacts.api import Limit, Reader, Writer, contact_page
from services.contacts.models import Segment
from services.contacts.schemas import (
    ContactPage,
    Count,
    FilterIn,
    SegmentIn,
    SegmentRead,
)
from services.contacts.segments import handlers
from services.contacts.store import transaction
from shared.app import Context
from shared.clock import Clock
from shared.openapi import problems


def segment_read(segment: Segment, members: int | None = None) -> SegmentRead:
    return SegmentRead(
        id=segment.id,
        name=segment.name,
        filter=segment.filter,
        time_based=segment.time_based,
        created_at=segment.created_at,
        members=members,
    )


def router(clock: Clock) -> APIRouter:
    """The segments routes, reading the time from `clock` (injected, so tests can move it)."""
    api = APIRouter(prefix="/v1", tags=["contacts"])

    @api.post("/segments", status_code=201, responses=problems(409))
    async def create_segment(body: SegmentIn, ctx: Context, who: Writer) -> SegmentRead:
        """Save a view defined in the JSON filter language; membership is kept current."""
        async with transaction(ctx.uow()) as tx:
            segment, members = await handlers.create_segment(
                who.workspace, body.name, body.filter, tx, clock()
            )
        return segment_read(segment, members)

    @api.post("/segments/preview")
    async def preview_segment(body: FilterIn, ctx: Context, who: Reader) -> Count:
        """How many contacts a filter matches now, without saving it."""
        async with transaction(ctx.uow()) as tx:
            node = await handlers.parse_filter(who.workspace, body.filter, tx)
            return Count(count=await handlers.count_contacts(who.workspace, node, tx, clock()))

    @api.get("/segments")
    async def list_segments(ctx: Context, who: Reader) -> list[SegmentRead]:
        """The workspace's segments."""
        async with transaction(ctx.uow()) as tx:
            segments = await handlers.list_segments(who.workspace, tx)
        return [segment_read(s) for s in segments]

    @api.get("/segments/{segment_id}")
    async def get_segment(segment_id: str, ctx: Context, who: Reader) -> SegmentRead:
        """One segment with its current count."""
        async with transaction(ctx.uow()) as tx:
            segment = await handlers.get_segment(who.workspace, segment_id, tx)
            node = await handlers.parse_filter(who.workspace, segment.filter, tx)
            count = await handlers.count_contacts(who.workspace, node, tx, clock())
        return segment_read(segment, count)

    @api.get("/segments/{segment_id}/count")
    async def segment_count(segment_id: str, ctx: Context, who: Reader) -> Count:
        """How many contacts match the segment now (counted in SQL)."""
        async with transaction(ctx.uow()) as tx:
            segment = await handlers.get_segment(who.workspace, segment_id, tx)
            node = await handlers.parse_filter(who.workspace, segment.filter, tx)
            return Count(count=await handlers.count_contacts(who.workspace, node, tx, clock()))

    @api.get("/segments/{segment_id}/contacts")
    async def segment_contacts(
        segment_id: str,
        ctx: Context,
        who: Reader,
        sort: str = "-created_at",
        cursor: str | None = None,
        limit: Limit = 50,
    ) -> ContactPage:
        """The contacts matching the segment, a page at a time."""
        async with transaction(ctx.uow()) as tx:
            segment = await handlers.get_segment(who.workspace, segment_id, tx)
            node = await handlers.parse_filter(who.workspace, segment.filter, tx)
            page, tags, lists = await handlers.list_contacts(
                who.workspace, node, sort, cursor, limit, tx, clock()
            )
        return contact_page(page, tags, lists)

    @api.delete("/segments/{segment_id}", status_code=204)
    async def delete_segment(segment_id: str, ctx: Context, who: Writer) -> Response:
        """Delete a segment (no exit events: the view is gone, not its members' state)."""
        async with transaction(ctx.uow()) as tx:
            await handlers.delete_segment(who.workspace, segment_id, tx)
        return Response(status_code=204)

    return api

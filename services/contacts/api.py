"""The contacts HTTP API: thin routes that open a unit of work and call a handler."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import RedirectResponse

from services.contacts import handlers
from services.contacts.domain import Clock, FieldDefinition
from services.contacts.models import Contact, Owner, Segment, TaskRow, Team
from services.contacts.schemas import (
    AssignIn,
    ContactCreate,
    ContactPage,
    ContactRead,
    ContactUpdate,
    Count,
    FieldIn,
    FieldRead,
    FilterIn,
    ListIn,
    MergeIn,
    NoteIn,
    OwnerIn,
    OwnerRead,
    OwnerUpdate,
    SegmentIn,
    SegmentRead,
    TagIn,
    TaskIn,
    TaskRead,
    TaskUpdate,
    TeamIn,
    TeamRead,
    TimelineItem,
    TimelinePage,
)
from services.contacts.segments.store import Page
from shared import export
from shared.api_types import RequestDateTime
from shared.app import Context
from shared.auth import Principal, require_scope
from shared.erasure import checkpoint
from shared.errors import InvalidInput
from shared.openapi import problems
from shared.uow import UnitOfWork

Reader = Annotated[Principal, Depends(require_scope("contacts:read"))]
Writer = Annotated[Principal, Depends(require_scope("contacts:write"))]
Limit = Annotated[int, Query(ge=1, le=500)]


async def contact_read(contact: Contact, uow: UnitOfWork) -> ContactRead:
    snap = await handlers.describe_contact(contact, uow)
    return ContactRead.model_validate(snap.model_dump())


def segment_read(segment: Segment, members: int | None = None) -> SegmentRead:
    return SegmentRead(
        id=segment.id,
        name=segment.name,
        filter=segment.filter,
        time_based=segment.time_based,
        created_at=segment.created_at,
        members=members,
    )


def owner_read(owner: Owner) -> OwnerRead:
    return OwnerRead(
        id=owner.id,
        name=owner.name,
        email=owner.email,
        team_id=owner.team_id,
        weight=owner.weight,
        active=owner.active,
    )


def team_read(team: Team) -> TeamRead:
    return TeamRead(id=team.id, name=team.name, rule=team.rule)


def task_read(task: TaskRow) -> TaskRead:
    return TaskRead.model_validate(handlers.task_snapshot(task).model_dump())


def field_read(d: FieldDefinition) -> FieldRead:
    return FieldRead(
        name=d.name,
        type=d.type,
        label=d.label,
        required=d.required,
        options=list(d.options),
        min=d.min,
        max=d.max,
        max_length=d.max_length,
        pattern=d.pattern,
    )


def combined_filter(
    raw: str | None,
    q: str | None,
    lifecycle_stage: str | None,
    owner_id: str | None,
    tag: str | None,
    list_name: str | None,
) -> dict[str, Any] | None:
    """The query-string shortcuts as conditions of the filter language, and-ed with `filter`."""
    parts: list[dict[str, Any]] = []
    if raw:
        try:
            parts.append(orjson.loads(raw))
        except orjson.JSONDecodeError as exc:
            raise InvalidInput(
                "filter is not JSON",
                errors=[{"field": "filter", "code": "invalid_json", "message": str(exc)}],
            ) from exc
    if q:
        parts.append(
            {
                "or": [
                    {"field": f, "op": "contains", "value": q}
                    for f in ("email", "first_name", "last_name", "company")
                ]
            }
        )
    for name, value in (("lifecycle_stage", lifecycle_stage), ("owner_id", owner_id)):
        if value:
            parts.append({"field": name, "op": "eq", "value": value})
    if tag:
        parts.append({"field": "tags", "op": "contains", "value": tag})
    if list_name:
        parts.append({"field": "lists", "op": "contains", "value": list_name})
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else {"and": parts}


def contact_page(
    page: Page, tags: Mapping[str, list[str]], lists: Mapping[str, list[str]]
) -> ContactPage:
    """A page of contacts as the API shows them, with their tags and lists."""
    items = [
        ContactRead.model_validate(handlers.snapshot(c, tags[c.id], lists[c.id]).model_dump())
        for c in page.items
    ]
    return ContactPage(items=items, next_cursor=page.next_cursor)


def router(clock: Clock) -> APIRouter:
    """The contacts routes, reading the time from `clock` (injected, so tests can move it)."""
    api = APIRouter(prefix="/v1", tags=["contacts"])

    # contacts --------------------------------------------------------------------------------

    @api.get("/contacts")
    async def list_contacts(
        ctx: Context,
        who: Reader,
        filter: str | None = None,
        q: str | None = None,
        lifecycle_stage: str | None = None,
        owner_id: str | None = None,
        tag: str | None = None,
        list: Annotated[str | None, Query(alias="list")] = None,
        sort: str = "-created_at",
        cursor: str | None = None,
        limit: Limit = 50,
    ) -> ContactPage:
        """Contacts of the workspace: filter (JSON filter language or shortcuts), sort, pages."""
        raw = combined_filter(filter, q, lifecycle_stage, owner_id, tag, list)
        async with ctx.uow() as uow:
            node = await handlers.parse_filter(who.workspace, raw, uow) if raw else None
            page, tags, lists = await handlers.list_contacts(
                who.workspace, node, sort, cursor, limit, uow, clock()
            )
        return contact_page(page, tags, lists)

    @api.post("/contacts", status_code=201, responses=problems(404, 409))
    async def create_contact(body: ContactCreate, ctx: Context, who: Writer) -> ContactRead:
        """Create a contact (email or phone required; both must be free in the workspace)."""
        async with ctx.uow() as uow:
            contact = await handlers.create_contact(
                who.workspace, body.model_dump(exclude_unset=True), uow, clock()
            )
            return await contact_read(contact, uow)

    @api.get("/contacts/count")
    async def count_contacts(ctx: Context, who: Reader, filter: str | None = None) -> Count:
        """How many contacts match a filter."""
        raw = combined_filter(filter, None, None, None, None, None)
        async with ctx.uow() as uow:
            node = await handlers.parse_filter(who.workspace, raw, uow) if raw else None
            return Count(count=await handlers.count_contacts(who.workspace, node, uow, clock()))

    @api.get("/contacts/lookup", responses=problems(404))
    async def lookup(
        ctx: Context, who: Reader, email: str | None = None, phone: str | None = None
    ) -> ContactRead:
        """The contact with this email or phone (normalised before matching)."""
        async with ctx.uow() as uow:
            contact = await handlers.lookup_contact(who.workspace, email, phone, uow)
            return await contact_read(contact, uow)

    @api.get("/contacts/duplicates")
    async def duplicates(
        ctx: Context, who: Reader, threshold: Annotated[float, Query(ge=50, le=100)] = 85
    ) -> list[dict[str, Any]]:
        """Likely duplicates beyond exact matches, with a similarity score; never auto-merged."""
        async with ctx.uow() as uow:
            return await handlers.list_duplicates(who.workspace, uow, threshold)

    @api.post("/contacts/merge", responses=problems(404, 409))
    async def merge(body: MergeIn, ctx: Context, who: Writer) -> ContactRead:
        """Merge `merged_id` into `survivor_id`; the merged id then redirects to the survivor."""
        async with ctx.uow() as uow:
            contact = await handlers.merge_contacts(
                who.workspace, body.survivor_id, body.merged_id, body.choices, uow, clock()
            )
            return await contact_read(contact, uow)

    @api.get(
        "/contacts/{contact_id}",
        response_model=ContactRead,
        responses={308: {"description": "merged into another contact"}},
    )
    async def get_contact(contact_id: str, ctx: Context, who: Reader) -> Any:
        """One contact; a merged-away id answers 308 with the survivor's location."""
        async with ctx.uow() as uow:
            found = await handlers.read_contact(who.workspace, contact_id, uow)
            if isinstance(found, handlers.Moved):
                return RedirectResponse(f"/v1/contacts/{found.survivor_id}", status_code=308)
            return await contact_read(found, uow)

    @api.patch("/contacts/{contact_id}", responses=problems(409))
    async def update_contact(
        contact_id: str, body: ContactUpdate, ctx: Context, who: Writer
    ) -> ContactRead:
        """Change fields; what is not sent stays, `null` clears."""
        async with ctx.uow() as uow:
            contact = await handlers.update_contact(
                who.workspace, contact_id, body.model_dump(exclude_unset=True), uow, clock()
            )
            return await contact_read(contact, uow)

    @api.delete("/contacts/{contact_id}", status_code=204)
    async def erase_contact(contact_id: str, ctx: Context, who: Writer) -> Response:
        """Erase every piece of personal data held on the contact; publishes a tombstone."""
        async with ctx.uow() as uow:
            await handlers.erase_contact(who.workspace, contact_id, uow, clock())
        await checkpoint(ctx.engine)  # committed: leave no copy in SQLite's write-ahead log
        return Response(status_code=204)

    @api.get("/contacts/{contact_id}/export")
    async def export_contact(
        contact_id: str, request: Request, ctx: Context, who: Reader
    ) -> dict[str, Any]:
        """Everything the product holds on the person, from every service, as one document
        (data subject access); 503 while a service holding data cannot answer."""
        async with ctx.uow() as uow:
            document = await handlers.export_contact(who.workspace, contact_id, uow)
            ref = await handlers.person_ref(who.workspace, contact_id, uow)
        parts, absent = await export.gather(
            ref,
            export.service_urls(ctx.settings.service_urls, ctx.settings.host),
            request.headers["authorization"],
            # Tests route the calls to in-process apps; otherwise plain HTTP.
            transport=getattr(request.app.state, "export_transport", None),
        )
        return document | {"services": parts, "not_exported": absent}

    @api.get("/contacts/{contact_id}/timeline")
    async def timeline(
        contact_id: str,
        ctx: Context,
        who: Reader,
        cursor: str | None = None,
        limit: Limit = 50,
    ) -> TimelinePage:
        """The contact's whole history, newest first."""
        async with ctx.uow() as uow:
            items, nxt = await handlers.timeline(who.workspace, contact_id, cursor, limit, uow)
        return TimelinePage(items=[TimelineItem(**i) for i in items], next_cursor=nxt)

    @api.get("/contacts/{contact_id}/lifecycle")
    async def lifecycle(contact_id: str, ctx: Context, who: Reader) -> list[dict[str, Any]]:
        """Lifecycle history with timestamps and time spent in each stage."""
        async with ctx.uow() as uow:
            return await handlers.lifecycle_history(who.workspace, contact_id, uow, clock())

    @api.post("/contacts/{contact_id}/notes", status_code=201)
    async def add_note(contact_id: str, body: NoteIn, ctx: Context, who: Writer) -> TimelineItem:
        """Write a note on the contact's timeline."""
        async with ctx.uow() as uow:
            row = await handlers.add_note(
                who.workspace, contact_id, body.text, who.subject, uow, clock()
            )
        return TimelineItem(**{k: row[k] for k in ("id", "kind", "occurred_at", "data")})

    @api.post("/contacts/{contact_id}/tags")
    async def add_tag(contact_id: str, body: TagIn, ctx: Context, who: Writer) -> ContactRead:
        """Tag the contact."""
        async with ctx.uow() as uow:
            contact = await handlers.change_membership(
                who.workspace, contact_id, "tags", body.tag, True, uow, clock()
            )
            return await contact_read(contact, uow)

    @api.delete("/contacts/{contact_id}/tags/{tag}")
    async def remove_tag(contact_id: str, tag: str, ctx: Context, who: Writer) -> ContactRead:
        """Remove a tag from the contact."""
        async with ctx.uow() as uow:
            contact = await handlers.change_membership(
                who.workspace, contact_id, "tags", tag, False, uow, clock()
            )
            return await contact_read(contact, uow)

    @api.post("/contacts/{contact_id}/lists")
    async def add_to_list(contact_id: str, body: ListIn, ctx: Context, who: Writer) -> ContactRead:
        """Add the contact to a static list."""
        async with ctx.uow() as uow:
            contact = await handlers.change_membership(
                who.workspace, contact_id, "lists", body.list, True, uow, clock()
            )
            return await contact_read(contact, uow)

    @api.delete("/contacts/{contact_id}/lists/{name}")
    async def remove_from_list(
        contact_id: str, name: str, ctx: Context, who: Writer
    ) -> ContactRead:
        """Remove the contact from a static list."""
        async with ctx.uow() as uow:
            contact = await handlers.change_membership(
                who.workspace, contact_id, "lists", name, False, uow, clock()
            )
            return await contact_read(contact, uow)

    @api.post("/contacts/{contact_id}/owner", responses=problems(409))
    async def assign_owner(
        contact_id: str, body: AssignIn, ctx: Context, who: Writer
    ) -> ContactRead:
        """Assign an owner explicitly (`owner_id`) or by a team's rotation (`team_id`)."""
        async with ctx.uow() as uow:
            contact = await handlers.assign_owner(
                who.workspace, contact_id, body.owner_id, body.team_id, uow, clock()
            )
            return await contact_read(contact, uow)

    @api.get("/tags")
    async def list_tags(ctx: Context, who: Reader) -> list[dict[str, Any]]:
        """Tags in use, with how many contacts carry each."""
        async with ctx.uow() as uow:
            rows = await handlers.tag_counts(who.workspace, uow)
        return [{"tag": t, "contacts": n} for t, n in rows]

    @api.get("/lists")
    async def list_lists(ctx: Context, who: Reader) -> list[dict[str, Any]]:
        """Static lists, with their member counts."""
        async with ctx.uow() as uow:
            rows = await handlers.list_counts(who.workspace, uow)
        return [{"list": name, "contacts": n} for name, n in rows]

    # custom fields ---------------------------------------------------------------------------

    @api.get("/fields")
    async def list_fields(ctx: Context, who: Reader) -> list[FieldRead]:
        """Custom field definitions, the out-of-the-box ones included."""
        async with ctx.uow() as uow:
            return [field_read(d) for d in await handlers.list_fields(who.workspace, uow)]

    @api.post("/fields", status_code=201, responses=problems(409))
    async def define_field(body: FieldIn, ctx: Context, who: Writer) -> FieldRead:
        """Define (or redefine) a custom field: type, required flag, validation."""
        definition = FieldDefinition(
            name=body.name,
            type=body.type,
            label=body.label,
            required=body.required,
            options=tuple(body.options),
            min=body.min,
            max=body.max,
            max_length=body.max_length,
            pattern=body.pattern,
        )
        async with ctx.uow() as uow:
            await handlers.define_field(who.workspace, definition, uow)
        return field_read(definition)

    @api.delete("/fields/{name}", status_code=204)
    async def delete_field(name: str, ctx: Context, who: Writer) -> Response:
        """Forget a custom field definition (stored values stay on the contacts)."""
        async with ctx.uow() as uow:
            await handlers.delete_field(who.workspace, name, uow)
        return Response(status_code=204)

    # segments --------------------------------------------------------------------------------

    @api.post("/segments", status_code=201, responses=problems(409))
    async def create_segment(body: SegmentIn, ctx: Context, who: Writer) -> SegmentRead:
        """Save a view defined in the JSON filter language; membership is kept current."""
        async with ctx.uow() as uow:
            segment, members = await handlers.create_segment(
                who.workspace, body.name, body.filter, uow, clock()
            )
        return segment_read(segment, members)

    @api.post("/segments/preview")
    async def preview_segment(body: FilterIn, ctx: Context, who: Reader) -> Count:
        """How many contacts a filter matches now, without saving it."""
        async with ctx.uow() as uow:
            node = await handlers.parse_filter(who.workspace, body.filter, uow)
            return Count(count=await handlers.count_contacts(who.workspace, node, uow, clock()))

    @api.get("/segments")
    async def list_segments(ctx: Context, who: Reader) -> list[SegmentRead]:
        """The workspace's segments."""
        async with ctx.uow() as uow:
            segments = await handlers.list_segments(who.workspace, uow)
        return [segment_read(s) for s in segments]

    @api.get("/segments/{segment_id}")
    async def get_segment(segment_id: str, ctx: Context, who: Reader) -> SegmentRead:
        """One segment with its current count."""
        async with ctx.uow() as uow:
            segment = await handlers.get_segment(who.workspace, segment_id, uow)
            node = await handlers.parse_filter(who.workspace, segment.filter, uow)
            count = await handlers.count_contacts(who.workspace, node, uow, clock())
        return segment_read(segment, count)

    @api.get("/segments/{segment_id}/count")
    async def segment_count(segment_id: str, ctx: Context, who: Reader) -> Count:
        """How many contacts match the segment now (counted in SQL)."""
        async with ctx.uow() as uow:
            segment = await handlers.get_segment(who.workspace, segment_id, uow)
            node = await handlers.parse_filter(who.workspace, segment.filter, uow)
            return Count(count=await handlers.count_contacts(who.workspace, node, uow, clock()))

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
        async with ctx.uow() as uow:
            segment = await handlers.get_segment(who.workspace, segment_id, uow)
            node = await handlers.parse_filter(who.workspace, segment.filter, uow)
            page, tags, lists = await handlers.list_contacts(
                who.workspace, node, sort, cursor, limit, uow, clock()
            )
        return contact_page(page, tags, lists)

    @api.delete("/segments/{segment_id}", status_code=204)
    async def delete_segment(segment_id: str, ctx: Context, who: Writer) -> Response:
        """Delete a segment (no exit events: the view is gone, not its members' state)."""
        async with ctx.uow() as uow:
            await handlers.delete_segment(who.workspace, segment_id, uow)
        return Response(status_code=204)

    # owners, teams, tasks --------------------------------------------------------------------

    @api.post("/teams", status_code=201, responses=problems(409))
    async def create_team(body: TeamIn, ctx: Context, who: Writer) -> TeamRead:
        """A team of owners with its assignment rule."""
        async with ctx.uow() as uow:
            return team_read(await handlers.create_team(who.workspace, body.name, body.rule, uow))

    @api.get("/teams")
    async def list_teams(ctx: Context, who: Reader) -> list[TeamRead]:
        """The workspace's teams."""
        async with ctx.uow() as uow:
            return [team_read(t) for t in await handlers.list_teams(who.workspace, uow)]

    @api.post("/owners", status_code=201, responses=problems(404, 409))
    async def create_owner(body: OwnerIn, ctx: Context, who: Writer) -> OwnerRead:
        """A sales person who can own contacts, optionally in a team's rotation."""
        async with ctx.uow() as uow:
            owner = await handlers.save_owner(who.workspace, None, body.model_dump(), uow)
            return owner_read(owner)

    @api.patch("/owners/{owner_id}")
    async def update_owner(
        owner_id: str, body: OwnerUpdate, ctx: Context, who: Writer
    ) -> OwnerRead:
        """Change an owner: deactivate to skip them in rotations, change weight or team."""
        async with ctx.uow() as uow:
            owner = await handlers.save_owner(
                who.workspace, owner_id, body.model_dump(exclude_unset=True), uow
            )
            return owner_read(owner)

    @api.get("/owners")
    async def list_owners(ctx: Context, who: Reader, team_id: str | None = None) -> list[OwnerRead]:
        """Owners of the workspace (or of one team)."""
        async with ctx.uow() as uow:
            owners = await handlers.list_owners(who.workspace, team_id, uow)
        return [owner_read(o) for o in owners]

    @api.post("/tasks", status_code=201, responses=problems(404))
    async def create_task(body: TaskIn, ctx: Context, who: Writer) -> TaskRead:
        """A task on a contact (assignee defaults to the contact's owner)."""
        async with ctx.uow() as uow:
            task = await handlers.create_task(
                who.workspace,
                body.contact_id,
                body.title,
                body.description,
                body.due_date,
                body.assignee_id,
                uow,
                clock(),
            )
            return task_read(task)

    @api.patch("/tasks/{task_id}", responses=problems(409))
    async def update_task(task_id: str, body: TaskUpdate, ctx: Context, who: Writer) -> TaskRead:
        """Change a task; `status: done` completes it."""
        async with ctx.uow() as uow:
            task = await handlers.update_task(
                who.workspace, task_id, body.model_dump(exclude_unset=True), uow, clock()
            )
            return task_read(task)

    @api.get("/tasks")
    async def list_tasks(
        ctx: Context,
        who: Reader,
        assignee: str | None = None,
        contact_id: str | None = None,
        status: str | None = None,
        overdue: bool = False,
        limit: Limit = 200,
    ) -> list[TaskRead]:
        """Tasks by assignee, contact or status; `overdue=true`: open and past due."""
        async with ctx.uow() as uow:
            tasks = await handlers.list_tasks(
                who.workspace, assignee, contact_id, status, overdue, uow, clock(), limit
            )
        return [task_read(t) for t in tasks]

    # reports ---------------------------------------------------------------------------------

    @api.get("/data-quality")
    async def data_quality(
        ctx: Context, who: Reader, stale_days: Annotated[int, Query(ge=1, le=3650)] = 90
    ) -> dict[str, Any]:
        """Missing required fields, invalid values, duplicates, stale and unsubscribed."""
        async with ctx.uow() as uow:
            return await handlers.data_quality(who.workspace, stale_days, uow, clock())

    @api.get("/reports/funnel")
    async def funnel(
        ctx: Context,
        who: Reader,
        start: RequestDateTime | None = None,
        end: RequestDateTime | None = None,
    ) -> dict[str, Any]:
        """Contacts per lifecycle stage and conversion between stages over a period."""
        start, end = _period(start, end, clock)
        async with ctx.uow() as uow:
            return await handlers.funnel_report(who.workspace, start, end, uow)

    @api.get("/reports/churn")
    async def churn(
        ctx: Context,
        who: Reader,
        start: RequestDateTime | None = None,
        end: RequestDateTime | None = None,
    ) -> dict[str, Any]:
        """Churn rate for a period (churned customers / customers at its start x 100)."""
        start, end = _period(start, end, clock)
        async with ctx.uow() as uow:
            return await handlers.churn_report(who.workspace, start, end, uow)

    return api


def _period(
    start: datetime | None, end: datetime | None, clock: Clock
) -> tuple[datetime, datetime]:
    default_start, default_end = handlers.default_period(clock())
    start, end = start or default_start, end or default_end
    start = start if start.tzinfo else start.replace(tzinfo=UTC)
    end = end if end.tzinfo else end.replace(tzinfo=UTC)
    if start >= end:
        raise InvalidInput(
            "start must be before end",
            errors=[{"field": "start", "code": "invalid_period", "message": "start >= end"}],
        )
    return start, end

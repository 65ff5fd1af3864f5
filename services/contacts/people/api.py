"""The people routes: contacts listed, created, read, found and changed, their tags, lists,
notes and timeline, and the workspace's custom fields."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Response
from fastapi.responses import RedirectResponse

from services.contacts.api import Limit, Reader, Writer, contact_page, contact_read
from services.contacts.domain import FieldDefinition
from services.contacts.people import handlers
from services.contacts.schemas import (
    ContactCreate,
    ContactPage,
    ContactRead,
    ContactUpdate,
    Count,
    FieldIn,
    FieldRead,
    ListIn,
    NoteIn,
    TagIn,
    TimelineItem,
    TimelinePage,
)
from services.contacts.segments import handlers as segments_handlers
from services.contacts.store import transaction
from shared.app import Context
from shared.clock import Clock
from shared.errors import InvalidInput
from shared.openapi import problems


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


def router(clock: Clock) -> APIRouter:
    """The people routes, reading the time from `clock` (injected, so tests can move it)."""
    api = APIRouter(prefix="/v1", tags=["contacts"])

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
        async with transaction(ctx.uow()) as tx:
            node = await segments_handlers.parse_filter(who.workspace, raw, tx) if raw else None
            page, tags, lists = await segments_handlers.list_contacts(
                who.workspace, node, sort, cursor, limit, tx, clock()
            )
        return contact_page(page, tags, lists)

    @api.post("/contacts", status_code=201, responses=problems(404, 409))
    async def create_contact(body: ContactCreate, ctx: Context, who: Writer) -> ContactRead:
        """Create a contact (email or phone required; both must be free in the workspace)."""
        async with transaction(ctx.uow()) as tx:
            contact = await handlers.create_contact(
                who.workspace, body.model_dump(exclude_unset=True), tx, clock()
            )
            return await contact_read(contact, tx)

    @api.get("/contacts/count")
    async def count_contacts(ctx: Context, who: Reader, filter: str | None = None) -> Count:
        """How many contacts match a filter."""
        raw = combined_filter(filter, None, None, None, None, None)
        async with transaction(ctx.uow()) as tx:
            node = await segments_handlers.parse_filter(who.workspace, raw, tx) if raw else None
            return Count(
                count=await segments_handlers.count_contacts(who.workspace, node, tx, clock())
            )

    @api.get("/contacts/lookup", responses=problems(404))
    async def lookup(
        ctx: Context, who: Reader, email: str | None = None, phone: str | None = None
    ) -> ContactRead:
        """The contact with this email or phone (normalised before matching)."""
        async with transaction(ctx.uow()) as tx:
            contact = await handlers.lookup_contact(who.workspace, email, phone, tx)
            return await contact_read(contact, tx)

    @api.get(
        "/contacts/{contact_id}",
        response_model=ContactRead,
        responses={308: {"description": "merged into another contact"}},
    )
    async def get_contact(contact_id: str, ctx: Context, who: Reader) -> Any:
        """One contact; a merged-away id answers 308 with the survivor's location."""
        async with transaction(ctx.uow()) as tx:
            found = await handlers.read_contact(who.workspace, contact_id, tx)
            if isinstance(found, handlers.Moved):
                return RedirectResponse(f"/v1/contacts/{found.survivor_id}", status_code=308)
            return await contact_read(found, tx)

    @api.patch("/contacts/{contact_id}", responses=problems(409))
    async def update_contact(
        contact_id: str, body: ContactUpdate, ctx: Context, who: Writer
    ) -> ContactRead:
        """Change fields; what is not sent stays, `null` clears."""
        async with transaction(ctx.uow()) as tx:
            contact = await handlers.update_contact(
                who.workspace, contact_id, body.model_dump(exclude_unset=True), tx, clock()
            )
            return await contact_read(contact, tx)

    @api.get("/contacts/{contact_id}/timeline")
    async def timeline(
        contact_id: str,
        ctx: Context,
        who: Reader,
        cursor: str | None = None,
        limit: Limit = 50,
    ) -> TimelinePage:
        """The contact's whole history, newest first."""
        async with transaction(ctx.uow()) as tx:
            items, nxt = await handlers.timeline(who.workspace, contact_id, cursor, limit, tx)
        return TimelinePage(items=[TimelineItem(**i) for i in items], next_cursor=nxt)

    @api.get("/contacts/{contact_id}/lifecycle")
    async def lifecycle(contact_id: str, ctx: Context, who: Reader) -> list[dict[str, Any]]:
        """Lifecycle history with timestamps and time spent in each stage."""
        async with transaction(ctx.uow()) as tx:
            return await handlers.lifecycle_history(who.workspace, contact_id, tx, clock())

    @api.post("/contacts/{contact_id}/notes", status_code=201)
    async def add_note(contact_id: str, body: NoteIn, ctx: Context, who: Writer) -> TimelineItem:
        """Write a note on the contact's timeline."""
        async with transaction(ctx.uow()) as tx:
            row = await handlers.add_note(
                who.workspace, contact_id, body.text, who.subject, tx, clock()
            )
        return TimelineItem(**{k: row[k] for k in ("id", "kind", "occurred_at", "data")})

    @api.post("/contacts/{contact_id}/tags")
    async def add_tag(contact_id: str, body: TagIn, ctx: Context, who: Writer) -> ContactRead:
        """Tag the contact."""
        async with transaction(ctx.uow()) as tx:
            contact = await handlers.change_membership(
                who.workspace, contact_id, "tags", body.tag, True, tx, clock()
            )
            return await contact_read(contact, tx)

    @api.delete("/contacts/{contact_id}/tags/{tag}")
    async def remove_tag(contact_id: str, tag: str, ctx: Context, who: Writer) -> ContactRead:
        """Remove a tag from the contact."""
        async with transaction(ctx.uow()) as tx:
            contact = await handlers.change_membership(
                who.workspace, contact_id, "tags", tag, False, tx, clock()
            )
            return await contact_read(contact, tx)

    @api.post("/contacts/{contact_id}/lists")
    async def add_to_list(contact_id: str, body: ListIn, ctx: Context, who: Writer) -> ContactRead:
        """Add the contact to a static list."""
        async with transaction(ctx.uow()) as tx:
            contact = await handlers.change_membership(
                who.workspace, contact_id, "lists", body.list, True, tx, clock()
            )
            return await contact_read(contact, tx)

    @api.delete("/contacts/{contact_id}/lists/{name}")
    async def remove_from_list(
        contact_id: str, name: str, ctx: Context, who: Writer
    ) -> ContactRead:
        """Remove the contact from a static list."""
        async with transaction(ctx.uow()) as tx:
            contact = await handlers.change_membership(
                who.workspace, contact_id, "lists", name, False, tx, clock()
            )
            return await contact_read(contact, tx)

    @api.get("/tags")
    async def list_tags(ctx: Context, who: Reader) -> list[dict[str, Any]]:
        """Tags in use, with how many contacts carry each."""
        async with transaction(ctx.uow()) as tx:
            rows = await handlers.tag_counts(who.workspace, tx)
        return [{"tag": t, "contacts": n} for t, n in rows]

    @api.get("/lists")
    async def list_lists(ctx: Context, who: Reader) -> list[dict[str, Any]]:
        """Static lists, with their member counts."""
        async with transaction(ctx.uow()) as tx:
            rows = await handlers.list_counts(who.workspace, tx)
        return [{"list": name, "contacts": n} for name, n in rows]

    @api.get("/fields")
    async def list_fields(ctx: Context, who: Reader) -> list[FieldRead]:
        """Custom field definitions, the out-of-the-box ones included."""
        async with transaction(ctx.uow()) as tx:
            return [field_read(d) for d in await handlers.list_fields(who.workspace, tx)]

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
        async with transaction(ctx.uow()) as tx:
            await handlers.define_field(who.workspace, definition, tx)
        return field_read(definition)

    @api.delete("/fields/{name}", status_code=204)
    async def delete_field(name: str, ctx: Context, who: Writer) -> Response:
        """Forget a custom field definition (stored values stay on the contacts)."""
        async with transaction(ctx.uow()) as tx:
            await handlers.delete_field(who.workspace, name, tx)
        return Response(status_code=204)

    return api

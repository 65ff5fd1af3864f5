"""notifier's HTTP API: thin routes that open a unit of work and call a handler."""

from __future__ import annotations

import base64
import html
from datetime import UTC, datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import HTMLResponse

from services.notifier import handlers
from services.notifier.channels import handlers as channel_handlers
from services.notifier.delivery.domain import STATUSES
from services.notifier.models import Attempt, Channel, Delivery, Suppression, Template
from services.notifier.requests import handlers as intake
from services.notifier.runtime import runtime_of
from services.notifier.schemas import (
    AttemptRead,
    ChannelIn,
    ChannelRead,
    NotificationIn,
    NotificationPage,
    NotificationRead,
    Preview,
    PreviewIn,
    SuppressionIn,
    SuppressionRead,
    TemplateIn,
    TemplateRead,
    UnsubscribeResult,
    WorkspaceSettingsIn,
)
from services.notifier.store import NotifierStore
from services.notifier.templates import handlers as template_handlers
from shared import tracing
from shared.app import Context
from shared.auth import Principal, require_scope
from shared.errors import InvalidInput
from shared.events.notifications import NotificationRequested
from shared.export import EXPORT_PATH, PersonRef
from shared.logs import correlation_id_var

Reader = Annotated[Principal, Depends(require_scope("notifications:read"))]
Writer = Annotated[Principal, Depends(require_scope("notifications:write"))]

router = APIRouter(prefix="/v1", tags=["notifier"])
public = APIRouter(prefix="/v1", tags=["public"])


def now() -> datetime:
    return datetime.now(UTC)


def channel_read(channel: Channel) -> ChannelRead:
    return ChannelRead.model_validate(
        {
            "id": channel.id,
            "name": channel.name,
            "kind": channel.kind,
            "config": channel.config,
            "secrets_set": channel.secret_names,
            "created_at": channel.created_at,
            "updated_at": channel.updated_at,
        }
    )


def template_read(template: Template) -> TemplateRead:
    return TemplateRead(
        id=template.id,
        name=template.name,
        subject=template.subject,
        html=template.html,
        text=template.text,
        blocks=template.blocks,
        created_at=template.created_at,
        updated_at=template.updated_at,
    )


def notification_read(delivery: Delivery, attempts: list[Attempt]) -> NotificationRead:
    return NotificationRead(
        id=delivery.id,
        idempotency_key=delivery.idempotency_key,
        contact_id=delivery.contact_id,
        channel=delivery.channel,
        channel_id=delivery.channel_id,
        kind=delivery.kind,
        purpose=delivery.purpose,
        recipient=delivery.recipient,
        status=delivery.status,
        reason=delivery.reason,
        attempts=delivery.attempts,
        provider_message_id=delivery.provider_message_id,
        created_at=delivery.created_at,
        first_attempt_at=delivery.first_attempt_at,
        finished_at=delivery.finished_at,
        next_attempt_at=delivery.next_attempt_at,
        attempt_log=[
            AttemptRead(
                number=a.number,
                started_at=a.started_at,
                finished_at=a.finished_at,
                outcome=a.outcome,
                status_code=a.status_code,
                response=a.response,
            )
            for a in attempts
        ],
    )


# -- channels ----------------------------------------------------------------------------------


@router.post("/channels", status_code=201)
async def create_channel(body: ChannelIn, principal: Writer, ctx: Context) -> ChannelRead:
    """Configure a channel; secrets are sealed and never returned."""
    rt = runtime_of(ctx)
    async with ctx.uow() as uow:
        channel = await channel_handlers.create_channel(
            principal.workspace, body, NotifierStore(uow.session), rt.box, rt.allow, now()
        )
    return channel_read(channel)


@router.get("/channels")
async def list_channels(principal: Reader, ctx: Context) -> list[ChannelRead]:
    """The workspace's channels (without their secrets)."""
    async with ctx.uow() as uow:
        channels = await NotifierStore(uow.session).channels(principal.workspace)
        return [channel_read(c) for c in channels]


@router.get("/channels/{channel_id}")
async def get_channel(channel_id: str, principal: Reader, ctx: Context) -> ChannelRead:
    """One channel (without its secrets)."""
    async with ctx.uow() as uow:
        channel = await channel_handlers.get_channel(
            principal.workspace, channel_id, NotifierStore(uow.session)
        )
        return channel_read(channel)


@router.put("/channels/{channel_id}")
async def replace_channel(
    channel_id: str, body: ChannelIn, principal: Writer, ctx: Context
) -> ChannelRead:
    """Replace a channel's configuration; secrets left out are kept."""
    rt = runtime_of(ctx)
    async with ctx.uow() as uow:
        channel = await channel_handlers.replace_channel(
            principal.workspace,
            channel_id,
            body,
            NotifierStore(uow.session),
            rt.box,
            rt.allow,
            now(),
        )
    return channel_read(channel)


@router.delete("/channels/{channel_id}", status_code=204)
async def delete_channel(channel_id: str, principal: Writer, ctx: Context) -> Response:
    """Remove a channel; queued deliveries on it fail."""
    async with ctx.uow() as uow:
        await channel_handlers.delete_channel(
            principal.workspace, channel_id, NotifierStore(uow.session)
        )
    return Response(status_code=204)


# -- templates ---------------------------------------------------------------------------------


@router.post("/templates", status_code=201)
async def create_template(body: TemplateIn, principal: Writer, ctx: Context) -> TemplateRead:
    """Save a template; 422 when it has syntax errors, unknown variables or sandbox escapes."""
    async with ctx.uow() as uow:
        template = await template_handlers.create_template(
            principal.workspace, body, NotifierStore(uow.session), now()
        )
    return template_read(template)


@router.get("/templates")
async def list_templates(principal: Reader, ctx: Context) -> list[TemplateRead]:
    """The workspace's templates."""
    async with ctx.uow() as uow:
        templates = await NotifierStore(uow.session).templates(principal.workspace)
        return [template_read(t) for t in templates]


@router.get("/templates/{template_id}")
async def get_template(template_id: str, principal: Reader, ctx: Context) -> TemplateRead:
    """One template."""
    async with ctx.uow() as uow:
        template = await template_handlers.get_template(
            principal.workspace, template_id, NotifierStore(uow.session)
        )
        return template_read(template)


@router.put("/templates/{template_id}")
async def replace_template(
    template_id: str, body: TemplateIn, principal: Writer, ctx: Context
) -> TemplateRead:
    """Replace a template (checked as on creation)."""
    async with ctx.uow() as uow:
        template = await template_handlers.replace_template(
            principal.workspace, template_id, body, NotifierStore(uow.session), now()
        )
    return template_read(template)


@router.delete("/templates/{template_id}", status_code=204)
async def delete_template(template_id: str, principal: Writer, ctx: Context) -> Response:
    """Remove a template."""
    async with ctx.uow() as uow:
        await template_handlers.delete_template(
            principal.workspace, template_id, NotifierStore(uow.session)
        )
    return Response(status_code=204)


@router.post("/templates/{template_id}/preview")
async def preview_template(
    template_id: str, body: PreviewIn, principal: Reader, ctx: Context
) -> Preview:
    """Render a template against a contact of the projection, or sample data."""
    rt = runtime_of(ctx)
    async with ctx.uow() as uow:
        rendered = await template_handlers.preview_template(
            principal.workspace,
            template_id,
            body.contact_id,
            body.variables,
            NotifierStore(uow.session),
            rt.links,
        )
    return Preview.model_validate(rendered)


# -- settings ----------------------------------------------------------------------------------


@router.get("/settings")
async def read_settings(principal: Reader, ctx: Context) -> WorkspaceSettingsIn:
    """The workspace's delivery policy: tracking, daily cap, quiet hours, owners' addresses."""
    async with ctx.uow() as uow:
        values = await handlers.read_settings(principal.workspace, NotifierStore(uow.session))
    return WorkspaceSettingsIn.model_validate(values)


@router.put("/settings")
async def save_settings(
    body: WorkspaceSettingsIn, principal: Writer, ctx: Context
) -> WorkspaceSettingsIn:
    """Replace the workspace's delivery policy."""
    async with ctx.uow() as uow:
        values = await handlers.save_settings(
            principal.workspace, body, NotifierStore(uow.session), now()
        )
    return WorkspaceSettingsIn.model_validate(values)


# -- notifications -----------------------------------------------------------------------------


@router.post("/notifications", status_code=202)
async def request_notification(
    body: NotificationIn, principal: Writer, ctx: Context
) -> NotificationRead:
    """Ask for a notification (as `notification.requested` does); a known key is a no-op."""
    rt = runtime_of(ctx)
    payload = NotificationRequested(**body.model_dump(), requested_by="api")
    admission = rt.worker.admission()
    try:
        async with ctx.uow() as uow:
            store = NotifierStore(uow.session)
            request = intake.Request(
                principal.workspace,
                payload,
                correlation_id_var.get(),
                tracing.current_traceparent(),
            )
            accepted = await intake.accept_requests(
                [request], store, uow, rt.links, now(), admission
            )
    except BaseException:
        admission.cancel()
        raise
    admission.launch(accepted.started)
    rt.worker.wake_at(accepted.due_at)
    async with ctx.uow() as uow:
        store = NotifierStore(uow.session)
        found = await store.list_by_key(principal.workspace, body.idempotency_key)
        attempts = await store.attempts_of([found.id])
        return notification_read(found, attempts[found.id])


def encode_cursor(delivery: Delivery) -> str:
    raw = orjson.dumps([delivery.created_at.isoformat(), delivery.id])
    return base64.urlsafe_b64encode(raw).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        at, last_id = orjson.loads(base64.urlsafe_b64decode(cursor.encode()))
        return datetime.fromisoformat(at), str(last_id)
    except (ValueError, TypeError, orjson.JSONDecodeError) as exc:
        raise InvalidInput(
            "cursor is not valid",
            errors=[{"field": "cursor", "code": "invalid", "message": "unknown cursor"}],
        ) from exc


@router.get("/notifications")
async def list_notifications(
    principal: Reader,
    ctx: Context,
    contact_id: str | None = None,
    status: Annotated[str | None, Query(json_schema_extra={"enum": list(STATUSES)})] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> NotificationPage:
    """The delivery log, newest first, with attempts, timings and provider responses."""
    if status is not None and status not in STATUSES:
        raise InvalidInput(
            f"status must be one of {', '.join(STATUSES)}",
            errors=[{"field": "status", "code": "not_an_option", "message": "unknown status"}],
        )
    before = decode_cursor(cursor) if cursor else None
    async with ctx.uow() as uow:
        store = NotifierStore(uow.session)
        rows = await store.list_deliveries(principal.workspace, contact_id, status, limit, before)
        attempts = await store.attempts_of([r.id for r in rows])
    items = [notification_read(r, attempts[r.id]) for r in rows]
    next_cursor = encode_cursor(rows[-1]) if len(rows) == limit else None
    return NotificationPage(items=items, next_cursor=next_cursor)


@router.get("/notifications/{notification_id}")
async def get_notification(
    notification_id: str, principal: Reader, ctx: Context
) -> NotificationRead:
    """One delivery with its attempts."""
    async with ctx.uow() as uow:
        store = NotifierStore(uow.session)
        delivery = await handlers.get_notification(principal.workspace, notification_id, store)
        attempts = await store.attempts_of([delivery.id])
    return notification_read(delivery, attempts[delivery.id])


# -- suppressions ------------------------------------------------------------------------------


def suppression_read(email: str, row: Suppression) -> SuppressionRead:
    return SuppressionRead(
        email=handlers.normalised_email(email),
        reason=row.reason,
        detail=row.detail,
        contact_id=row.contact_id,
        created_at=row.created_at,
    )


EmailParam = Annotated[str, Query(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")]


@router.post("/suppressions", status_code=201)
async def add_suppression(body: SuppressionIn, principal: Writer, ctx: Context) -> SuppressionRead:
    """Suppress an address for marketing mail (a complaint, bounce or unsubscribe reported
    from elsewhere); a complaint or unsubscribe also marks the contact unsubscribed."""
    rt = runtime_of(ctx)
    async with ctx.uow() as uow:
        row = await handlers.add_suppression(
            principal.workspace,
            body.email,
            body.reason,
            body.detail,
            NotifierStore(uow.session),
            uow,
            rt.links,
            now(),
        )
        return suppression_read(body.email, row)


@router.get("/suppressions")
async def list_suppressions(
    principal: Reader, ctx: Context, email: EmailParam
) -> list[SuppressionRead]:
    """The workspace's suppression of an address, if any (stored under a keyed hash, so
    looked up by the address, never listed in the clear)."""
    async with ctx.uow() as uow:
        row = await handlers.find_suppression(
            principal.workspace, email, NotifierStore(uow.session), runtime_of(ctx).links
        )
        return [] if row is None else [suppression_read(email, row)]


@router.delete("/suppressions/{email}", status_code=204)
async def lift_suppression(email: str, principal: Writer, ctx: Context) -> Response:
    """Lift an address's suppression: it may get marketing mail again."""
    async with ctx.uow() as uow:
        await handlers.lift_suppression(
            principal.workspace, email, NotifierStore(uow.session), runtime_of(ctx).links
        )
    return Response(status_code=204)


# -- public: unsubscribe -----------------------------------------------------------------------

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>Unsubscribe</title></head>
<body><h1>{title}</h1><p>{text}</p>{form}</body></html>"""


@public.get("/unsubscribe/{token}", response_class=HTMLResponse)
async def unsubscribe_page(token: str, ctx: Context) -> HTMLResponse:
    """A page confirming the unsubscribe with one button (mail scanners that follow links
    must not unsubscribe anyone, so a GET changes nothing)."""
    if not handlers.check_unsubscribe_token(token, runtime_of(ctx).links):
        raise handlers.InvalidToken("this unsubscribe link is not valid")
    form = (
        f'<form method="post" action="/v1/unsubscribe/{html.escape(token)}">'
        '<button type="submit">Unsubscribe</button></form>'
    )
    body = PAGE.format(
        title="Unsubscribe", text="You will no longer receive marketing e-mail from us.", form=form
    )
    return HTMLResponse(body)


@public.post("/unsubscribe/{token}")
async def unsubscribe(token: str, ctx: Context) -> UnsubscribeResult:
    """One-click unsubscribe (RFC 8058): the address gets no more marketing mail."""
    rt = runtime_of(ctx)
    async with ctx.uow() as uow:
        await handlers.unsubscribe(token, NotifierStore(uow.session), uow, rt.links, now())
    return UnsubscribeResult(status="unsubscribed")


__all__ = ["public", "router"]


# -- a person's data, for contacts' export (see shared.export) ---------------------------------


@router.post(EXPORT_PATH.removeprefix("/v1"))
async def export_person(
    ref: PersonRef,
    ctx: Context,
    principal: Annotated[Principal, Depends(require_scope("contacts:read"))],
) -> dict[str, Any]:
    """Everything notifier holds on a person: projection, messages with attempts, suppressions."""
    async with ctx.uow() as uow:
        return await handlers.export_person(
            principal.workspace,
            [ref.contact_id, *ref.merged_ids],
            NotifierStore(uow.session),
            runtime_of(ctx).links,
        )

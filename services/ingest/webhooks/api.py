"""The webhooks routes: senders registered, and their signed posts received."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse, Response

from services.ingest import handlers as shared
from services.ingest.bodies import read_limited
from services.ingest.handlers import Raw
from services.ingest.models import WebhookSource
from services.ingest.runtime import Runtime_
from services.ingest.schemas import (
    SubmissionAccepted,
    WebhookSourceCreate,
    WebhookSourceCreated,
    WebhookSourceRead,
    WebhookSourceUpdate,
)
from services.ingest.store import transaction
from services.ingest.webhooks import handlers
from shared.app import Context
from shared.auth import Principal, require_scope
from shared.openapi import problems

router = APIRouter(tags=["ingest"])
public = APIRouter(tags=["public"])


def webhook_read(source: WebhookSource, request: Request) -> dict[str, Any]:
    return {
        "id": source.id,
        "name": source.name,
        "mapping": source.mapping,
        "default_region": source.default_region,
        "url": f"{str(request.base_url).rstrip('/')}/v1/webhooks/{source.id}",
        "created_at": source.created_at,
        "updated_at": source.updated_at,
    }


@router.post("/v1/webhook-sources", status_code=201)
async def create_webhook_source(
    body: WebhookSourceCreate,
    request: Request,
    ctx: Context,
    principal: Annotated[Principal, Depends(require_scope("webhooks:write"))],
) -> WebhookSourceCreated:
    """Register a webhook sender; the answer shows its signing secret, once."""
    async with transaction(ctx.uow()) as tx:
        source = await handlers.create_webhook_source(body, principal.workspace, tx)
    return WebhookSourceCreated(**webhook_read(source, request), secret=source.secret)


@router.get("/v1/webhook-sources")
async def list_webhook_sources(
    request: Request,
    ctx: Context,
    principal: Annotated[Principal, Depends(require_scope("webhooks:read"))],
) -> list[WebhookSourceRead]:
    """List the workspace's webhook senders."""
    async with transaction(ctx.uow()) as tx:
        sources = await handlers.list_webhook_sources(principal.workspace, tx)
    return [WebhookSourceRead(**webhook_read(s, request)) for s in sources]


@router.get("/v1/webhook-sources/{source_id}")
async def get_webhook_source(
    source_id: str,
    request: Request,
    ctx: Context,
    principal: Annotated[Principal, Depends(require_scope("webhooks:read"))],
) -> WebhookSourceRead:
    """One webhook sender and its field mapping."""
    async with transaction(ctx.uow()) as tx:
        source = await handlers.get_webhook_source(source_id, principal.workspace, tx)
    return WebhookSourceRead(**webhook_read(source, request))


@router.patch("/v1/webhook-sources/{source_id}")
async def update_webhook_source(
    source_id: str,
    body: WebhookSourceUpdate,
    request: Request,
    ctx: Context,
    principal: Annotated[Principal, Depends(require_scope("webhooks:write"))],
) -> WebhookSourceRead:
    """Change a webhook sender's name, mapping or default phone region."""
    async with transaction(ctx.uow()) as tx:
        source = await handlers.update_webhook_source(source_id, body, principal.workspace, tx)
    return WebhookSourceRead(**webhook_read(source, request))


@router.delete("/v1/webhook-sources/{source_id}", status_code=204)
async def delete_webhook_source(
    source_id: str,
    ctx: Context,
    principal: Annotated[Principal, Depends(require_scope("webhooks:write"))],
) -> Response:
    """Retire a webhook sender; its posts answer 404 from now on."""
    async with transaction(ctx.uow()) as tx:
        await handlers.delete_webhook_source(source_id, principal.workspace, tx)
    return Response(status_code=204)


@public.post(
    "/v1/webhooks/{source_id}",
    status_code=202,
    response_model=SubmissionAccepted,
    responses=problems(403, 409, 413, 415, 429),
)
async def receive_webhook(
    source_id: str,
    request: Request,
    ctx: Context,
    rt: Runtime_,
    webhook_id: Annotated[str | None, Header()] = None,
    webhook_timestamp: Annotated[str | None, Header()] = None,
    webhook_signature: Annotated[str | None, Header()] = None,
) -> Response:
    """A signed server-to-server post (Standard Webhooks), mapped onto a lead."""
    body = await read_limited(request, rt.settings.ingest_max_body_bytes)
    raw = Raw(
        request.headers.get("content-type", "application/json"),
        body,
        request.client.host if request.client else None,
        request.headers.get("origin"),
    )
    signed = shared.Signature(webhook_id, webhook_timestamp, webhook_signature)
    async with transaction(ctx.uow()) as tx:
        outcome = await handlers.capture_webhook(
            handlers.WebhookPost(source_id, signed, raw, rt.admit_workspace), tx
        )
    if outcome.status == "rejected":
        raise shared.invalid(outcome.problems, submission_id=outcome.submission_id)
    return JSONResponse(SubmissionAccepted(submission_id=outcome.submission_id).model_dump(), 202)

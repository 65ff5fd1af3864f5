"""The leads routes: leads and engagement events pushed over the API."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse, Response
from pydantic import TypeAdapter, ValidationError

from services.ingest import handlers as shared
from services.ingest.bodies import invalid_body, read_limited
from services.ingest.handlers import Raw
from services.ingest.leads import handlers
from services.ingest.runtime import Runtime_
from services.ingest.schemas import (
    EngagementAccepted,
    EngagementBatch,
    LeadBatch,
    LeadIn,
    LeadsAccepted,
    SubmissionAccepted,
)
from services.ingest.store import KeyTaken, transaction
from shared.app import Context
from shared.auth import Principal, require_scope
from shared.errors import InvalidInput
from shared.openapi import inline_schema, problems

router = APIRouter(tags=["ingest"])


API_MAX_BODY = 8 * 1024 * 1024  # a batch of 500 leads


EVENTS_MAX_BODY = 8 * 1024 * 1024  # a batch of 1,000 events


# The body is read by hand (size limit, one lead or a batch), so its schema is given here.
LEADS_BODY_SCHEMA = inline_schema(TypeAdapter(LeadIn | LeadBatch).json_schema())


@router.post(
    "/v1/leads",
    status_code=202,
    response_model=LeadsAccepted | SubmissionAccepted,
    responses=problems(409, 413, 429),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": LEADS_BODY_SCHEMA}},
        }
    },
)
async def post_leads(
    request: Request,
    ctx: Context,
    rt: Runtime_,
    principal: Annotated[Principal, Depends(require_scope("leads:write"))],
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> Response:
    """Push one lead, or `{"leads": [...]}` (up to 500, all or nothing); Idempotency-Key 24 h."""
    rt.admit_workspace(principal.workspace)
    body = await read_limited(request, API_MAX_BODY)
    payload = shared.parse_json(body)
    batch = isinstance(payload, dict) and "leads" in payload
    try:
        leads = (
            LeadBatch.model_validate(payload).leads if batch else [LeadIn.model_validate(payload)]
        )
    except ValidationError as exc:
        raise invalid_body(exc) from exc
    raw = Raw("application/json", body, request.client.host if request.client else None)
    cmd = handlers.LeadsPost(principal.workspace, leads, batch, raw, idempotency_key)
    try:
        async with transaction(ctx.uow()) as tx:
            answer = await handlers.capture_leads(cmd, tx)
    except KeyTaken:
        async with transaction(ctx.uow()) as tx:
            replay = await handlers.replay_idempotent(
                principal.workspace, idempotency_key or "", body, tx
            )
        if replay is None:
            raise
        answer = replay
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else {}
    if answer.status_code == 422:
        raise InvalidInput(
            answer.body["detail"],
            errors=answer.body["errors"],
            submission_ids=answer.body["submission_ids"],
            headers=headers,
        )
    return JSONResponse(answer.body, status_code=answer.status_code, headers=headers)


@router.post(
    "/v1/events",
    status_code=202,
    max_body_size=EVENTS_MAX_BODY,
    responses=problems(413, 429),
)
async def post_events(
    body: EngagementBatch,
    ctx: Context,
    rt: Runtime_,
    principal: Annotated[Principal, Depends(require_scope("events:write"))],
) -> EngagementAccepted:
    """Publish engagement events (up to 1,000) on `leadwire.engagement.v1`, all or nothing."""
    rt.admit_workspace(principal.workspace)
    async with transaction(ctx.uow()) as tx:
        ids = await handlers.publish_engagement(principal.workspace, body.events, tx)
    return EngagementAccepted(accepted=len(ids), engagement_ids=ids)

"""The quarantine routes: rejected and spam submissions listed and released."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from services.ingest import domain
from services.ingest import handlers as shared
from services.ingest.cursor import decode_cursor, encode_cursor
from services.ingest.models import Submission
from services.ingest.quarantine import handlers
from services.ingest.schemas import (
    QuarantineItem,
    QuarantinePage,
    ReleaseResult,
)
from services.ingest.store import transaction
from shared.app import Context
from shared.auth import Principal, require_scope

router = APIRouter(tags=["ingest"])


def quarantine_item(row: Submission) -> QuarantineItem:
    return QuarantineItem(
        id=row.id,
        source=row.source,
        source_id=row.source_id,
        status=row.status,
        reason=row.reason,
        errors=row.errors or [],
        content_type=row.content_type,
        data=row.data,
        client_address=row.client_address,
        origin=row.origin,
        created_at=row.created_at,
    )


@router.get("/v1/quarantine")
async def list_quarantine(
    ctx: Context,
    principal: Annotated[Principal, Depends(require_scope("quarantine:read"))],
    reason: str | None = None,
    source: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> QuarantinePage:
    """Rejected and spam submissions awaiting a decision, newest first."""
    before = decode_cursor(cursor) if cursor else None
    async with transaction(ctx.uow()) as tx:
        rows = await handlers.list_quarantine(
            principal.workspace, limit, tx, reason=reason, source=source, before=before
        )
    next_cursor = encode_cursor(rows[-1].created_at, rows[-1].id) if len(rows) == limit else None
    return QuarantinePage(items=[quarantine_item(r) for r in rows], next_cursor=next_cursor)


@router.post("/v1/quarantine/{submission_id}/release")
async def release_submission(
    submission_id: str,
    ctx: Context,
    principal: Annotated[Principal, Depends(require_scope("quarantine:write"))],
) -> ReleaseResult:
    """Re-run a quarantined submission against today's definition; publish it when valid."""
    async with transaction(ctx.uow()) as tx:
        result = await handlers.release_submission(principal.workspace, submission_id, tx)
    if isinstance(result, domain.Rejected):
        raise shared.invalid(result.problems, submission_id=submission_id)
    return ReleaseResult(
        submission_id=result.submission_id, status="released", dedupe_key=result.dedupe_key
    )

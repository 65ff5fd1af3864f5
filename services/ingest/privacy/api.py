"""The privacy route: what ingest holds on a person, for contacts' export (see shared.export)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from services.ingest.privacy import handlers as privacy_handlers
from services.ingest.store import transaction
from shared.app import Context
from shared.auth import Principal, require_scope
from shared.export import EXPORT_PATH, PersonRef

router = APIRouter(tags=["ingest"])


@router.post(EXPORT_PATH)
async def export_person(
    ref: PersonRef,
    ctx: Context,
    principal: Annotated[Principal, Depends(require_scope("contacts:read"))],
) -> dict[str, Any]:
    """Everything ingest holds on a person: submissions, idempotency records, pending events."""
    async with transaction(ctx.uow()) as tx:
        return await privacy_handlers.export_person(principal.workspace, ref, tx)

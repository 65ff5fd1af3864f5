"""`POST /v1/exports/person`: workflows's part of a person's export (`shared.export`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from services.workflows.exports import handlers
from services.workflows.store import WorkflowsStore
from shared.app import Context
from shared.auth import Principal, require_scope
from shared.export import EXPORT_PATH, PersonRef


def router() -> APIRouter:
    api = APIRouter(tags=["exports"])

    @api.post(EXPORT_PATH)
    async def export_person(
        ref: PersonRef,
        ctx: Context,
        principal: Annotated[Principal, Depends(require_scope("contacts:read"))],
    ) -> dict[str, Any]:
        """Everything workflows holds on a person: projection, runs and history, effects sent,
        timers and submissions."""
        async with ctx.sessions() as session:
            return await handlers.export_person(
                principal.workspace,
                [ref.contact_id, *ref.merged_ids],
                ref.submission_ids,
                WorkflowsStore(session),
            )

    return api

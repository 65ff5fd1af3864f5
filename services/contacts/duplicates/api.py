"""The duplicates routes: candidates, and merging two contacts into one."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from services.contacts.api import Reader, Writer, contact_read
from services.contacts.duplicates import handlers
from services.contacts.schemas import ContactRead, MergeIn
from services.contacts.store import transaction
from shared.app import Context
from shared.clock import Clock
from shared.openapi import problems


def router(clock: Clock) -> APIRouter:
    """The duplicates routes, reading the time from `clock` (injected, so tests can move it)."""
    api = APIRouter(prefix="/v1", tags=["contacts"])

    @api.get("/contacts/duplicates")
    async def duplicates(
        ctx: Context, who: Reader, threshold: Annotated[float, Query(ge=50, le=100)] = 85
    ) -> list[dict[str, Any]]:
        """Likely duplicates beyond exact matches, with a similarity score; never auto-merged."""
        async with transaction(ctx.uow()) as tx:
            return await handlers.list_duplicates(who.workspace, tx, threshold)

    @api.post("/contacts/merge", responses=problems(404, 409))
    async def merge(body: MergeIn, ctx: Context, who: Writer) -> ContactRead:
        """Merge `merged_id` into `survivor_id`; the merged id then redirects to the survivor."""
        async with transaction(ctx.uow()) as tx:
            contact = await handlers.merge_contacts(
                who.workspace, body.survivor_id, body.merged_id, body.choices, tx, clock()
            )
            return await contact_read(contact, tx)

    return api

"""The privacy routes: a person erased or exported."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from services.contacts.api import Reader, Writer
from services.contacts.privacy import handlers
from services.contacts.store import transaction
from shared import export
from shared.app import Context
from shared.clock import Clock
from shared.erasure import checkpoint


def router(clock: Clock) -> APIRouter:
    """The privacy routes, reading the time from `clock` (injected, so tests can move it)."""
    api = APIRouter(prefix="/v1", tags=["contacts"])

    @api.delete("/contacts/{contact_id}", status_code=204)
    async def erase_contact(contact_id: str, ctx: Context, who: Writer) -> Response:
        """Erase every piece of personal data held on the contact; publishes a tombstone."""
        async with transaction(ctx.uow()) as tx:
            await handlers.erase_contact(who.workspace, contact_id, tx, clock())
        await checkpoint(ctx.engine)  # committed: leave no copy in SQLite's write-ahead log
        return Response(status_code=204)

    @api.get("/contacts/{contact_id}/export")
    async def export_contact(
        contact_id: str, request: Request, ctx: Context, who: Reader
    ) -> dict[str, Any]:
        """Everything the product holds on the person, from every service, as one document
        (data subject access); 503 while a service holding data cannot answer."""
        async with transaction(ctx.uow()) as tx:
            document = await handlers.export_contact(who.workspace, contact_id, tx)
            ref = await handlers.person_ref(who.workspace, contact_id, tx)
        parts, absent = await export.gather(
            ref,
            export.service_urls(ctx.settings.service_urls, ctx.settings.host),
            request.headers["authorization"],
            # Tests route the calls to in-process apps; otherwise plain HTTP.
            transport=getattr(request.app.state, "export_transport", None),
        )
        return document | {"services": parts, "not_exported": absent}

    return api

"""Composition root of the ingest service."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from services.ingest import consumers, handlers, tracking
from services.ingest.forms import api as forms
from services.ingest.leads import api as leads
from services.ingest.models import Base
from services.ingest.privacy import api as privacy
from services.ingest.quarantine import api as quarantine
from services.ingest.runtime import forget, runtime_of
from services.ingest.settings import IngestSettings
from services.ingest.store import transaction
from services.ingest.webhooks import api as webhooks
from shared.app import ServiceContext, ServiceSpec, create_app
from shared.bus import Bus
from shared.hot_routes import HotRoute
from shared.settings import Settings

log = logging.getLogger(__name__)


def background(ctx: ServiceContext) -> Sequence[Callable[[], Coroutine[Any, Any, None]]]:
    """The group commit's writers of form posts, and the housekeeping."""

    async def forget_expired() -> None:
        """Every minute: drop idempotency keys past 24 h and webhook ids past their window."""
        try:
            while True:
                await asyncio.sleep(60)
                try:
                    async with transaction(ctx.uow()) as tx:
                        await handlers.forget_expired(tx)
                except Exception:
                    log.warning("ingest housekeeping failed, will retry", exc_info=True)
        finally:
            forget(ctx)  # the service stops: so does what it kept between requests

    return (forget_expired, *runtime_of(ctx).writer.loops())


SPEC = ServiceSpec(
    name="ingest",
    port=8001,
    metadata=Base.metadata,
    migrations=Path(__file__).parent / "migrations",
    routers=(
        forms.public,
        webhooks.public,
        forms.router,
        webhooks.router,
        leads.router,
        quarantine.router,
        privacy.router,
        tracking.router,
    ),
    # The public submission route is the hot path: served ahead of the middleware stack.
    hot_routes=(HotRoute("POST", "/v1/forms/{form_id}/submissions", forms.submit_form_hot),),
    subscriptions=consumers.subscriptions,
    background=background,
    settings_factory=IngestSettings,
)


def app(settings: Settings | None = None, bus: Bus | None = None) -> FastAPI:
    return create_app(SPEC, settings, bus)

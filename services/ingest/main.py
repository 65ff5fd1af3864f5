"""Composition root of the ingest service."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from services.ingest import api, consumers, handlers, tracking
from services.ingest.models import Base
from services.ingest.settings import IngestSettings
from shared.app import ServiceContext, ServiceSpec, create_app
from shared.bus import Bus
from shared.hot_routes import HotRoute
from shared.settings import Settings

log = logging.getLogger(__name__)


def background(ctx: ServiceContext) -> Sequence[Callable[[], Coroutine[Any, Any, None]]]:
    async def forget_expired() -> None:
        """Every minute: drop idempotency keys past 24 h and webhook ids past their window."""
        while True:
            await asyncio.sleep(60)
            try:
                async with ctx.uow() as uow:
                    await handlers.forget_expired(uow)
            except Exception:
                log.warning("ingest housekeeping failed, will retry", exc_info=True)

    return (forget_expired,)


SPEC = ServiceSpec(
    name="ingest",
    port=8001,
    metadata=Base.metadata,
    migrations=Path(__file__).parent / "migrations",
    routers=(api.public, api.router, tracking.router),
    # The public submission route is the hot path: served ahead of the middleware stack.
    hot_routes=(HotRoute("POST", "/v1/forms/{form_id}/submissions", api.submit_form_hot),),
    subscriptions=consumers.subscriptions,
    background=background,
    settings_factory=IngestSettings,
)


def app(settings: Settings | None = None, bus: Bus | None = None) -> FastAPI:
    return create_app(SPEC, settings, bus)

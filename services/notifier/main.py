"""Composition root of the notifier service."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from services.notifier import api
from services.notifier.consumers import contacts_subscription, requests_subscription
from services.notifier.models import Base
from services.notifier.runtime import forget, runtime_of
from services.notifier.settings import NotifierSettings
from shared.app import ServiceContext, ServiceSpec, create_app
from shared.bus import Bus, Subscription
from shared.settings import Settings


def subscriptions(ctx: ServiceContext) -> Sequence[Subscription]:
    rt = runtime_of(ctx)
    return [requests_subscription(ctx, rt.links, rt.worker), contacts_subscription(ctx, rt.worker)]


def background(ctx: ServiceContext) -> Sequence[Callable[[], Coroutine[Any, Any, None]]]:
    async def deliver() -> None:
        """The delivery worker, for as long as the service runs."""
        rt = runtime_of(ctx)
        try:
            await rt.worker.run()
        finally:
            await rt.close()
            forget(ctx)

    return (deliver,)


SPEC = ServiceSpec(
    name="notifier",
    port=8004,
    metadata=Base.metadata,
    migrations=Path(__file__).parent / "migrations",
    routers=(api.public, api.router),
    subscriptions=subscriptions,
    background=background,
    settings_factory=NotifierSettings,
)


def app(settings: Settings | None = None, bus: Bus | None = None) -> FastAPI:
    return create_app(SPEC, settings, bus)

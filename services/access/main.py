"""Composition root of the access service: workspaces and API keys."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.access import api
from services.access.consumers import subscriptions
from services.access.models import Base
from shared.app import ServiceSpec, create_app
from shared.bus import Bus
from shared.settings import Settings

SPEC = ServiceSpec(
    name="access",
    port=8006,
    metadata=Base.metadata,
    migrations=Path(__file__).parent / "migrations",
    routers=(api.router,),
    subscriptions=subscriptions,
)


def app(settings: Settings | None = None, bus: Bus | None = None) -> FastAPI:
    return create_app(SPEC, settings, bus)

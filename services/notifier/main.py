"""Composition root of the notifier service."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.notifier.consumers import subscriptions
from services.notifier.models import Base
from shared.app import ServiceSpec, create_app
from shared.bus import Bus
from shared.settings import Settings

SPEC = ServiceSpec(
    name="notifier",
    port=8004,
    metadata=Base.metadata,
    migrations=Path(__file__).parent / "migrations",
    subscriptions=subscriptions,
)


def app(settings: Settings | None = None, bus: Bus | None = None) -> FastAPI:
    return create_app(SPEC, settings, bus)

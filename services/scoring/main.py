"""Composition root of the scoring service."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.scoring.consumers import subscriptions
from services.scoring.models import Base
from shared.app import ServiceSpec, create_app
from shared.bus import Bus
from shared.settings import Settings

SPEC = ServiceSpec(
    name="scoring",
    port=8005,
    metadata=Base.metadata,
    migrations=Path(__file__).parent / "migrations",
    subscriptions=subscriptions,
)


def app(settings: Settings | None = None, bus: Bus | None = None) -> FastAPI:
    return create_app(SPEC, settings, bus)

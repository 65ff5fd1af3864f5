"""Composition root of the ingest service."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.ingest.models import Base
from shared.app import ServiceSpec, create_app
from shared.bus import Bus
from shared.settings import Settings

SPEC = ServiceSpec(
    name="ingest",
    port=8001,
    metadata=Base.metadata,
    migrations=Path(__file__).parent / "migrations",
)


def app(settings: Settings | None = None, bus: Bus | None = None) -> FastAPI:
    return create_app(SPEC, settings, bus)

"""Composition root of the scoring service."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.scoring.api import router
from services.scoring.consumers import background, subscriptions
from services.scoring.models import Base
from services.scoring.settings import ScoringSettings
from shared.app import ServiceSpec, create_app
from shared.bus import Bus
from shared.clock import Clock, service_clock, system_clock
from shared.settings import Settings


def build_spec(clock: Clock = system_clock) -> ServiceSpec:
    """The service, reading the time from `clock` (tests inject one they can move)."""
    return ServiceSpec(
        name="scoring",
        port=8005,
        metadata=Base.metadata,
        migrations=Path(__file__).parent / "migrations",
        routers=[router(clock)],
        subscriptions=subscriptions(clock),
        background=background(clock),
        settings_factory=ScoringSettings,
    )


# The system clock, or the one an end-to-end test moves (shared/clock.py).
SPEC = build_spec(service_clock())


def app(settings: Settings | None = None, bus: Bus | None = None) -> FastAPI:
    return create_app(SPEC, settings, bus)

"""Composition root of the workflows service."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.workflows.consumers import background, subscriptions
from services.workflows.definitions.api import router as definitions_router
from services.workflows.doors import Doors
from services.workflows.exports.api import router as exports_router
from services.workflows.models import Base
from services.workflows.recipes.api import router as recipes_router
from services.workflows.runs.api import router as runs_router
from services.workflows.settings import WorkflowsSettings
from shared.app import ServiceSpec, create_app
from shared.bus import Bus
from shared.clock import Clock, service_clock, system_clock
from shared.settings import Settings


def build_spec(
    clock: Clock = system_clock, doors: Doors | None = None, timer_loop: bool = True
) -> ServiceSpec:
    """The service, reading the time from `clock` (tests inject one they can move and fire
    the timers themselves, `timer_loop=False`)."""
    doors = doors or Doors(clock)
    return ServiceSpec(
        name="workflows",
        port=8003,
        metadata=Base.metadata,
        migrations=Path(__file__).parent / "migrations",
        routers=[
            recipes_router(doors),
            definitions_router(doors),
            runs_router(doors),
            exports_router(),
        ],
        subscriptions=subscriptions(doors),
        background=background(doors, timer_loop),
        settings_factory=WorkflowsSettings,
    )


# The system clock, or the one an end-to-end test moves (shared/clock.py).
SPEC = build_spec(service_clock())


def app(settings: Settings | None = None, bus: Bus | None = None) -> FastAPI:
    return create_app(SPEC, settings, bus)

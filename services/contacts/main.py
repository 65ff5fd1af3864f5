"""Composition root of the contacts service."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.contacts.consumers import background, subscriptions
from services.contacts.duplicates import api as duplicates
from services.contacts.models import Base
from services.contacts.owners import api as owners
from services.contacts.people import api as people
from services.contacts.privacy import api as privacy
from services.contacts.reports import api as reports
from services.contacts.segments import api as segments
from services.contacts.settings import ContactsSettings
from shared.app import ServiceSpec, create_app
from shared.bus import Bus
from shared.clock import Clock, service_clock, system_clock
from shared.settings import Settings


def build_spec(clock: Clock = system_clock, sweep_interval_s: float | None = None) -> ServiceSpec:
    """The service, reading the time from `clock` (tests inject one they can move)."""
    return ServiceSpec(
        name="contacts",
        port=8002,
        metadata=Base.metadata,
        migrations=Path(__file__).parent / "migrations",
        # Duplicates first: `/contacts/duplicates` must match before `/contacts/{contact_id}`.
        routers=[
            area.router(clock) for area in (duplicates, people, privacy, owners, segments, reports)
        ],
        subscriptions=subscriptions(clock),
        background=background(clock, sweep_interval_s),
        settings_factory=ContactsSettings,
    )


# The system clock, or the one an end-to-end test moves (shared/clock.py).
SPEC = build_spec(service_clock())


def app(settings: Settings | None = None, bus: Bus | None = None) -> FastAPI:
    return create_app(SPEC, settings, bus)

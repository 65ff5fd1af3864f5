"""The contacts app on SQLite and the in-process bus, with a clock the tests move."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.contacts.main import build_spec
from shared.app import create_app
from shared.bus.memory import MemoryBus
from shared.events import topics
from shared.events.contacts import parse_contact_event
from shared.events.envelope import Envelope, EventPayload
from shared.events.ingest import LeadCaptured
from tests.helpers import embedded_settings, eventually, running, token


class FakeClock:
    """A clock the test sets and moves; the service reads the time only through it."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def random_email(prefix: str = "p") -> str:
    return f"{prefix}.{uuid.uuid4().hex[:8]}@example.com"


def lead(workspace: str, **fields: Any) -> Envelope:
    """A `lead.captured` envelope as ingest publishes it."""
    email, phone = fields.get("email"), fields.get("phone")
    payload = LeadCaptured(
        submission_id=uuid.uuid4().hex,
        source="form",
        dedupe_key=f"email:{email}" if email else f"phone:{phone}",
        captured_at=fields.pop("captured_at", datetime.now(UTC)),
        **fields,
    )
    return Envelope.of(payload, source="/leadwire/ingest", workspace=workspace)


@dataclass
class Service:
    app: FastAPI
    client: httpx.AsyncClient
    clock: FakeClock
    workspace: str
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def bus(self) -> MemoryBus:
        bus: MemoryBus = self.app.state.ctx.bus
        return bus

    async def publish(self, topic: str, envelope: Envelope, key: str | None = None) -> None:
        await self.bus.publish(topic, key or f"{envelope.workspace}:{envelope.id}", envelope)

    async def capture(self, **fields: Any) -> Envelope:
        envelope = lead(self.workspace, **fields)
        # Keyed like ingest keys it, so one person's captures stay in order on one partition.
        key = topics.contact_key(self.workspace, envelope.data["dedupe_key"])
        await self.publish(topics.LEADS, envelope, key)
        return envelope

    async def processed(self, group: str, envelope: Envelope) -> None:
        """Wait until the consumer group committed past this event (or dead-lettered it)."""
        bus = self.bus

        async def done() -> bool:
            consumed = bus.consumed(f"contacts.{group}")
            return any(Envelope.from_bytes(r.value).id == envelope.id for r in consumed)

        await eventually(done, timeout=20)

    async def captured(self, **fields: Any) -> dict[str, Any]:
        """Capture a lead, wait for it, and return the contact it landed on."""
        envelope = await self.capture(**fields)
        await self.processed("leads", envelope)
        for name in ("email", "phone"):
            if not fields.get(name):
                continue
            response = await self.client.get(
                "/v1/contacts/lookup", params={name: fields[name]}, headers=self.headers
            )
            if response.status_code == 200:
                break
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def events(self, *types: str) -> list[Envelope]:
        """Contact events published so far (after the outbox relay ran)."""
        await self.app.state.ctx.relay.publish_pending()
        found = [Envelope.from_bytes(r.value) for r in self.bus.records(topics.CONTACTS)]
        return [e for e in found if not types or e.type in types]

    async def payloads(self, *types: str) -> list[EventPayload]:
        return [parse_contact_event(e) for e in await self.events(*types)]


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    clock = FakeClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    spec = build_spec(clock, sweep_interval_s=3600)
    app = create_app(spec, embedded_settings(tmp_path))
    # contacts alone: an export finds no other service (none answers its export route).
    app.state.export_transport = httpx.MockTransport(lambda _: httpx.Response(404))
    workspace = f"ws-{uuid.uuid4().hex[:8]}"
    async with running(app) as client:
        yield Service(
            app, client, clock, workspace, token(workspace, "contacts:read", "contacts:write")
        )

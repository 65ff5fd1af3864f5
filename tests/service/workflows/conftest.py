"""The workflows app on SQLite and the in-process bus, with a clock the tests move and timers
the tests fire."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.workflows.doors import Doors, limits_of
from services.workflows.engine.timers import fire_once
from services.workflows.main import build_spec
from shared.app import create_app
from shared.bus.memory import MemoryBus
from shared.events import topics
from shared.events.contacts import ContactCreated, ContactSnapshot, ContactUpdated, FieldChange
from shared.events.envelope import Envelope, EventPayload
from tests.helpers import embedded_settings, eventually, running, token


class FakeClock:
    """A clock the test sets and moves; the service reads the time only through it."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def new_id(prefix: str = "c") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def snapshot(contact_id: str, now: datetime, **fields: Any) -> ContactSnapshot:
    values: dict[str, Any] = {
        "id": contact_id,
        "email": f"{contact_id}@example.com",
        "first_name": "Ada",
        "lifecycle_stage": "lead",
        "subscription_status": "subscribed",
        "created_at": now,
        "updated_at": now,
    }
    return ContactSnapshot.model_validate(values | fields)


@dataclass
class Service:
    app: FastAPI
    client: httpx.AsyncClient
    clock: FakeClock
    workspace: str
    headers: dict[str, str] = field(default_factory=dict)
    contacts: dict[str, ContactSnapshot] = field(default_factory=dict)

    @property
    def bus(self) -> MemoryBus:
        bus: MemoryBus = self.app.state.ctx.bus
        return bus

    async def publish(
        self, topic: str, payload: EventPayload, contact_id: str, workspace: str | None = None
    ) -> Envelope:
        """Publish an event as its producer would, and wait until workflows handled it."""
        envelope = Envelope.of(payload, source="/test", workspace=workspace or self.workspace)
        return await self.deliver(topic, envelope, contact_id)

    async def deliver(self, topic: str, envelope: Envelope, contact_id: str) -> Envelope:
        """Publish a ready envelope (a replay of an old one, say) and wait until handled."""
        await self.bus.publish(topic, topics.contact_key(envelope.workspace, contact_id), envelope)
        group = {
            topics.CONTACTS: "contacts",
            topics.LEADS: "leads",
            topics.ENGAGEMENT: "engagement",
            topics.SCORES: "scores",
            topics.NOTIFICATIONS: "notifications",
        }[topic]

        async def done() -> bool:
            consumed = self.bus.consumed(f"workflows.{group}")
            dead = await self.bus.dead_letters(topic)
            return any(Envelope.from_bytes(r.value).id == envelope.id for r in [*consumed, *dead])

        await eventually(done, timeout=20)
        return envelope

    async def create_contact(self, workspace: str | None = None, **fields: Any) -> str:
        contact_id = new_id()
        snap = snapshot(contact_id, self.clock(), **fields)
        self.contacts[contact_id] = snap
        await self.publish(
            topics.CONTACTS, ContactCreated(contact=snap, cause="api"), contact_id, workspace
        )
        return contact_id

    async def update_contact(self, contact_id: str, **fields: Any) -> None:
        before = self.contacts[contact_id]
        after = before.model_copy(update=fields | {"updated_at": self.clock()})
        self.contacts[contact_id] = after
        changes = {
            name: FieldChange(before=getattr(before, name), after=value)
            for name, value in fields.items()
            if getattr(before, name) != value
        }
        await self.publish(
            topics.CONTACTS,
            ContactUpdated(contact_id=contact_id, changes=changes, contact=after, cause="api"),
            contact_id,
        )

    async def fire_timers(self) -> int:
        ctx = self.app.state.ctx
        return await fire_once(ctx, self.clock, limits_of(ctx.settings), 500)

    async def advance(self, **delta: float) -> int:
        """Move the clock and fire what came due."""
        self.clock.advance(**delta)
        return await self.fire_timers()

    async def workflow(self, document: dict[str, Any], enabled: bool = True) -> str:
        response = await self.client.post(
            "/v1/workflows", json=document, params={"enabled": enabled}, headers=self.headers
        )
        assert response.status_code == 201, response.text
        workflow_id: str = response.json()["id"]
        return workflow_id

    async def runs(self, workflow_id: str) -> list[dict[str, Any]]:
        response = await self.client.get(
            f"/v1/workflows/{workflow_id}/enrollments", headers=self.headers
        )
        assert response.status_code == 200, response.text
        items: list[dict[str, Any]] = response.json()["items"]
        return items

    async def run(self, enrollment_id: str) -> dict[str, Any]:
        response = await self.client.get(f"/v1/enrollments/{enrollment_id}", headers=self.headers)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def published(self, topic: str, *types: str) -> list[Envelope]:
        await self.app.state.ctx.relay.publish_pending()
        found = [Envelope.from_bytes(r.value) for r in self.bus.records(topic)]
        return [
            e for e in found if (not types or e.type in types) and e.workspace == self.workspace
        ]

    async def commands(self, *types: str) -> list[Envelope]:
        return await self.published(topics.CONTACT_COMMANDS, *types)


async def quiesce(app: FastAPI) -> None:
    relay = app.state.ctx.relay
    while await relay.publish_pending():
        pass
    await asyncio.sleep(0.05)


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    clock = FakeClock(datetime(2026, 3, 2, 10, 0, tzinfo=UTC))  # a Monday
    spec = build_spec(clock, Doors(clock), timer_loop=False)
    app = create_app(spec, embedded_settings(tmp_path))
    workspace = f"ws-{uuid.uuid4().hex[:8]}"
    async with running(app) as client:
        yield Service(
            app, client, clock, workspace, token(workspace, "workflows:read", "workflows:write")
        )
        await quiesce(app)

"""The scoring app on SQLite and the in-process bus, with a clock the tests move."""

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

from services.scoring.main import build_spec
from services.scoring.settings import ScoringSettings
from shared.app import create_app
from shared.bus.memory import MemoryBus
from shared.events import topics
from shared.events.contacts import (
    ContactCreated,
    ContactDeleted,
    ContactMerged,
    ContactSnapshot,
    ContactUpdated,
)
from shared.events.envelope import Envelope, EventPayload
from shared.events.ingest import ENGAGEMENT_TYPES
from shared.events.scores import SCORE_EVENT_TYPES
from tests.helpers import embedded_settings, eventually, running, token

START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    """A clock the test sets and moves; the service reads the time only through it."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def snapshot(contact_id: str, now: datetime, **fields: Any) -> ContactSnapshot:
    values: dict[str, Any] = {
        "id": contact_id,
        "email": f"{contact_id[:8]}@acme.io",
        "lifecycle_stage": "lead",
        "subscription_status": "subscribed",
        "created_at": now,
        "updated_at": now,
    }
    return ContactSnapshot(**(values | fields))


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

    async def publish(self, topic: str, payload: EventPayload, contact_id: str) -> Envelope:
        envelope = Envelope.of(payload, source="/test", workspace=self.workspace)
        await self.bus.publish(topic, topics.contact_key(self.workspace, contact_id), envelope)
        return envelope

    async def processed(self, group: str, envelope: Envelope) -> None:
        """Wait until the consumer group committed past this event (or dead-lettered it)."""

        async def done() -> bool:
            consumed = self.bus.consumed(f"scoring.{group}")
            return any(Envelope.from_bytes(r.value).id == envelope.id for r in consumed)

        await eventually(done, timeout=20)

    async def contact(self, **fields: Any) -> str:
        """A contact known to scoring (as contacts announces it)."""
        contact_id = fields.pop("contact_id", str(uuid.uuid4()))
        snap = snapshot(contact_id, self.clock.now, **fields)
        env = await self.publish(
            topics.CONTACTS, ContactCreated(contact=snap, cause="api"), contact_id
        )
        await self.processed("contacts", env)
        return str(contact_id)

    async def update_contact(self, contact_id: str, **fields: Any) -> None:
        snap = snapshot(contact_id, self.clock.now, **fields)
        env = await self.publish(
            topics.CONTACTS,
            ContactUpdated(contact_id=contact_id, changes={}, contact=snap, cause="api"),
            contact_id,
        )
        await self.processed("contacts", env)

    async def merge(self, survivor: str, merged: str, **fields: Any) -> None:
        snap = snapshot(survivor, self.clock.now, **fields)
        env = await self.publish(
            topics.CONTACTS,
            ContactMerged(survivor_id=survivor, merged_id=merged, chosen={}, contact=snap),
            survivor,
        )
        await self.processed("contacts", env)

    async def delete(self, contact_id: str) -> None:
        env = await self.publish(
            topics.CONTACTS,
            ContactDeleted(contact_id=contact_id, deleted_at=self.clock.now),
            contact_id,
        )
        await self.processed("contacts", env)

    async def engage(
        self, event_type: str, contact_id: str | None = None, wait: bool = True, **fields: Any
    ) -> Envelope:
        payload = ENGAGEMENT_TYPES[event_type](
            engagement_id=uuid.uuid4().hex,
            contact_id=contact_id,
            occurred_at=fields.pop("occurred_at", self.clock.now),
            **fields,
        )
        env = await self.publish(topics.ENGAGEMENT, payload, contact_id or "anon")
        if wait:
            await self.processed("engagement", env)
        return env

    async def events(self, *types: str, contact_id: str | None = None) -> list[dict[str, Any]]:
        """Score events published so far, as {type, **data}."""
        await self.app.state.ctx.relay.publish_pending()
        found = []
        for record in self.bus.records(topics.SCORES):
            env = Envelope.from_bytes(record.value)
            env.payload(SCORE_EVENT_TYPES[env.type])  # each is a valid contract
            if types and env.type not in types:
                continue
            if contact_id and env.data.get("contact_id") != contact_id:
                continue
            found.append({"type": env.type, **env.data})
        return found

    async def score(self, contact_id: str, headers: dict[str, str] | None = None) -> httpx.Response:
        return await self.client.get(f"/v1/scores/{contact_id}", headers=headers or self.headers)

    async def overall(self, contact_id: str) -> float:
        response = await self.score(contact_id)
        assert response.status_code == 200, response.text
        [group] = [g for g in response.json()["groups"] if g["group"] == "overall"]
        return float(group["score"])


async def quiesce(app: FastAPI) -> None:
    """Publish what the outbox holds before the app stops (see the contacts suite)."""
    relay = app.state.ctx.relay
    while await relay.publish_pending():
        pass
    await asyncio.sleep(0.05)


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    clock = FakeClock(START)
    settings = embedded_settings(
        tmp_path,
        ScoringSettings,
        scoring_timer_poll_s=0.05,
        scoring_rescore_poll_s=0.05,
        scoring_rescore_chunk=3,
    )
    app = create_app(build_spec(clock), settings)
    workspace = f"ws-{uuid.uuid4().hex[:8]}"
    async with running(app) as client:
        yield Service(
            app, client, clock, workspace, token(workspace, "scoring:read", "scoring:write")
        )
        await quiesce(app)

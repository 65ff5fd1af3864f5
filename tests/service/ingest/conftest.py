"""Fixtures for ingest's service tests: the app on SQLite and the in-process bus."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from services.ingest.main import app as ingest_app
from services.ingest.models import outbox
from services.ingest.settings import IngestSettings
from shared.bus.memory import MemoryBus
from shared.events import topics
from shared.events.envelope import Envelope
from tests.helpers import embedded_settings, eventually, running, token


@dataclass
class Ingest:
    app: FastAPI
    client: httpx.AsyncClient
    workspace: str

    @property
    def admin(self) -> dict[str, str]:
        return token(self.workspace, "admin")

    @property
    def bus(self) -> MemoryBus:
        bus: MemoryBus = self.app.state.ctx.bus
        return bus

    def events(self, topic: str = topics.LEADS) -> list[Envelope]:
        return [Envelope.from_bytes(r.value) for r in self.bus.records(topic)]

    async def wait_events(self, count: int, topic: str = topics.LEADS) -> list[Envelope]:
        async def enough() -> bool:
            return len(self.bus.records(topic)) >= count

        await eventually(enough, timeout=10)
        return self.events(topic)

    async def create_form(self, **overrides: Any) -> dict[str, Any]:
        body = form_definition() | overrides
        response = await self.client.post("/v1/forms", json=body, headers=self.admin)
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result


def form_definition() -> dict[str, Any]:
    return {
        "name": "Demo request",
        "title": "Request a demo",
        "fields": [
            {"name": "email", "type": "email", "label": "Work email", "required": True},
            {"name": "first_name", "label": "First name", "required": True},
            {"name": "phone", "type": "phone", "label": "Phone"},
            {"name": "company", "label": "Company", "max_length": 50},
            {
                "name": "team_size",
                "type": "select",
                "label": "Team size",
                "options": ["1-10", "11-50"],
            },
        ],
        "consent": {"text": "I agree to be contacted."},
        "default_region": "GB",
        "allowed_origins": ["https://www.example.com"],
        "redirect_url": "https://www.example.com/thank-you",
    }


def random_email() -> str:
    return f"lead-{uuid.uuid4().hex[:8]}@Example.COM"


def settings_for(tmp_path: Path, **overrides: Any) -> IngestSettings:
    base = embedded_settings(tmp_path).model_dump()
    return IngestSettings(**(base | overrides))


IngestFactory = Callable[..., Any]


async def settle(app: FastAPI) -> None:
    """Wait until the outbox relay has published everything and gone idle.

    Works around a platform hang: cancelling the relay while it is inside an aiosqlite call
    (app shutdown right after a commit) can leave `OutboxRelay.stop()` waiting forever.
    """
    ctx = app.state.ctx

    async def drained() -> bool:
        async with ctx.engine.connect() as conn:
            unsent = await conn.scalar(
                select(func.count()).select_from(outbox).where(outbox.c.sent_at.is_(None))
            )
        return bool(unsent == 0)

    await eventually(drained, timeout=10)
    await asyncio.sleep(0.1)


@asynccontextmanager
async def serve(settings: IngestSettings, workspace: str | None = None) -> AsyncIterator[Ingest]:
    app = ingest_app(settings)
    async with running(app) as client:
        yield Ingest(app, client, workspace or f"ws-{uuid.uuid4().hex[:8]}")
        await settle(app)


@pytest.fixture
async def ingest(tmp_path: Path) -> AsyncIterator[Ingest]:
    async with serve(settings_for(tmp_path)) as service:
        yield service


def body_of(envelope: Envelope) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(envelope.to_bytes())["data"]
    return data

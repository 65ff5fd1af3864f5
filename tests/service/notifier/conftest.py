"""The notifier app on SQLite and the in-process bus, with a real HTTP receiver standing in
for Slack and webhooks and a real SMTP server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.notifier.main import SPEC
from services.notifier.settings import NotifierSettings
from shared.app import ServiceContext, create_app
from shared.bus.memory import MemoryBus
from shared.events import topics
from shared.events.contacts import ContactCreated, ContactSnapshot
from shared.events.envelope import Envelope
from shared.events.notifications import NotificationRequested
from tests.helpers import embedded_settings, eventually, running, token
from tests.receivers import HttpReceiver, SmtpReceiver

SCOPES = ("notifications:read", "notifications:write")


def random_email(prefix: str = "p") -> str:
    return f"{prefix}.{uuid.uuid4().hex[:8]}@example.com"


def snapshot(**fields: Any) -> ContactSnapshot:
    now = datetime.now(UTC)
    values: dict[str, Any] = {
        "id": str(uuid.uuid4()),
        "email": random_email(),
        "first_name": "Ada",
        "last_name": "Lovelace",
        "company": "Analytical Engines",
        "lifecycle_stage": "lead",
        "subscription_status": "subscribed",
        "score": 87.5,
        "owner_id": "own_1",
        "custom_fields": {"plan": "pro"},
        "created_at": now,
        "updated_at": now,
    }
    return ContactSnapshot(**(values | fields))


@dataclass
class Notifier:
    app: FastAPI
    client: httpx.AsyncClient
    workspace: str

    @property
    def ctx(self) -> ServiceContext:
        ctx: ServiceContext = self.app.state.ctx
        return ctx

    @property
    def headers(self) -> dict[str, str]:
        return token(self.workspace, *SCOPES)

    async def post(self, path: str, body: Any, workspace: str | None = None) -> httpx.Response:
        headers = token(workspace or self.workspace, *SCOPES)
        return await self.client.post(path, json=body, headers=headers)

    async def get(self, path: str, workspace: str | None = None, **params: Any) -> httpx.Response:
        headers = token(workspace or self.workspace, *SCOPES)
        return await self.client.get(path, headers=headers, params=params)

    async def channel(self, name: str, kind: str, **body: Any) -> dict[str, Any]:
        response = await self.post("/v1/channels", {"name": name, "kind": kind, **body})
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result

    async def contact(self, **fields: Any) -> ContactSnapshot:
        """A contact as contacts publishes it; returns once notifier's projection has it."""
        snap = snapshot(**fields)
        payload = ContactCreated(contact=snap, cause="api")
        envelope = Envelope.of(payload, source="/leadwire/contacts", workspace=self.workspace)
        key = topics.contact_key(self.workspace, snap.id)
        await self.ctx.bus.publish(topics.CONTACTS, key, envelope)
        await eventually(lambda: self._projected(snap.id), timeout=10)
        return snap

    async def _projected(self, contact_id: str) -> bool:
        from services.notifier.store import NotifierStore

        async with self.ctx.uow() as uow:
            found = await NotifierStore(uow.session).contacts(self.workspace, [contact_id])
        return contact_id in found

    def published(self, topic: str) -> list[Envelope]:
        """Envelopes on a topic of the in-process bus (notifier's outbox relayed them)."""
        bus = self.ctx.bus
        assert isinstance(bus, MemoryBus)
        return [Envelope.from_bytes(r.value) for r in bus.records(topic)]

    async def request(self, workspace: str | None = None, **fields: Any) -> str:
        """Publish a `notification.requested` on the bus; returns its idempotency key."""
        fields.setdefault("idempotency_key", f"test:{uuid.uuid4().hex}")
        payload = NotificationRequested(**fields)
        ws = workspace or self.workspace
        envelope = Envelope.of(payload, source="/leadwire/workflows", workspace=ws)
        key = topics.contact_key(ws, payload.contact_id or payload.idempotency_key)
        await self.ctx.bus.publish(topics.NOTIFICATION_REQUESTS, key, envelope)
        return payload.idempotency_key

    async def unknown_count(self) -> float:
        """notifier_unknown_outcomes_total as /metrics shows it (process-wide: compare)."""
        metrics = (await self.client.get("/metrics")).text
        for line in metrics.splitlines():
            if line.startswith("notifier_unknown_outcomes_total "):
                return float(line.split()[1])
        return 0.0

    async def delivery(self, key: str, workspace: str | None = None) -> dict[str, Any] | None:
        response = await self.get("/v1/notifications", workspace, limit=500)
        assert response.status_code == 200, response.text
        for item in response.json()["items"]:
            if item["idempotency_key"] == key:
                found: dict[str, Any] = item
                return found
        return None

    async def settled(
        self, key: str, *statuses: str, timeout: float = 20, workspace: str | None = None
    ) -> dict[str, Any]:
        """The delivery of `key` once its status is one of `statuses`."""
        wanted = statuses or ("sent", "failed", "suppressed", "unknown")
        found: dict[str, Any] = {}

        async def done() -> bool:
            item = await self.delivery(key, workspace)
            if item is not None:
                found.update(item)
            return item is not None and item["status"] in wanted

        await eventually(done, timeout=timeout)
        return found


@pytest.fixture
async def slack() -> AsyncIterator[HttpReceiver]:
    receiver = HttpReceiver()
    await receiver.start()
    yield receiver
    await receiver.stop()


@pytest.fixture
def smtp() -> Iterator[SmtpReceiver]:
    server = SmtpReceiver()
    server.start()
    yield server
    server.stop()


def notifier_settings(tmp_path: Path, **overrides: Any) -> NotifierSettings:
    values: dict[str, Any] = {
        "notifier_allowed_hosts": ["127.0.0.1"],
        "notifier_retry_base_s": 0.05,
        "notifier_retry_max_delay_s": 0.2,
        "notifier_poll_interval_s": 0.05,
        "notifier_http_timeout_s": 1.0,
        "notifier_smtp_timeout_s": 5.0,
        "notifier_slack_interval_s": 0.2,
        "notifier_public_url": "http://notifier.test",
        "notifier_tracking_url": "http://ingest.test",
    }
    settings = embedded_settings(tmp_path, NotifierSettings, **(values | overrides))
    assert isinstance(settings, NotifierSettings)
    return settings


@pytest.fixture
async def notifier(tmp_path: Path, slack: HttpReceiver) -> AsyncIterator[Notifier]:
    settings = notifier_settings(tmp_path, notifier_slack_api_url=slack.url("/api"))
    app = create_app(SPEC, settings)
    async with running(app) as client:
        yield Notifier(app, client, f"ws-{uuid.uuid4().hex[:8]}")

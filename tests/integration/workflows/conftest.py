"""A driver on the real Kafka broker: publishes what other services would and reads what
workflows publishes; the workflows schema on SQLite and on the real PostgreSQL, for store
tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.workflows.main import SPEC
from shared.bus import Subscription
from shared.bus.kafka import KafkaBus
from shared.events import topics
from shared.events.contacts import ContactCreated, ContactSnapshot
from shared.events.envelope import Envelope, EventPayload
from tests.helpers import BOTH_DATABASES, migrated_engine

DRIP: dict[str, Any] = {
    "name": "Drip",
    "trigger": {"type": "contact_created"},
    "steps": [
        {"id": "first", "type": "add_tag", "tag": "one", "next": "wait1"},
        {"id": "wait1", "type": "wait", "duration": {"seconds": 1}, "next": "second"},
        {"id": "second", "type": "add_tag", "tag": "two", "next": "wait2"},
        {"id": "wait2", "type": "wait", "duration": {"seconds": 1}, "next": "alert"},
        {
            "id": "alert",
            "type": "send_slack",
            "channel": "#sales",
            "text": "{{ contact.email }} done",
        },
    ],
}


@dataclass
class Driver:
    """Publishes as contacts would; keeps every command, request and run event it reads."""

    bus: KafkaBus
    workspace: str
    received: list[Envelope] = field(default_factory=list)

    async def publish(self, topic: str, payload: EventPayload, contact_id: str) -> Envelope:
        envelope = Envelope.of(payload, source="/test", workspace=self.workspace)
        await self.bus.publish(topic, topics.contact_key(self.workspace, contact_id), envelope)
        return envelope

    async def contact(self, **fields: Any) -> str:
        return (await self.contacts(1, **fields))[0]

    async def contacts(self, count: int, **fields: Any) -> list[str]:
        """Publish `contact.created` for `count` new contacts in one acknowledged batch."""
        ids, batch = [], []
        for _ in range(count):
            contact_id, envelope = self.created(**fields)
            ids.append(contact_id)
            key = topics.contact_key(self.workspace, contact_id)
            batch.append((topics.CONTACTS, key, envelope.to_bytes()))
        await self.bus.publish_batch(batch)
        return ids

    def created(self, **fields: Any) -> tuple[str, Envelope]:
        contact_id = f"c_{uuid.uuid4().hex[:12]}"
        now = datetime.now(UTC)
        snapshot = ContactSnapshot.model_validate(
            {
                "id": contact_id,
                "email": f"{contact_id}@acme.io",
                "lifecycle_stage": "lead",
                "subscription_status": "subscribed",
                "created_at": now,
                "updated_at": now,
                **fields,
            }
        )
        payload = ContactCreated(contact=snapshot, cause="api")
        return contact_id, Envelope.of(payload, source="/test", workspace=self.workspace)

    def of(self, *types: str) -> list[Envelope]:
        return [
            e
            for e in self.received
            if e.workspace == self.workspace and (not types or e.type in types)
        ]


async def start_driver(bootstrap: str, prefix: str, workspace: str) -> tuple[Driver, Any]:
    bus = KafkaBus(bootstrap, prefix=prefix, topics=list(topics.ALL_TOPICS))
    await bus.start()
    await bus.wait_connected(60)
    driver = Driver(bus, workspace)

    async def collect(events: Sequence[Envelope]) -> None:
        driver.received.extend(events)

    reader = await bus.subscribe(
        Subscription(
            f"{prefix}reader",
            (topics.CONTACT_COMMANDS, topics.NOTIFICATION_REQUESTS, topics.WORKFLOW_RUNS),
            collect,
        )
    )
    return driver, reader


@pytest.fixture(params=BOTH_DATABASES)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with migrated_engine(request, SPEC.migrations, tmp_path, "wsub") as made:
        yield made

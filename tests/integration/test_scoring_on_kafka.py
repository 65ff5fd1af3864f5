"""scoring on the real Kafka and PostgreSQL: contact and engagement events in, score events out;
a decay crossing fired by its PostgreSQL timer; a rescore; malformed engagement in the DLQ;
two replicas claiming the same due timers fire each once (SKIP LOCKED)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from services.scoring import handlers
from services.scoring.main import build_spec
from services.scoring.settings import ScoringSettings
from services.scoring.store import SqlStore
from shared.app import create_app
from shared.bus import Subscription
from shared.bus.kafka import KafkaBus
from shared.events import topics
from shared.events.contacts import ContactCreated, ContactSnapshot
from shared.events.envelope import Envelope, EventPayload
from shared.events.ingest import DemoRequested
from shared.uow import UnitOfWork
from tests.conftest import unique
from tests.helpers import distributed_settings, eventually, running, token
from tests.service.scoring.conftest import FakeClock

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]
START = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@dataclass
class Running:
    client: httpx.AsyncClient
    driver: KafkaBus
    clock: FakeClock
    workspace: str
    app: Any
    received: list[Envelope] = field(default_factory=list)

    @property
    def headers(self) -> dict[str, str]:
        return token(self.workspace, "scoring:read", "scoring:write")

    async def publish(self, topic: str, payload: EventPayload, contact_id: str) -> None:
        envelope = Envelope.of(payload, source="/test", workspace=self.workspace)
        await self.driver.publish(topic, topics.contact_key(self.workspace, contact_id), envelope)

    def of(self, event_type: str, contact_id: str) -> list[dict[str, Any]]:
        return [
            e.data
            for e in self.received
            if e.type == event_type and e.data.get("contact_id") == contact_id
        ]

    async def contact(self) -> str:
        contact_id = str(uuid.uuid4())
        snapshot = ContactSnapshot(
            id=contact_id,
            email=f"{contact_id[:8]}@acme.io",
            lifecycle_stage="lead",
            subscription_status="subscribed",
            created_at=self.clock.now,
            updated_at=self.clock.now,
        )
        await self.publish(
            topics.CONTACTS, ContactCreated(contact=snapshot, cause="api"), contact_id
        )
        return contact_id

    async def demo(self, contact_id: str) -> None:
        payload = DemoRequested(
            engagement_id=uuid.uuid4().hex, contact_id=contact_id, occurred_at=self.clock.now
        )
        await self.publish(topics.ENGAGEMENT, payload, contact_id)


@pytest.fixture
async def scoring(kafka_bootstrap: str, postgres_url: str) -> AsyncIterator[Running]:
    prefix = unique("sc") + "."
    settings = distributed_settings(
        kafka_bootstrap,
        postgres_url,
        prefix,
        ScoringSettings,
        scoring_timer_poll_s=0.05,
        scoring_rescore_poll_s=0.05,
    )
    clock = FakeClock(START)
    app = create_app(build_spec(clock), settings)
    driver = KafkaBus(kafka_bootstrap, prefix=prefix, topics=list(topics.ALL_TOPICS))
    await driver.start()
    await driver.wait_connected(60)
    state = Running(None, driver, clock, f"ws-{uuid.uuid4().hex[:8]}", app)  # type: ignore[arg-type]

    async def collect(events: Sequence[Envelope]) -> None:
        state.received.extend(events)

    reader = await driver.subscribe(Subscription(f"{prefix}reader", (topics.SCORES,), collect))
    try:
        async with running(app) as client:
            state.client = client

            async def ready() -> bool:
                return (await client.get("/readyz")).status_code == 200

            await eventually(ready, timeout=60)
            yield state
    finally:
        await reader.stop()
        await driver.stop()


async def test_engagement_scores_and_decay_crosses_down_by_its_timer(scoring: Running) -> None:
    contact = await scoring.contact()

    async def known() -> bool:
        return (
            await scoring.client.get(f"/v1/scores/{contact}", headers=scoring.headers)
        ).status_code == 200

    await eventually(known, timeout=30)
    await scoring.demo(contact)
    await scoring.demo(contact)

    async def crossed_up() -> bool:
        return len(scoring.of("score.threshold_crossed", contact)) == 1

    await eventually(crossed_up, timeout=30)
    assert [c["after"] for c in scoring.of("score.changed", contact)] == [30, 60]
    scoring.clock.advance(days=13)  # past 60 · 2^(-d/30) = 45 at d ≈ 12.45

    async def crossed_down() -> bool:
        return len(scoring.of("score.threshold_crossed", contact)) == 2

    await eventually(crossed_down, timeout=30)
    down = scoring.of("score.threshold_crossed", contact)[1]
    assert (down["threshold"], down["direction"]) == ("mql", "down")
    exact = START + timedelta(days=30 * 0.41503749927884376)
    assert abs((datetime.fromisoformat(down["crossed_at"]) - exact).total_seconds()) < 0.01


async def test_a_new_rule_set_rescores_on_postgres(scoring: Running) -> None:
    contacts = [await scoring.contact() for _ in range(5)]
    for contact in contacts:
        await scoring.demo(contact)

    async def scored() -> bool:
        return all(scoring.of("score.changed", c) for c in contacts)

    await eventually(scored, timeout=30)
    rules = {
        "rules": [{"id": "demo", "kind": "engagement", "event": "demo.requested", "points": 45}]
    }
    saved = await scoring.client.put("/v1/scoring/rules", json=rules, headers=scoring.headers)
    assert saved.status_code == 201, saved.text
    rescore_id = saved.json()["rescore"]["id"]

    async def done() -> bool:
        job = await scoring.client.get(
            f"/v1/scoring/rescores/{rescore_id}", headers=scoring.headers
        )
        return bool(job.json()["status"] == "done")

    await eventually(done, timeout=30)

    async def published() -> bool:
        return all(
            [c["after"] for c in scoring.of("score.changed", contact)] == [30, 45]
            for contact in contacts
        )

    await eventually(published, timeout=30)


async def test_malformed_engagement_goes_to_the_dlq_with_its_reason(scoring: Running) -> None:
    bad = Envelope(
        source="/test",
        type="demo.requested",
        workspace=scoring.workspace,
        correlationid="c",
        data={"engagement_id": "e", "occurred_at": datetime.now(UTC).isoformat()},
    )
    await scoring.driver.publish(topics.ENGAGEMENT, f"{scoring.workspace}:x", bad)

    async def parked() -> bool:
        dead = await scoring.driver.dead_letters(topics.ENGAGEMENT)
        return any(bad.id.encode() in r.value for r in dead)

    await eventually(parked, timeout=60)
    [record] = [
        r
        for r in await scoring.driver.dead_letters(topics.ENGAGEMENT)
        if bad.id.encode() in r.value
    ]
    assert "neither contact_id nor email" in str(record.headers)


async def test_two_replicas_fire_each_due_timer_once(scoring: Running) -> None:
    """Timers due together, claimed by two concurrent transactions: each crossing once."""
    ctx = scoring.app.state.ctx
    contacts = [await scoring.contact() for _ in range(40)]
    for contact in contacts:
        await scoring.demo(contact)
        await scoring.demo(contact)

    async def all_up() -> bool:
        return all(scoring.of("score.threshold_crossed", c) for c in contacts)

    await eventually(all_up, timeout=60)
    for task in ctx.tasks:  # stop the service's own timer loop: two claimers race instead
        task.cancel()
    later = scoring.clock.now + timedelta(days=13)

    async def claim() -> int:
        uow = UnitOfWork(ctx.sessions, ctx.spec.outbox, ctx.spec.inbox, ctx.relay.notify)
        async with uow:
            return await handlers.fire_due_timers(SqlStore(uow.session), uow, later, limit=25)

    fired = 0
    for _ in range(10):
        first, second = await asyncio.gather(claim(), claim())
        fired += first + second
        if first + second == 0:
            break

    async def all_down() -> bool:
        return all(len(scoring.of("score.threshold_crossed", c)) == 2 for c in contacts)

    await eventually(all_down, timeout=60)
    assert fired == len(contacts)
    await asyncio.sleep(0.5)
    assert all(len(scoring.of("score.threshold_crossed", c)) == 2 for c in contacts)

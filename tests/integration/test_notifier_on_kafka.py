"""notifier on the real Kafka and PostgreSQL: requests in, Slack posts and mails out, outcome
events published, each idempotency key sent once, across redelivery and a killed process."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from services.notifier.main import SPEC
from services.notifier.settings import NotifierSettings
from shared.app import create_app
from shared.bus import Subscription
from shared.bus.kafka import KafkaBus
from shared.events import topics
from shared.events.contacts import ContactCreated, ContactSnapshot
from shared.events.envelope import Envelope, EventPayload
from shared.events.notifications import NotificationRequested
from tests.conftest import unique
from tests.helpers import SECRET, distributed_settings, eventually, running, token
from tests.infra import free_port
from tests.receivers import Answer, HttpReceiver, SmtpReceiver

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]
ROOT = Path(__file__).resolve().parents[2]
SCOPES = ("notifications:read", "notifications:write")


@dataclass
class Kafka:
    driver: KafkaBus
    workspace: str
    received: list[Envelope] = field(default_factory=list)

    async def publish(self, topic: str, payload: EventPayload, key: str) -> None:
        envelope = Envelope.of(payload, source="/test", workspace=self.workspace)
        await self.driver.publish(topic, topics.contact_key(self.workspace, key), envelope)

    async def request(self, key: str, **fields: Any) -> None:
        payload = NotificationRequested(idempotency_key=key, **fields)
        await self.publish(topics.NOTIFICATION_REQUESTS, payload, fields.get("contact_id") or key)

    async def contact(self, **fields: Any) -> ContactSnapshot:
        now = datetime.now(UTC)
        values = {
            "id": str(uuid.uuid4()),
            "email": f"{uuid.uuid4().hex[:8]}@example.com",
            "first_name": "Ada",
            "lifecycle_stage": "lead",
            "subscription_status": "subscribed",
            "created_at": now,
            "updated_at": now,
        }
        snap = ContactSnapshot(**(values | fields))
        await self.publish(topics.CONTACTS, ContactCreated(contact=snap, cause="api"), snap.id)
        return snap

    def outcomes(self, key: str) -> list[str]:
        return [e.type for e in self.received if e.data.get("idempotency_key") == key]


@pytest.fixture
async def kafka(kafka_bootstrap: str) -> AsyncIterator[tuple[Kafka, str]]:
    prefix = unique("nt") + "."
    driver = KafkaBus(kafka_bootstrap, prefix=prefix, topics=list(topics.ALL_TOPICS))
    await driver.start()
    await driver.wait_connected(60)
    state = Kafka(driver, f"ws-{uuid.uuid4().hex[:8]}")

    async def collect(events: Sequence[Envelope]) -> None:
        state.received.extend(events)

    reader = await driver.subscribe(
        Subscription(f"{prefix}reader", (topics.NOTIFICATIONS,), collect)
    )
    try:
        yield state, prefix
    finally:
        await reader.stop()
        await driver.stop()


@pytest.fixture
async def slack() -> AsyncIterator[HttpReceiver]:
    receiver = HttpReceiver()
    await receiver.start()
    yield receiver
    await receiver.stop()


@pytest.fixture
def smtp() -> Any:
    server = SmtpReceiver()
    server.start()
    yield server
    server.stop()


FAST = {
    "notifier_allowed_hosts": ["127.0.0.1"],
    "notifier_retry_base_s": 0.05,
    "notifier_retry_max_delay_s": 0.2,
    "notifier_poll_interval_s": 0.05,
    "notifier_http_timeout_s": 2.0,
    "notifier_slack_interval_s": 0.01,
}


async def test_requests_on_kafka_are_delivered_once_with_outcomes_published(
    kafka: tuple[Kafka, str],
    kafka_bootstrap: str,
    postgres_url: str,
    slack: HttpReceiver,
    smtp: SmtpReceiver,
) -> None:
    bus, prefix = kafka
    settings = distributed_settings(kafka_bootstrap, postgres_url, prefix, NotifierSettings, **FAST)
    app = create_app(SPEC, settings)
    headers = token(bus.workspace, *SCOPES)
    async with running(app) as client:
        await eventually(lambda: _ready(client), timeout=60)
        for body in (
            {"name": "alerts", "kind": "slack", "secrets": {"webhook_url": slack.url("/k/a")}},
            {
                "name": "mail",
                "kind": "email",
                "config": {
                    "host": "127.0.0.1",
                    "port": smtp.port,
                    "security": "none",
                    "from_address": "hi@leadwire.test",
                },
            },
        ):
            assert (
                await client.post("/v1/channels", json=body, headers=headers)
            ).status_code == 201
        template = {"name": "hello", "subject": "Hi {{ contact.first_name }}", "text": "Hello"}
        assert (
            await client.post("/v1/templates", json=template, headers=headers)
        ).status_code == 201
        contact = await bus.contact(first_name="Grace")
        keys = [f"wf:{uuid.uuid4().hex}" for _ in range(10)]
        for key in keys:
            await bus.request(key, channel="alerts", content={"text": key})
        mail_key = f"wf:{uuid.uuid4().hex}"
        await bus.request(mail_key, contact_id=contact.id, channel="mail", template="hello")
        for key in keys:  # redelivered: the same keys again
            await bus.request(key, channel="alerts", content={"text": key})

        async def all_done() -> bool:
            return all(bus.outcomes(k) == ["notification.sent"] for k in [*keys, mail_key])

        await eventually(all_done, timeout=60)
        texts = [orjson.loads(r.body)["text"] for r in slack.at("/k/a")]
        assert sorted(texts) == sorted(keys)
        [mail] = smtp.handler.to(str(contact.email))
        assert mail.message["Subject"] == "Hi Grace"
        log = await client.get("/v1/notifications", params={"status": "sent"}, headers=headers)
        assert len(log.json()["items"]) == 11
        # A complaint names the contact whose own address it is (the JSONB projection), and is
        # lifted again.
        email = str(contact.email)
        complaint = {"email": email.upper(), "reason": "complained"}
        added = await client.post("/v1/suppressions", json=complaint, headers=headers)
        assert added.status_code == 201, added.text
        assert (added.json()["email"], added.json()["contact_id"]) == (email, contact.id)
        found = await client.get("/v1/suppressions", params={"email": email}, headers=headers)
        assert [s["reason"] for s in found.json()] == ["complained"]
        lifted = await client.delete(f"/v1/suppressions/{email}", headers=headers)
        assert lifted.status_code == 204, lifted.text


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200


def serve(prefix: str, kafka_bootstrap: str, postgres_url: str, port: int, log: Path) -> Any:
    env = os.environ | {
        "LEADWIRE_BUS": "kafka",
        "LEADWIRE_KAFKA_BOOTSTRAP": kafka_bootstrap,
        "LEADWIRE_TOPIC_PREFIX": prefix,
        "DATABASE_URL": postgres_url,
        "LEADWIRE_DB_SCHEMA": f"{prefix.rstrip('.')}_{{service}}",
        "LEADWIRE_AUTH_SECRET": SECRET,
        "LEADWIRE_MIGRATE_ON_START": "true",
        "LEADWIRE_NOTIFIER_ALLOWED_HOSTS": '["127.0.0.1"]',
        "LEADWIRE_NOTIFIER_POLL_INTERVAL_S": "0.05",
        "LEADWIRE_NOTIFIER_SLACK_INTERVAL_S": "1",
        # A message held for its slot by a killed process is claimed again 3 s later (the
        # shortest hold: twice the longest wait for a slot, plus a second).
        "LEADWIRE_NOTIFIER_HOLD_LEASE_S": "1",
        # An attempt lasts at most 5 + 5 s, so a claim is presumed dead after 11 s.
        "LEADWIRE_NOTIFIER_HTTP_TIMEOUT_S": "5",
        "LEADWIRE_NOTIFIER_SMTP_TIMEOUT_S": "2",
        "LEADWIRE_NOTIFIER_SENDING_LEASE_S": "1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "services", "serve", "notifier", "--port", str(port)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=log.open("ab"),
    )


async def test_a_killed_process_never_sends_a_key_twice(
    kafka: tuple[Kafka, str],
    kafka_bootstrap: str,
    postgres_url: str,
    slack: HttpReceiver,
    tmp_path: Path,
) -> None:
    bus, prefix = kafka
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    headers = token(bus.workspace, *SCOPES)
    slack.plan("/k/hang", Answer(200, delay_s=30))
    first = serve(prefix, kafka_bootstrap, postgres_url, port, tmp_path / "first.log")
    try:
        async with httpx.AsyncClient(base_url=url) as client:
            await eventually(lambda: _up(client), timeout=90)
            for name, path in (("fast", "/k/fast"), ("hang", "/k/hang")):
                body = {"name": name, "kind": "slack", "secrets": {"webhook_url": slack.url(path)}}
                created = await client.post("/v1/channels", json=body, headers=headers)
                assert created.status_code == 201, created.text
        keys = [f"wf:{uuid.uuid4().hex}" for _ in range(30)]
        hung = f"wf:{uuid.uuid4().hex}"
        await bus.request(hung, channel="hang", content={"text": "hang"})
        for key in keys[:15]:
            await bus.request(key, channel="fast", content={"text": key})

        async with httpx.AsyncClient(base_url=url) as client:

            async def between_slots() -> bool:
                if len(slack.at("/k/hang")) != 1 or len(slack.at("/k/fast")) < 2:
                    return False
                response = await client.get(
                    "/v1/notifications", params={"limit": 100, "status": "sent"}, headers=headers
                )
                return len(response.json()["items"]) == len(slack.at("/k/fast"))

            # The fast channel is paced (a message a second). Kill between two slots: every
            # post made so far is recorded, the next messages wait in the process's memory for
            # their slot (held, never attempted), the rest are due later in the database, and
            # the hung post has no answer yet.
            await eventually(between_slots, timeout=60)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            first.kill()
    for key in keys:  # the first half again (redelivery), and the second half new
        await bus.request(key, channel="fast", content={"text": key})
    second = serve(prefix, kafka_bootstrap, postgres_url, port, tmp_path / "second.log")
    try:
        async with httpx.AsyncClient(base_url=url) as client:
            await eventually(lambda: _up(client), timeout=90)

            async def settled() -> bool:
                response = await client.get(
                    "/v1/notifications", params={"limit": 100}, headers=headers
                )
                items = response.json()["items"]
                return len(items) == 31 and all(i["status"] in ("sent", "unknown") for i in items)

            await eventually(settled, timeout=90)
            items = (
                await client.get("/v1/notifications", params={"limit": 100}, headers=headers)
            ).json()["items"]
            status = {i["idempotency_key"]: i["status"] for i in items}
            metrics = (await client.get("/metrics")).text
        assert status.pop(hung) == "unknown"
        assert set(status.values()) == {"sent"}, "the held messages were sent, none unknown"
        texts = [orjson.loads(r.body)["text"] for r in slack.at("/k/fast")]
        assert sorted(texts) == sorted(keys), "every key exactly once"
        assert len(slack.at("/k/hang")) == 1, "the unknown one is not sent again"
        assert "notifier_unknown_outcomes_total 1.0" in metrics
    finally:
        second.terminate()
        second.wait(timeout=30)


async def _up(client: httpx.AsyncClient) -> bool:
    try:
        return (await client.get("/readyz")).status_code == 200
    except httpx.HTTPError:
        return False


async def _arrived(receiver: HttpReceiver, path: str, count: int) -> bool:
    await asyncio.sleep(0)
    return len(receiver.at(path)) >= count

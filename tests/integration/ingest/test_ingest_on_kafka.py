"""Ingest on real PostgreSQL (migrated) and real Kafka: leads and engagement reach the topics."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from fastapi import FastAPI

from services.ingest.main import app as ingest_app
from services.ingest.settings import IngestSettings
from services.ingest.webhooks import domain as webhooks_domain
from shared.events import topics
from shared.events.envelope import Envelope
from tests.conftest import unique
from tests.helpers import distributed_settings, eventually, running, token


@dataclass
class Stack:
    app: FastAPI
    client: httpx.AsyncClient
    kafka: str
    prefix: str
    workspace: str

    @property
    def admin(self) -> dict[str, str]:
        return token(self.workspace, "admin")

    async def read(self, topic: str, count: int, timeout: float = 60) -> list[tuple[str, Envelope]]:
        """The first `count` records of a topic, read from its start outside any group."""
        consumer = AIOKafkaConsumer(
            self.prefix + topic,
            bootstrap_servers=self.kafka,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        records: list[tuple[str, Envelope]] = []
        try:
            async with asyncio.timeout(timeout):
                while len(records) < count:
                    batch = await consumer.getmany(timeout_ms=500)
                    for messages in batch.values():
                        records += [
                            (m.key.decode(), Envelope.from_bytes(m.value)) for m in messages
                        ]
        finally:
            await consumer.stop()
        return records


@pytest.fixture
async def stack(kafka_bootstrap: str, postgres_url: str) -> AsyncIterator[Stack]:
    prefix = unique("ing") + "."
    base = distributed_settings(kafka_bootstrap, postgres_url, prefix)
    app = ingest_app(IngestSettings(**base.model_dump()))
    async with running(app) as client:

        async def ready() -> bool:
            return (await client.get("/readyz")).status_code == 200

        await eventually(ready, timeout=90)
        yield Stack(app, client, kafka_bootstrap, prefix, f"ws-{uuid.uuid4().hex[:8]}")


def form_body() -> dict[str, Any]:
    return {
        "name": "Contact",
        "fields": [
            {"name": "email", "type": "email", "label": "Email", "required": True},
            {"name": "first_name", "label": "First name"},
        ],
        "allowed_origins": ["https://www.example.com"],
        "redirect_url": "https://www.example.com/thanks",
    }


@pytest.mark.kafka
@pytest.mark.postgres
class TestLeadsReachKafka:
    async def test_leads_from_every_way_in_arrive_on_the_leads_topic(self, stack: Stack) -> None:
        client = stack.client
        form = (await client.post("/v1/forms", json=form_body(), headers=stack.admin)).json()
        submit = f"/v1/forms/{form['id']}/submissions"
        browser = await client.post(
            submit,
            data={"email": "browser@Example.com", "first_name": "Bea"},
            headers={"accept": "text/html", "origin": "https://www.example.com"},
        )
        assert browser.status_code == 303
        multipart = await client.post(
            submit, data={"email": "multi@example.com"}, files={"f": ("a.txt", b"x")}
        )
        assert multipart.status_code == 303
        as_json = await client.post(submit, json={"email": "json@example.com"})
        assert as_json.status_code == 202

        source = (
            await client.post(
                "/v1/webhook-sources",
                json={"name": "CRM", "mapping": {"email": "person.email"}},
                headers=stack.admin,
            )
        ).json()
        body = orjson.dumps({"person": {"email": "hook@example.com"}})
        now = int(time.time())
        headers = {
            "webhook-id": "msg_1",
            "webhook-timestamp": str(now),
            "webhook-signature": webhooks_domain.sign(source["secret"], "msg_1", now, body),
        }
        hook = await client.post(f"/v1/webhooks/{source['id']}", content=body, headers=headers)
        assert hook.status_code == 202
        replay = await client.post(f"/v1/webhooks/{source['id']}", content=body, headers=headers)
        assert replay.status_code == 409

        api = await client.post(
            "/v1/leads",
            json={"leads": [{"email": "api1@example.com"}, {"phone": "+16502530000"}]},
            headers=stack.admin,
        )
        assert api.status_code == 202

        records = await stack.read(topics.LEADS, 6)
        keys = sorted(key for key, _ in records)
        ws = stack.workspace
        assert keys == sorted(
            [
                f"{ws}:email:browser@example.com",
                f"{ws}:email:multi@example.com",
                f"{ws}:email:json@example.com",
                f"{ws}:email:hook@example.com",
                f"{ws}:email:api1@example.com",
                f"{ws}:phone:+16502530000",
            ]
        )
        sources = sorted(envelope.data["source"] for _, envelope in records)
        assert sources == ["api", "api", "form", "form", "form", "webhook"]
        assert all(e.type == "lead.captured" and e.workspace == ws for _, e in records)

    async def test_the_longest_correlation_id_a_caller_may_send_is_kept(self, stack: Stack) -> None:
        # The door accepts X-Correlation-Id tokens of up to 128 characters; every column that
        # keeps one must hold them (PostgreSQL refuses what SQLite would silently store).
        correlation = "c" * 128
        response = await stack.client.post(
            "/v1/leads",
            json={"leads": [{"email": "long-correlation@example.com"}]},
            headers=stack.admin | {"x-correlation-id": correlation},
        )
        assert response.status_code == 202, response.text
        [(_, envelope)] = await stack.read(topics.LEADS, 1)
        assert envelope.correlationid == correlation

    async def test_engagement_events_arrive_on_the_engagement_topic(self, stack: Stack) -> None:
        events = [
            {"type": "page.viewed", "email": "reader@example.com", "url": "https://x.example/"},
            {"type": "purchase.completed", "contact_id": "c-9", "amount": "10", "currency": "USD"},
        ]
        response = await stack.client.post(
            "/v1/events", json={"events": events}, headers=stack.admin
        )
        assert response.status_code == 202
        records = await stack.read(topics.ENGAGEMENT, 2)
        assert sorted(e.type for _, e in records) == ["page.viewed", "purchase.completed"]
        assert {k for k, _ in records} == {
            f"{stack.workspace}:email:reader@example.com",
            f"{stack.workspace}:c-9",
        }

    async def test_concurrent_requests_with_one_idempotency_key_make_one_lead(
        self, stack: Stack
    ) -> None:
        headers = stack.admin | {"idempotency-key": "race-1"}
        body = {"email": "race@example.com"}
        answers = await asyncio.gather(
            *(stack.client.post("/v1/leads", json=body, headers=headers) for _ in range(5))
        )
        assert {a.status_code for a in answers} == {202}
        assert len({a.json()["submission_id"] for a in answers}) == 1
        different = await stack.client.post(
            "/v1/leads", json={"email": "other@example.com"}, headers=headers
        )
        assert different.status_code == 409
        marker = await stack.client.post(
            "/v1/leads", json={"email": "marker@example.com"}, headers=stack.admin
        )
        assert marker.status_code == 202
        records = await stack.read(topics.LEADS, 2)
        assert sorted(e.data["email"] for _, e in records) == [
            "marker@example.com",
            "race@example.com",
        ]

    async def test_quarantine_and_release_work_on_postgresql(self, stack: Stack) -> None:
        client = stack.client
        form = (await client.post("/v1/forms", json=form_body(), headers=stack.admin)).json()
        rejected = await client.post(
            f"/v1/forms/{form['id']}/submissions", json={"first_name": "Ann", "work": "a@b.com"}
        )
        assert rejected.status_code == 422
        listed = await client.get("/v1/quarantine", headers=stack.admin)
        assert [i["id"] for i in listed.json()["items"]] == [rejected.json()["submission_id"]]
        fields = form["fields"] + [
            {"name": "work", "type": "email", "label": "Work", "maps_to": "email"}
        ]
        fields[0]["required"] = False
        fields[0]["maps_to"] = "custom.personal_email"
        patched = await client.patch(
            f"/v1/forms/{form['id']}", json={"fields": fields}, headers=stack.admin
        )
        assert patched.status_code == 200, patched.text
        released = await client.post(
            f"/v1/quarantine/{rejected.json()['submission_id']}/release", headers=stack.admin
        )
        assert released.status_code == 200, released.text
        [(key, envelope)] = await stack.read(topics.LEADS, 1)
        assert key == f"{stack.workspace}:email:a@b.com"
        assert envelope.data["submission_id"] == rejected.json()["submission_id"]

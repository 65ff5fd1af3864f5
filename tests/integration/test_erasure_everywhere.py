"""Erase means erased everywhere: a person who came in through every door is erased, then every
table of every service is searched for their e-mail, phone and name, on SQLite and PostgreSQL.

The walk is generic (each service's metadata, every row, every column), so a service or table
added later is searched without changing this test. Afterwards, old data replayed (a dead
letter, a re-published outbox row, a quarantined submission released) brings nobody back,
while a new submission is a new capture.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import httpx
import orjson
import pytest
from sqlalchemy import select

from services.ingest.webhooks import domain as webhooks_domain
from services.registry import SERVICES, spec
from shared.app import create_app
from shared.bus.memory import MemoryBus
from shared.events import topics
from shared.events.envelope import Envelope
from shared.settings import Settings
from tests.conftest import unique
from tests.helpers import embedded_settings, eventually, running, token
from tests.service.ingest.conftest import form_definition


@dataclass
class Person:
    email: str  # as typed, mixed case
    phone: str  # as typed in a British form
    first_name: str

    @property
    def needles(self) -> dict[str, str]:
        return {
            "email": self.email.lower(),
            "phone": "2079460018",  # the national number: in E.164 and as typed, spaces gone
            "name": self.first_name.lower(),
        }


@dataclass
class Product:
    """The five services in one process on one in-process bus, as `make run` runs them."""

    bus: MemoryBus
    apps: dict[str, Any]
    clients: dict[str, httpx.AsyncClient]
    workspace: str
    data_dir: Path
    sqlite: bool

    @property
    def ingest(self) -> httpx.AsyncClient:
        return self.clients["ingest"]

    @property
    def contacts(self) -> httpx.AsyncClient:
        return self.clients["contacts"]

    def admin(self) -> dict[str, str]:
        return token(self.workspace, "admin")

    async def settled(self, group: str, topic: str) -> None:
        """Wait until every outbox is published and `group` consumed all of `topic`."""

        async def done() -> bool:
            for app in self.apps.values():
                while await app.state.ctx.relay.publish_pending():
                    pass
            wanted = {(r.topic, r.partition, r.offset) for r in self.bus.records(topic)}
            seen = {(r.topic, r.partition, r.offset) for r in self.bus.consumed(group)}
            return wanted <= seen

        await eventually(done, timeout=30)


class ToApps(httpx.AsyncBaseTransport):
    """HTTP between the in-process services: `http://<service>/…` goes to that app."""

    def __init__(self, apps: dict[str, Any]) -> None:
        self.apps = {name: httpx.ASGITransport(app=app) for name, app in apps.items()}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.apps[request.url.host].handle_async_request(request)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def product(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Product]:
    overrides: dict[str, Any] = {}
    if request.param == "postgres":
        overrides = {
            "database_url": request.getfixturevalue("postgres_url"),
            "db_schema": f"{unique('erase')}_{{service}}",
            "migrate_on_start": True,
        }
    others = {name: f"http://{name}" for name in SERVICES if name != "contacts"}
    settings: Settings = embedded_settings(tmp_path, service_urls=others, **overrides)
    bus = MemoryBus()
    await bus.start()
    try:
        async with AsyncExitStack() as stack:
            apps = {name: create_app(spec(name), settings, bus) for name in SERVICES}
            apps["contacts"].state.export_transport = ToApps(apps)
            clients = {
                name: await stack.enter_async_context(running(app)) for name, app in apps.items()
            }
            yield Product(
                bus,
                apps,
                clients,
                f"ws-{uuid.uuid4().hex[:8]}",
                tmp_path,
                request.param == "sqlite",
            )
            for app in apps.values():  # publish what is pending before the apps stop
                while await app.state.ctx.relay.publish_pending():
                    pass
    finally:
        await bus.stop()


def text_of(value: Any) -> str:
    """A column value as searchable text: raw bodies decoded (and URL-decoded), JSON dumped."""
    if isinstance(value, bytes):
        decoded = value.decode("utf-8", "replace")
        return f"{decoded} {unquote_plus(decoded)}"
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


async def sightings(product: Product, person: Person) -> list[str]:
    """`service.table.column: needle` for every value anywhere that names the person."""
    found = []
    for name, app in product.apps.items():
        engine = app.state.ctx.engine
        async with engine.connect() as conn:
            for table in spec(name).metadata.sorted_tables:
                for row in await conn.execute(select(table)):
                    for column, value in row._mapping.items():
                        text = text_of(value).lower()
                        squeezed = text.replace(" ", "")
                        for what, needle in person.needles.items():
                            if needle in text or needle in squeezed:
                                found.append(f"{name}.{table.name}.{column}: {what}")
    return found


def sqlite_file_sightings(product: Product, person: Person) -> list[str]:
    """The person's e-mail or name in the bytes of any SQLite file (database or its WAL)."""
    needles = [person.email.lower().encode(), person.first_name.encode()]
    return [
        path.name
        for path in sorted(product.data_dir.glob("*.db*"))
        for needle in needles
        if needle in path.read_bytes().lower()
    ]


def signed(secret: str, body: bytes) -> dict[str, str]:
    msg_id, at = f"msg_{uuid.uuid4().hex}", int(time.time())
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(at),
        "webhook-signature": webhooks_domain.sign(secret, msg_id, at, body),
    }


async def come_in_through_every_door(product: Product, person: Person) -> dict[str, str]:
    """Form (JSON and browser post), API, webhook, quarantine (invalid and spam), engagement.
    Returns the quarantined submission's id."""
    ingest, admin = product.ingest, product.admin()
    created = await ingest.post("/v1/forms", json=form_definition(), headers=admin)
    assert created.status_code == 201, created.text
    form = created.json()["id"]
    fields = {
        "email": person.email,
        "first_name": person.first_name,
        "phone": person.phone,
        "company": "Erasure Ltd",
        "consent": "on",
    }
    json_post = await ingest.post(f"/v1/forms/{form}/submissions", json=fields)
    assert json_post.status_code == 202, json_post.text
    browser = await ingest.post(
        f"/v1/forms/{form}/submissions", data=fields, headers={"accept": "text/html"}
    )
    assert browser.status_code == 303, browser.text
    invalid = await ingest.post(
        f"/v1/forms/{form}/submissions",
        data={**fields, "first_name": "", "team_size": "9000"},
        headers={"accept": "application/json"},
    )
    assert invalid.status_code == 422
    spam = await ingest.post(
        f"/v1/forms/{form}/submissions",
        data={**fields, "website": "x"},
        headers={"accept": "application/json"},
    )
    assert spam.status_code == 202
    api = await ingest.post(
        "/v1/leads",
        json={
            "email": person.email,
            "phone": "+44 20 7946 0018",
            "first_name": person.first_name,
            "last_name": "Quux",
            "company": "Erasure Ltd",
            "custom_fields": {"note": f"call {person.first_name} after lunch"},
            "tags": ["erasure-test"],
        },
        headers=token(product.workspace, "leads:write") | {"idempotency-key": uuid.uuid4().hex},
    )
    assert api.status_code == 202, api.text
    source = await ingest.post(
        "/v1/webhook-sources",
        json={
            "name": "CRM",
            "mapping": {"email": "person.email", "first_name": "person.name"},
            "default_region": "GB",
        },
        headers=admin,
    )
    assert source.status_code == 201, source.text
    body = orjson.dumps({"person": {"email": person.email, "name": person.first_name}})
    hook = await ingest.post(
        f"/v1/webhooks/{source.json()['id']}",
        content=body,
        headers=signed(source.json()["secret"], body),
    )
    assert hook.status_code == 202, hook.text
    events = await ingest.post(
        "/v1/events",
        json={"events": [{"type": "page.viewed", "email": person.email, "url": "https://x.io/p"}]},
        headers=token(product.workspace, "events:write"),
    )
    assert events.status_code == 202, events.text
    await product.settled("contacts.leads", topics.LEADS)
    await product.settled("contacts.engagement", topics.ENGAGEMENT)
    return {"quarantined": invalid.json()["submission_id"], "form": form}


async def contact_of(product: Product, email: str) -> httpx.Response:
    return await product.contacts.get(
        "/v1/contacts/lookup", params={"email": email}, headers=product.admin()
    )


class TestEraseEverywhere:
    async def test_nothing_names_the_person_anywhere_and_replays_bring_nobody_back(
        self, product: Product
    ) -> None:
        person = Person(
            f"Zed.{uuid.uuid4().hex[:8]}@Example.COM",
            "020 7946 0018",
            f"Zebulon{uuid.uuid4().hex[:6]}",
        )
        doors = await come_in_through_every_door(product, person)
        found = await contact_of(product, person.email)
        assert found.status_code == 200, found.text
        contact_id = found.json()["id"]
        before = await sightings(product, person)
        for place in ("ingest.submissions", "ingest.outbox", "ingest.idempotency_keys"):
            assert any(s.startswith(place) for s in before), (place, before)
        assert any(s.startswith("contacts.contacts") for s in before)

        # The export gathers every service's part into one document.
        await product.settled("workflows.contacts", topics.CONTACTS)
        export = await product.contacts.get(
            f"/v1/contacts/{contact_id}/export", headers=token(product.workspace, "contacts:read")
        )
        assert export.status_code == 200, export.text
        document = export.json()
        assert document["contact"]["email"] == person.email.lower()
        ingest_part = document["services"]["ingest"]
        assert {s["source"] for s in ingest_part["submissions"]} == {"form", "api", "webhook"}
        assert {s["status"] for s in ingest_part["submissions"]} >= {"accepted", "rejected", "spam"}
        assert any(s["id"] == doors["quarantined"] for s in ingest_part["submissions"])
        [answer] = ingest_part["idempotency_records"]
        assert answer["status_code"] == 202
        assert "ingest" not in document["not_exported"]
        assert "workflows" not in document["not_exported"]
        workflows_part = document["services"]["workflows"]
        assert [c["id"] for c in workflows_part["contacts"]] == [contact_id]
        assert "notifier" not in document["not_exported"]
        assert set(document["services"]["notifier"]) == {
            "contacts",
            "notifications",
            "suppressions",
        }

        erased = await product.contacts.delete(
            f"/v1/contacts/{contact_id}", headers=product.admin()
        )
        assert erased.status_code == 204

        async def gone() -> bool:
            files = sqlite_file_sightings(product, person) if product.sqlite else []
            return files == [] and await sightings(product, person) == []

        try:
            await eventually(gone, timeout=20)
        finally:
            assert await sightings(product, person) == []
            if product.sqlite:  # nor in the bytes of a database file or its write-ahead log
                assert sqlite_file_sightings(product, person) == []

        # Old data comes back: releasing the quarantined post, and every captured lead
        # replayed as a dead letter would be (never applied, so not in contacts' inbox).
        release = await product.ingest.post(
            f"/v1/quarantine/{doors['quarantined']}/release", headers=product.admin()
        )
        assert release.status_code == 404  # erased with the rest
        replayed = 0
        for record in product.bus.records(topics.LEADS):
            old = Envelope.from_bytes(record.value)
            if old.workspace != product.workspace:
                continue
            again = old.model_copy(update={"id": uuid.uuid4().hex})
            await product.bus.publish(topics.LEADS, record.key, again)
            replayed += 1
        assert replayed >= 4
        await product.settled("contacts.leads", topics.LEADS)
        assert (await contact_of(product, person.email)).status_code == 404
        assert await sightings(product, person) == []

        # A new submission after the erasure is a new, consented capture.
        fresh = await product.ingest.post(
            f"/v1/forms/{doors['form']}/submissions",
            json={"email": person.email, "first_name": person.first_name, "consent": True},
        )
        assert fresh.status_code == 202
        await product.settled("contacts.leads", topics.LEADS)
        recaptured = await contact_of(product, person.email)
        assert recaptured.status_code == 200
        assert recaptured.json()["id"] != contact_id

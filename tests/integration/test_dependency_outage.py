"""A database outage answers 503 problem+json with Retry-After on every kind of route, the
hot public form route and invalid input included; service resumes when the database is back."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httpx
import pytest

from services.contacts.main import app as contacts_app
from services.ingest.main import app as ingest_app
from services.ingest.settings import IngestSettings
from services.ingest.webhooks import domain as webhooks_domain
from shared.settings import Settings
from tests.conftest import unique
from tests.helpers import SECRET, eventually, running, token
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.postgres


@pytest.fixture
async def proxy(postgres_url: str) -> AsyncIterator[TcpProxy]:
    address = urlsplit(postgres_url.replace("+asyncpg", ""))
    proxy = TcpProxy(address.hostname or "127.0.0.1", address.port or 5432)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.cut()


def through(proxy: TcpProxy, postgres_url: str) -> dict[str, object]:
    address = urlsplit(postgres_url)
    url = address._replace(netloc=f"{address.username}@127.0.0.1:{proxy.port}").geturl()
    return {
        "bus": "memory",
        "database_url": url,
        "db_schema": unique("outage") + "_{service}",
        "auth_secret": SECRET,
        "migrate_on_start": True,
        "ingest_form_rate_per_s": 1000.0,
        "ingest_form_burst": 1000,
    }


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["retry-after"]) > 0
    assert response.json()["code"] == "dependency_unavailable"


def signed(secret: str, body: bytes) -> dict[str, str]:
    msg_id, at = f"msg_{uuid.uuid4().hex}", int(time.time())
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(at),
        "webhook-signature": webhooks_domain.sign(secret, msg_id, at, body),
    }


class TestIngestDuringADatabaseOutage:
    async def test_every_route_answers_503_and_recovers(
        self, proxy: TcpProxy, postgres_url: str
    ) -> None:
        app = ingest_app(IngestSettings(**through(proxy, postgres_url)))  # type: ignore[arg-type]
        workspace = unique("ws")
        admin = token(workspace, "admin")
        # httpx's ASGI transport raises what the app re-raises: a 503 that also re-raised to
        # the server (which then drops the keep-alive connection) would fail here.
        async with running(app) as client:
            fields = [{"name": "email", "type": "email", "label": "Email"}]
            created = await client.post(
                "/v1/forms", json={"name": "f", "fields": fields}, headers=admin
            )
            assert created.status_code == 201, created.text
            form = created.json()
            created = await client.post(
                "/v1/webhook-sources",
                json={"name": "s", "mapping": {"email": "email"}},
                headers=admin,
            )
            assert created.status_code == 201, created.text
            source = created.json()
            submit = f"/v1/forms/{form['id']}/submissions"
            ok = await client.post(submit, json={"email": "a@example.com"})
            assert ok.status_code in (200, 201, 202, 303), ok.text

            await proxy.cut()
            body = b'{"email": "b@example.com"}'
            answers = {
                "hot form route": await client.post(submit, json={"email": "c@example.com"}),
                "invalid input": await client.post(submit, json={"email": "not an address"}),
                "webhook": await client.post(
                    f"/v1/webhooks/{source['id']}",
                    content=body,
                    headers=signed(source["secret"], body),
                ),
                "leads API": await client.post(
                    "/v1/leads", json={"email": "d@example.com"}, headers=admin
                ),
                "forms API": await client.get("/v1/forms", headers=admin),
            }
            for route, answer in answers.items():
                assert answer.status_code == 503, route
                assert_unavailable(answer)
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["database"] is False

            await proxy.restore()

            async def accepted() -> bool:
                again = await client.post(submit, json={"email": "e@example.com"})
                return again.status_code in (200, 201, 202, 303)

            await eventually(accepted, timeout=30)
            assert (await client.get("/readyz")).status_code == 200


class TestContactsDuringADatabaseOutage:
    async def test_the_api_answers_503(self, proxy: TcpProxy, postgres_url: str) -> None:
        app = contacts_app(Settings(**through(proxy, postgres_url)))  # type: ignore[arg-type]
        admin = token(unique("ws"), "admin")
        async with running(app) as client:
            assert (await client.get("/v1/contacts", headers=admin)).status_code == 200
            await proxy.cut()
            assert_unavailable(await client.get("/v1/contacts", headers=admin))
            assert_unavailable(
                await client.post("/v1/contacts", json={"email": "x@example.com"}, headers=admin)
            )

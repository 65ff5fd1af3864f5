"""Forwarded headers over a real uvicorn server: believed only from proxies an operator lists."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import uvicorn
from sqlalchemy import select

from services.__main__ import uvicorn_config
from services.ingest.main import app as ingest_app
from services.ingest.models import Submission
from services.ingest.settings import IngestSettings
from tests.helpers import token
from tests.infra import free_port
from tests.service.ingest.conftest import form_definition, random_email, settings_for


@asynccontextmanager
async def served(settings: IngestSettings) -> AsyncIterator[tuple[httpx.AsyncClient, object]]:
    """ingest behind uvicorn as `python -m services serve` configures it, on 127.0.0.1."""
    app = ingest_app(settings)
    port = free_port()
    server = uvicorn.Server(uvicorn_config(app, settings, port))
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(20):
            while not server.started:
                await asyncio.sleep(0.02)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            yield client, app
    finally:
        server.should_exit = True
        await task


async def recorded_addresses(app: object) -> list[str | None]:
    engine = app.state.ctx.engine  # type: ignore[attr-defined]
    async with engine.connect() as conn:
        return list((await conn.execute(select(Submission.client_address))).scalars())


async def post_forged(client: httpx.AsyncClient, workspace: str, count: int) -> list[int]:
    created = await client.post(
        "/v1/forms", json=form_definition(), headers=token(workspace, "admin")
    )
    assert created.status_code == 201, created.text
    url = f"/v1/forms/{created.json()['id']}/submissions"
    statuses = []
    for i in range(count):
        response = await client.post(
            url,
            json={"email": random_email(), "first_name": "Ann", "consent": True},
            headers={"x-forwarded-for": f"203.0.113.{i + 1}", "x-forwarded-proto": "https"},
        )
        statuses.append(response.status_code)
    return statuses


class TestForwardedHeaders:
    async def test_by_default_a_forged_header_changes_neither_the_bucket_nor_the_address(
        self, tmp_path: Path
    ) -> None:
        settings = settings_for(tmp_path, ingest_form_burst=2, ingest_form_rate_per_s=0.01)
        async with served(settings) as (client, app):
            statuses = await post_forged(client, "ws-forwarded", 4)
            # Each post claims another client, but they all came from this one peer.
            assert statuses == [202, 202, 429, 429]
            assert await recorded_addresses(app) == ["127.0.0.1", "127.0.0.1"]

    async def test_a_listed_proxy_is_believed(self, tmp_path: Path) -> None:
        settings = settings_for(
            tmp_path,
            ingest_form_burst=1,
            ingest_form_rate_per_s=0.01,
            forwarded_allow_ips="127.0.0.1",
        )
        async with served(settings) as (client, app):
            # Behind a trusted proxy each forwarded client has its own bucket and address.
            assert await post_forged(client, "ws-proxied", 3) == [202, 202, 202]
            assert sorted(await recorded_addresses(app)) == [  # type: ignore[type-var]
                "203.0.113.1",
                "203.0.113.2",
                "203.0.113.3",
            ]

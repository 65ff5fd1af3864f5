"""A PostgreSQL on the services' own machine reached over its Unix socket (deploy/local
infra's `socket_url`, which `make stack` and the benchmarks' own servers use): the services'
engines and a whole service work over it as over TCP. And what a benchmark records of the
server it ran on: how it was reached, whether it kept its crash safety."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from bench.infra import postgres_durability, postgres_via
from services.registry import spec
from shared.app import create_app
from shared.db import create_engine
from shared.transient import is_transient
from tests.conftest import unique
from tests.helpers import drop_schemas, postgres_settings, running

pytestmark = pytest.mark.postgres

# The client's address as the server saw it: NULL over a Unix socket.
CLIENT_ADDRESS = text("SELECT inet_client_addr()::text")


async def client_address(url: str) -> str | None:
    engine = create_engine(url)
    try:
        async with engine.connect() as conn:
            address: str | None = await conn.scalar(CLIENT_ADDRESS)
            # The engine's per-connection settings travel over the socket too.
            assert await conn.scalar(text("SHOW plan_cache_mode")) == "force_generic_plan"
            return address
    finally:
        await engine.dispose()


async def test_the_socket_url_connects_over_the_unix_socket(
    postgres_url: str, postgres_socket_url: str
) -> None:
    assert await client_address(postgres_socket_url) is None
    assert await client_address(postgres_url) == "127.0.0.1/32"
    assert postgres_via(postgres_socket_url) == "unix socket"
    assert postgres_via(postgres_url) == "tcp"


async def test_a_benchmark_records_whether_postgresql_kept_its_crash_safety(
    postgres_socket_url: str,
) -> None:
    # The test session's server trades it for speed (FAST_UNSAFE_SETTINGS); a benchmark's
    # figures on such a server must say so.
    engine = create_engine(postgres_socket_url)
    try:
        found = await postgres_durability(engine)
    finally:
        await engine.dispose()
    assert found == {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


async def test_a_service_migrates_and_serves_over_the_socket(
    postgres_url: str, postgres_socket_url: str, tmp_path: Path
) -> None:
    prefix = unique("sock")
    settings = postgres_settings(tmp_path, postgres_socket_url, prefix)
    app = create_app(spec("access"), settings)
    try:
        async with running(app) as client, app.state.ctx.engine.connect() as conn:
            assert (await client.get("/readyz")).status_code == 200
            assert await conn.scalar(CLIENT_ADDRESS) is None
            assert await conn.scalar(text("SELECT current_schema()")) == f"{prefix}_access"
    finally:
        await drop_schemas(postgres_url, f"{prefix}_access")


async def test_a_socket_without_its_server_is_an_outage_to_wait_out(tmp_path: Path) -> None:
    """A stopped server leaves no socket file (as this empty folder has none): the connect
    fails as a refused TCP connect does, which consumers wait out and requests answer 503,
    not with the FileNotFoundError that would dead-letter good events."""
    engine = create_engine(f"postgresql+asyncpg://postgres@/leadwire?host={tmp_path}&port=5432")
    try:
        with pytest.raises(ConnectionRefusedError) as refused:
            async with engine.connect():
                pass
        assert is_transient(refused.value)
        assert isinstance(refused.value.__cause__, FileNotFoundError)
    finally:
        await engine.dispose()

"""Test builders: a running app with a client, settings for each mode, tokens."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from bench import infra as bench_infra
from shared import db
from shared.auth import issue_token
from shared.migrations import upgrade
from shared.settings import Settings

SECRET = "test-secret-not-for-production-0123456789"
# The parameters of a store test that runs on both databases (PostgreSQL only when asked).
BOTH_DATABASES: list[Any] = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def embedded_settings(
    tmp_path: Path, settings_cls: type[Settings] = Settings, **overrides: object
) -> Settings:
    values: dict[str, object] = {
        "bus": "memory",
        "database_url": f"sqlite+aiosqlite:///{tmp_path}/{{service}}.db",
        "data_dir": tmp_path,
        "auth_secret": SECRET,
        "consumer_retry_backoff_s": 0.01,
    }
    return settings_cls(**(values | overrides))  # type: ignore[arg-type]


def postgres_settings(
    tmp_path: Path, postgres_url: str, prefix: str, **overrides: object
) -> Settings:
    """Embedded settings (the in-process bus) whose services keep their tables on PostgreSQL,
    each in schema `<prefix>_<service>`, migrated on start."""
    return embedded_settings(
        tmp_path,
        Settings,
        database_url=postgres_url,
        db_schema=f"{prefix}_{{service}}",
        migrate_on_start=True,
        **overrides,
    )


def distributed_settings(
    kafka: str,
    postgres: str,
    prefix: str,
    settings_cls: type[Settings] = Settings,
    **overrides: object,
) -> Settings:
    values: dict[str, object] = {
        "bus": "kafka",
        "kafka_bootstrap": kafka,
        "topic_prefix": prefix,
        "database_url": postgres,
        "db_schema": f"{prefix.rstrip('.')}_{{service}}",
        "auth_secret": SECRET,
        "migrate_on_start": True,
        "consumer_retry_backoff_s": 0.01,
    }
    return settings_cls(**(values | overrides))  # type: ignore[arg-type]


def token(workspace: str, *scopes: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(SECRET, workspace, list(scopes))}"}


@asynccontextmanager
async def running(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan (engine, bus, consumers, relay) and talk to it over ASGI."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 60) -> None:
    """Poll until `check` is true; fail the test after `timeout` seconds."""
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.05)


@asynccontextmanager
async def migrated_engine(
    request: pytest.FixtureRequest, migrations: Path, folder: Path, name: str
) -> AsyncIterator[AsyncEngine]:
    """A service's migrated database for a fixture parametrised by `BOTH_DATABASES`: a SQLite
    file in `folder`, or a schema of its own on the session's PostgreSQL."""
    if request.param == "postgres":
        schema: str | None = f"{name}{uuid.uuid4().hex[:10]}"
        engine = db.create_engine(request.getfixturevalue("postgres_url"), schema=schema)
    else:
        schema = None
        engine = db.create_engine(f"sqlite+aiosqlite:///{folder / f'{name}.db'}")
    await upgrade(engine, migrations, schema)
    try:
        yield engine
    finally:
        await engine.dispose()


def made_here_and_in_a_fork(make: Callable[[], list[str]]) -> tuple[set[str], set[str]]:
    """What `make` gives in this process and in a child forked from it: (this process's, the
    child's). For ids that a child must not repeat."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: what it made, to the parent
        os.close(read)
        os.write(write, " ".join(make()).encode())
        os._exit(0)
    os.close(write)
    parents = set(make())
    with os.fdopen(read) as pipe:
        childs = set(pipe.read().split())
    os.waitpid(pid, 0)
    return parents, childs


async def drop_schemas(postgres_url: str, *names: str) -> None:
    """Drop these schemas of the session's PostgreSQL, if they exist, with all they hold."""
    await bench_infra.drop_schemas(db.create_engine(postgres_url), *names)

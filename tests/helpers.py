"""Test builders: a running app with a client, settings for each mode, tokens."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI

from shared.auth import issue_token
from shared.settings import Settings

SECRET = "test-secret-not-for-production-0123456789"


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

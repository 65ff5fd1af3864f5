"""How the services' connections plan prepared statements on the real PostgreSQL: a generic
plan made once per connection and statement by default, PostgreSQL's `auto` when the operator
asks for it (LEADWIRE_DB_PLAN_CACHE_MODE)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg  # type: ignore[import-untyped]
import pytest
from sqlalchemy import text

from services.registry import spec
from shared.app import create_app
from shared.db import create_engine
from shared.db.engine import PlanCacheMode
from tests.conftest import unique
from tests.helpers import drop_schemas, postgres_settings, running

pytestmark = pytest.mark.postgres

# Matched by key, as a lead's hops read: `auto` plans its first five executions for their
# values, and keeps doing so as long as its generic plan looks dearer.
QUERY = "SELECT id, n FROM things WHERE workspace = $1 AND id = ANY($2::text[])"


@pytest.fixture
async def schema(postgres_url: str) -> AsyncIterator[str]:
    name = unique("plans")
    conn = await asyncpg.connect(postgres_url.replace("+asyncpg", ""))
    try:
        await conn.execute(
            f'CREATE SCHEMA "{name}";'
            f'CREATE TABLE "{name}".things (workspace text, id text, n int,'
            " PRIMARY KEY (workspace, id));"
            f"INSERT INTO \"{name}\".things SELECT 'w' || (i % 5), 'c' || i, i"
            " FROM generate_series(1, 2000) i;"
            f'ANALYZE "{name}".things'
        )
        yield name
    finally:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        await conn.close()


async def plans_of_the_query(
    postgres_url: str, schema: str, mode: PlanCacheMode | None
) -> dict[str, int]:
    """Run QUERY eight times as a prepared statement on one of the engine's connections; the
    generic and custom plans that connection made for it."""
    engine = (
        create_engine(postgres_url, schema=schema)
        if mode is None
        else create_engine(postgres_url, schema=schema, plan_cache_mode=mode)
    )
    try:
        async with engine.connect() as conn:
            driver = (await conn.get_raw_connection()).driver_connection
            assert driver is not None
            statement = await driver.prepare(QUERY)
            for i in range(8):
                # Three keys of the workspace and one of another.
                keys = [f"c{i + 5}", f"c{i + 500}", f"c{i + 1000}", f"c{i + 1}"]
                rows = await statement.fetch(f"w{i % 5}", keys)
                assert sorted(r["id"] for r in rows) == sorted(keys[:3])
            found = await driver.fetchrow(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements"
                " WHERE statement = $1",
                QUERY,
            )
            return dict(found)
    finally:
        await engine.dispose()


async def test_a_statement_is_planned_once_per_connection_by_default(
    postgres_url: str, schema: str
) -> None:
    assert await plans_of_the_query(postgres_url, schema, None) == {
        "generic_plans": 8,
        "custom_plans": 0,
    }


async def test_auto_plans_the_first_executions_for_their_values(
    postgres_url: str, schema: str
) -> None:
    plans = await plans_of_the_query(postgres_url, schema, "auto")
    assert plans["custom_plans"] >= 5
    assert plans["generic_plans"] + plans["custom_plans"] == 8


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [({}, "force_generic_plan"), ({"db_plan_cache_mode": "auto"}, "auto")],
)
async def test_a_service_plans_the_way_its_settings_say(
    postgres_url: str, tmp_path: Path, overrides: dict[str, object], expected: str
) -> None:
    prefix = unique("plan")
    settings = postgres_settings(tmp_path, postgres_url, prefix, **overrides)
    app = create_app(spec("access"), settings)
    try:
        async with running(app), app.state.ctx.engine.connect() as conn:
            assert await conn.scalar(text("SHOW plan_cache_mode")) == expected
            assert await conn.scalar(text("SELECT current_schema()")) == f"{prefix}_access"
    finally:
        await drop_schemas(postgres_url, f"{prefix}_access")

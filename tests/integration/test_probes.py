"""`shared.db.probe_each` reads rows by keys with one index probe per key, even where the
table's statistics are stale, which is exactly when `= ANY(keys)` walks the whole workspace."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

from shared.db import probe_each
from tests.conftest import unique

pytestmark = pytest.mark.postgres

ROW = "SELECT id, n FROM things WHERE workspace = $1 AND id = k.id"


@pytest.fixture
async def conn(postgres_url: str) -> AsyncIterator[asyncpg.Connection]:
    schema = unique("probe")
    connection = await asyncpg.connect(postgres_url.replace("+asyncpg", ""))
    await connection.execute(f'CREATE SCHEMA "{schema}"; SET search_path TO "{schema}"')
    await connection.execute(
        "CREATE TABLE things (workspace text, id text, n int, PRIMARY KEY (workspace, id))"
    )
    try:
        yield connection
    finally:
        await connection.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await connection.close()


def nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found += nodes(child)
    return found


async def test_rows_of_the_keys_in_their_order_missing_keys_skipped(
    conn: asyncpg.Connection,
) -> None:
    await conn.execute(
        "INSERT INTO things SELECT w, 'c' || i, i FROM generate_series(1, 50) i,"
        " unnest(ARRAY['ws1', 'ws2']) w"
    )
    keys = ["c7", "c3", "nope", "c42"]
    rows = await conn.fetch(
        "SELECT t.id, t.n FROM " + probe_each("$2::text[]", ROW, "t"), "ws2", keys
    )
    assert [(r["id"], r["n"]) for r in rows] == [("c7", 7), ("c3", 3), ("c42", 42)]


async def test_a_locking_probe_locks_each_row_it_reads(
    conn: asyncpg.Connection, postgres_url: str
) -> None:
    await conn.execute("INSERT INTO things VALUES ('ws', 'a', 1), ('ws', 'b', 2)")
    query = "SELECT t.id FROM " + probe_each("$2::text[]", ROW, "t", lock=" FOR UPDATE")
    skipping = "SELECT t.id FROM " + probe_each(
        "$2::text[]", ROW, "t", lock=" FOR UPDATE SKIP LOCKED"
    )
    other = await asyncpg.connect(postgres_url.replace("+asyncpg", ""))
    try:
        await other.execute(f"SET search_path TO {await conn.fetchval('SELECT current_schema()')}")
        async with conn.transaction():
            assert [r["id"] for r in await conn.fetch(query, "ws", ["a"])] == ["a"]
            async with other.transaction():
                # `a` is held by the first transaction: skipped here, and waited for there.
                assert [r["id"] for r in await other.fetch(skipping, "ws", ["a", "b"])] == ["b"]
            with pytest.raises(asyncio.TimeoutError):
                await other.fetch(query, "ws", ["a"], timeout=0.3)
    finally:
        await other.close()


async def test_one_index_probe_per_key_under_stale_statistics(conn: asyncpg.Connection) -> None:
    # Analysed while small, then grown: the statistics say the workspace holds almost nothing.
    await conn.execute(
        "INSERT INTO things SELECT 'w' || (i % 3), 'c' || i, i FROM generate_series(1, 20) i"
    )
    await conn.execute("ANALYZE things")
    await conn.execute(
        "INSERT INTO things SELECT 'big', 'c' || i, i FROM generate_series(1, 20000) i"
    )
    keys = [f"c{i}" for i in range(100, 20000, 200)]
    for mode in ("force_generic_plan", "force_custom_plan"):
        await conn.execute(f"SET plan_cache_mode = {mode}")
        name = unique("p")
        await conn.execute(
            f"PREPARE {name}(text, text[]) AS SELECT t.id FROM " + probe_each("$2", ROW, "t")
        )
        array = "ARRAY[" + ", ".join(f"'{key}'" for key in keys) + "]"
        raw = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE {name}('big', {array})")
        plan = json.loads(raw)[0]["Plan"]
        scans = [n for n in nodes(plan) if n.get("Relation Name") == "things"]
        assert scans, mode
        assert all(n["Node Type"] in ("Index Scan", "Index Only Scan") for n in scans), mode
        # Each probe finds its one row: no scan over the workspace's other 19,900.
        assert all(n["Actual Rows"] <= 1 for n in scans), mode
        assert sum(n["Actual Rows"] * n["Actual Loops"] for n in scans) == len(keys), mode

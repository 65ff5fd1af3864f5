"""The statistics keeper on the real PostgreSQL: a table analysed at a few rows and grown to
thousands is analysed again within a round or two, and a query's plan turns from a walk over
the table to a probe of the key's index; the keeper gathers the indexed columns from a small
sample and leaves the full ANALYZE to autovacuum; a table that did not grow is left alone; replicas
analyse a growth once; a database outage never ends the keeper; every service on PostgreSQL
runs one for its own schema, and none on SQLite."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg  # type: ignore[import-untyped]
import pytest
from prometheus_client import REGISTRY

from services.registry import spec
from shared.app import create_app
from shared.db import create_engine
from shared.db.statistics import (
    SAMPLE_TARGET,
    TableStats,
    analyze_grown_tables,
    keep_statistics,
    needs_analyze,
)
from tests.conftest import unique
from tests.helpers import drop_schemas, embedded_settings, eventually, running
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.postgres

MIN_ROWS = 500
KEYS = [f"c{i}" for i in range(100, 20_000, 200)]
# The workspace has an index of its own (workspace, n): under statistics that say the table
# holds 20 rows, the plan takes it and walks the workspace for 100 keys.
QUERY = "SELECT id, n FROM things WHERE workspace = $1 AND id = ANY($2)"


@pytest.fixture
async def schema(postgres_url: str) -> AsyncIterator[str]:
    """A schema with `things`, analysed at 20 rows then grown by 20,000 in one workspace, and
    `steady`, analysed at 2,000 rows then changed through and through but grown by a quarter
    only. Autovacuum is off for both, so only the keeper analyses them. The connection that
    made them is closed, so the server has counted its rows."""
    name = unique("stats")
    conn = await connect(postgres_url, name, create=True)
    try:
        await conn.execute(
            "CREATE TABLE things (workspace text, id text, n int, PRIMARY KEY (workspace, id));"
            "CREATE INDEX things_workspace_n ON things (workspace, n);"
            "CREATE TABLE steady (id int PRIMARY KEY, n int);"
            "ALTER TABLE things SET (autovacuum_enabled = false);"
            "ALTER TABLE steady SET (autovacuum_enabled = false);"
            "INSERT INTO things SELECT 'w' || (i % 3), 'c' || i, i FROM generate_series(1, 20) i;"
            "INSERT INTO steady SELECT i, i FROM generate_series(1, 2000) i;"
            "ANALYZE things; ANALYZE steady;"
            "INSERT INTO things SELECT 'big', 'c' || i, i FROM generate_series(1, 20000) i;"
            "UPDATE steady SET n = n + 1;"
            "INSERT INTO steady SELECT i, i FROM generate_series(2001, 2500) i;"
        )
    finally:
        await conn.close()
    try:
        yield name
    finally:
        conn = await connect(postgres_url, name)
        try:
            await conn.execute(f'DROP SCHEMA "{name}" CASCADE')
        finally:
            await conn.close()


async def connect(postgres_url: str, schema: str, create: bool = False) -> asyncpg.Connection:
    conn = await asyncpg.connect(postgres_url.replace("+asyncpg", ""))
    if create:
        await conn.execute(f'CREATE SCHEMA "{schema}"')
    await conn.execute(f'SET search_path TO "{schema}"')
    return conn


async def analyses(conn: asyncpg.Connection, table: str) -> int:
    await conn.execute("SELECT pg_stat_clear_snapshot()")
    count: int = await conn.fetchval(
        "SELECT analyze_count + autoanalyze_count FROM pg_stat_user_tables"
        " WHERE schemaname = current_schema() AND relname = $1",
        table,
    )
    return count


def analysed_by(service: str, table: str) -> float:
    """How many times the keeper of `service` analysed `table` (its metric)."""
    found = REGISTRY.get_sample_value(
        "leadwire_tables_analysed_total", {"service": service, "table": table}
    )
    return found or 0.0


def nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found += nodes(child)
    return found


async def things_scans(conn: asyncpg.Connection, statement: str) -> list[dict[str, Any]]:
    """The plan's nodes reading `things` (its heap or one of its indexes), as run."""
    array = "ARRAY[" + ", ".join(f"'{key}'" for key in KEYS) + "]"
    raw = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE {statement}('big', {array})")
    return [
        n
        for n in nodes(json.loads(raw)[0]["Plan"])
        if n.get("Relation Name") == "things" or n.get("Index Name", "").startswith("things")
    ]


def rows_read(scans: list[dict[str, Any]]) -> int:
    return max(int(n["Actual Rows"]) * int(n["Actual Loops"]) for n in scans)


async def test_a_table_grown_from_a_few_rows_is_analysed_and_then_probed_by_its_key(
    schema: str, postgres_url: str
) -> None:
    conn = await connect(postgres_url, schema)
    engine = create_engine(postgres_url, schema=schema)
    try:
        # The plan a prepared statement keeps (asyncpg prepares every statement) is generic.
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        await conn.execute(f"PREPARE walk(text, text[]) AS {QUERY}")
        before = await things_scans(conn, "walk")
        assert rows_read(before) >= 20_000, before  # the workspace's every row
        assert await analyses(conn, "things") == 1
        assert await analyses(conn, "steady") == 1

        service = unique("svc")
        keeper = asyncio.create_task(keep_statistics(engine, schema, service, 0.1, MIN_ROWS))
        try:

            async def things_analysed() -> bool:
                return analysed_by(service, "things") == 1

            await eventually(things_analysed, timeout=30)
            await asyncio.sleep(0.5)  # a few more rounds: nothing left to do
            assert not keeper.done()
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        assert await analyses(conn, "things") == 2
        # Changed through and through but a quarter bigger only: autovacuum's business.
        assert await analyses(conn, "steady") == 1
        assert await analyze_grown_tables(engine, schema, MIN_ROWS) == []

        # The same prepared statement, planned again on the new statistics: a probe of the
        # primary key for the keys, for the generic plan and a custom one alike.
        for mode in ("force_generic_plan", "force_custom_plan"):
            await conn.execute(f"SET plan_cache_mode = {mode}")
            after = await things_scans(conn, "walk")
            assert after, mode
            assert all(n["Node Type"] != "Seq Scan" for n in after), (mode, after)
            assert {n["Index Name"] for n in after if "Index Name" in n} == {"things_pkey"}, mode
            assert rows_read(after) == len(KEYS), (mode, after)
    finally:
        await conn.close()
        await engine.dispose()


async def test_statistics_taken_at_half_the_size_still_plan_a_probe_of_the_key(
    postgres_url: str,
) -> None:
    # Why doubling is soon enough: between two of the keeper's analyses a table holds at most
    # twice the rows its statistics say, and statistics half its size still plan the probe
    # (the walk in the first test came from statistics a thousandth of its size).
    name = unique("stats")
    conn = await connect(postgres_url, name, create=True)
    try:
        await conn.execute(
            "CREATE TABLE things (workspace text, id text, n int, PRIMARY KEY (workspace, id));"
            "ALTER TABLE things SET (autovacuum_enabled = false);"
            "CREATE INDEX things_workspace_n ON things (workspace, n);"
            "INSERT INTO things SELECT 'w' || (i % 3), 'c' || i, i FROM generate_series(1, 30) i;"
            "INSERT INTO things SELECT 'big', 'c' || i, i FROM generate_series(1, 9500) i;"
            "ANALYZE things;"
            "INSERT INTO things SELECT 'big', 'c' || i, i FROM generate_series(9501, 19000) i;"
        )
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        await conn.execute(f"PREPARE walk(text, text[]) AS {QUERY}")
        scans = await things_scans(conn, "walk")
        assert {n["Index Name"] for n in scans if "Index Name" in n} == {"things_pkey"}, scans
        assert rows_read(scans) == sum(1 for key in KEYS if int(key[1:]) <= 19_000), scans
        at_analyze = await conn.fetchval(
            "SELECT reltuples FROM pg_class WHERE oid = 'things'::regclass"
        )
        live = await conn.fetchval("SELECT count(*) FROM things")
        assert (at_analyze, live) == (9530, 19030)
        assert not needs_analyze(TableStats("things", at_analyze, live, analyses=1), MIN_ROWS)
    finally:
        await conn.execute(f'DROP SCHEMA "{name}" CASCADE')
        await conn.close()


async def test_the_keeper_samples_the_indexed_columns_and_leaves_the_rest_to_autovacuum(
    postgres_url: str,
) -> None:
    name = unique("stats")
    conn = await connect(postgres_url, name, create=True)
    engine = create_engine(postgres_url, schema=name)
    try:
        await conn.execute(
            "CREATE TABLE notes (id int PRIMARY KEY, contact text, body text);"
            "CREATE INDEX notes_contact ON notes (contact);"
            "CREATE TABLE tagged (id int PRIMARY KEY, label text, body text);"
            "CREATE INDEX tagged_label ON tagged (lower(label));"
            "CREATE TABLE loose (n int);"
            "ALTER TABLE notes SET (autovacuum_enabled = false);"
            "ALTER TABLE tagged SET (autovacuum_enabled = false);"
            "ALTER TABLE loose SET (autovacuum_enabled = false);"
            "INSERT INTO notes SELECT i, 'c' || (i % 700), repeat('x', i % 50)"
            " FROM generate_series(1, 8000) i;"
            "INSERT INTO tagged SELECT i, 'L' || (i % 9), 'b' FROM generate_series(1, 8000) i;"
            "INSERT INTO loose SELECT i FROM generate_series(1, 8000) i;"
        )
        await conn.close()  # its counts reach the server's statistics as it ends
        conn = await connect(postgres_url, name)

        async def counted() -> bool:
            await conn.execute("SELECT pg_stat_clear_snapshot()")
            live: int = await conn.fetchval(
                "SELECT sum(n_live_tup) FROM pg_stat_user_tables WHERE schemaname = $1", name
            )
            return live == 24_000

        await eventually(counted, timeout=10)
        analysed = await analyze_grown_tables(engine, name, MIN_ROWS)
        assert sorted(a.table.name for a in analysed) == ["loose", "notes", "tagged"]

        gathered = {
            (r["tablename"], r["attname"]): r["bounds"]
            for r in await conn.fetch(
                "SELECT tablename, attname, array_length(histogram_bounds::text::text[], 1)"
                " AS bounds FROM pg_stats WHERE schemaname = $1",
                name,
            )
        }
        # The indexed columns of `notes` only; every column of `tagged`, and its expression,
        # and of `loose`, which has no index.
        assert {column for table, column in gathered if table == "notes"} == {"id", "contact"}
        assert {column for table, column in gathered if table == "tagged"} == {
            "id",
            "label",
            "body",
        }
        assert ("tagged_label", "lower") in gathered
        assert ("loose", "n") in gathered
        # A histogram of SAMPLE_TARGET buckets (one bound more), not the server's default 100.
        assert gathered[("notes", "id")] == SAMPLE_TARGET + 1
        counts = {
            r["relname"]: (r["reltuples"], r["changes"])
            for r in await conn.fetch(
                "SELECT c.relname, c.reltuples, s.n_mod_since_analyze AS changes"
                " FROM pg_class c JOIN pg_stat_user_tables s ON s.relid = c.oid"
                " WHERE s.schemaname = $1",
                name,
            )
        }
        # All three counted at their size; autovacuum still owes `notes` its full ANALYZE.
        assert counts["notes"] == (8000, 8000)
        assert counts["tagged"] == (8000, 0)
        assert counts["loose"] == (8000, 0)
    finally:
        await conn.execute(f'DROP SCHEMA "{name}" CASCADE')
        await conn.close()
        await engine.dispose()


async def test_replicas_analyse_one_growth_once(schema: str, postgres_url: str) -> None:
    engines = [create_engine(postgres_url, schema=schema) for _ in range(3)]
    conn = await connect(postgres_url, schema)
    try:
        rounds = await asyncio.gather(
            *(analyze_grown_tables(engine, schema, MIN_ROWS) for engine in engines)
        )
        assert sorted(len(r) for r in rounds) == [0, 0, 1]
        assert [a.table.name for r in rounds for a in r] == ["things"]
        assert await analyses(conn, "things") == 2
    finally:
        await conn.close()
        for engine in engines:
            await engine.dispose()


async def test_a_database_outage_never_ends_the_keeper(
    schema: str, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    address = urlsplit(postgres_url)
    proxy = TcpProxy(address.hostname or "127.0.0.1", address.port or 5432)
    await proxy.start()
    through = address._replace(netloc=f"{address.username}@127.0.0.1:{proxy.port}").geturl()
    engine = create_engine(through, schema=schema)
    service = unique("svc")
    conn = await connect(postgres_url, schema)
    caplog.set_level(logging.INFO, logger="shared.db.statistics")

    def failures() -> float:
        found = REGISTRY.get_sample_value(
            "leadwire_statistics_rounds_failed_total", {"service": service}
        )
        return found or 0.0

    try:
        async with engine.connect() as pooled:  # a pooled connection the outage will break
            await pooled.exec_driver_sql("SELECT 1")
        await proxy.cut()
        keeper = asyncio.create_task(keep_statistics(engine, schema, service, 0.05, MIN_ROWS))
        try:

            async def failed_thrice() -> bool:
                return failures() >= 3

            await eventually(failed_thrice, timeout=30)
            assert not keeper.done()
            assert await analyses(conn, "things") == 1
            await proxy.restore()

            async def things_analysed() -> bool:
                return analysed_by(service, "things") == 1

            await eventually(things_analysed, timeout=30)
            assert not keeper.done()
            assert await analyses(conn, "things") == 2
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
        messages = [r.getMessage() for r in caplog.records if r.name == "shared.db.statistics"]
        # Said once for the whole outage, once when it ended.
        assert messages.count("could not keep table statistics, will retry") == 1
        assert messages.count("keeping table statistics again") == 1
        assert "analysed a table that grew since its statistics" in messages
    finally:
        await conn.close()
        await engine.dispose()
        await proxy.cut()


async def test_a_service_on_postgresql_keeps_its_own_tables_statistics(
    postgres_url: str, tmp_path: Path
) -> None:
    prefix = unique("keep")
    settings = embedded_settings(
        tmp_path,
        database_url=postgres_url,
        db_schema=f"{prefix}_{{service}}",
        migrate_on_start=True,
        statistics_keeper_interval_s=0.1,
        statistics_keeper_min_rows=50,
    )
    schema = f"{prefix}_access"
    app = create_app(spec("access"), settings)
    try:
        async with running(app):
            tasks = [task.get_name() for task in app.state.ctx.tasks]
            assert "access:statistics" in tasks
            conn = await connect(postgres_url, schema)
            try:
                await conn.execute(
                    "INSERT INTO inbox (consumer, event_id, processed_at)"
                    " SELECT 'test', 'e' || i, now() FROM generate_series(1, 200) i"
                )
            finally:
                await conn.close()  # its counts reach the server's statistics as it ends
            conn = await connect(postgres_url, schema)
            try:

                async def inbox_analysed() -> bool:
                    await conn.execute("SELECT pg_stat_clear_snapshot()")
                    manual: int = await conn.fetchval(
                        "SELECT analyze_count FROM pg_stat_user_tables"
                        " WHERE schemaname = current_schema() AND relname = 'inbox'"
                    )
                    return manual >= 1

                await eventually(inbox_analysed, timeout=30)
            finally:
                await conn.close()
    finally:
        await drop_schemas(postgres_url, schema)


async def test_a_service_on_sqlite_starts_no_keeper(tmp_path: Path) -> None:
    app = create_app(spec("access"), embedded_settings(tmp_path))
    async with running(app):
        assert "access:statistics" not in [task.get_name() for task in app.state.ctx.tasks]

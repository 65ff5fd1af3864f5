"""The persistence toolkit of `shared.db` behaves the same on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, event, insert, select, text

from shared import db
from tests.conftest import unique

metadata = MetaData()
PEOPLE = Table(
    "toolkit_people",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(40), nullable=False),
    Column("visits", Integer, nullable=False),
    Column("profile", db.Json, nullable=True),
    Column("seen_at", db.UtcDateTime, nullable=True),
)
AT = datetime(2026, 3, 4, 5, 6, 7, 890000, tzinfo=UTC)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[db.AsyncEngine]:
    if request.param == "postgres":
        schema = unique("tk")
        url = request.getfixturevalue("postgres_url")
        admin = db.create_engine(url)
        async with admin.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        await admin.dispose()
        engine = db.create_engine(url, schema=schema)
    else:
        engine = db.create_engine(f"sqlite+aiosqlite:///{tmp_path}/toolkit.db")
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield engine
    await engine.dispose()


async def people(engine: db.AsyncEngine) -> list[tuple[object, ...]]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(PEOPLE).order_by(PEOPLE.c.id))
        return [tuple(r) for r in rows]


def person(i: int, **changes: object) -> dict[str, object]:
    return {
        "id": f"p{i}",
        "name": f"person {i}",
        "visits": i,
        "profile": {"plan": "pro", "seats": i},
        "seen_at": AT,
        **changes,
    }


class TestUtcDateTime:
    async def test_every_timestamp_reads_back_as_aware_utc(self, engine: db.AsyncEngine) -> None:
        paris = timezone(timedelta(hours=1))
        async with engine.begin() as conn:
            await conn.execute(
                insert(PEOPLE),
                [
                    person(1, seen_at=AT.replace(tzinfo=None)),  # naive is UTC
                    person(2, seen_at=AT.astimezone(paris)),
                ],
            )

        seen = [row[4] for row in await people(engine)]
        assert seen == [AT, AT]
        assert all(isinstance(at, datetime) and at.tzinfo == UTC for at in seen)


class TestJsonRows:
    async def test_insert_json_rows_stores_what_an_executemany_stores(
        self, engine: db.AsyncEngine
    ) -> None:
        rows = [person(1), person(2, profile=None, seen_at=None), person(3, profile=[1, "é"])]
        async with db.sessionmaker(engine)() as session, session.begin():
            await db.insert_json_rows(session, PEOPLE, rows)

        assert await people(engine) == [
            ("p1", "person 1", 1, {"plan": "pro", "seats": 1}, AT),
            ("p2", "person 2", 2, None, None),
            ("p3", "person 3", 3, [1, "é"], AT),
        ]

    async def test_ignore_skips_rows_whose_key_exists(self, engine: db.AsyncEngine) -> None:
        async with db.sessionmaker(engine)() as session, session.begin():
            await db.insert_json_rows(session, PEOPLE, [person(1)])
            await db.insert_json_rows(
                session, PEOPLE, [person(1, name="again"), person(2)], ignore=True
            )

        assert [row[:2] for row in await people(engine)] == [("p1", "person 1"), ("p2", "person 2")]

    async def test_update_json_rows_sets_each_rows_columns(self, engine: db.AsyncEngine) -> None:
        async with db.sessionmaker(engine)() as session, session.begin():
            await db.insert_json_rows(session, PEOPLE, [person(1), person(2)])
            await db.update_json_rows(
                session, PEOPLE, [{"id": "p1", "visits": 10}, {"id": "p2", "visits": 20}]
            )

        assert [row[2] for row in await people(engine)] == [10, 20]


class TestInsertOrIgnoreAndUpsert:
    async def test_insert_or_ignore_counts_the_new_rows(self, engine: db.AsyncEngine) -> None:
        async with engine.begin() as conn:
            first = await db.insert_or_ignore(conn, PEOPLE, [person(1), person(2)])
            second = await db.insert_or_ignore(conn, PEOPLE, [person(2), person(3)])
            third = await db.insert_or_ignore(conn, PEOPLE, person(3))

        assert (first, second, third) == (2, 1, 0)
        assert len(await people(engine)) == 3

    async def test_upsert_inserts_then_updates_the_row_with_the_same_key(
        self, engine: db.AsyncEngine
    ) -> None:
        async with engine.begin() as conn:
            await db.upsert(conn, PEOPLE, person(1), key=["id"])
            await db.upsert(conn, PEOPLE, person(1, visits=5, name="renamed"), key=["id"])
            await db.upsert(conn, PEOPLE, person(1, visits=9), key=["id"], update=["visits"])

        assert [row[:3] for row in await people(engine)] == [("p1", "renamed", 9)]


class TestAdvisoryLocks:
    async def test_one_transaction_at_a_time_holds_a_named_lock(
        self, engine: db.AsyncEngine
    ) -> None:
        name = unique("lock")
        async with engine.connect() as first, engine.connect() as second:
            async with first.begin():
                assert await db.try_xact_lock(first, name)
                # SQLite is single-process: its write lock serialises writers instead.
                held_elsewhere = engine.dialect.name == "postgresql"
                async with second.begin():
                    assert await db.try_xact_lock(second, name) is not held_elsewhere
            async with second.begin():  # released with the first transaction
                assert await db.try_xact_lock(second, name)
                await db.xact_lock(second, unique("other"))


@pytest.fixture
async def pg_engine(postgres_url: str) -> AsyncIterator[db.AsyncEngine]:
    schema = unique("tk")
    admin = db.create_engine(postgres_url)
    async with admin.begin() as conn:
        await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    await admin.dispose()
    engine = db.create_engine(postgres_url, schema=schema)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield engine
    await engine.dispose()


class TestCountedRows:
    def test_the_bound_is_the_least_power_of_two_not_below_the_count(self) -> None:
        counts = (0, 1, 2, 3, 4, 5, 100, 128, 129)
        assert [db.row_bound(n) for n in counts] == [1, 1, 2, 4, 4, 8, 128, 128, 256]

    @pytest.mark.postgres
    async def test_updating_a_few_rows_of_thousands_looks_each_up_by_its_key(
        self, pg_engine: db.AsyncEngine
    ) -> None:
        """Told nothing, the planner guesses a JSON document holds 100 rows, and against a
        table of a few thousand it hashes a scan of the whole table to update one row."""
        async with db.sessionmaker(pg_engine)() as session, session.begin():
            await db.insert_json_rows(session, PEOPLE, [person(i) for i in range(5000)])
        async with pg_engine.begin() as conn:
            await conn.execute(text(f"ANALYZE {PEOPLE.name}"))
        ran: list[tuple[str, Sequence[Any]]] = []

        def record(
            conn: object, cursor: object, statement: str, params: Sequence[Any], *_: object
        ) -> None:
            ran.append((statement, params))

        event.listen(pg_engine.sync_engine, "before_cursor_execute", record)
        async with db.sessionmaker(pg_engine)() as session, session.begin():
            await db.update_json_rows(
                session, PEOPLE, [{"id": "p42", "visits": 1}, {"id": "p7", "visits": 2}]
            )
        event.remove(pg_engine.sync_engine, "before_cursor_execute", record)
        [(statement, params)] = [(s, p) for s, p in ran if s.lstrip().startswith("UPDATE")]
        async with pg_engine.connect() as conn:
            plan = "\n".join(
                row[0] for row in await conn.exec_driver_sql(f"EXPLAIN {statement}", params)
            )
        assert "Seq Scan" not in plan, plan
        assert f"Index Scan using {PEOPLE.name}_pkey" in plan, plan
        assert [row[2] for row in await people(pg_engine) if row[0] in ("p7", "p42")] == [1, 2]

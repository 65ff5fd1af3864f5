"""`db.insert_rows` stores exactly what a Core executemany stores, inside the caller's transaction."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    TypeDecorator,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.engine import Dialect

from shared import db
from tests.conftest import unique


class Shouting(TypeDecorator[str]):
    """A custom type whose bind step changes the value: bulk paths must not skip it."""

    impl = String(40)
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        return value.upper() if value is not None else None


metadata = MetaData()
ROWS = Table(
    "bulk_rows",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("n", Integer, nullable=True),
    Column("flag", Boolean, nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("data", JSON, nullable=True),
    Column("strict", JSON(none_as_null=True), nullable=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("note", String(20), nullable=False, server_default="none"),
    Column("loud", Shouting, nullable=True),
)
WITH_DEFAULT = Table(
    "bulk_defaults",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("kind", String(20), nullable=False, default="plain"),
)
AT = datetime(2026, 3, 4, 5, 6, 7, 890000, tzinfo=UTC)


def row(i: int, data: object) -> dict[str, object]:
    return {
        "id": f"r{i}",
        "n": i if i % 2 else None,
        "flag": bool(i % 2),
        "body": bytes([i, 0, 255]),
        "data": data,
        "strict": data,
        "at": AT,
        "loud": f"row {i}",
    }


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[db.AsyncEngine]:
    if request.param == "postgres":
        schema = unique("bulk")
        engine = db.create_engine(request.getfixturevalue("postgres_url"), schema=schema)
        async with engine.begin() as conn:
            await conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    else:
        engine = db.create_engine(f"sqlite+aiosqlite:///{tmp_path / 'bulk.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    yield engine
    await engine.dispose()


async def test_stores_what_an_executemany_stores(engine: db.AsyncEngine) -> None:
    values: list[object] = [{"k": [1, "é"]}, None, "text", {"n": 3.5}, [], {"nested": {"t": None}}]
    rows = [row(i, data) for i, data in enumerate(values)]
    sessions = db.sessionmaker(engine)
    async with sessions() as session, session.begin():
        await db.insert_rows(session, ROWS, rows)
    async with sessions() as session:
        stored = (await session.execute(select(ROWS).order_by(ROWS.c.id))).mappings().all()
        json_nulls = await session.scalar(
            select(func.count()).where(ROWS.c.data.is_(None)).select_from(ROWS)
        )
    assert json_nulls == 0  # None in a plain JSON column is JSON null, as SQLAlchemy stores it
    assert [{**r, "note": "none", "loud": str(r["loud"]).upper()} for r in rows] == [
        {**dict(r), "at": r["at"].replace(tzinfo=UTC)} for r in stored
    ]


async def test_runs_in_the_callers_transaction(engine: db.AsyncEngine) -> None:
    sessions = db.sessionmaker(engine)
    with pytest.raises(RuntimeError):
        async with sessions() as session, session.begin():
            await db.insert_rows(session, ROWS, [row(1, None)])
            raise RuntimeError("roll back")
    async with sessions() as session:
        assert await session.scalar(select(func.count()).select_from(ROWS)) == 0


async def test_a_python_side_default_is_applied(engine: db.AsyncEngine) -> None:
    sessions = db.sessionmaker(engine)
    async with sessions() as session, session.begin():
        await db.insert_rows(session, WITH_DEFAULT, [{"id": "a"}, {"id": "b"}])
        await session.execute(insert(WITH_DEFAULT), [{"id": "c", "kind": "given"}])
    async with sessions() as session:
        kinds = (await session.execute(select(WITH_DEFAULT.c.kind))).scalars().all()
    assert sorted(kinds) == ["given", "plain", "plain"]


async def test_append_rows_writes_several_tables_in_one_transaction(
    engine: db.AsyncEngine,
) -> None:
    async with engine.connect() as conn:
        await db.append_rows(conn, [(ROWS, [row(1, {"a": 1})]), (WITH_DEFAULT, [])])
        await db.append_rows(
            conn, [(ROWS, [row(2, None)]), (WITH_DEFAULT, [{"id": "a", "kind": "given"}])]
        )
        with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
            # The second table's rows collide: the first table's rows are rolled back too.
            await db.append_rows(
                conn, [(ROWS, [row(3, None)]), (WITH_DEFAULT, [{"id": "a", "kind": "again"}])]
            )
    sessions = db.sessionmaker(engine)
    async with sessions() as session:
        ids = (await session.execute(select(ROWS.c.id).order_by(ROWS.c.id))).scalars().all()
        kinds = (await session.execute(select(WITH_DEFAULT.c.kind))).scalars().all()
    assert ids == ["r1", "r2"]
    assert kinds == ["given"]


async def test_append_rows_wants_every_column_that_has_a_default(engine: db.AsyncEngine) -> None:
    async with engine.connect() as conn:
        with pytest.raises(ValueError, match="default"):
            await db.append_rows(conn, [(WITH_DEFAULT, [{"id": "a"}])])

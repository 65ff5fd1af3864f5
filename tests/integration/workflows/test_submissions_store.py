"""Form submissions paired set-wise (one statement a batch), on SQLite and the real
PostgreSQL: whichever side comes second completes the pair, exactly once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.workflows.main import SPEC
from services.workflows.store import WorkflowsStore
from shared import db
from shared.migrations import upgrade
from tests.conftest import unique

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


async def pair(engine: AsyncEngine, *halves: tuple[str, str | None, str | None]) -> Any:
    async with db.sessionmaker(engine)() as session, session.begin():
        return await WorkflowsStore(session).pair_submissions("ws", list(halves), NOW)


async def test_the_second_side_completes_the_pair_once(database: AsyncEngine) -> None:
    assert await pair(database, ("s1", "frm", None), ("s2", None, "c2")) == {}
    # s1's contact completes it; s2's form completes it; s3 comes whole in one batch.
    completed = await pair(
        database, ("s1", None, "c1"), ("s2", "frm", None), ("s3", "frm3", None), ("s3", None, "c3")
    )
    assert completed == {"s1": ("frm", "c1"), "s2": ("frm", "c2"), "s3": ("frm3", "c3")}
    # Redelivered halves of completed pairs complete nothing again.
    assert await pair(database, ("s1", "frm", None), ("s2", None, "c2"), ("s3", None, "c3")) == {}
    # A half seen twice before its pair is still waiting for the other side.
    assert await pair(database, ("s4", "frm", None)) == {}
    assert await pair(database, ("s4", "frm", None)) == {}
    assert await pair(database, ("s4", None, "c4")) == {"s4": ("frm", "c4")}


@pytest.mark.postgres
async def test_concurrent_halves_complete_the_pair_in_exactly_one_transaction(
    postgres_url: str,
) -> None:
    schema = unique("wsub")
    engine = db.create_engine(postgres_url, schema=schema)
    await upgrade(engine, SPEC.migrations, schema)
    try:
        ids = [f"s{i:03d}" for i in range(50)]

        async def side(form: str | None, contact: str | None) -> Any:
            # Half of the ids in reverse order: the rows are still locked in one order.
            order = ids if form else ids[::-1]
            halves = [(s, form, contact and f"c-{s}") for s in order]
            return await pair(engine, *halves)

        for _ in range(3):
            ids = [f"{i}-{s}" for i, s in enumerate(ids)]
            lead, contact = await asyncio.gather(side("frm", None), side(None, "c"))
            assert sorted([*lead, *contact]) == sorted(ids)
            assert set(lead).isdisjoint(contact)
    finally:
        await engine.dispose()

"""The one locked read a batch of facts makes of runs gives what `last_runs` and `open_runs`
give apart, and the one write of a batch carries its inbox claim, on SQLite and the real
PostgreSQL."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.workflows.rows import INBOX
from services.workflows.store import RunWrites, WorkflowsStore
from shared import db
from shared.inbox import AlreadyHandled, claim_many

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def run(n: int, workflow: str, contact: str, status: str, days_ago: int) -> dict[str, Any]:
    at = NOW - timedelta(days=days_ago)
    return {
        "id": f"enr_{n}",
        "workspace": "ws",
        "workflow_id": workflow,
        "version": 1,
        "contact_id": contact,
        "status": status,
        "trigger": "manual",
        "step": None,
        "outcomes": {},
        "seq": 0,
        "attempt": 0,
        "wait_event": None,
        "wait_until": None,
        "error": None,
        "enrolled_at": at,
        "updated_at": at,
        "ended_at": None if status in ("active", "waiting") else at,
    }


async def test_one_read_gives_the_last_runs_of_the_pairs_and_the_open_runs(
    database: AsyncEngine,
) -> None:
    rows = [
        run(1, "w1", "a", "completed", 9),
        run(2, "w1", "a", "completed", 3),  # a's latest in w1: ended
        run(3, "w2", "a", "waiting", 5),  # open, older than an ended one below
        run(4, "w2", "a", "completed", 1),
        run(5, "w1", "b", "failed", 2),
        run(6, "w3", "b", "active", 4),
        run(7, "w1", "c", "waiting", 1),  # c is not among the contacts asked
    ]
    async with db.sessionmaker(database)() as session, session.begin():
        store = WorkflowsStore(session)
        await store.add_runs(rows)
    pairs = [("w1", "a"), ("w2", "a"), ("w1", "b"), ("w9", "b")]
    async with db.sessionmaker(database)() as session, session.begin():
        store = WorkflowsStore(session)
        last, found = await store.runs_of_facts("ws", ["a", "b"], pairs)
        assert last == await store.last_runs("ws", pairs)
        assert last == {
            ("w1", "a"): (NOW - timedelta(days=3), True),
            ("w2", "a"): (NOW - timedelta(days=5), False),
            ("w1", "b"): (NOW - timedelta(days=2), True),
        }
        apart = await store.open_runs("ws", ["a", "b"])
        assert sorted(r["id"] for r in found) == sorted(r["id"] for r in apart)
        assert sorted(r["id"] for r in found) == ["enr_3", "enr_6"]
        no_pairs = await store.runs_of_facts("ws", ["a"], [])
        assert no_pairs == ({}, await store.open_runs("ws", ["a"]))
        # A pair of a contact whose open runs are not asked for: its last run, none of its own.
        last, found = await store.runs_of_facts("ws", ["a"], [("w1", "c")])
        assert last == {("w1", "c"): (NOW - timedelta(days=1), False)}
        assert [r["id"] for r in found] == ["enr_3"]


async def test_the_run_writes_carry_the_inbox_claim_and_refuse_a_redelivery(
    database: AsyncEngine,
) -> None:
    event = {"topic": "t", "key": "k", "event_id": "ev", "payload": b"{}", "created_at": NOW}
    first = RunWrites(new_runs=[run(1, "w1", "a", "completed", 0)], events=[event])
    async with db.sessionmaker(database)() as session, session.begin():
        await WorkflowsStore(session).write_runs(replace(first, claim=("c1", ["e1", "e2"])))
    # e2 again among new ones: refused, and the transaction keeps nothing of it.
    again = RunWrites(new_runs=[run(2, "w1", "b", "completed", 0)], events=[event])
    async with db.sessionmaker(database)() as session:
        with pytest.raises(AlreadyHandled):
            async with session.begin():
                await WorkflowsStore(session).write_runs(replace(again, claim=("c1", ["e3", "e2"])))
    async with db.sessionmaker(database)() as session, session.begin():
        store = WorkflowsStore(session)
        assert set(await store.runs("ws", ["enr_1", "enr_2"])) == {"enr_1"}
        assert await claim_many(session, INBOX, "c1", ["e1", "e2", "e3"]) == {"e3"}
        # A claim alone (a batch that wrote nothing else) is written too.
        await store.write_runs(RunWrites(claim=("c2", ["e1"])))
        assert await claim_many(session, INBOX, "c2", ["e1"]) == set()


@pytest.mark.parametrize("count", [1, 4, 5])
async def test_the_run_writes_save_every_run_they_are_given(
    database: AsyncEngine, count: int
) -> None:
    """The saved runs are joined under a LIMIT that tells the planner their number (see
    `shared.db.json_update_sql`): at a power of two and past one, none is left out."""
    runs = [run(n, "w1", f"c{n}", "active", 0) for n in range(1, count + 1)]
    async with db.sessionmaker(database)() as session, session.begin():
        await WorkflowsStore(session).write_runs(RunWrites(new_runs=runs))
    saved = [{**r, "status": "completed", "ended_at": NOW} for r in runs]
    later = RunWrites(saved_runs=saved, new_runs=[run(99, "w2", "c1", "active", 0)])
    async with db.sessionmaker(database)() as session, session.begin():
        await WorkflowsStore(session).write_runs(later)
    async with db.sessionmaker(database)() as session, session.begin():
        found = await WorkflowsStore(session).runs("ws", [r["id"] for r in runs])
    assert sorted(r["status"] for r in found.values()) == ["completed"] * count

"""A batch of contact events read outside any transaction and written by one statement that
commits by itself (`RunsStore.checked`), on the real PostgreSQL: the statement writes a run
back only if nobody moved it since it was read, claims its events strictly, and otherwise
writes nothing at all."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.workflows.main import SPEC
from services.workflows.rows import INBOX, OUTBOX, STEPS
from services.workflows.runs.store import UnreadRun
from services.workflows.store import RunWrites, WorkflowsStore
from shared import db
from shared.one_statement import OneStatement, WriteBeforeCommit
from tests.helpers import migrated_engine

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CONSUMER = "workflows.contacts"


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.postgres)])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with migrated_engine(request, SPEC.migrations, tmp_path, "wcw") as made:
        yield made


def a_run(n: int, contact: str, status: str = "waiting") -> dict[str, Any]:
    return {
        "id": f"enr_{n}",
        "workspace": "ws",
        "workflow_id": "w1",
        "version": 1,
        "contact_id": contact,
        "status": status,
        "trigger": "contact_created",
        "step": "wait",
        "outcomes": {},
        "seq": 2,
        "attempt": 0,
        "wait_event": "email.opened",
        "wait_until": None,
        "error": None,
        "enrolled_at": NOW,
        "updated_at": NOW,
        "ended_at": None,
    }


def a_step(run: dict[str, Any]) -> dict[str, Any]:
    return {
        "workspace": "ws",
        "enrollment_id": run["id"],
        "contact_id": run["contact_id"],
        "step": "after",
        "step_type": "add_tag",
        "outcome": "completed",
        "seq": run["seq"],
        "detail": {},
        "error": None,
        "at": NOW,
    }


def an_event(event_id: str) -> dict[str, Any]:
    return {"topic": "t", "key": "k", "event_id": event_id, "payload": b"{}", "created_at": NOW}


async def seeded(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    sessions = db.sessionmaker(engine)
    async with sessions() as session, session.begin():
        await WorkflowsStore(session).add_runs([a_run(1, "a"), a_run(2, "b")])
    return sessions


def moved(run: dict[str, Any]) -> dict[str, Any]:
    """The run one step further, as the engine leaves it."""
    return {**run, "seq": run["seq"] + 1, "step": "after", "status": "completed", "ended_at": NOW}


async def write(
    sessions: async_sessionmaker[AsyncSession],
    contacts: list[str],
    event_ids: list[str],
    meanwhile: str | None = None,
) -> None:
    """Read the contacts' open runs, move each one step, then write it all in one statement
    (with a new run, a step, an event and the claim); `meanwhile` runs on another connection
    between the read and the write."""
    notified: list[str] = []
    async with OneStatement(sessions, OUTBOX, INBOX, lambda: notified.append("relay")) as tx:
        tx.claim_at_commit(CONSUMER, event_ids)
        store = WorkflowsStore(tx.session, checked=True)
        _, found = await store.runs_of_facts("ws", contacts, [("w1", c) for c in contacts])
        if meanwhile is not None:
            async with sessions() as other, other.begin():
                await other.execute(text(meanwhile))
        tx.writing()
        await store.write_runs(
            RunWrites(
                new_runs=[a_run(9, "z", "active")],
                saved_runs=[moved(r) for r in found],
                steps=[a_step(moved(r)) for r in found],
                events=[*tx.take_pending(), an_event("out-1")],
                claim=tx.take_claim(),
            )
        )
        await tx.wrote()


async def state(sessions: async_sessionmaker[AsyncSession]) -> dict[str, Any]:
    async with sessions() as session:
        found = await session.execute(text("SELECT id, seq FROM enrollments"))
        runs = {str(run_id): int(seq) for run_id, seq in found.all()}
        steps = await session.scalar(select(func.count()).select_from(STEPS))
        events = await session.scalar(select(func.count()).select_from(OUTBOX))
        claims = (await session.execute(select(INBOX.c.event_id))).scalars().all()
    return {"runs": runs, "steps": steps, "events": events, "claims": sorted(claims)}


async def test_runs_read_without_locks_are_written_back_with_the_claim(
    engine: AsyncEngine,
) -> None:
    sessions = await seeded(engine)
    await write(sessions, ["a", "b"], ["e1", "e2"])
    assert await state(sessions) == {
        "runs": {"enr_1": 3, "enr_2": 3, "enr_9": 2},
        "steps": 2,
        "events": 1,
        "claims": ["e1", "e2"],
    }


async def test_the_read_locks_nothing(engine: AsyncEngine) -> None:
    """Outside a transaction a lock would end with its statement anyway; taken, it would
    only have rewritten the rows. Another transaction can lock them at once."""
    sessions = await seeded(engine)
    async with OneStatement(sessions, OUTBOX, INBOX) as tx:
        store = WorkflowsStore(tx.session, checked=True)
        _, found = await store.runs_of_facts("ws", ["a"], [])
        assert [r["id"] for r in found] == ["enr_1"]
        async with sessions() as other, other.begin():
            await other.execute(text("SET LOCAL lock_timeout = '1s'"))
            locked = await other.execute(text("SELECT id FROM enrollments FOR UPDATE NOWAIT"))
            assert len(locked.all()) == 2


async def test_a_run_moved_meanwhile_fails_the_statement_and_nothing_is_written(
    engine: AsyncEngine,
) -> None:
    sessions = await seeded(engine)
    before = await state(sessions)
    with pytest.raises(DBAPIError, match="division by zero"):
        await write(
            sessions, ["a", "b"], ["e1"], "UPDATE enrollments SET seq = seq + 1 WHERE id = 'enr_2'"
        )
    after = await state(sessions)
    assert after == {**before, "runs": {"enr_1": 2, "enr_2": 3}}  # only the other's move
    # A run erased meanwhile (gone with its contact) fails it the same way.
    with pytest.raises(DBAPIError, match="division by zero"):
        await write(sessions, ["a"], ["e1"], "DELETE FROM enrollments WHERE id = 'enr_1'")
    assert (await state(sessions))["claims"] == []


async def test_a_redelivered_event_fails_the_statement_whole(engine: AsyncEngine) -> None:
    sessions = await seeded(engine)
    await write(sessions, ["a"], ["e1"])
    first = await state(sessions)
    # e1 again, among a new one: the strict claim fails, so neither the new run nor e2 is kept.
    async with sessions() as session, session.begin():
        await session.execute(text("DELETE FROM enrollments WHERE id = 'enr_9'"))
    # With runs to save (the checked claim) and without (the strict claim alone).
    for contacts in (["b"], ["nobody"]):
        with pytest.raises(DBAPIError, match="inbox"):
            await write(sessions, contacts, ["e2", "e1"])
        assert await state(sessions) == {**first, "runs": {"enr_1": 3, "enr_2": 2}}


async def test_a_checked_write_refuses_runs_it_did_not_read(engine: AsyncEngine) -> None:
    sessions = await seeded(engine)
    async with OneStatement(sessions, OUTBOX, INBOX) as tx:
        store = WorkflowsStore(tx.session, checked=True)
        tx.writing()
        with pytest.raises(UnreadRun):
            await store.write_runs(
                RunWrites(saved_runs=[moved(a_run(1, "a"))], claim=(CONSUMER, ["e1"]))
            )
    assert (await state(sessions))["runs"] == {"enr_1": 2, "enr_2": 2}


async def test_nothing_is_written_before_the_statement(engine: AsyncEngine) -> None:
    """A write before `writing` (a form submission's pairing) would commit on its own."""
    sessions = await seeded(engine)
    async with OneStatement(sessions, OUTBOX, INBOX) as tx:
        store = WorkflowsStore(tx.session, checked=True)
        with pytest.raises(WriteBeforeCommit):
            await store.pair_submissions("ws", [("s1", "form", None)], NOW)
    async with sessions() as session:
        assert await session.scalar(text("SELECT count(*) FROM submissions")) == 0


async def test_the_view_reads_the_runs_of_facts_with_it(engine: AsyncEngine) -> None:
    """Outside a transaction the batch's view reads every run of its contacts too, and
    `runs_of_facts` answers from them as the locked read does, without a statement of its
    own; contacts the view did not read are read apart."""
    sessions = await seeded(engine)
    ended = {**a_run(3, "a"), "workflow_id": "w2", "status": "completed", "ended_at": NOW}
    async with sessions() as session, session.begin():
        await WorkflowsStore(session).add_runs([ended, a_run(4, "c", "active")])
    pairs = [("w1", "a"), ("w2", "a"), ("w1", "b"), ("w9", "b")]
    async with sessions() as session, session.begin():
        locked = await WorkflowsStore(session).runs_of_facts("ws", ["a", "b"], pairs)
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        async with OneStatement(sessions, OUTBOX, INBOX) as tx:
            store = WorkflowsStore(tx.session, checked=True)
            await store.batch_view("ws", ["a", "b"], [])
            assert len(statements) == 1
            last, found = await store.runs_of_facts("ws", ["a", "b"], pairs)
            assert len(statements) == 1
            assert last == locked[0]
            assert sorted(found, key=lambda r: r["id"]) == sorted(locked[1], key=lambda r: r["id"])
            assert {r["id"] for r in found} == {"enr_1", "enr_2"}
            # c was not in the view: read apart, and found.
            _, found = await store.runs_of_facts("ws", ["c"], [])
            assert len(statements) == 2
            assert [r["id"] for r in found] == ["enr_4"]
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)

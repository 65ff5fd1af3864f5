"""A small batch's first try accepted by one statement that commits by itself, on the real
PostgreSQL: everything or nothing is written, and nothing before that statement."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from services.notifier.handlers import projection_rows
from services.notifier.main import SPEC
from services.notifier.models import Attempt, Delivery, inbox, outbox
from services.notifier.requests.handlers import Request, _new_row
from services.notifier.requests.statement import OneStatement, WriteBeforeCommit
from services.notifier.store import NotifierStore
from shared import db
from shared.events.envelope import Envelope
from shared.events.notifications import NotificationRequested
from shared.inbox import AlreadyHandled
from tests.helpers import migrated_engine

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CONSUMER = "notifier.requests"


@pytest.fixture(params=[pytest.param("postgres", marks=pytest.mark.postgres)])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with migrated_engine(request, SPEC.migrations, tmp_path, "nos") as made:
        yield made


def started(key: str) -> dict[str, Any]:
    made = _new_row(Request("ws", NotificationRequested(idempotency_key=key, channel="s")), NOW)
    made.update(
        message={"text": "hi"},
        prepared=True,
        status="sending",
        attempts=1,
        claimed_at=NOW,
        first_attempt_at=NOW,
        next_attempt_at=None,
    )
    return made


def an_event() -> Envelope:
    payload = NotificationRequested(idempotency_key="k-event", channel="s", content={"text": "x"})
    return Envelope.of(payload, source="/test", workspace="ws")


async def accept(
    sessions: async_sessionmaker[AsyncSession], rows: list[dict[str, Any]], event_ids: list[str]
) -> list[str]:
    """Defer `rows` and one outcome event, then commit; returns the relay's notifications."""
    notified: list[str] = []
    async with OneStatement(sessions, outbox, inbox, lambda: notified.append("relay")) as tx:
        store = NotifierStore(tx.session)
        await store.intake_reads("ws", ["c1"], ["s"])
        await store.insert_deliveries(rows, defer=True)
        tx.emit("notifications", "k", an_event())
        await tx.commit(CONSUMER, event_ids)
    return notified


async def written(sessions: async_sessionmaker[AsyncSession]) -> tuple[list[str], int, int, int]:
    async with sessions() as session:
        keys = (await session.execute(select(Delivery.idempotency_key))).scalars().all()
        tries = await session.scalar(select(func.count()).select_from(Attempt))
        events = await session.scalar(select(func.count()).select_from(outbox))
        claims = await session.scalar(select(func.count()).select_from(inbox))
    return sorted(keys), tries or 0, events or 0, claims or 0


async def test_the_statement_writes_deliveries_attempts_events_and_the_claim(
    engine: AsyncEngine,
) -> None:
    sessions = db.sessionmaker(engine)
    assert await accept(sessions, [started("k1"), started("k2")], ["e1", "e2"]) == ["relay"]
    assert await written(sessions) == (["k1", "k2"], 2, 1, 2)


async def test_an_event_handled_before_fails_the_statement_and_nothing_is_written(
    engine: AsyncEngine,
) -> None:
    # A redelivery whose delivery is gone (erased since): the transaction's claim skipped a
    # known event and rolled back; a statement that commits by itself must fail instead.
    sessions = db.sessionmaker(engine)
    async with sessions() as session, session.begin():
        await session.execute(
            insert(inbox).values(consumer=CONSUMER, event_id="e-old", processed_at=NOW)
        )
    with pytest.raises(IntegrityError):
        await accept(sessions, [started("k-new")], ["e-new", "e-old"])
    assert await written(sessions) == ([], 0, 0, 1)


async def test_a_known_key_fails_the_statement_and_nothing_is_written(
    engine: AsyncEngine,
) -> None:
    sessions = db.sessionmaker(engine)
    await accept(sessions, [started("k1")], ["e1"])
    with pytest.raises(IntegrityError):
        await accept(sessions, [started("k2"), started("k1")], ["e2"])
    assert await written(sessions) == (["k1"], 1, 1, 1)


async def test_nothing_but_reads_runs_before_the_statement(engine: AsyncEngine) -> None:
    # Outside a transaction a write would commit alone, there and then: it is refused.
    sessions = db.sessionmaker(engine)
    with pytest.raises(WriteBeforeCommit):
        async with OneStatement(sessions, outbox, inbox, lambda: None) as tx:
            await NotifierStore(tx.session).insert_deliveries([started("k1")])
    assert await written(sessions) == ([], 0, 0, 0)
    # The check holds only there: the engine's other transactions write as ever.
    async with sessions() as session, session.begin():
        await NotifierStore(session).insert_deliveries([started("k2")])
    assert await written(sessions) == (["k2"], 1, 0, 0)


async def test_outcomes_and_their_events_are_written_by_one_statement_without_a_claim(
    engine: AsyncEngine,
) -> None:
    """The delivery worker's small batches of outcomes: the deliveries' and attempts' changes
    and the outcome events, with no inbox claim (they come from no event)."""
    sessions = db.sessionmaker(engine)
    await accept(sessions, [started("k1"), started("k2")], ["e1"])
    async with sessions() as session:
        ids = dict((await session.execute(select(Delivery.idempotency_key, Delivery.id))).all())
    done = datetime(2026, 3, 1, 12, 0, 2, tzinfo=UTC)
    changes = [{"id": ids["k1"], "status": "sent", "finished_at": done, "updated_at": done}]
    finished = [
        {"delivery_id": ids["k1"], "number": 1, "finished_at": done, "outcome": "sent"},
    ]
    notified: list[str] = []
    async with OneStatement(sessions, outbox, inbox, lambda: notified.append("relay")) as tx:
        await NotifierStore(tx.session).record_attempts(changes, finished, defer=True)
        tx.emit("notifications", "k1", an_event())
        await tx.commit()
    assert notified == ["relay"]
    async with sessions() as session:
        status = dict((await session.execute(select(Delivery.id, Delivery.status))).all())
        outcomes = dict((await session.execute(select(Attempt.delivery_id, Attempt.outcome))).all())
    assert status == {ids["k1"]: "sent", ids["k2"]: "sending"}
    assert outcomes == {ids["k1"]: "sent", ids["k2"]: None}
    # One more event, no more claims.
    assert (await written(sessions))[2:] == (2, 1)


def snapshot(contact_id: str, at: str) -> dict[str, Any]:
    return {"id": contact_id, "email": f"{contact_id}@x.test", "updated_at": at}


async def project(
    sessions: async_sessionmaker[AsyncSession], snaps: list[dict[str, Any]], event_ids: list[str]
) -> int:
    """The contact projection's one statement, as its consumer runs it (autocommit)."""
    async with sessions() as session:
        await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        rows = projection_rows([("ws", snap) for snap in snaps])
        return await NotifierStore(session).project_claiming(
            rows, NOW, "notifier.contacts", event_ids
        )


async def test_snapshots_are_projected_and_claimed_by_one_statement(engine: AsyncEngine) -> None:
    sessions = db.sessionmaker(engine)
    waiting = _new_row(
        Request("ws", NotificationRequested(idempotency_key="kw", channel="s", contact_id="c1")),
        NOW,
    )
    waiting["next_attempt_at"] = None  # waits for its contact
    async with sessions() as session, session.begin():
        await NotifierStore(session).insert_deliveries([waiting])
    # Two snapshots of one contact in a batch: the newest is kept (an upsert takes one row each).
    older, newer = snapshot("c1", "2026-03-01T12:00:00Z"), snapshot("c1", "2026-03-01T12:00:01Z")
    newer["email"] = "new@x.test"
    assert await project(sessions, [older, newer], ["e1", "e2"]) == 1  # the delivery woke
    async with sessions() as session:
        projected = await NotifierStore(session).contacts("ws", ["c1"])
        due = await session.scalar(select(Delivery.next_attempt_at))
        claims = (await session.execute(select(inbox.c.event_id))).scalars().all()
    assert projected["c1"]["email"] == "new@x.test"
    assert due == NOW
    assert sorted(claims) == ["e1", "e2"]


async def test_an_event_projected_before_fails_the_projection_and_nothing_is_written(
    engine: AsyncEngine,
) -> None:
    sessions = db.sessionmaker(engine)
    await project(sessions, [snapshot("c1", "2026-03-01T12:00:00Z")], ["e1"])
    with pytest.raises(AlreadyHandled):
        await project(sessions, [snapshot("c2", "2026-03-01T12:00:00Z")], ["e2", "e1"])
    async with sessions() as session:
        assert await NotifierStore(session).contacts("ws", ["c2"]) == {}
        claims = (await session.execute(select(inbox.c.event_id))).scalars().all()
    assert claims == ["e1"]

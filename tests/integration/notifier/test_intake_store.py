"""The statements of a request's way in, on SQLite and the real PostgreSQL (where they are
plain SQL, one round trip each): the reads that prepare a batch, the insert that records
deliveries with the attempt rows of those it starts, recording outcomes (a HOT update on
PostgreSQL) and the sweep's look for attempts a dead process left unfinished."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from services.notifier.main import SPEC
from services.notifier.models import Attempt, Channel, Delivery, inbox, outbox
from services.notifier.requests.handlers import Request, _new_row
from services.notifier.store import NotifierStore
from shared import db
from shared.events.notifications import NotificationRequested
from shared.uow import UnitOfWork
from tests.helpers import BOTH_DATABASES, migrated_engine

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(params=BOTH_DATABASES)
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    async with migrated_engine(request, SPEC.migrations, tmp_path, "nin") as made:
        yield made


def channel(ident: str, name: str, workspace: str = "ws") -> Channel:
    return Channel(
        id=ident,
        workspace=workspace,
        name=name,
        kind="slack",
        config={"channel": "C1"},
        sealed_secrets="sealed",
        secret_names=["webhook_url"],
        created_at=NOW,
        updated_at=NOW,
    )


async def test_the_reads_that_prepare_a_batch(engine: AsyncEngine) -> None:
    async with db.sessionmaker(engine)() as session, session.begin():
        store = NotifierStore(session)
        store.add(channel("ch_1", "sales"))
        store.add(channel("ch_2", "support"))
        store.add(channel("ch_3", "sales", workspace="other"))
        await store.save_workspace_settings("ws", {"marketing_daily_cap": 2}, NOW)
        await store.upsert_contacts(
            [
                {
                    "workspace": "ws",
                    "id": "c1",
                    "snapshot": {"email": "a@x.test"},
                    "updated_at": NOW,
                },
                {"workspace": "other", "id": "c2", "snapshot": {}, "updated_at": NOW},
            ]
        )
    async with db.sessionmaker(engine)() as session, session.begin():
        reads = await NotifierStore(session).intake_reads("ws", ["c1", "c2"], ["sales", "ch_2"])
    assert reads.settings == {"marketing_daily_cap": 2}
    assert reads.contacts == {"c1": {"email": "a@x.test"}}
    assert set(reads.channels) == {"sales", "ch_2"}
    sales = reads.channels["sales"]
    assert (sales.id, sales.workspace, sales.kind) == ("ch_1", "ws", "slack")
    assert sales.config == {"channel": "C1"}
    assert sales.sealed_secrets == "sealed"
    assert sales.updated_at == NOW
    assert reads.channels["ch_2"].name == "support"
    async with db.sessionmaker(engine)() as session, session.begin():
        empty = await NotifierStore(session).intake_reads("nobody", [], ["sales"])
    assert (empty.settings, empty.contacts, empty.channels) == ({}, {}, {})


def row(key: str, started: bool) -> dict[str, Any]:
    request = Request("ws", NotificationRequested(idempotency_key=key, channel="sales"))
    made = _new_row(request, NOW)
    made["message"] = {"text": "hi", "blocks": [{"type": "section"}]}
    made["prepared"] = True
    if started:
        made.update(
            status="sending", attempts=1, claimed_at=NOW, first_attempt_at=NOW, next_attempt_at=None
        )
    return made


async def test_deliveries_inserted_with_the_attempts_of_those_started(engine: AsyncEngine) -> None:
    first = [row("k1", started=True), row("k2", started=False)]
    async with db.sessionmaker(engine)() as session, session.begin():
        inserted = await NotifierStore(session).insert_deliveries(first)
    assert inserted == {first[0]["id"], first[1]["id"]}
    again = [row("k1", started=True), row("k3", started=True)]
    async with db.sessionmaker(engine)() as session, session.begin():
        inserted = await NotifierStore(session).insert_deliveries(again)
    assert inserted == {again[1]["id"]}  # k1 was known: skipped, and no attempt for it
    alone = row("k4", started=True)  # one row: every column a single value
    async with db.sessionmaker(engine)() as session, session.begin():
        assert await NotifierStore(session).insert_deliveries([alone]) == {alone["id"]}
    async with db.sessionmaker(engine)() as session:
        found = {d.idempotency_key: d for d in (await session.execute(select(Delivery))).scalars()}
        attempts = (await session.execute(select(Attempt))).scalars().all()
    assert found["k1"].id == first[0]["id"]
    assert found["k1"].message == {"text": "hi", "blocks": [{"type": "section"}]}
    assert (found["k1"].status, found["k1"].attempts) == ("sending", 1)
    assert found["k1"].first_attempt_at == NOW
    assert (found["k2"].status, found["k2"].attempts) == ("queued", 0)
    assert found["k4"].message == {"text": "hi", "blocks": [{"type": "section"}]}
    assert (found["k4"].status, found["k4"].claimed_at) == ("sending", NOW)
    assert sorted((a.delivery_id, a.number, a.started_at) for a in attempts) == sorted(
        [(first[0]["id"], 1, NOW), (again[1]["id"], 1, NOW), (alone["id"], 1, NOW)]
    )


async def test_deferred_deliveries_are_written_at_commit_where_a_known_key_fails(
    engine: AsyncEngine,
) -> None:
    """A batch's first try leaves its deliveries (and the attempt rows of those it starts)
    to the unit of work's last statement; a key already recorded then fails the commit, and
    nothing of that transaction is kept (the consumer accepts the batch again, claiming
    first)."""
    sessions = db.sessionmaker(engine)
    first = [row("k-d1", started=True), row("k-d2", started=False)]
    async with UnitOfWork(sessions, outbox, inbox) as uow:
        inserted = await NotifierStore(uow.session).insert_deliveries(first, defer=True)
    assert inserted == {first[0]["id"], first[1]["id"]}
    again = [row("k-d3", started=True), row("k-d1", started=True)]
    with pytest.raises(IntegrityError):
        async with UnitOfWork(sessions, outbox, inbox) as uow:
            await NotifierStore(uow.session).insert_deliveries(again, defer=True)
    async with sessions() as session:
        found = {d.idempotency_key: d for d in (await session.execute(select(Delivery))).scalars()}
        attempts = (await session.execute(select(Attempt))).scalars().all()
    assert set(found) == {"k-d1", "k-d2"}
    assert (found["k-d1"].status, found["k-d1"].message["text"]) == ("sending", "hi")
    assert [(a.delivery_id, a.number, a.started_at) for a in attempts] == [(first[0]["id"], 1, NOW)]


async def test_a_contacts_arrival_makes_the_deliveries_waiting_for_it_due(
    engine: AsyncEngine,
) -> None:
    waiting = row("k-wait", started=False) | {"contact_id": "c9", "prepared": False}
    waiting["next_attempt_at"] = datetime(2026, 3, 1, 12, 0, 1, tzinfo=UTC)
    other = row("k-other", started=False) | {"contact_id": "c8", "prepared": False}
    async with db.sessionmaker(engine)() as session, session.begin():
        await NotifierStore(session).insert_deliveries([waiting, other])
    later = datetime(2026, 3, 1, 12, 0, 0, 500000, tzinfo=UTC)
    snapshot = {"workspace": "ws", "id": "c9", "snapshot": {"email": "a@x.test"}}
    async with db.sessionmaker(engine)() as session, session.begin():
        store = NotifierStore(session)
        assert await store.upsert_contacts([snapshot | {"updated_at": NOW}], later) == 1
        # An older snapshot (a redelivery) does not overwrite the newer one.
        older = snapshot | {"snapshot": {}, "updated_at": datetime(2026, 1, 1, tzinfo=UTC)}
        await store.upsert_contacts([older], later)
    async with db.sessionmaker(engine)() as session:
        found = {d.idempotency_key: d for d in (await session.execute(select(Delivery))).scalars()}
        contact = await NotifierStore(session).contacts("ws", ["c9"])
    assert found["k-wait"].next_attempt_at == later
    assert found["k-other"].next_attempt_at == NOW
    assert contact == {"c9": {"email": "a@x.test"}}


@pytest.mark.parametrize("defer", [False, True], ids=["at-once", "deferred-to-commit"])
async def test_finished_attempts_recorded_with_their_deliveries(
    engine: AsyncEngine, defer: bool
) -> None:
    started = [row("k-a", started=True), row("k-b", started=True)]
    async with db.sessionmaker(engine)() as session, session.begin():
        await NotifierStore(session).insert_deliveries(started)
    done = datetime(2026, 3, 1, 12, 0, 2, tzinfo=UTC)
    changes = [
        {"id": started[0]["id"], "status": "sent", "reason": None, "updated_at": done},
        {"id": started[1]["id"], "status": "retrying", "reason": "HTTP 503", "updated_at": done},
    ]
    finished = [
        {
            "delivery_id": r["id"],
            "number": 1,
            "finished_at": done,
            "outcome": outcome,
            "status_code": code,
            "response": text,
        }
        for r, outcome, code, text in zip(
            started, ("sent", "retry"), (200, 503), ("ok", "busy"), strict=True
        )
    ]
    # Deferred, PostgreSQL writes them with the unit of work's last statement.
    async with UnitOfWork(db.sessionmaker(engine), outbox, inbox) as uow:
        await NotifierStore(uow.session).record_attempts(changes, finished, defer)
    async with db.sessionmaker(engine)() as session:
        found = {d.idempotency_key: d for d in (await session.execute(select(Delivery))).scalars()}
        tries = {a.delivery_id: a for a in (await session.execute(select(Attempt))).scalars()}
    assert (found["k-a"].status, found["k-a"].reason) == ("sent", None)
    assert (found["k-b"].status, found["k-b"].reason) == ("retrying", "HTTP 503")
    a, b = tries[started[0]["id"]], tries[started[1]["id"]]
    assert (a.outcome, a.status_code, a.response, a.finished_at) == ("sent", 200, "ok", done)
    assert (b.outcome, b.status_code, b.response) == ("retry", 503, "busy")


def outcome(delivery: dict[str, Any], kind: str, at: datetime) -> tuple[dict[str, Any], ...]:
    """What `record_results` writes for a sent (or retried) attempt: the delivery's change and
    its attempt row's completion."""
    change = {
        "id": delivery["id"],
        "status": "sent" if kind == "sent" else "retrying",
        "attempts": 1,
        "reason": None,
        "next_attempt_at": None if kind == "sent" else at,
        "finished_at": at if kind == "sent" else None,
        "provider_message_id": None,
        "updated_at": at,
    }
    done = {
        "delivery_id": delivery["id"],
        "number": 1,
        "finished_at": at,
        "outcome": kind,
        "status_code": 200,
        "response": "ok",
    }
    return change, done


@pytest.mark.postgres
@pytest.mark.parametrize("engine", ["postgres"], indirect=True)
async def test_recording_a_sent_message_is_a_hot_update(engine: AsyncEngine) -> None:
    """No index of `deliveries` holds a column that recording a sent message changes, and the
    table leaves room on the row's page: PostgreSQL updates the row in place, adding no index
    entry. A retry (due again) is not HOT: it enters the due index."""
    started = [row("k-hot", started=True), row("k-retry", started=True)]
    async with db.sessionmaker(engine)() as session, session.begin():
        await NotifierStore(session).insert_deliveries(started)
    done = datetime(2026, 3, 1, 12, 0, 2, tzinfo=UTC)
    (sent, sent_done), (retry, retry_done) = (
        outcome(started[0], "sent", done),
        outcome(started[1], "retry", done),
    )
    count = text(
        "SELECT pg_stat_get_xact_tuples_updated(CAST('deliveries' AS regclass)),"
        " pg_stat_get_xact_tuples_hot_updated(CAST('deliveries' AS regclass))"
    )
    async with db.sessionmaker(engine)() as session, session.begin():
        await NotifierStore(session).record_attempts([sent, retry], [sent_done, retry_done])
        updated, hot = (await session.execute(count)).one()
    assert (updated, hot) == (2, 1)


async def test_the_sweep_finds_deliveries_by_their_unfinished_attempt(
    engine: AsyncEngine,
) -> None:
    started = [row("k-1", started=True), row("k-2", started=True), row("k-q", started=False)]
    async with db.sessionmaker(engine)() as session, session.begin():
        await NotifierStore(session).insert_deliveries(started)
    later = datetime(2026, 3, 1, 12, 5, tzinfo=UTC)
    async with db.sessionmaker(engine)() as session, session.begin():
        store = NotifierStore(session)
        assert await store.stale_sending(NOW, 10) == [], "claimed at NOW: not before it"
        stale = await store.stale_sending(later, 10)
    assert {r["id"] for r in stale} == {started[0]["id"], started[1]["id"]}
    change, done = outcome(started[0], "sent", later)
    async with db.sessionmaker(engine)() as session, session.begin():
        await NotifierStore(session).record_attempts([change], [done])
    async with db.sessionmaker(engine)() as session, session.begin():
        stale = await NotifierStore(session).stale_sending(later, 10)
    assert [r["id"] for r in stale] == [started[1]["id"]]

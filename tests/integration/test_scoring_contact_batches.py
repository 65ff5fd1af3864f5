"""scoring's contact changes applied a polled batch at a time, on SQLite and PostgreSQL: the
same state and the same score events as applying them one by one (fit rescoring, engagement
set aside taken by the first snapshot that names it, merges summing ledgers, deletes erasing,
late snapshots of erased contacts ignored), and the batch's own edge cases."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from services.scoring import handlers
from services.scoring.contacts import handlers as contact_changes
from services.scoring.main import build_spec
from services.scoring.models import ContactRow, LedgerRow, ScoreRow, SetAsideRow, TimerRow
from services.scoring.store import SqlStore
from shared import db
from shared.events.contacts import ContactDeleted, ContactMerged, ContactSnapshot
from shared.events.envelope import Envelope
from shared.uow import UnitOfWork
from tests.helpers import BOTH_DATABASES, migrated_engine

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SPEC = build_spec()


@dataclass
class Recorded:
    """An outbox that keeps what the handlers emit, as (contact, type, data without times)."""

    events: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)

    def emit_encoded(self, topic: str, key: str, event_id: str, payload: bytes) -> None:
        envelope = Envelope.from_bytes(payload)
        data = {k: v for k, v in envelope.data.items() if k != "crossed_at"}
        self.events.append((str(envelope.subject), envelope.type, data))


@dataclass
class Database:
    engine: db.AsyncEngine

    def uow(self) -> UnitOfWork:
        return UnitOfWork(db.sessionmaker(self.engine), SPEC.outbox, SPEC.inbox)

    async def apply(
        self, workspace: str, changes: Sequence[contact_changes.ContactChange], outbox: Recorded
    ) -> None:
        async with self.uow() as uow:
            await contact_changes.on_contact_changes(changes, SqlStore(uow.session), outbox, NOW)

    async def set_aside(self, workspace: str, **event: Any) -> None:
        engagement = handlers.EngagementIn(
            workspace,
            event.pop("type"),
            event.pop("contact_id", None),
            event.pop("email", None),
            event.pop("occurred_at", NOW - timedelta(hours=1)),
            event,
        )
        async with self.uow() as uow:
            await handlers.score_engagement([engagement], SqlStore(uow.session), uow, NOW)

    async def state(self, workspace: str) -> dict[str, Any]:
        """Everything scoring holds in the workspace, keyed so that it compares."""
        async with db.sessionmaker(self.engine)() as session:

            async def rows(model: Any, *columns: Any) -> list[tuple[Any, ...]]:
                found = await session.execute(select(*columns).where(model.workspace == workspace))
                return sorted((tuple(r) for r in found), key=repr)

            return {
                "contacts": await rows(
                    ContactRow, ContactRow.contact_id, ContactRow.email, ContactRow.erased
                ),
                "scores": await rows(ScoreRow, ScoreRow.contact_id, ScoreRow.state),
                "ledger": await rows(LedgerRow, LedgerRow.contact_id, LedgerRow.type),
                "timers": await rows(TimerRow, TimerRow.contact_id, TimerRow.kind, TimerRow.due_at),
                "set_aside": await rows(
                    SetAsideRow, SetAsideRow.contact_id, SetAsideRow.email, SetAsideRow.reason
                ),
            }


@pytest.fixture(params=BOTH_DATABASES)
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    async with migrated_engine(request, SPEC.migrations, tmp_path, "scb") as engine:
        yield Database(engine)


def snapshot(contact_id: str, **fields: Any) -> ContactSnapshot:
    values: dict[str, Any] = {
        "id": contact_id,
        "email": f"{contact_id[:8]}@acme.io",
        "lifecycle_stage": "lead",
        "subscription_status": "subscribed",
        "created_at": NOW,
        "updated_at": NOW,
    }
    return ContactSnapshot(**(values | fields))


def by_stream(outbox: Recorded) -> dict[tuple[str, str], list[dict[str, Any]]]:
    streams: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for contact, kind, data in outbox.events:
        streams.setdefault((contact, kind), []).append(data)
    return dict(sorted(streams.items()))


def named(value: Any, people: dict[str, str]) -> list[str]:
    """`value` as sorted lines, each contact's id (and address made of it) by its name."""
    lines = [repr(v) for v in value.items()] if isinstance(value, dict) else [repr(value)]
    out = []
    for line in lines:
        for name, contact_id in people.items():
            line = line.replace(contact_id, name).replace(contact_id[:8], name)
        out.append(line)
    return sorted(out)


def ids(count: int) -> list[str]:
    """Sorted: rows ordered by contact id line up across two workspaces' stories."""
    return sorted(str(uuid.uuid4()) for _ in range(count))


async def story(
    database: Database, workspace: str
) -> tuple[list[contact_changes.ContactChange], dict[str, str]]:
    """Engagement set aside, an erased contact, and the contact changes of one poll."""
    a, b, c, d, e, f = ids(6)
    people = {"a": a, "b": b, "c": c, "d": d, "e": e, "f": f}
    await database.set_aside(workspace, type="demo.requested", contact_id=a)
    await database.set_aside(
        workspace, type="purchase.completed", contact_id=a, amount="20.00", currency="EUR"
    )
    await database.set_aside(
        workspace, type="page.viewed", email="b@acme.io", url="https://acme.io/pricing"
    )
    # f was erased before this poll: a late snapshot of it must not bring it back.
    await database.apply(
        workspace,
        [
            contact_changes.ContactChange(workspace, snapshot(f)),
            contact_changes.ContactChange(workspace, ContactDeleted(contact_id=f, deleted_at=NOW)),
        ],
        Recorded(),
    )

    def change(item: Any, correlation: str = "poll") -> contact_changes.ContactChange:
        return contact_changes.ContactChange(workspace, item, correlation)

    changes = [
        change(snapshot(a, job_title="Engineer"), "lead-a"),
        change(snapshot(b, email="B@acme.io", job_title="VP Sales", company_size=80)),
        change(snapshot(a, job_title="VP Marketing"), "update-a"),
        change(snapshot(c, job_title="Head of Data")),
        change(ContactDeleted(contact_id=c, deleted_at=NOW)),
        change(snapshot(c, job_title="Head of Data")),
        change(snapshot(d, country="DE")),
        change(snapshot(e, job_title="Director")),
        change(snapshot(f)),
        change(ContactMerged(survivor_id=d, merged_id=e, chosen={}, contact=snapshot(d))),
        change(snapshot(a, job_title="VP Marketing", email="b@acme.io")),
        change(snapshot(e, job_title="Director")),
    ]
    return changes, people


class TestContactChangesInOnePoll:
    async def test_a_batch_ends_as_the_same_changes_one_by_one_do(self, database: Database) -> None:
        one, batch = f"ws-{uuid.uuid4().hex[:8]}", f"ws-{uuid.uuid4().hex[:8]}"
        changes, people_one = await story(database, one)
        singly = Recorded()
        for item in changes:
            await database.apply(one, [item], singly)
        changes, people_batch = await story(database, batch)
        together = Recorded()
        await database.apply(batch, changes, together)
        assert named(await database.state(one), people_one) == named(
            await database.state(batch), people_batch
        )
        # Per contact and event type in the same order (a contact's churn risk may now come
        # after its later snapshot's fit change: different types, no order between them).
        assert named(by_stream(singly), people_one) == named(by_stream(together), people_batch)
        assert together.events  # fit changes, the demo set aside, churn risk: not nothing

    async def test_set_aside_engagement_is_applied_once_by_the_first_snapshot(
        self, database: Database
    ) -> None:
        workspace = f"ws-{uuid.uuid4().hex[:8]}"
        changes, people = await story(database, workspace)
        outbox = Recorded()
        await database.apply(workspace, changes, outbox)
        held = await database.state(workspace)
        a, b = people["a"], people["b"]
        assert sorted(t for cid, t in held["ledger"] if cid == a) == [
            "demo.requested",
            "purchase.completed",
        ]
        assert [t for cid, t in held["ledger"] if cid == b] == ["page.viewed"]
        assert held["set_aside"] == []
        demo = [
            data
            for cid, kind, data in outbox.events
            if cid == a and kind == "score.changed" and data["cause"] == "demo.requested"
        ]
        assert len(demo) == 1
        assert any(cid == a and kind == "churn_risk.changed" for cid, kind, _ in outbox.events)

    async def test_merges_and_deletes_in_the_batch_keep_their_order(
        self, database: Database
    ) -> None:
        workspace = f"ws-{uuid.uuid4().hex[:8]}"
        changes, people = await story(database, workspace)
        await database.apply(workspace, changes, Recorded())
        held = await database.state(workspace)
        erased = {cid for cid, _, gone in held["contacts"] if gone}
        # c deleted mid-batch stays deleted; e merged into d; f erased before.
        assert {people["c"], people["e"], people["f"]} <= erased
        scored = {cid for cid, _ in held["scores"]}
        assert not scored & {people["c"], people["e"], people["f"]}
        assert {people["a"], people["b"], people["d"]} <= scored

    async def test_fit_events_carry_each_snapshots_correlation_id(self, database: Database) -> None:
        workspace = f"ws-{uuid.uuid4().hex[:8]}"
        a = ids(1)[0]
        outbox: list[Envelope] = []

        class Keep:
            def emit_encoded(self, topic: str, key: str, event_id: str, payload: bytes) -> None:
                outbox.append(Envelope.from_bytes(payload))

        async with database.uow() as uow:
            await contact_changes.on_contact_changes(
                [
                    contact_changes.ContactChange(
                        workspace, snapshot(a, job_title="Engineer"), "one"
                    ),
                    contact_changes.ContactChange(
                        workspace, snapshot(a, job_title="VP Sales"), "two"
                    ),
                    contact_changes.ContactChange(
                        workspace, snapshot(a, job_title="Engineer"), "three"
                    ),
                ],
                SqlStore(uow.session),
                Keep(),
                NOW,
            )
        fit = [(e.correlationid, e.data["after"]) for e in outbox if e.type == "score.changed"]
        assert fit == [("two", 15.0), ("three", 0.0)]

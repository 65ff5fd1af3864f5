"""The scoring repository: the only module that builds queries."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import orjson
from sqlalchemy import (
    String,
    Table,
    TextClause,
    and_,
    any_,
    delete,
    func,
    literal,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from services.scoring.models import (
    BreakpointsRow,
    ContactRow,
    LedgerRow,
    RescoreRow,
    RfmRow,
    RuleSetRow,
    ScoreRow,
    SetAsideRow,
    TimerRow,
)
from services.scoring.scores.domain import LedgerEntry
from shared.db import insert_rows
from shared.erasure import email_identity, identity_digest
from shared.events.envelope import Envelope

CHUNK = 1000  # rows per multi-row statement (well under both databases' parameter limits)
_EMPTY: dict[str, Any] = {}  # the data of most ledger entries; shared, only ever read


@dataclass(frozen=True)
class Contact:
    """What scoring knows of a contact."""

    id: str
    email: str | None
    attributes: dict[str, Any]
    erased: bool

    @property
    def merged_into(self) -> str | None:
        value = self.attributes.get("merged_into")
        return value if isinstance(value, str) else None


@dataclass(frozen=True)
class Identity:
    """Just enough of a contact to route engagement to it."""

    id: str
    erased: bool
    merged_into: str | None


@dataclass(frozen=True)
class Timer:
    workspace: str
    contact_id: str
    kind: str
    group: str
    due_at: datetime


@dataclass(frozen=True)
class SetAside:
    contact_id: str | None
    email: str | None
    type: str
    occurred_at: datetime
    data: dict[str, Any]


@dataclass(frozen=True)
class Rescore:
    id: str
    workspace: str
    version: int
    status: str
    total: int
    done: int
    changed: int
    cursor: str
    created_at: datetime
    finished_at: datetime | None


def _chunks(rows: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    if not rows:
        return
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


class Store(Protocol):
    """What the handlers need from persistence (implemented by `store.SqlStore`)."""

    async def latest_rule_set(self, workspace: str) -> tuple[int, dict[str, Any]] | None: ...
    async def rule_set(self, workspace: str, version: int) -> dict[str, Any] | None: ...
    async def add_rule_set(
        self, workspace: str, version: int, body: dict[str, Any], now: datetime
    ) -> None: ...
    async def contacts(self, workspace: str, ids: Iterable[str]) -> dict[str, Contact]: ...
    async def identities(self, workspace: str, ids: Iterable[str]) -> dict[str, Identity]: ...
    async def contact_ids_by_email(
        self, workspace: str, emails: Iterable[str]
    ) -> dict[str, str]: ...
    async def lock_identities(self, workspace: str, keys: Iterable[str]) -> None: ...
    async def save_contact(self, workspace: str, contact: Contact) -> None: ...
    async def count_contacts(self, workspace: str) -> int: ...
    async def contacts_after(self, workspace: str, cursor: str, limit: int) -> list[Contact]: ...
    async def lock_scores(
        self, workspace: str, ids: Iterable[str]
    ) -> dict[str, dict[str, Any]]: ...
    async def read_scores(
        self, workspace: str, ids: Iterable[str]
    ) -> dict[str, dict[str, Any]]: ...
    async def try_lock_scores(
        self, workspace: str, ids: Iterable[str]
    ) -> dict[str, dict[str, Any]]: ...
    async def save_scores(self, workspace: str, states: Mapping[str, tuple[int, Any]]) -> None: ...
    async def erase_contact(self, workspace: str, contact_id: str) -> None: ...
    async def erase_set_aside_of(self, workspace: str, identity_digests: Iterable[str]) -> None: ...
    async def set_aside_of(
        self, workspace: str, contact_ids: Sequence[str], identity_digests: Iterable[str]
    ) -> list[dict[str, Any]]: ...
    async def append_ledger(self, rows: Sequence[Mapping[str, Any]]) -> None: ...
    async def ledger_of(
        self, workspace: str, ids: Iterable[str]
    ) -> dict[str, list[LedgerEntry]]: ...
    async def ledger_since(
        self, workspace: str, since: datetime
    ) -> dict[str, list[LedgerEntry]]: ...
    async def move_ledger(self, workspace: str, source: str, target: str) -> None: ...
    async def set_aside(self, rows: Sequence[Mapping[str, Any]]) -> None: ...
    async def take_set_aside(
        self, workspace: str, contact_id: str, email: str | None
    ) -> list[SetAside]: ...
    async def set_timers(self, timers: Sequence[Timer]) -> None: ...
    async def clear_timers(self, keys: Sequence[tuple[str, str, str, str]]) -> None: ...
    async def claim_due_timers(self, now: datetime, limit: int) -> list[Timer]: ...
    async def add_rescore(self, job: Rescore) -> None: ...
    async def rescore(self, workspace: str, job_id: str) -> Rescore | None: ...
    async def claim_rescore(self) -> Rescore | None: ...
    async def update_rescore(self, job_id: str, **values: Any) -> None: ...
    async def rfm_rows(self, workspace: str, ids: Iterable[str]) -> dict[str, dict[str, Any]]: ...
    async def save_rfm(self, rows: Sequence[Mapping[str, Any]]) -> None: ...
    async def rfm_stats(self, workspace: str) -> list[tuple[float, int, float]]: ...
    async def breakpoints(self, workspace: str) -> Any: ...
    async def save_breakpoints(self, row: Mapping[str, Any]) -> None: ...
    async def rfm_summary(self, workspace: str) -> tuple[dict[str, int], dict[str, int]]: ...


class Outbox(Protocol):
    """Where events go: written in the same transaction as the change (the unit of work)."""

    def emit(self, topic: str, key: str, envelope: Envelope) -> None: ...


class SqlStore:
    """Queries over one unit of work's session, on PostgreSQL or SQLite."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.postgres = session.get_bind().dialect.name == "postgresql"

    # --- helpers --------------------------------------------------------------------------

    async def _upsert(
        self, table: Table, rows: Sequence[Mapping[str, Any]], keys: Sequence[str]
    ) -> None:
        """Insert rows, or update the existing ones (by `keys`) with the new values."""
        if not rows:
            return
        if self.postgres:
            statement = _unnest_upsert(table, tuple(rows[0]), tuple(keys))
            await self.session.execute(statement, _arrays(table, rows))
            return
        for part in _chunks(rows):
            stmt = sqlite.insert(table).values(list(part))
            updates = {c: stmt.excluded[c] for c in part[0] if c not in keys}
            await self.session.execute(
                stmt.on_conflict_do_update(index_elements=keys, set_=updates)
            )

    def _among(self, column: Any, values: Sequence[str]) -> Any:
        """`column IN values`: one array parameter on PostgreSQL (one statement for any count)."""
        if self.postgres:
            return column == any_(literal(list(values), ARRAY(String)))
        return column.in_(values)

    # --- rule sets --------------------------------------------------------------------------

    async def latest_rule_set(self, workspace: str) -> tuple[int, dict[str, Any]] | None:
        row = (
            await self.session.execute(
                select(RuleSetRow.version, RuleSetRow.body)
                .where(RuleSetRow.workspace == workspace)
                .order_by(RuleSetRow.version.desc())
                .limit(1)
            )
        ).first()
        return (row.version, row.body) if row else None

    async def rule_set(self, workspace: str, version: int) -> dict[str, Any] | None:
        body: dict[str, Any] | None = await self.session.scalar(
            select(RuleSetRow.body).where(
                RuleSetRow.workspace == workspace, RuleSetRow.version == version
            )
        )
        return body

    async def add_rule_set(
        self, workspace: str, version: int, body: dict[str, Any], now: datetime
    ) -> None:
        self.session.add(
            RuleSetRow(workspace=workspace, version=version, body=body, created_at=now)
        )
        await self.session.flush()

    # --- contacts projection ----------------------------------------------------------------

    async def contacts(self, workspace: str, ids: Iterable[str]) -> dict[str, Contact]:
        wanted = sorted(set(ids))
        found: dict[str, Contact] = {}
        for part in _chunks(wanted):
            rows = await self.session.execute(
                select(
                    ContactRow.contact_id,
                    ContactRow.email,
                    ContactRow.attributes,
                    ContactRow.erased,
                ).where(ContactRow.workspace == workspace, self._among(ContactRow.contact_id, part))
            )
            for r in rows:
                found[r.contact_id] = Contact(r.contact_id, r.email, r.attributes, r.erased)
        return found

    async def identities(self, workspace: str, ids: Iterable[str]) -> dict[str, Identity]:
        """Whether each contact is known, erased or merged (its attributes left in the table)."""
        wanted = sorted(set(ids))
        found: dict[str, Identity] = {}
        merged_into = ContactRow.attributes["merged_into"].as_string()
        for part in _chunks(wanted):
            rows = await self.session.execute(
                select(ContactRow.contact_id, ContactRow.erased, merged_into).where(
                    ContactRow.workspace == workspace, self._among(ContactRow.contact_id, part)
                )
            )
            for cid, erased, into in rows:
                found[cid] = Identity(cid, erased, into)
        return found

    async def contact_ids_by_email(self, workspace: str, emails: Iterable[str]) -> dict[str, str]:
        wanted = sorted(set(emails))
        found: dict[str, str] = {}
        for part in _chunks(wanted):
            rows = await self.session.execute(
                select(ContactRow.email, ContactRow.contact_id).where(
                    ContactRow.workspace == workspace,
                    self._among(ContactRow.email, part),
                    ContactRow.erased.is_(False),
                )
            )
            found.update({r.email: r.contact_id for r in rows})
        return found

    async def lock_identities(self, workspace: str, keys: Iterable[str]) -> None:
        """Hold, until the transaction ends, a lock per contact id or email: a contact's arrival
        and engagement set aside for it take turns, so none is left aside forever."""
        if not self.postgres:
            await self.write_lock()
            return
        for key in sorted(set(keys)):
            await self.session.execute(
                text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
                {"key": f"leadwire-scoring:{workspace}:{key}"},
            )

    async def save_contact(self, workspace: str, contact: Contact) -> None:
        await self._upsert(
            ContactRow.__table__,  # type: ignore[arg-type]
            [
                {
                    "workspace": workspace,
                    "contact_id": contact.id,
                    "email": contact.email,
                    "attributes": contact.attributes,
                    "erased": contact.erased,
                }
            ],
            ["workspace", "contact_id"],
        )

    async def count_contacts(self, workspace: str) -> int:
        return int(
            await self.session.scalar(
                select(func.count())
                .select_from(ContactRow)
                .where(ContactRow.workspace == workspace, ContactRow.erased.is_(False))
            )
            or 0
        )

    async def contacts_after(self, workspace: str, cursor: str, limit: int) -> list[Contact]:
        rows = await self.session.execute(
            select(ContactRow.contact_id, ContactRow.email, ContactRow.attributes)
            .where(
                ContactRow.workspace == workspace,
                ContactRow.contact_id > cursor,
                ContactRow.erased.is_(False),
            )
            .order_by(ContactRow.contact_id)
            .limit(limit)
        )
        return [Contact(cid, email, attributes, False) for cid, email, attributes in rows]

    # --- score states -----------------------------------------------------------------------

    async def lock_scores(self, workspace: str, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Score states, locked until the transaction ends (in id order: no deadlocks)."""
        return await self._scores(workspace, ids, skip_locked=False)

    async def read_scores(self, workspace: str, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Score states as committed, for reading only (no lock, nothing written)."""
        wanted = sorted(set(ids))
        found: dict[str, dict[str, Any]] = {}
        for part in _chunks(wanted):
            rows = await self.session.execute(
                select(ScoreRow.contact_id, ScoreRow.state).where(
                    ScoreRow.workspace == workspace, self._among(ScoreRow.contact_id, part)
                )
            )
            found.update({cid: state for cid, state in rows if state})
        return found

    async def try_lock_scores(
        self, workspace: str, ids: Iterable[str]
    ) -> dict[str, dict[str, Any]]:
        """Like `lock_scores`, but states another transaction holds are left out."""
        return await self._scores(workspace, ids, skip_locked=True)

    async def _scores(
        self, workspace: str, ids: Iterable[str], skip_locked: bool
    ) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        wanted = sorted(set(ids))
        if not self.postgres:
            await self.write_lock()
        elif not skip_locked:
            # A row to lock for every contact, also one without a score yet: so a rescore and
            # a live event can never both build a first score from what each saw.
            await self.session.execute(
                text(
                    "INSERT INTO scores (workspace, contact_id, version, state)"
                    " SELECT :ws, c, 0, '{}'::jsonb FROM unnest(CAST(:ids AS varchar[])) AS c"
                    " ON CONFLICT DO NOTHING"
                ),
                {"ws": workspace, "ids": wanted},
            )
        for part in _chunks(wanted):
            query = (
                select(ScoreRow.contact_id, ScoreRow.state)
                .where(ScoreRow.workspace == workspace, self._among(ScoreRow.contact_id, part))
                .order_by(ScoreRow.contact_id)
            )
            if self.postgres:
                query = query.with_for_update(skip_locked=skip_locked)
            found.update({r.contact_id: r.state for r in await self.session.execute(query)})
        return found

    async def write_lock(self) -> None:
        """On SQLite, take the database's write lock now, before reading what this transaction
        will rewrite (the driver otherwise reads outside any transaction until the first write,
        so two read-modify-write transactions could interleave). PostgreSQL locks rows instead."""
        if not self.postgres:
            await self.session.execute(
                update(ScoreRow).where(ScoreRow.workspace == "").values(version=ScoreRow.version)
            )

    async def save_scores(self, workspace: str, states: Mapping[str, tuple[int, Any]]) -> None:
        rows = [
            {"workspace": workspace, "contact_id": cid, "version": version, "state": state}
            for cid, (version, state) in sorted(states.items())
        ]
        await self._upsert(ScoreRow.__table__, rows, ["workspace", "contact_id"])  # type: ignore[arg-type]

    async def erase_contact(self, workspace: str, contact_id: str) -> None:
        """Everything held on a contact: ledger, scores, timers, RFM, engagement set aside."""
        for model in (LedgerRow, ScoreRow, TimerRow, RfmRow):
            await self.session.execute(
                delete(model).where(model.workspace == workspace, model.contact_id == contact_id)
            )
        await self.session.execute(
            delete(SetAsideRow).where(
                SetAsideRow.workspace == workspace, SetAsideRow.contact_id == contact_id
            )
        )

    async def erase_set_aside_of(self, workspace: str, identity_digests: Iterable[str]) -> None:
        """Engagement set aside under an e-mail address whose identity digest is given (kept
        for a person scoring never knew by id)."""
        wanted = set(identity_digests)
        if not wanted:
            return
        emails = await self.session.scalars(
            select(SetAsideRow.email)
            .where(SetAsideRow.workspace == workspace, SetAsideRow.email.is_not(None))
            .distinct()
        )
        doomed = [
            e for e in emails if e and identity_digest(workspace, email_identity(e)) in wanted
        ]
        if doomed:
            await self.session.execute(
                delete(SetAsideRow).where(
                    SetAsideRow.workspace == workspace, SetAsideRow.email.in_(doomed)
                )
            )

    async def set_aside_of(
        self, workspace: str, contact_ids: Sequence[str], identity_digests: Iterable[str]
    ) -> list[dict[str, Any]]:
        """Engagement set aside for these contacts or under these identities' addresses."""
        wanted = set(identity_digests)
        rows = await self.session.execute(
            select(SetAsideRow).where(
                SetAsideRow.workspace == workspace,
                SetAsideRow.contact_id.in_(contact_ids) | SetAsideRow.email.is_not(None),
            )
        )
        return [
            {
                "contact_id": r.contact_id,
                "email": r.email,
                "reason": r.reason,
                "type": r.type,
                "occurred_at": r.occurred_at,
                "data": r.data,
            }
            for r in rows.scalars()
            if r.contact_id in contact_ids
            or (r.email and identity_digest(workspace, email_identity(r.email)) in wanted)
        ]

    # --- ledger -----------------------------------------------------------------------------

    async def append_ledger(self, rows: Sequence[Mapping[str, Any]]) -> None:
        await insert_rows(self.session, LedgerRow.__table__, rows)  # type: ignore[arg-type]

    async def ledger_of(self, workspace: str, ids: Iterable[str]) -> dict[str, list[LedgerEntry]]:
        """Each contact's ledger, in time order (times as epoch seconds)."""
        found: dict[str, list[LedgerEntry]] = {}
        if self.postgres:
            # The rescore's bulk read (millions of rows): straight from the driver, times as
            # epoch floats and documents as text, without a result-processing layer per row.
            connection = await self.session.connection()
            driver = (await connection.get_raw_connection()).driver_connection
            assert driver is not None  # a live connection of this transaction
            rows = await driver.fetch(
                "SELECT contact_id, type, extract(epoch FROM occurred_at)::float8, data::text"
                " FROM ledger WHERE workspace = $1 AND contact_id = ANY($2::varchar[])"
                " ORDER BY contact_id, occurred_at",
                workspace,
                sorted(set(ids)),
            )
            for cid, kind, seconds, data in rows:
                document = _EMPTY if data == "{}" else orjson.loads(data)
                found.setdefault(cid, []).append(LedgerEntry(kind, seconds, document))
            return found
        for part in _chunks(sorted(set(ids))):
            where = (LedgerRow.workspace == workspace, self._among(LedgerRow.contact_id, part))
            await self._collect(found, where)
        return found

    async def ledger_since(self, workspace: str, since: datetime) -> dict[str, list[LedgerEntry]]:
        found: dict[str, list[LedgerEntry]] = {}
        await self._collect(
            found, (LedgerRow.workspace == workspace, LedgerRow.occurred_at >= since)
        )
        return found

    async def _collect(self, found: dict[str, list[LedgerEntry]], where: tuple[Any, ...]) -> None:
        if self.postgres:
            epoch = func.extract("epoch", LedgerRow.occurred_at)
            rows = await self.session.execute(
                select(LedgerRow.contact_id, LedgerRow.type, epoch, LedgerRow.data).where(*where)
            )
            for cid, kind, seconds, data in rows:
                found.setdefault(cid, []).append(LedgerEntry(kind, float(seconds), data))
            return
        rows = await self.session.execute(
            select(
                LedgerRow.contact_id, LedgerRow.type, LedgerRow.occurred_at, LedgerRow.data
            ).where(*where)
        )
        for cid, kind, occurred, data in rows:
            found.setdefault(cid, []).append(LedgerEntry(kind, occurred.timestamp(), data))

    async def move_ledger(self, workspace: str, source: str, target: str) -> None:
        await self.session.execute(
            update(LedgerRow)
            .where(LedgerRow.workspace == workspace, LedgerRow.contact_id == source)
            .values(contact_id=target)
        )

    # --- engagement set aside ---------------------------------------------------------------

    async def set_aside(self, rows: Sequence[Mapping[str, Any]]) -> None:
        await insert_rows(self.session, SetAsideRow.__table__, rows)  # type: ignore[arg-type]

    async def take_set_aside(
        self, workspace: str, contact_id: str, email: str | None
    ) -> list[SetAside]:
        """Engagement kept for a contact unknown at the time (by id or email), removed here."""
        match = SetAsideRow.contact_id == contact_id
        if email:
            match = match | (SetAsideRow.email == email)
        where = and_(
            SetAsideRow.workspace == workspace, SetAsideRow.reason == "unknown_contact", match
        )
        rows = (await self.session.execute(select(SetAsideRow).where(where))).scalars().all()
        if rows:
            await self.session.execute(delete(SetAsideRow).where(where))
        return [SetAside(r.contact_id, r.email, r.type, r.occurred_at, r.data) for r in rows]

    async def count_set_aside(self, workspace: str) -> int:
        return int(
            await self.session.scalar(
                select(func.count())
                .select_from(SetAsideRow)
                .where(SetAsideRow.workspace == workspace)
            )
            or 0
        )

    # --- timers -----------------------------------------------------------------------------

    async def set_timers(self, timers: Sequence[Timer]) -> None:
        rows = [
            {
                "workspace": t.workspace,
                "contact_id": t.contact_id,
                "kind": t.kind,
                "group": t.group,
                "due_at": t.due_at,
            }
            for t in timers
        ]
        await self._upsert(
            TimerRow.__table__,  # type: ignore[arg-type]
            rows,
            ["workspace", "contact_id", "kind", "group"],
        )

    async def clear_timers(self, keys: Sequence[tuple[str, str, str, str]]) -> None:
        """Drop timers by (workspace, contact_id, kind, group)."""
        if not keys:
            return
        if self.postgres:
            columns = list(zip(*keys, strict=True))
            await self.session.execute(
                text(
                    "DELETE FROM timers t USING unnest(CAST(:w AS varchar[]),"
                    " CAST(:c AS varchar[]), CAST(:k AS varchar[]), CAST(:g AS varchar[]))"
                    " AS x(w, c, k, g)"
                    " WHERE t.workspace = x.w AND t.contact_id = x.c AND t.kind = x.k"
                    ' AND t."group" = x.g'
                ),
                {
                    "w": list(columns[0]),
                    "c": list(columns[1]),
                    "k": list(columns[2]),
                    "g": list(columns[3]),
                },
            )
            return
        for part in _chunks(keys):
            await self.session.execute(
                delete(TimerRow).where(
                    tuple_(
                        TimerRow.workspace, TimerRow.contact_id, TimerRow.kind, TimerRow.group
                    ).in_(list(part))
                )
            )

    async def timers_of(self, workspace: str, contact_id: str) -> list[Timer]:
        rows = await self.session.execute(
            select(TimerRow).where(
                TimerRow.workspace == workspace, TimerRow.contact_id == contact_id
            )
        )
        return [Timer(r.workspace, r.contact_id, r.kind, r.group, r.due_at) for r in rows.scalars()]

    async def claim_due_timers(self, now: datetime, limit: int) -> list[Timer]:
        """Timers due by `now`, earliest first; on PostgreSQL locked with SKIP LOCKED so that
        replicas share them. The caller deletes or moves each one in the same transaction."""
        query = (
            select(TimerRow).where(TimerRow.due_at <= now).order_by(TimerRow.due_at).limit(limit)
        )
        if self.postgres:
            query = query.with_for_update(skip_locked=True)
        rows = await self.session.execute(query)
        return [Timer(r.workspace, r.contact_id, r.kind, r.group, r.due_at) for r in rows.scalars()]

    async def next_due(self) -> datetime | None:
        due: datetime | None = await self.session.scalar(select(func.min(TimerRow.due_at)))
        return due

    # --- rescores ---------------------------------------------------------------------------

    async def add_rescore(self, job: Rescore) -> None:
        await self.session.execute(
            update(RescoreRow)
            .where(
                RescoreRow.workspace == job.workspace,
                RescoreRow.status.in_(("pending", "running")),
            )
            .values(status="superseded", finished_at=job.created_at)
        )
        self.session.add(
            RescoreRow(
                id=job.id,
                workspace=job.workspace,
                version=job.version,
                status=job.status,
                total=job.total,
                done=job.done,
                changed=job.changed,
                cursor=job.cursor,
                created_at=job.created_at,
            )
        )
        await self.session.flush()

    async def rescore(self, workspace: str, job_id: str) -> Rescore | None:
        row = await self.session.scalar(
            select(RescoreRow).where(RescoreRow.workspace == workspace, RescoreRow.id == job_id)
        )
        return _rescore(row) if row else None

    async def claim_rescore(self) -> Rescore | None:
        """The oldest unfinished rescore, locked (SKIP LOCKED) for one chunk of work."""
        query = (
            select(RescoreRow)
            .where(RescoreRow.status.in_(("pending", "running")))
            .order_by(RescoreRow.created_at)
            .limit(1)
        )
        if self.postgres:
            query = query.with_for_update(skip_locked=True)
        row = await self.session.scalar(query)
        return _rescore(row) if row else None

    async def update_rescore(self, job_id: str, **values: Any) -> None:
        await self.session.execute(
            update(RescoreRow).where(RescoreRow.id == job_id).values(**values)
        )

    # --- RFM --------------------------------------------------------------------------------

    async def rfm_rows(self, workspace: str, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        table = RfmRow.__table__
        await self.write_lock()
        for part in _chunks(sorted(set(ids))):
            query = select(table).where(
                table.c.workspace == workspace, self._among(table.c.contact_id, part)
            )
            if self.postgres:
                query = query.with_for_update()
            for row in await self.session.execute(query):
                found[row.contact_id] = dict(row._mapping)
        return found

    async def save_rfm(self, rows: Sequence[Mapping[str, Any]]) -> None:
        await self._upsert(RfmRow.__table__, rows, ["workspace", "contact_id"])  # type: ignore[arg-type]

    async def rfm_stats(self, workspace: str) -> list[tuple[float, int, float]]:
        """(last_at, count, monetary) of every customer of a workspace, for its breakpoints."""
        rows = await self.session.execute(
            select(RfmRow.last_at, RfmRow.count, RfmRow.monetary).where(
                RfmRow.workspace == workspace
            )
        )
        return [(float(r[0]), int(r[1]), float(r[2])) for r in rows]

    async def breakpoints(self, workspace: str) -> BreakpointsRow | None:
        return await self.session.get(BreakpointsRow, workspace)

    async def save_breakpoints(self, row: Mapping[str, Any]) -> None:
        await self._upsert(BreakpointsRow.__table__, [row], ["workspace"])  # type: ignore[arg-type]

    async def rfm_summary(self, workspace: str) -> tuple[dict[str, int], dict[str, int]]:
        segments = await self.session.execute(
            select(RfmRow.segment, func.count())
            .where(RfmRow.workspace == workspace)
            .group_by(RfmRow.segment)
        )
        bands = await self.session.execute(
            select(RfmRow.band, func.count())
            .where(RfmRow.workspace == workspace)
            .group_by(RfmRow.band)
        )
        return (
            {str(s): int(n) for s, n in segments},
            {str(b): int(n) for b, n in bands},
        )


def _rescore(row: RescoreRow) -> Rescore:
    return Rescore(
        row.id,
        row.workspace,
        row.version,
        row.status,
        row.total,
        row.done,
        row.changed,
        row.cursor,
        row.created_at,
        row.finished_at,
    )


_PG = postgresql.dialect()  # type: ignore[no-untyped-call]


@functools.cache
def _unnest_upsert(table: Table, columns: tuple[str, ...], keys: tuple[str, ...]) -> TextClause:
    """`INSERT … SELECT * FROM unnest(<an array per column>) ON CONFLICT (keys) DO UPDATE`: one
    statement for any number of rows, compiled once (a VALUES list is compiled per row count)."""
    quote = _PG.identifier_preparer.quote
    types = [f"{table.c[c].type.compile(dialect=_PG)}[]" for c in columns]
    arrays = ", ".join(f"CAST(:c{i} AS {t})" for i, t in enumerate(types))
    names = ", ".join(quote(c) for c in columns)
    updates = ", ".join(f"{quote(c)} = EXCLUDED.{quote(c)}" for c in columns if c not in keys)
    conflict = ", ".join(quote(k) for k in keys)
    action = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
    return text(
        f"INSERT INTO {quote(table.name)} ({names}) SELECT * FROM unnest({arrays})"
        f" ON CONFLICT ({conflict}) {action}"
    )


def _arrays(table: Table, rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """One array per column; JSON documents as their text (cast to jsonb by the statement)."""
    out = {}
    for i, name in enumerate(rows[0]):
        values = [row[name] for row in rows]
        if _is_json(table, name):
            values = [orjson.dumps(v).decode() for v in values]
        out[f"c{i}"] = values
    return out


@functools.cache
def _is_json(table: Table, name: str) -> bool:
    return table.c[name].type.compile(dialect=_PG) in ("JSON", "JSONB")

"""The runs part of the workflows store: runs, their history, timers and effects, read and
written as plain rows in bulk (one statement per transaction on PostgreSQL), because a polled
batch of events or a batch of due timers touches hundreds of runs at once."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

import orjson
from sqlalchemy import (
    Boolean,
    ColumnElement,
    Select,
    TextClause,
    bindparam,
    delete,
    func,
    literal_column,
    or_,
    select,
    text,
    true,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from services.workflows.rows import (
    CONTACTS,
    EFFECTS,
    ENROLLMENTS,
    INBOX,
    OUTBOX,
    PROJECTION,
    STEPS,
    TIMERS,
    StoreBase,
    insert_sql,
)
from shared.db import (
    insert_json_rows,
    insert_rows,
    json_update_sql,
    row_bound,
    update_json_rows,
)
from shared.inbox import AlreadyHandled, claim_many, claim_sql

RUN_STATE = (
    "status",
    "step",
    "outcomes",
    "seq",
    "attempt",
    "wait_event",
    "wait_until",
    "error",
    "updated_at",
    "ended_at",
)
ENDED = ("completed", "goal_met", "exited", "failed")
OPEN = ("active", "waiting")


@dataclass(frozen=True)
class RunWrites:
    """Everything a run book's transaction writes, at once (see `write_runs`)."""

    new_runs: Sequence[Mapping[str, Any]] = ()
    saved_runs: Sequence[Mapping[str, Any]] = ()  # `id` plus the RUN_STATE columns
    steps: Sequence[Mapping[str, Any]] = ()
    gone_timers: Sequence[str] = ()
    timers: Sequence[Mapping[str, Any]] = ()  # put, or moved when their id exists
    effects: Sequence[Mapping[str, Any]] = ()
    contacts: Sequence[Mapping[str, Any]] = ()  # projection rows, one per contact
    events: Sequence[Mapping[str, Any]] = ()  # outbox rows (`UnitOfWork.take_pending`), in order
    # The consumer's inbox claim (`UnitOfWork.take_claim`): its event ids, recorded as handled
    # by the same statement; `write_runs` raises `AlreadyHandled` if one was before.
    claim: tuple[str, Sequence[str]] | None = None


_TIMER_MOVES = ("due_at", "step", "enrollment_id", "contact_id", "failures")


def _saved_runs(bound: int) -> str:
    """Write back the state of runs, about `bound` of them (see `shared.db.json_update_sql`)."""
    return json_update_sql(ENROLLMENTS, RUN_STATE, ("id",), "CAST(:saved_runs AS json)", bound)


def _checked_runs(bound: int) -> str:
    """`_saved_runs` for a checked write (`RunsStore.checked`): a run is written back only if
    its `seq` is still the one read (a run moved meanwhile by another transaction has a
    greater one, an erased run none), and each run written is returned, to be counted."""
    return (
        _saved_runs(bound)
        + " AND t.seq = CAST(CAST(:read_seqs AS jsonb) ->> t.id AS integer) RETURNING t.id"
    )


_CLAIM = ("inbox", ":claim_consumer", ":claim_at", ":claim_ids")
# A checked write's claim: strict (an event claimed before fails the statement, which commits
# by itself), and failing too when a saved run was not as read (a division by zero: the
# statement then writes nothing at all).
_RUNS_AS_READ = "1 / CAST((SELECT count(*) FROM w_checked_runs) = :saved_count AS integer) = 1"

# Each kind of write of `RunWrites`, as one SQL statement over its own parameter (the saved
# runs' given their `row_bound`).
_RUN_WRITES: dict[str, str | Callable[[int], str]] = {
    "new_runs": insert_sql(ENROLLMENTS, "new_runs"),
    "saved_runs": _saved_runs,
    "checked_runs": _checked_runs,
    "steps": insert_sql(STEPS, "steps"),
    "gone_timers": "DELETE FROM timers WHERE id = ANY(CAST(:gone_timers AS varchar[]))",
    "timers": insert_sql(
        TIMERS,
        "timers",
        " ON CONFLICT (id) DO UPDATE SET "
        + ", ".join(f'"{n}" = excluded."{n}"' for n in _TIMER_MOVES),
    ),
    "effects": insert_sql(EFFECTS, "effects", " ON CONFLICT DO NOTHING"),
    "contacts": insert_sql(
        CONTACTS,
        "contacts",
        " ON CONFLICT (workspace, id) DO UPDATE SET "
        + ", ".join(f'"{n}" = excluded."{n}"' for n in PROJECTION),
        binary=True,  # each carries its contact's whole snapshot
    ),
    # Bytes travel as a bytea array, as `shared.db.insert_rows` sends them (in a JSON document
    # they would be hex text, twice the size); unnest keeps the rows' order, so their ids.
    "events": (
        "INSERT INTO outbox (topic, key, event_id, payload, created_at) SELECT * FROM unnest("
        "CAST(:event_topics AS varchar[]), CAST(:event_keys AS varchar[]), "
        "CAST(:event_ids AS varchar[]), CAST(:event_payloads AS bytea[]), "
        "CAST(:event_times AS timestamptz[]))"
    ),
    # Last: its rows are the statement's, the ids claimed for the first time.
    "claim": claim_sql(*_CLAIM),
    "strict_claim": claim_sql(*_CLAIM, strict=True),
    "checked_claim": claim_sql(*_CLAIM, strict=True, where=_RUNS_AS_READ),
}
# The kinds of `RunWrites`, in the statement's order (the claim last).
_WRITE_KINDS = (
    "new_runs",
    "saved_runs",
    "steps",
    "gone_timers",
    "timers",
    "effects",
    "contacts",
    "events",
    "claim",
)
_EVENT_COLUMNS = {
    "event_topics": "topic",
    "event_keys": "key",
    "event_ids": "event_id",
    "event_payloads": "payload",
    "event_times": "created_at",
}


def _runs_of_facts(lock: bool) -> Select[Any]:
    """`RunsStore.runs_of_facts` on PostgreSQL, built once (building and keying it cost a
    millisecond of every batch on a lead's path). Every row wanted is of one of the contacts
    `among`, so they lead: joined to the array's rows, one index probe each, with a flag for
    the contacts whose open runs are wanted (`open_of`); the (workflow, contact) pairs come
    as two arrays (`wfs`, `cids`), empty when nothing was triggered. Tested as
    `contact_id = ANY(array)` in a filter instead (or in an OR), a prepared statement's
    generic plan (from its sixth run on, blind to the array) with a young table's stale
    statistics scanned every row of the workspace against every contact: ~200 ms a batch at
    20,000 runs. `status` is compared to each open status, not `IN` a list, which SQLAlchemy
    would expand into the statement text at every execution."""
    e = ENROLLMENTS.c
    listed = (
        func.unnest(
            bindparam("among", type_=postgresql.ARRAY(e.contact_id.type)),
            bindparam("open_of", type_=postgresql.ARRAY(Boolean)),
        )
        .table_valued("id", "open_wanted")
        .render_derived(name="k")
    )
    pairs = select(
        func.unnest(bindparam("wfs", type_=postgresql.ARRAY(e.workflow_id.type))).label("w"),
        func.unnest(bindparam("cids", type_=postgresql.ARRAY(e.contact_id.type))).label("c"),
    )
    is_open = or_(*(e.status == status for status in OPEN))
    query = (
        select(ENROLLMENTS)
        .join(listed, e.contact_id == listed.c.id)
        .where(
            e.workspace == bindparam("workspace", type_=e.workspace.type),
            (listed.c.open_wanted & is_open) | tuple_(e.workflow_id, e.contact_id).in_(pairs),
        )
    )
    return query.with_for_update(of=ENROLLMENTS) if lock else query


_RUNS_OF_FACTS = _runs_of_facts(lock=True)
# Outside a transaction (`RunsStore.checked`): the write checks what a lock would have held.
_RUNS_OF_FACTS_UNLOCKED = _runs_of_facts(lock=False)


@cache
def _run_writes(kinds: tuple[str, ...], saved: int) -> TextClause:
    """The statement writing these kinds at once: all but the last as data-modifying CTEs,
    which PostgreSQL runs exactly once each, atomically with the rest. `saved`: the saved
    runs' `row_bound`."""
    writes = {k: _RUN_WRITES[k] for k in kinds}
    sqls = {k: write if isinstance(write, str) else write(saved) for k, write in writes.items()}
    *first, last = sqls.items()
    if not first:
        return text(last[1])
    # Named by kind, `w_` first: a CTE named as a table would hide it from the others.
    return text("WITH " + ", ".join(f"w_{k} AS ({sql})" for k, sql in first) + " " + last[1])


def _check_claim(consumer: str, ids: Sequence[str], claimed: set[str]) -> None:
    if len(claimed) < len(set(ids)):
        raise AlreadyHandled(f"{consumer}: {len(set(ids)) - len(claimed)} event(s) seen before")


def _latest(
    rows: Iterable[Sequence[Any]],
) -> dict[tuple[str, str], tuple[datetime, bool]]:
    """From (workflow, contact, enrolled_at, status) rows: each pair's latest run's start and
    whether it ended (an open run counts over any ended one)."""
    latest: dict[tuple[str, str], tuple[datetime, bool]] = {}
    for wf, cid, at, status in rows:
        key = (wf, cid)
        if key not in latest or latest[key][0] < at or status not in ENDED:
            if key in latest and not latest[key][1] and status in ENDED:
                continue
            latest[key] = (at, status in ENDED)
    return latest


@dataclass(frozen=True)
class DueTimer:
    id: str
    workspace: str
    kind: str
    due_at: datetime
    contact_id: str
    enrollment_id: str | None
    workflow_id: str | None
    step: str | None
    failures: int


class UnreadRun(RuntimeError):
    """A checked write (`RunsStore.checked`) saving a run whose `seq` it never read."""


class RunsStore(StoreBase):
    """Queries over runs, history, timers and effects, in the caller's transaction.

    `checked` (PostgreSQL only), for reads outside any transaction followed by one statement
    that commits by itself (`shared.one_statement`): runs are read without locks, and that
    statement writes a run back only if its `seq` is still the one read (every move of a run
    raises it), failing whole otherwise, as its strict inbox claim does. What the locks held
    to the commit is thus checked at it: the caller does the batch again in a transaction."""

    def __init__(self, session: AsyncSession, checked: bool = False) -> None:
        super().__init__(session)
        self.checked = checked
        self._read_seqs: dict[str, int] = {}
        # Per workspace, the contacts whose every run was read with the view, and those runs.
        self._viewed: dict[str, tuple[set[str], list[dict[str, Any]]]] = {}

    # --- runs ---------------------------------------------------------------------------------

    async def write_runs(self, writes: RunWrites) -> None:
        """Write runs, history, timers, effects, contact projection rows and the outbox's
        events: on PostgreSQL in one statement (one round trip, one JSON document or set of
        arrays per kind), elsewhere one statement per kind."""
        if not self.postgres:
            await self.add_runs(writes.new_runs)
            await self.save_runs(writes.saved_runs)
            await self.add_steps(writes.steps)
            await self.delete_timers(writes.gone_timers)
            await self.put_timers(writes.timers)
            await self.add_effects(writes.effects)
            await self.save_contacts(writes.contacts)
            await insert_rows(self.session, OUTBOX, writes.events)
            if writes.claim is not None:
                consumer, ids = writes.claim
                _check_claim(consumer, ids, await claim_many(self.session, INBOX, consumer, ids))
            return
        if self.checked:
            if writes.claim is None or not writes.claim[1]:
                raise ValueError("a checked write carries its consumer's claim")
            self._check_seqs(writes.saved_runs)
        kinds: list[str] = []
        params: dict[str, Any] = {}
        for kind in _WRITE_KINDS:
            if kind == "claim":
                if writes.claim is not None and writes.claim[1]:
                    kinds.append(self._claim_kind(writes))
                    params.update(
                        claim_consumer=writes.claim[0],
                        claim_ids=list(dict.fromkeys(writes.claim[1])),
                        claim_at=datetime.now(UTC),
                    )
                continue
            rows: Sequence[Any] = getattr(writes, kind)
            if not rows:
                continue
            if kind == "saved_runs" and self.checked:
                kinds.append("checked_runs")
                seqs = {r["id"]: self._read_seqs[r["id"]] for r in rows}
                params.update(read_seqs=orjson.dumps(seqs).decode(), saved_count=len(seqs))
            else:
                kinds.append(kind)
            if kind == "gone_timers":
                params[kind] = list(set(rows))
                continue
            if kind == "events":
                for param, column in _EVENT_COLUMNS.items():
                    params[param] = [r[column] for r in rows]
                continue
            if kind == "saved_runs":
                rows = [{"id": r["id"], **{n: r[n] for n in RUN_STATE}} for r in rows]
            elif kind == "timers":
                rows = list({r["id"]: r for r in rows}.values())
                self._note_timers(rows)
            params[kind] = orjson.dumps(list(rows), option=orjson.OPT_NAIVE_UTC).decode()
        if not kinds:
            return
        saved = row_bound(len(writes.saved_runs))
        result = await self.session.execute(_run_writes(tuple(kinds), saved), params)
        if kinds[-1] == "claim":
            _check_claim(params["claim_consumer"], params["claim_ids"], set(result.scalars()))

    def _read_with_view(
        self, workspace: str, ids: Sequence[str], pairs: Sequence[tuple[str, str]]
    ) -> list[dict[str, Any]] | None:
        """The rows `runs_of_facts` reads, from every run of the contacts the batch's view
        read with it (`with_view`), when those contacts cover the ones asked; else None."""
        view = self._viewed.get(workspace)
        if view is None:
            return None
        contacts, runs = view
        known = set(ids)
        if not (known | {c for _, c in pairs}) <= contacts:
            return None
        asked = set(pairs)
        return [
            dict(r)  # a copy: the engine moves the rows it is given
            for r in runs
            if (r["contact_id"] in known and r["status"] in OPEN)
            or (r["workflow_id"], r["contact_id"]) in asked
        ]

    def with_view(
        self, workspace: str, contacts: Iterable[str], runs: list[dict[str, Any]]
    ) -> None:
        """Every run of `contacts` in `workspace`, read without locks with the batch's view
        (`checked` only): `runs_of_facts` answers from them, a round trip fewer."""
        self._viewed[workspace] = (set(contacts), runs)

    def _claim_kind(self, writes: RunWrites) -> str:
        """A transaction's claim passes over an id claimed before (the caller raises, and the
        transaction rolls back); a checked write's fails its statement, and checks the runs."""
        if not self.checked:
            return "claim"
        return "checked_claim" if writes.saved_runs else "strict_claim"

    def _check_seqs(self, saved: Sequence[Mapping[str, Any]]) -> None:
        """Every run a checked write saves was read by this store (its `seq` then known)."""
        unread = [r["id"] for r in saved if r["id"] not in self._read_seqs]
        if unread:
            raise UnreadRun(f"a checked write saves runs it did not read: {unread[:3]}")

    def _remember(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """The `seq` of runs read outside a transaction, which a checked write checks."""
        if self.checked:
            self._read_seqs.update((r["id"], r["seq"]) for r in rows)

    async def add_runs(self, rows: Sequence[Mapping[str, Any]]) -> None:
        await insert_json_rows(self.session, ENROLLMENTS, rows)

    async def save_runs(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Write back the state of runs (`id` plus the RUN_STATE columns)."""
        await update_json_rows(
            self.session,
            ENROLLMENTS,
            [{"id": r["id"], **{n: r[n] for n in RUN_STATE}} for r in rows],
        )

    async def runs(
        self, workspace: str | None, ids: Iterable[str], lock: bool = False
    ) -> dict[str, dict[str, Any]]:
        wanted = list(set(ids))
        if not wanted:
            return {}
        e = ENROLLMENTS.c
        if not self.postgres or workspace is None:
            query = select(ENROLLMENTS).where(self._among(e.id, wanted))
            if lock and self.postgres and not self.checked:
                query = query.with_for_update()
            in_workspace: ColumnElement[Any] = e.workspace
        else:
            # A workspace's runs (notification outcomes, failed steps): one primary-key probe
            # per id, whatever the statistics, as a LATERAL subquery fenced by OFFSET 0 that
            # names no other column an index leads with. With the workspace in the condition
            # (`= ANY`, a join, or inside the probe), the generic plan made while the table
            # was young took an index leading with workspace and read every run of it: ~17 ms
            # for 115 outcomes at 5,000 runs. The due timers' lookup (no workspace: only the
            # primary key can serve it) keeps `= ANY`: probed row by row under FOR UPDATE,
            # 1,000 fires/s had lateness p99 of 1-2 s in four of seven runs (0.1-0.3 s as is).
            listed = (
                func.unnest(bindparam("ids", wanted, type_=postgresql.ARRAY(e.id.type)))
                .table_valued("v")
                .render_derived(name="k")
            )
            inner = select(ENROLLMENTS).where(e.id == listed.c.v).offset(literal_column("0"))
            if lock and not self.checked:
                inner = inner.with_for_update()
            probe = inner.lateral()
            query = select(*probe.c).select_from(listed).join(probe, true())
            in_workspace = probe.c.workspace
        if workspace is not None:
            query = query.where(in_workspace == workspace)
        found = {r["id"]: dict(r) for r in (await self.session.execute(query)).mappings()}
        self._remember(found.values())
        return found

    async def open_runs(
        self, workspace: str, contact_ids: Iterable[str], lock: bool = False
    ) -> list[dict[str, Any]]:
        """Runs not ended of the contacts (active or waiting)."""
        wanted = list(set(contact_ids))
        if not wanted:
            return []
        e = ENROLLMENTS.c
        query = self._joined(select(ENROLLMENTS), e.contact_id, wanted).where(
            e.workspace == workspace, e.status.in_(OPEN)
        )
        if lock and self.postgres and not self.checked:
            query = query.with_for_update(of=ENROLLMENTS)
        found = [dict(r) for r in (await self.session.execute(query)).mappings()]
        self._remember(found)
        return found

    async def last_runs(
        self, workspace: str, pairs: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[datetime, bool]]:
        """For (workflow, contact) pairs: the latest run's start and whether it ended."""
        wanted = list(set(pairs))
        if not wanted:
            return {}
        e = ENROLLMENTS.c
        columns = select(e.workflow_id, e.contact_id, e.enrolled_at, e.status)
        # The contacts lead, by their index (see `runs_of_facts`); the pairs filter their runs.
        query = self._joined(columns, e.contact_id, sorted({c for _, c in wanted})).where(
            e.workspace == workspace, self._pairs(wanted)
        )
        return _latest((await self.session.execute(query)).all())

    async def runs_of_facts(
        self, workspace: str, contact_ids: Iterable[str], pairs: Iterable[tuple[str, str]]
    ) -> tuple[dict[tuple[str, str], tuple[datetime, bool]], list[dict[str, Any]]]:
        """`last_runs(pairs)` and `open_runs(contact_ids, lock=True)` in one locked read (the
        runs of the pairs, ended ones too, are locked with the open ones); on PostgreSQL one
        statement built once (`_runs_of_facts`), with or without pairs."""
        wanted = list(set(pairs))
        ids = list(set(contact_ids))
        read = self._read_with_view(workspace, ids, wanted)
        if read is not None:
            rows = read
        elif self.postgres:
            among = sorted(set(ids) | {c for _, c in wanted})
            known = set(ids)
            params = {
                "workspace": workspace,
                "among": among,
                "open_of": [c in known for c in among],
                "wfs": [w for w, _ in wanted],
                "cids": [c for _, c in wanted],
            }
            query = _RUNS_OF_FACTS_UNLOCKED if self.checked else _RUNS_OF_FACTS
            rows = [dict(r) for r in (await self.session.execute(query, params)).mappings()]
        elif not wanted:
            return {}, await self.open_runs(workspace, contact_ids)
        else:
            e = ENROLLMENTS.c
            result = await self.session.execute(
                select(ENROLLMENTS).where(
                    e.workspace == workspace,
                    (e.contact_id.in_(ids) & e.status.in_(OPEN)) | self._pairs(wanted),
                )
            )
            rows = [dict(r) for r in result.mappings()]
        self._remember(rows)
        asked, known = set(wanted), set(ids)
        last = _latest(
            (r["workflow_id"], r["contact_id"], r["enrolled_at"], r["status"])
            for r in rows
            if (r["workflow_id"], r["contact_id"]) in asked
        )
        still_open = [r for r in rows if r["status"] in OPEN and r["contact_id"] in known]
        return last, still_open

    def _pairs(self, pairs: Sequence[tuple[str, str]]) -> ColumnElement[bool]:
        """`(workflow_id, contact_id) IN pairs`; on PostgreSQL the pairs as two arrays, one
        statement text for every batch size."""
        e = ENROLLMENTS.c
        if not self.postgres:
            return tuple_(e.workflow_id, e.contact_id).in_(pairs)
        listed = select(
            func.unnest(
                bindparam("wfs", [w for w, _ in pairs], type_=postgresql.ARRAY(e.workflow_id.type))
            ).label("w"),
            func.unnest(
                bindparam("cids", [c for _, c in pairs], type_=postgresql.ARRAY(e.contact_id.type))
            ).label("c"),
        )
        return tuple_(e.workflow_id, e.contact_id).in_(listed)

    async def run_page(
        self, workspace: str, workflow_id: str, status: str | None, after: str | None, limit: int
    ) -> list[dict[str, Any]]:
        e = ENROLLMENTS.c
        query = select(ENROLLMENTS).where(e.workspace == workspace, e.workflow_id == workflow_id)
        if status:
            query = query.where(e.status == status)
        if after:
            query = query.where(e.id < after)
        query = query.order_by(e.id.desc()).limit(limit)
        return [dict(r) for r in (await self.session.execute(query)).mappings()]

    async def counts(
        self, workspace: str, workflow_id: str | None = None
    ) -> dict[str, dict[str, int]]:
        e = ENROLLMENTS.c
        query = select(e.workflow_id, e.status, func.count()).where(e.workspace == workspace)
        if workflow_id:
            query = query.where(e.workflow_id == workflow_id)
        query = query.group_by(e.workflow_id, e.status)
        result: dict[str, dict[str, int]] = {}
        for wf, status, n in (await self.session.execute(query)).all():
            result.setdefault(wf, {})[status] = n
        return result

    async def all_counts(self) -> list[tuple[str, str, str, int]]:
        e = ENROLLMENTS.c
        query = select(e.workspace, e.workflow_id, e.status, func.count()).group_by(
            e.workspace, e.workflow_id, e.status
        )
        return [(r[0], r[1], r[2], r[3]) for r in (await self.session.execute(query)).all()]

    async def add_steps(self, rows: Sequence[Mapping[str, Any]]) -> None:
        await insert_rows(self.session, STEPS, rows)

    async def steps(self, enrollment_id: str) -> list[dict[str, Any]]:
        s = STEPS.c
        query = select(STEPS).where(s.enrollment_id == enrollment_id).order_by(s.id)
        return [dict(r) for r in (await self.session.execute(query)).mappings()]

    # --- timers -------------------------------------------------------------------------------

    async def put_timers(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Schedule timers; a timer with the same id is moved to the new time."""
        if not rows:
            return
        unique = list({r["id"]: r for r in rows}.values())
        await self._upsert(TIMERS, unique, ("id",), _TIMER_MOVES)
        self._note_timers(unique)

    def _note_timers(self, rows: Sequence[Mapping[str, Any]]) -> None:
        earliest = min(r["due_at"] for r in rows)
        if self.earliest_timer is None or earliest < self.earliest_timer:
            self.earliest_timer = earliest

    async def delete_timers(self, ids: Iterable[str]) -> None:
        wanted = list(set(ids))
        if wanted:
            await self.session.execute(delete(TIMERS).where(self._among(TIMERS.c.id, wanted)))

    async def claim_due(self, now: datetime, limit: int) -> list[DueTimer]:
        """Take the timers due by `now`, earliest first: deleted in this transaction (so back
        if it rolls back), locked rows skipped, so replicas never take the same timer."""
        t = TIMERS.c
        due = select(t.id).where(t.due_at <= now).order_by(t.due_at).limit(limit)
        if self.postgres:
            due = due.with_for_update(skip_locked=True)
        claim = delete(TIMERS).where(t.id.in_(due.scalar_subquery())).returning(*TIMERS.c)
        rows = (await self.session.execute(claim)).mappings()
        timers = [DueTimer(**{k: r[k] for k in DueTimer.__dataclass_fields__}) for r in rows]
        return sorted(timers, key=lambda timer: (timer.due_at, timer.id))

    async def next_due(self) -> datetime | None:
        value: datetime | None = await self.session.scalar(select(func.min(TIMERS.c.due_at)))
        return value

    async def postpone_timers(self, ids: Sequence[str], now: datetime) -> None:
        """Timers whose firing failed come back later (1 s, 2 s, 4 s … up to an hour)."""
        t = TIMERS.c
        for timer_id in ids:
            failures = await self.session.scalar(select(t.failures).where(t.id == timer_id)) or 0
            delay = timedelta(seconds=min(3600, 2**failures))
            await self.session.execute(
                update(TIMERS)
                .where(t.id == timer_id)
                .values(failures=failures + 1, due_at=now + delay)
            )

    async def trigger_timers_of(self, workspace: str, contact_id: str) -> list[str]:
        t = TIMERS.c
        query = select(t.id).where(
            t.workspace == workspace, t.contact_id == contact_id, t.kind == "trigger"
        )
        return list((await self.session.execute(query)).scalars())

    # --- effects ------------------------------------------------------------------------------

    async def add_effects(self, rows: Sequence[Mapping[str, Any]]) -> None:
        await insert_json_rows(self.session, EFFECTS, rows, ignore=True)

    async def effect(self, workspace: str, effect_id: str) -> dict[str, Any] | None:
        f = EFFECTS.c
        query = select(EFFECTS).where(f.workspace == workspace, f.id == effect_id)
        row = (await self.session.execute(query)).mappings().first()
        return dict(row) if row else None

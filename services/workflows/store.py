"""Repositories of the workflows service: the only module that builds queries.

Runs are read and written as plain rows in bulk (one statement per kind of write per
transaction), because a polled batch of events or a batch of due timers touches hundreds of
runs at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import Any

import orjson
from sqlalchemy import (
    Column,
    ColumnElement,
    Table,
    TextClause,
    and_,
    any_,
    bindparam,
    delete,
    func,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from services.workflows.models import (
    ContactView,
    Enrollment,
    SentEffect,
    StepRun,
    Submission,
    Timer,
    Workflow,
    WorkflowVersion,
    erasures,
)
from shared import erasure
from shared.db import insert_json_rows, insert_rows, update_json_rows

ENROLLMENTS: Table = Enrollment.__table__  # type: ignore[assignment]
STEPS: Table = StepRun.__table__  # type: ignore[assignment]
TIMERS: Table = Timer.__table__  # type: ignore[assignment]
CONTACTS: Table = ContactView.__table__  # type: ignore[assignment]
EFFECTS: Table = SentEffect.__table__  # type: ignore[assignment]
WORKFLOWS: Table = Workflow.__table__  # type: ignore[assignment]
VERSIONS: Table = WorkflowVersion.__table__  # type: ignore[assignment]
SUBMISSIONS: Table = Submission.__table__  # type: ignore[assignment]
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

# (submission id, form id, contact id): one side of a form submission, the other side None.
SubmissionHalf = tuple[str, str | None, str | None]

# One text for every batch size (prepared once per connection). `ON CONFLICT … WHERE` leaves a
# completed pair alone: only rows inserted or still missing a side come back.
_PAIR_SUBMISSIONS = text(
    "INSERT INTO submissions (workspace, submission_id, form_id, contact_id, at) "
    "SELECT :workspace, h.submission_id, h.form_id, h.contact_id, :at FROM unnest("
    "CAST(:ids AS varchar[]), CAST(:forms AS varchar[]), CAST(:contacts AS varchar[])"
    ") AS h(submission_id, form_id, contact_id) ORDER BY h.submission_id "
    "ON CONFLICT (workspace, submission_id) DO UPDATE SET "
    "form_id = coalesce(excluded.form_id, submissions.form_id), "
    "contact_id = coalesce(excluded.contact_id, submissions.contact_id) "
    "WHERE submissions.form_id IS NULL OR submissions.contact_id IS NULL "
    "RETURNING submission_id, form_id, contact_id"
)


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


def _json_rows(table: Table, param: str) -> str:
    return f'json_populate_recordset(NULL::"{table.name}", CAST(:{param} AS json))'


def _insert_sql(table: Table, param: str, tail: str = "") -> str:
    """Insert the JSON document `param`'s rows (every column but a generated `id`)."""
    names = ", ".join(
        f'"{c.name}"' for c in table.c if not (c.name == "id" and c.autoincrement is True)
    )
    return (
        f'INSERT INTO "{table.name}" ({names}) SELECT {names} FROM {_json_rows(table, param)}{tail}'
    )


_PROJECTION = ("email", "data", "merged_into", "updated_at")
_TIMER_MOVES = ("due_at", "step", "enrollment_id", "contact_id", "failures")
# Each kind of write of `RunWrites`, as one SQL statement over its own parameter.
_RUN_WRITES: dict[str, str] = {
    "new_runs": _insert_sql(ENROLLMENTS, "new_runs"),
    "saved_runs": (
        "UPDATE enrollments AS t SET "
        + ", ".join(f'"{n}" = v."{n}"' for n in RUN_STATE)
        + f" FROM {_json_rows(ENROLLMENTS, 'saved_runs')} AS v WHERE t.id = v.id"
    ),
    "steps": _insert_sql(STEPS, "steps"),
    "gone_timers": "DELETE FROM timers WHERE id = ANY(CAST(:gone_timers AS varchar[]))",
    "timers": _insert_sql(
        TIMERS,
        "timers",
        " ON CONFLICT (id) DO UPDATE SET "
        + ", ".join(f'"{n}" = excluded."{n}"' for n in _TIMER_MOVES),
    ),
    "effects": _insert_sql(EFFECTS, "effects", " ON CONFLICT DO NOTHING"),
    "contacts": _insert_sql(
        CONTACTS,
        "contacts",
        " ON CONFLICT (workspace, id) DO UPDATE SET "
        + ", ".join(f'"{n}" = excluded."{n}"' for n in _PROJECTION),
    ),
}


@cache
def _run_writes(kinds: tuple[str, ...]) -> TextClause:
    """The statement writing these kinds at once: all but the last as data-modifying CTEs,
    which PostgreSQL runs exactly once each, atomically with the rest."""
    *first, last = (_RUN_WRITES[k] for k in kinds)
    if not first:
        return text(last)
    return text("WITH " + ", ".join(f"w{i} AS ({sql})" for i, sql in enumerate(first)) + " " + last)


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


class WorkflowsStore:
    """Queries over this service's tables, in the caller's transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        # The earliest timer this transaction scheduled: the door wakes the timer loop with it.
        self.earliest_timer: datetime | None = None

    @property
    def postgres(self) -> bool:
        return self.session.get_bind().dialect.name == "postgresql"

    def _insert(self, table: Table) -> Any:
        return postgresql.insert(table) if self.postgres else sqlite.insert(table)

    def _among(self, column: Column[Any], values: Sequence[Any]) -> ColumnElement[bool]:
        """`column IN values`; on PostgreSQL `= ANY(<one array>)`: one statement text for
        every batch size (cached and prepared once), not a parameter per value."""
        if self.postgres:
            return column == any_(
                bindparam(None, list(values), type_=postgresql.ARRAY(column.type))
            )
        return column.in_(values)

    async def _upsert(
        self,
        table: Table,
        rows: Sequence[Mapping[str, Any]],
        key: Sequence[str],
        update: Sequence[str],
    ) -> None:
        """Insert whole rows, or set `update` on the rows already holding their `key`. On
        PostgreSQL the batch travels as one JSON document (`json_populate_recordset`, typed by
        the table), like `shared.db.insert_json_rows`."""
        if not self.postgres:
            stmt = self._insert(table)
            stmt = stmt.on_conflict_do_update(
                index_elements=[table.c[k] for k in key], set_={n: stmt.excluded[n] for n in update}
            )
            await self.session.execute(stmt, list(rows))
            return
        names = ", ".join(f'"{n}"' for n in rows[0])
        sets = ", ".join(f'"{n}" = excluded."{n}"' for n in update)
        keys = ", ".join(f'"{k}"' for k in key)
        sql = (
            f'INSERT INTO "{table.name}" ({names}) SELECT {names} FROM '
            f'json_populate_recordset(NULL::"{table.name}", CAST(:rows AS json)) '
            f"ON CONFLICT ({keys}) DO UPDATE SET {sets}"
        )
        document = orjson.dumps(list(rows), option=orjson.OPT_NAIVE_UTC).decode()
        await self.session.execute(text(sql), {"rows": document})

    # --- workflows ----------------------------------------------------------------------------

    async def workflow(
        self, workspace: str, workflow_id: str, lock: bool = False
    ) -> Workflow | None:
        query = select(Workflow).where(Workflow.workspace == workspace, Workflow.id == workflow_id)
        if lock:
            query = query.with_for_update()
        return (await self.session.execute(query)).scalar_one_or_none()

    async def workflows(self, workspace: str) -> list[Workflow]:
        query = (
            select(Workflow)
            .where(Workflow.workspace == workspace)
            .order_by(Workflow.created_at, Workflow.id)
        )
        return list((await self.session.execute(query)).scalars())

    async def workflow_ids(self, workspace: str) -> set[str]:
        query = select(WORKFLOWS.c.id).where(WORKFLOWS.c.workspace == workspace)
        return set((await self.session.execute(query)).scalars())

    def add(self, row: Workflow | WorkflowVersion) -> None:
        self.session.add(row)

    async def flush(self) -> None:
        await self.session.flush()

    async def versions(self, workspace: str, workflow_id: str) -> list[WorkflowVersion]:
        query = (
            select(WorkflowVersion)
            .where(
                WorkflowVersion.workspace == workspace, WorkflowVersion.workflow_id == workflow_id
            )
            .order_by(WorkflowVersion.version)
        )
        return list((await self.session.execute(query)).scalars())

    async def documents(
        self, keys: Iterable[tuple[str, str, int]]
    ) -> dict[tuple[str, str, int], dict[str, Any]]:
        """Documents by (workspace, workflow, version)."""
        wanted = list(set(keys))
        if not wanted:
            return {}
        v = VERSIONS.c
        query = select(v.workspace, v.workflow_id, v.version, v.document).where(
            tuple_(v.workspace, v.workflow_id, v.version).in_(wanted)
        )
        return {(r[0], r[1], r[2]): r[3] for r in (await self.session.execute(query)).all()}

    async def enabled(self, workspace: str) -> list[tuple[str, int]]:
        """(workflow id, current version) of the workspace's enabled workflows."""
        w = WORKFLOWS.c
        query = select(w.id, w.version).where(w.workspace == workspace, w.enabled.is_(True))
        return [(r[0], r[1]) for r in (await self.session.execute(query)).all()]

    # --- contact projection -------------------------------------------------------------------

    async def contacts(self, workspace: str, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        wanted = list(set(ids))
        if not wanted:
            return {}
        c = CONTACTS.c
        query = select(c.id, c.data).where(
            c.workspace == workspace, self._among(c.id, wanted), c.merged_into.is_(None)
        )
        return {r[0]: r[1] for r in (await self.session.execute(query)).all()}

    async def survivors(self, workspace: str, ids: Iterable[str]) -> dict[str, str]:
        """Of these contact ids, the ones merged away, each with the contact it went into."""
        wanted = list(set(ids))
        if not wanted:
            return {}
        c = CONTACTS.c
        query = select(c.id, c.merged_into).where(
            c.workspace == workspace, self._among(c.id, wanted), c.merged_into.is_not(None)
        )
        return {r[0]: r[1] for r in (await self.session.execute(query)).all()}

    async def contacts_by_email(self, workspace: str, emails: Iterable[str]) -> dict[str, str]:
        """The projection's (unmerged) contact of each of these emails, where there is one."""
        wanted = list(set(emails))
        if not wanted:
            return {}
        c = CONTACTS.c
        query = (
            select(c.email, c.id)
            .where(c.workspace == workspace, self._among(c.email, wanted), c.merged_into.is_(None))
            .order_by(c.id)
        )
        found: dict[str, str] = {}
        for email, contact_id in (await self.session.execute(query)).all():
            found.setdefault(email, contact_id)
        return found

    async def save_contacts(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Upsert projection rows (workspace, id, email, data, merged_into, updated_at)."""
        if not rows:
            return
        # One row per contact: a statement may not update the same row twice.
        unique = list({(r["workspace"], r["id"]): r for r in rows}.values())
        await self._upsert(CONTACTS, unique, ("workspace", "id"), _PROJECTION)

    async def contact_ids(
        self, workspace: str, after: str | None, limit: int
    ) -> list[tuple[str, dict[str, Any]]]:
        c = CONTACTS.c
        query = select(c.id, c.data).where(c.workspace == workspace, c.merged_into.is_(None))
        if after is not None:
            query = query.where(c.id > after)
        query = query.order_by(c.id).limit(limit)
        return [(r[0], r[1]) for r in (await self.session.execute(query)).all()]

    # --- runs ---------------------------------------------------------------------------------

    async def write_runs(self, writes: RunWrites) -> None:
        """Write runs, history, timers, effects and contact projection rows: on PostgreSQL in
        one statement (one round trip, one JSON document per kind), elsewhere one statement
        per kind."""
        if not self.postgres:
            await self.add_runs(writes.new_runs)
            await self.save_runs(writes.saved_runs)
            await self.add_steps(writes.steps)
            await self.delete_timers(writes.gone_timers)
            await self.put_timers(writes.timers)
            await self.add_effects(writes.effects)
            await self.save_contacts(writes.contacts)
            return
        params: dict[str, Any] = {}
        for kind in _RUN_WRITES:
            rows: Sequence[Any] = getattr(writes, kind)
            if not rows:
                continue
            if kind == "gone_timers":
                params[kind] = list(set(rows))
                continue
            if kind == "saved_runs":
                rows = [{"id": r["id"], **{n: r[n] for n in RUN_STATE}} for r in rows]
            elif kind == "timers":
                rows = list({r["id"]: r for r in rows}.values())
                self._note_timers(rows)
            params[kind] = orjson.dumps(list(rows), option=orjson.OPT_NAIVE_UTC).decode()
        if params:
            await self.session.execute(_run_writes(tuple(params)), params)

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
        query = select(ENROLLMENTS).where(self._among(ENROLLMENTS.c.id, wanted))
        if workspace is not None:
            query = query.where(ENROLLMENTS.c.workspace == workspace)
        if lock and self.postgres:
            query = query.with_for_update()
        return {r["id"]: dict(r) for r in (await self.session.execute(query)).mappings()}

    async def open_runs(
        self, workspace: str, contact_ids: Iterable[str], lock: bool = False
    ) -> list[dict[str, Any]]:
        """Runs not ended of the contacts (active or waiting)."""
        wanted = list(set(contact_ids))
        if not wanted:
            return []
        e = ENROLLMENTS.c
        query = select(ENROLLMENTS).where(
            e.workspace == workspace,
            self._among(e.contact_id, wanted),
            e.status.in_(("active", "waiting")),
        )
        if lock and self.postgres:
            query = query.with_for_update()
        return [dict(r) for r in (await self.session.execute(query)).mappings()]

    async def last_runs(
        self, workspace: str, pairs: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[datetime, bool]]:
        """For (workflow, contact) pairs: the latest run's start and whether it ended."""
        wanted = list(set(pairs))
        if not wanted:
            return {}
        e = ENROLLMENTS.c
        query = select(e.workflow_id, e.contact_id, e.enrolled_at, e.status).where(
            e.workspace == workspace, self._pairs(wanted)
        )
        return _latest((await self.session.execute(query)).all())

    async def runs_of_facts(
        self, workspace: str, contact_ids: Iterable[str], pairs: Iterable[tuple[str, str]]
    ) -> tuple[dict[tuple[str, str], tuple[datetime, bool]], list[dict[str, Any]]]:
        """`last_runs(pairs)` and `open_runs(contact_ids, lock=True)` in one locked read (the
        runs of the pairs, ended ones too, are locked with the open ones)."""
        wanted = list(set(pairs))
        if not wanted:
            return {}, await self.open_runs(workspace, contact_ids, lock=True)
        ids = list(set(contact_ids))
        e = ENROLLMENTS.c
        query = select(ENROLLMENTS).where(
            e.workspace == workspace,
            (self._among(e.contact_id, ids) & e.status.in_(("active", "waiting")))
            | self._pairs(wanted),
        )
        if self.postgres:
            query = query.with_for_update()
        rows = [dict(r) for r in (await self.session.execute(query)).mappings()]
        asked, known = set(wanted), set(ids)
        last = _latest(
            (r["workflow_id"], r["contact_id"], r["enrolled_at"], r["status"])
            for r in rows
            if (r["workflow_id"], r["contact_id"]) in asked
        )
        still_open = [
            r for r in rows if r["status"] in ("active", "waiting") and r["contact_id"] in known
        ]
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

    # --- form submissions --------------------------------------------------------------------

    async def pair_submissions(
        self, workspace: str, halves: Sequence[SubmissionHalf], now: datetime
    ) -> dict[str, tuple[str, str]]:
        """Record sides of submissions (submission id, form, contact), one statement for the
        batch; returns the submissions this call completed, with their (form, contact).

        The upsert only touches a submission still missing a side, so a redelivered half of a
        completed pair changes nothing and is not returned; concurrent halves serialise on the
        row's lock, so exactly one transaction sees a pair complete. Rows are written in
        submission order, so two batches lock shared rows in the same order."""
        merged: dict[str, tuple[str | None, str | None]] = {}
        for submission, form, contact in halves:
            had = merged.get(submission, (None, None))
            merged[submission] = (had[0] or form, had[1] or contact)
        if not merged:
            return {}
        ordered = sorted(merged.items())
        if self.postgres:
            result = await self.session.execute(
                _PAIR_SUBMISSIONS,
                {
                    "workspace": workspace,
                    "at": now,
                    "ids": [s for s, _ in ordered],
                    "forms": [f for _, (f, _) in ordered],
                    "contacts": [c for _, (_, c) in ordered],
                },
            )
        else:
            s = SUBMISSIONS.c
            stmt = sqlite.insert(SUBMISSIONS).values(
                [
                    {
                        "workspace": workspace,
                        "submission_id": submission,
                        "form_id": form,
                        "contact_id": contact,
                        "at": now,
                    }
                    for submission, (form, contact) in ordered
                ]
            )
            upsert = stmt.on_conflict_do_update(
                index_elements=[s.workspace, s.submission_id],
                set_={
                    "form_id": func.coalesce(stmt.excluded.form_id, s.form_id),
                    "contact_id": func.coalesce(stmt.excluded.contact_id, s.contact_id),
                },
                where=s.form_id.is_(None) | s.contact_id.is_(None),
            ).returning(s.submission_id, s.form_id, s.contact_id)
            result = await self.session.execute(upsert)
        return {r[0]: (r[1], r[2]) for r in result.all() if r[1] is not None and r[2] is not None}

    # --- merge and erase ----------------------------------------------------------------------

    async def repoint(self, workspace: str, merged_id: str, survivor_id: str) -> None:
        """A merged contact's runs, history and effects now belong to the survivor."""
        for table in (ENROLLMENTS, STEPS, EFFECTS):
            await self.session.execute(
                update(table)
                .where(table.c.workspace == workspace, table.c.contact_id == merged_id)
                .values(contact_id=survivor_id)
            )
        t = TIMERS.c
        await self.session.execute(
            update(TIMERS)
            .where(and_(t.workspace == workspace, t.contact_id == merged_id, t.kind == "run"))
            .values(contact_id=survivor_id)
        )
        await self.session.execute(
            delete(TIMERS).where(
                t.workspace == workspace, t.contact_id == merged_id, t.kind == "trigger"
            )
        )

    async def person_rows(
        self, workspace: str, contact_ids: Sequence[str], submission_ids: Sequence[str]
    ) -> dict[str, list[dict[str, Any]]]:
        """Every row held on these contacts (an export), by table, oldest first."""

        async def rows(query: Any) -> list[dict[str, Any]]:
            return [dict(r) for r in (await self.session.execute(query)).mappings()]

        c, e, s, f, t, sub = (
            CONTACTS.c,
            ENROLLMENTS.c,
            STEPS.c,
            EFFECTS.c,
            TIMERS.c,
            SUBMISSIONS.c,
        )
        ids = list(contact_ids)
        return {
            "contacts": await rows(
                select(CONTACTS).where(c.workspace == workspace, c.id.in_(ids)).order_by(c.id)
            ),
            "enrollments": await rows(
                select(ENROLLMENTS)
                .where(e.workspace == workspace, e.contact_id.in_(ids))
                .order_by(e.enrolled_at, e.id)
            ),
            "steps": await rows(
                select(STEPS).where(s.workspace == workspace, s.contact_id.in_(ids)).order_by(s.id)
            ),
            "effects": await rows(
                select(EFFECTS)
                .where(f.workspace == workspace, f.contact_id.in_(ids))
                .order_by(f.created_at, f.id)
            ),
            "timers": await rows(
                select(TIMERS)
                .where(t.workspace == workspace, t.contact_id.in_(ids))
                .order_by(t.due_at, t.id)
            ),
            "submissions": await rows(
                select(SUBMISSIONS)
                .where(
                    sub.workspace == workspace,
                    sub.contact_id.in_(ids) | sub.submission_id.in_(list(submission_ids)),
                )
                .order_by(sub.at, sub.submission_id)
            ),
        }

    async def record_erasures(self, workspace: str, digests: Sequence[str], at: datetime) -> None:
        await erasure.record_erasures(self.session, erasures, workspace, digests, at)

    async def erasures(self, workspace: str, digests: Iterable[str]) -> dict[str, datetime]:
        """When each of these digests was erased (absent: never); asked once per poll."""
        wanted = sorted(set(digests))
        if not wanted:
            return {}
        m = erasures.c
        query = select(m.digest, m.erased_at).where(
            m.workspace == workspace, self._among(m.digest, wanted)
        )
        return {r[0]: r[1] for r in (await self.session.execute(query)).all()}

    async def erase(self, workspace: str, contact_id: str) -> list[dict[str, Any]]:
        """Forget a contact: its runs (returned, to announce their end), history, timers,
        effects and projection row."""
        runs = [
            dict(r)
            for r in (
                await self.session.execute(
                    select(ENROLLMENTS).where(
                        ENROLLMENTS.c.workspace == workspace, ENROLLMENTS.c.contact_id == contact_id
                    )
                )
            ).mappings()
        ]
        for table in (STEPS, EFFECTS, TIMERS, ENROLLMENTS, SUBMISSIONS):
            await self.session.execute(
                delete(table).where(
                    table.c.workspace == workspace, table.c.contact_id == contact_id
                )
            )
        await self.session.execute(
            delete(CONTACTS).where(CONTACTS.c.workspace == workspace, CONTACTS.c.id == contact_id)
        )
        return runs

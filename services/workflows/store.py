"""Repositories of the workflows service: definitions, the contact projection, form
submissions and a person's rows (export, merge, erasure). The runs part (runs, history,
timers, effects) is `runs/store.py`; what both share is `rows.py`. Only these build queries.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    String,
    Table,
    and_,
    column,
    delete,
    func,
    select,
    text,
    tuple_,
    update,
)
from sqlalchemy.dialects import sqlite

from services.workflows.models import (
    Workflow,
    WorkflowVersion,
    erasures,
)
from services.workflows.rows import (
    CONTACTS,
    EFFECTS,
    ENROLLMENTS,
    STEPS,
    SUBMISSIONS,
    TIMERS,
    VERSIONS,
    WORKFLOWS,
)
from services.workflows.runs.store import ENDED as ENDED
from services.workflows.runs.store import OPEN as OPEN
from services.workflows.runs.store import RUN_STATE as RUN_STATE
from services.workflows.runs.store import DueTimer as DueTimer
from services.workflows.runs.store import RunsStore
from services.workflows.runs.store import RunWrites as RunWrites
from shared import erasure
from shared.db import Json

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
class BatchView:
    """What a batch of contact events reads first: the projection's contacts, the erasures of
    the digests asked, and the workspace's enabled workflows (id, current version)."""

    contacts: dict[str, dict[str, Any]]
    erased: dict[str, datetime]
    enabled: list[tuple[str, int]]


# The three reads in one statement (one round trip), a row per item tagged with its kind. The
# arrays are joined, not tested with `= ANY(array)`: see `RunsStore.runs_of_facts`.
_BATCH_VIEW_SQL = (
    "SELECT 'c' AS kind, c.id AS key, c.data AS value, NULL AS at FROM contacts AS c"
    " JOIN unnest(CAST(:ids AS varchar[])) AS k(id) ON c.id = k.id"
    " WHERE c.workspace = :workspace AND c.merged_into IS NULL"
    " UNION ALL SELECT 'e', e.digest, NULL, e.erased_at FROM erasures AS e"
    " JOIN unnest(CAST(:digests AS varchar[])) AS d(digest) ON e.digest = d.digest"
    " WHERE e.workspace = :workspace"
    " UNION ALL SELECT 'w', w.id, to_jsonb(w.version), NULL FROM workflows AS w"
    " WHERE w.workspace = :workspace AND w.enabled"
)
# Read outside a transaction (`RunsStore.checked`), the view also takes every run of the
# contacts, for `runs_of_facts` to answer from: a round trip fewer on a lead's path. (The
# transaction's read of runs locks them, which a UNION cannot.)
_RUNS_WITH_VIEW_SQL = (
    " UNION ALL SELECT 'r', r.contact_id, to_jsonb(r), NULL FROM enrollments AS r"
    " JOIN unnest(CAST(:ids AS varchar[])) AS k(id) ON r.contact_id = k.id"
    " WHERE r.workspace = :workspace"
)
_VIEW_COLUMNS = (
    column("kind", String),
    column("key", String),
    column("value", Json),
    column("at", erasures.c.erased_at.type),
)
_BATCH_VIEW = text(_BATCH_VIEW_SQL).columns(*_VIEW_COLUMNS)
_BATCH_VIEW_AND_RUNS = text(_BATCH_VIEW_SQL + _RUNS_WITH_VIEW_SQL).columns(*_VIEW_COLUMNS)
# A run's times, which `to_jsonb` gives as ISO text.
_RUN_TIMES = ("wait_until", "enrolled_at", "updated_at", "ended_at")


def _run_of_json(value: dict[str, Any]) -> dict[str, Any]:
    """A run read as `to_jsonb(row)`, as `select(ENROLLMENTS)` gives it."""
    for name in _RUN_TIMES:
        if value[name] is not None:
            value[name] = datetime.fromisoformat(value[name]).astimezone(UTC)
    return value


class WorkflowsStore(RunsStore):
    """Queries over this service's tables, in the caller's transaction (the runs part in
    `runs/store.py`)."""

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
        """(workflow id, current version) of the workspace's enabled workflows, by id."""
        w = WORKFLOWS.c
        query = select(w.id, w.version).where(w.workspace == workspace, w.enabled.is_(True))
        # Sorted here, not by the database's collation: `batch_view` sorts the same way, and
        # the trigger index is kept while the list stays the same.
        return sorted((r[0], r[1]) for r in (await self.session.execute(query)).all())

    # --- contact projection -------------------------------------------------------------------

    async def batch_view(
        self, workspace: str, contact_ids: Iterable[str], digests: Iterable[str]
    ) -> BatchView:
        """`contacts`, `erasures` and `enabled` at once (one statement on PostgreSQL)."""
        ids, wanted = sorted(set(contact_ids)), sorted(set(digests))
        if not self.postgres:
            return BatchView(
                await self.contacts(workspace, ids),
                await self.erasures(workspace, wanted),
                await self.enabled(workspace),  # sorted
            )
        params = {"workspace": workspace, "ids": ids, "digests": wanted}
        contacts: dict[str, dict[str, Any]] = {}
        erased: dict[str, datetime] = {}
        enabled: list[tuple[str, int]] = []
        runs: list[dict[str, Any]] = []
        query = _BATCH_VIEW_AND_RUNS if self.checked else _BATCH_VIEW
        for kind, key, value, at in (await self.session.execute(query, params)).all():
            if kind == "c":
                contacts[key] = value
            elif kind == "e":
                erased[key] = at
            elif kind == "w":
                enabled.append((key, int(value)))
            else:
                runs.append(_run_of_json(value))
        if self.checked:
            self.with_view(workspace, ids, runs)
        return BatchView(contacts, erased, sorted(enabled))

    async def contacts(self, workspace: str, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        wanted = list(set(ids))
        if not wanted:
            return {}
        c = CONTACTS.c
        query = self._joined(select(c.id, c.data), c.id, wanted).where(
            c.workspace == workspace, c.merged_into.is_(None)
        )
        return {r[0]: r[1] for r in (await self.session.execute(query)).all()}

    async def survivors(self, workspace: str, ids: Iterable[str]) -> dict[str, str]:
        """Of these contact ids, the ones merged away, each with the contact it went into."""
        wanted = list(set(ids))
        if not wanted:
            return {}
        c = CONTACTS.c
        query = self._joined(select(c.id, c.merged_into), c.id, wanted).where(
            c.workspace == workspace, c.merged_into.is_not(None)
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

    async def contact_ids(
        self, workspace: str, after: str | None, limit: int
    ) -> list[tuple[str, dict[str, Any]]]:
        c = CONTACTS.c
        query = select(c.id, c.data).where(c.workspace == workspace, c.merged_into.is_(None))
        if after is not None:
            query = query.where(c.id > after)
        query = query.order_by(c.id).limit(limit)
        return [(r[0], r[1]) for r in (await self.session.execute(query)).all()]

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
        for table in (STEPS, EFFECTS):  # found through the runs, so before them
            await self.session.execute(
                update(table)
                .where(self._of_runs(table, workspace, [merged_id]))
                .values(contact_id=survivor_id)
            )
        e = ENROLLMENTS.c
        await self.session.execute(
            update(ENROLLMENTS)
            .where(e.workspace == workspace, e.contact_id == merged_id)
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

    def _of_runs(
        self, table: Table, workspace: str, contact_ids: Sequence[str]
    ) -> ColumnElement[bool]:
        """The history lines or effects of these contacts' runs, found by run (the index
        those tables keep; they carry the contact too, always their run's)."""
        e = ENROLLMENTS.c
        runs = select(e.id).where(e.workspace == workspace, e.contact_id.in_(contact_ids))
        return (table.c.workspace == workspace) & table.c.enrollment_id.in_(runs)

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
                select(STEPS).where(self._of_runs(STEPS, workspace, ids)).order_by(s.id)
            ),
            "effects": await rows(
                select(EFFECTS)
                .where(self._of_runs(EFFECTS, workspace, ids))
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
        for table in (STEPS, EFFECTS):  # found through the runs, so before them
            await self.session.execute(
                delete(table).where(self._of_runs(table, workspace, [contact_id]))
            )
        for table in (TIMERS, ENROLLMENTS, SUBMISSIONS):
            await self.session.execute(
                delete(table).where(
                    table.c.workspace == workspace, table.c.contact_id == contact_id
                )
            )
        await self.session.execute(
            delete(CONTACTS).where(CONTACTS.c.workspace == workspace, CONTACTS.c.id == contact_id)
        )
        return runs

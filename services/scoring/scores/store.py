"""Score states, the engagement ledger they are replayed from, and durable timers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from sqlalchemy import delete, func, select, text, tuple_, update

from services.scoring.models import LedgerRow, ScoreRow, TimerRow
from services.scoring.scores.domain import LedgerEntry, LedgerTotal, ledger_totals
from services.scoring.sql import SqlBase, chunks
from shared.db import insert_rows, probe_each

_EMPTY: dict[str, Any] = {}  # the data of most ledger entries; shared, only ever read


def _utc(value: datetime) -> datetime:
    """A naive time is UTC (as the `UtcDateTime` columns read it)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Timer:
    workspace: str
    contact_id: str
    kind: str
    group: str
    due_at: datetime


class ScoreStore(Protocol):
    """Score states, ledgers and timers, as the handlers need them."""

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
    async def append_ledger(self, rows: Sequence[Mapping[str, Any]]) -> None: ...
    async def ledger_of(
        self, workspace: str, ids: Iterable[str]
    ) -> dict[str, list[LedgerEntry]]: ...
    async def ledger_since(
        self, workspace: str, since: datetime
    ) -> dict[str, list[LedgerEntry]]: ...
    async def ledger_totals(
        self,
        workspace: str,
        ids: Iterable[str],
        now: float,
        rates: Sequence[float],
        timed: Sequence[str],
    ) -> dict[str, list[LedgerTotal]]: ...
    async def move_ledger(self, workspace: str, source: str, target: str) -> None: ...
    async def set_timers(self, timers: Sequence[Timer]) -> None: ...
    async def clear_timers(self, keys: Sequence[tuple[str, str, str, str]]) -> None: ...
    async def claim_due_timers(self, now: datetime, limit: int) -> list[Timer]: ...


class SqlScores(SqlBase):
    # --- score states -----------------------------------------------------------------------

    async def lock_scores(self, workspace: str, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Score states, locked until the transaction ends (in id order: no deadlocks)."""
        return await self._scores(workspace, ids, skip_locked=False)

    async def read_scores(self, workspace: str, ids: Iterable[str]) -> dict[str, dict[str, Any]]:
        """Score states as committed, for reading only (no lock, nothing written)."""
        wanted = sorted(set(ids))
        found: dict[str, dict[str, Any]] = {}
        for part in chunks(wanted):
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
        wanted = sorted(set(ids))
        if self.postgres:
            driver = await self.driver()
            if not skip_locked:
                # A row to lock for every contact, also one without a score yet: so a rescore
                # and a live event can never both build a first score from what each saw.
                await driver.execute(
                    "INSERT INTO scores (workspace, contact_id, version, state)"
                    " SELECT $1, c, 0, '{}'::jsonb FROM unnest($2::varchar[]) AS c"
                    " ON CONFLICT DO NOTHING",
                    workspace,
                    wanted,
                )
            # States as text, parsed by orjson: a poll loads hundreds of them.
            # Locked in the order of `wanted` (sorted), as every transaction locks scores.
            lock = " FOR UPDATE SKIP LOCKED" if skip_locked else " FOR UPDATE"
            rows = await driver.fetch(
                "SELECT s.contact_id, s.state::text FROM "
                + probe_each(
                    "$2::varchar[]",
                    "SELECT contact_id, state FROM scores"
                    " WHERE workspace = $1 AND contact_id = k.id",
                    "s",
                    lock=lock,
                ),
                workspace,
                wanted,
            )
            return {cid: orjson.loads(state) for cid, state in rows}
        await self.write_lock()
        found: dict[str, dict[str, Any]] = {}
        for part in chunks(wanted):
            query = (
                select(ScoreRow.contact_id, ScoreRow.state)
                .where(ScoreRow.workspace == workspace, self._among(ScoreRow.contact_id, part))
                .order_by(ScoreRow.contact_id)
            )
            found.update({r.contact_id: r.state for r in await self.session.execute(query)})
        return found

    async def save_scores(self, workspace: str, states: Mapping[str, tuple[int, Any]]) -> None:
        rows = [
            {"workspace": workspace, "contact_id": cid, "version": version, "state": state}
            for cid, (version, state) in sorted(states.items())
        ]
        await self._upsert(ScoreRow.__table__, rows, ["workspace", "contact_id"])  # type: ignore[arg-type]

    # --- ledger -----------------------------------------------------------------------------

    async def append_ledger(self, rows: Sequence[Mapping[str, Any]]) -> None:
        """Rows of workspace, contact_id, type, occurred_at and data."""
        if not (self.postgres and rows):
            await insert_rows(self.session, LedgerRow.__table__, rows)  # type: ignore[arg-type]
            return
        # A poll's entries as one array per column, given to the driver as they are (the
        # generic path runs a column type's conversion for every value).
        await (await self.driver()).execute(
            "INSERT INTO ledger (workspace, contact_id, type, occurred_at, data)"
            " SELECT * FROM unnest($1::varchar[], $2::varchar[], $3::varchar[],"
            " $4::timestamptz[], $5::jsonb[])",
            [r["workspace"] for r in rows],
            [r["contact_id"] for r in rows],
            [r["type"] for r in rows],
            [_utc(r["occurred_at"]) for r in rows],
            [orjson.dumps(r["data"]).decode() for r in rows],
        )

    async def ledger_of(self, workspace: str, ids: Iterable[str]) -> dict[str, list[LedgerEntry]]:
        """Each contact's ledger, in time order (times as epoch seconds)."""
        found: dict[str, list[LedgerEntry]] = {}
        if self.postgres:
            # The rescore's bulk read (millions of rows): straight from the driver, times as
            # epoch floats and documents as text, without a result-processing layer per row.
            rows = await (await self.driver()).fetch(
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
        for part in chunks(sorted(set(ids))):
            where = (LedgerRow.workspace == workspace, self._among(LedgerRow.contact_id, part))
            await self._collect(found, where)
        return found

    async def ledger_totals(
        self,
        workspace: str,
        ids: Iterable[str],
        now: float,
        rates: Sequence[float],
        timed: Sequence[str],
    ) -> dict[str, list[LedgerTotal]]:
        """Each contact's ledger summed by type and data (see `LedgerTotal`), as of `now`:
        on PostgreSQL summed by the database, so a rescore reads a few rows per contact
        instead of every entry (the times only of the `timed` types)."""
        wanted = sorted(set(ids))
        rate_list = sorted(set(rates))
        found: dict[str, list[LedgerTotal]] = {}
        if not self.postgres:
            for cid, entries in (await self.ledger_of(workspace, wanted)).items():
                found[cid] = ledger_totals(entries, now, rate_list, timed)
            return found
        # 2^x below 2^-1000 is as good as nothing, and PostgreSQL calls an underflow an error.
        sums = ", ".join(
            f"sum(power(2.0::float8, greatest((t - $3) * ${i + 5}::float8, -1000)))"
            for i in range(len(rate_list))
        )
        rows = await (await self.driver()).fetch(
            f"SELECT contact_id, type, data::text, count(*), min(t), ARRAY[{sums}]::float8[],"
            " array_agg(t ORDER BY t) FILTER (WHERE type = ANY($4::varchar[]))"
            " FROM (SELECT contact_id, type, data,"
            " least(extract(epoch FROM occurred_at)::float8, $3) AS t FROM ledger"
            " WHERE workspace = $1 AND contact_id = ANY($2::varchar[])) AS e"
            " GROUP BY contact_id, type, data",
            workspace,
            wanted,
            now,
            list(timed),
            *rate_list,
        )
        for cid, kind, data, count, first, decayed, times in rows:
            document = _EMPTY if data == "{}" else orjson.loads(data)
            total = LedgerTotal(
                kind, document, count, first, dict(zip(rate_list, decayed, strict=True)), times
            )
            found.setdefault(cid, []).append(total)
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
        for part in chunks(keys):
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
        if self.postgres:
            # Thousands at once when many come due together: rows straight from the driver.
            rows = await (await self.driver()).fetch(
                'SELECT workspace, contact_id, kind, "group", due_at FROM timers'
                " WHERE due_at <= $1 ORDER BY due_at LIMIT $2 FOR UPDATE SKIP LOCKED",
                now,
                limit,
            )
            return [Timer(*row) for row in rows]
        query = (
            select(TimerRow).where(TimerRow.due_at <= now).order_by(TimerRow.due_at).limit(limit)
        )
        found = await self.session.execute(query)
        return [
            Timer(r.workspace, r.contact_id, r.kind, r.group, r.due_at) for r in found.scalars()
        ]

    async def next_due(self) -> datetime | None:
        due: datetime | None = await self.session.scalar(select(func.min(TimerRow.due_at)))
        return due

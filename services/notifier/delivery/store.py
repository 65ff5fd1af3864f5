"""The deliveries part of notifier's store: requests taken in, attempts started, finished and
swept, in bulk statements (one JSON document or set of arrays per batch on PostgreSQL)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, and_, bindparam, func, or_, select, text, update
from sqlalchemy.sql.elements import ColumnElement

from services.notifier.models import (
    Attempt,
    Delivery,
    Suppression,
)
from services.notifier.rows import (
    ATTEMPT_OUTCOME,
    DELIVERY_TYPES,
    WAITING,
    StoreBase,
    array_update,
    attempts,
    bind_column,
    deliveries,
)
from shared.db import defer_json_rows, defer_json_update


class DeliveriesStore(StoreBase):
    """Reads and writes deliveries and attempts in the unit of work's session."""

    # -- deliveries ---------------------------------------------------------------------------

    async def known_keys(self, workspace: str, keys: Sequence[str]) -> set[str]:
        if not keys:
            return set()
        query = select(deliveries.c.idempotency_key).where(
            deliveries.c.workspace == workspace, deliveries.c.idempotency_key.in_(set(keys))
        )
        return set((await self.session.execute(query)).scalars())

    async def insert_deliveries(
        self, rows: Sequence[Mapping[str, Any]], defer: bool = False
    ) -> set[str]:
        """Insert new deliveries; a key already there (another replica) is skipped. Returns
        the ids inserted. A delivery inserted as `sending` (its first attempt started by the
        inserting transaction) gets its attempt row in the same statement on PostgreSQL.

        With `defer` (a batch's first try, where a known key is rare), the rows and attempt
        rows are written by the transaction's last statement, with its inbox claim and outbox
        rows (`defer_json_rows`): a round trip fewer. A known key then fails the commit instead
        of being skipped, and the caller accepts the batch again without `defer`."""
        if not rows:
            return set()
        if defer:
            await defer_json_rows(self.session, deliveries, rows)
            await defer_json_rows(
                self.session,
                attempts,
                [
                    {
                        "delivery_id": r["id"],
                        "number": r["attempts"],
                        "started_at": r["claimed_at"],
                        "finished_at": None,
                        "outcome": None,
                        "status_code": None,
                        "response": None,
                    }
                    for r in rows
                    if r["status"] == "sending"
                ],
            )
            return {r["id"] for r in rows}
        if self.session.get_bind().dialect.name == "postgresql":
            return await self._insert_deliveries_from_arrays(rows)
        # Many parameter sets to one statement (compiled once and cached, sent in batches),
        # rather than one statement with a VALUES row per delivery compiled on every call.
        stmt = (
            self._insert(deliveries)
            .on_conflict_do_nothing(index_elements=["workspace", "idempotency_key"])
            .returning(deliveries.c.id)
        )
        inserted = set((await self.session.execute(stmt, list(rows))).scalars())
        await self.add_attempts(
            [r for r in rows if r["id"] in inserted and r["status"] == "sending"]
        )
        return inserted

    async def _insert_deliveries_from_arrays(self, rows: Sequence[Mapping[str, Any]]) -> set[str]:
        """One statement, one array per column (`INSERT … SELECT FROM unnest`), whatever the
        batch size; the attempt rows of deliveries inserted as `sending` in a CTE of it. A
        column with one value for the whole batch (its workspace, channel, times, the unset
        ones) is one parameter, not an array (`bind_column`)."""
        names = [c.name for c in deliveries.c]
        params: dict[str, Any] = {}
        columns, arrays, alias = [], [], []
        for i, name in enumerate(names):
            kind = DELIVERY_TYPES[name]
            cast, params[f"a{i}"], array = bind_column(kind, [row[name] for row in rows])
            if array:
                arrays.append(f"CAST(:a{i} AS {cast}[])")
                alias.append(f"c{i}")
                column = f"v.c{i}"
            else:
                column = f"CAST(:a{i} AS {cast})"
            columns.append(f"CAST({column} AS jsonb)" if kind == "jsonb" else column)
        if not arrays:  # one row: one value each, from a one-element array
            params["a0"] = [params["a0"]]
            arrays.append(f"CAST(:a0 AS {DELIVERY_TYPES[names[0]]}[])")
            alias.append("c0")
            columns[0] = "v.c0"
        sql = (
            f"WITH new AS (INSERT INTO deliveries ({', '.join(names)})"
            f" SELECT {', '.join(columns)} FROM unnest({', '.join(arrays)})"
            f" AS v({', '.join(alias)})"
            " ON CONFLICT (workspace, idempotency_key) DO NOTHING"
            " RETURNING id, status, attempts, claimed_at),"
            " started AS (INSERT INTO attempts (delivery_id, number, started_at)"
            " SELECT id, attempts, claimed_at FROM new WHERE status = 'sending')"
            " SELECT id FROM new"
        )
        return set((await self.session.execute(text(sql), params)).scalars())

    async def update_deliveries(self, changes: Sequence[Mapping[str, Any]]) -> None:
        """Apply per-delivery changes; each mapping has `id` and the same other keys."""
        if not changes:
            return
        names = [k for k in changes[0] if k != "id"]
        if self.session.get_bind().dialect.name == "postgresql":
            await self._update_from_arrays(deliveries, ("id",), names, changes)
            return
        stmt = (
            update(deliveries)
            .where(deliveries.c.id == bindparam("b_id"))
            .values({n: bindparam(f"b_{n}") for n in names})
        )
        params = [{f"b_{k}": v for k, v in change.items()} for change in changes]
        await self.session.execute(stmt, params)

    async def _update_from_arrays(
        self,
        table: Table,
        keys: Sequence[str],
        names: Sequence[str],
        rows: Sequence[Mapping[str, Any]],
    ) -> None:
        """Many rows' changes in one statement on PostgreSQL: `UPDATE … FROM unnest(arrays)`,
        instead of one UPDATE per row."""
        sql, arrays = array_update(table, keys, names, rows, "a")
        await self.session.execute(text(sql), arrays)

    async def record_attempts(
        self,
        changes: Sequence[Mapping[str, Any]],
        finished: Sequence[Mapping[str, Any]],
        defer: bool = False,
    ) -> None:
        """Finished attempts: their deliveries' changes (as `update_deliveries`) and their
        attempt rows completed (as `finish_attempts`); one statement on PostgreSQL. With
        `defer` (a small batch), PostgreSQL writes both in the statement that ends the unit of
        work (`shared.db.defer_json_update`), with its outbox rows."""
        postgres = self.session.get_bind().dialect.name == "postgresql"
        if defer and postgres:
            await defer_json_update(self.session, deliveries, changes)
            await defer_json_update(self.session, attempts, finished, ("delivery_id", "number"))
            return
        if not changes or not finished or not postgres:
            await self.update_deliveries(changes)
            await self.finish_attempts(finished)
            return
        names = [k for k in changes[0] if k != "id"]
        first, params = array_update(deliveries, ("id",), names, changes, "d")
        keys = ("delivery_id", "number")
        second, more = array_update(attempts, keys, ATTEMPT_OUTCOME, finished, "f")
        await self.session.execute(text(f"WITH done AS ({first}) {second}"), params | more)

    async def list_by_key(self, workspace: str, key: str) -> Delivery:
        query = select(Delivery).where(
            Delivery.workspace == workspace, Delivery.idempotency_key == key
        )
        return (await self.session.execute(query)).scalars().one()

    async def delivery(self, workspace: str, delivery_id: str) -> Delivery | None:
        row = await self.session.get(Delivery, delivery_id)
        return row if row is not None and row.workspace == workspace else None

    async def list_deliveries(
        self,
        workspace: str,
        contact_id: str | None,
        status: str | None,
        limit: int,
        before: tuple[datetime, str] | None,
    ) -> Sequence[Delivery]:
        query = select(Delivery).where(Delivery.workspace == workspace)
        if contact_id:
            query = query.where(Delivery.contact_id == contact_id)
        if status:
            query = query.where(Delivery.status == status)
        if before:
            at, last_id = before
            query = query.where(
                or_(
                    Delivery.created_at < at, and_(Delivery.created_at == at, Delivery.id < last_id)
                )
            )
        query = query.order_by(Delivery.created_at.desc(), Delivery.id.desc()).limit(limit)
        return (await self.session.execute(query)).scalars().all()

    async def attempts_of(self, ids: Sequence[str]) -> dict[str, list[Attempt]]:
        found: dict[str, list[Attempt]] = {i: [] for i in ids}
        if not ids:
            return found
        query = select(Attempt).where(Attempt.delivery_id.in_(ids)).order_by(Attempt.number)
        for attempt in (await self.session.execute(query)).scalars():
            found[attempt.delivery_id].append(attempt)
        return found

    async def person_deliveries(
        self, workspace: str, contact_ids: Sequence[str]
    ) -> Sequence[Delivery]:
        """Every delivery to or about these contacts, oldest first (a person's export)."""
        if not contact_ids:
            return []
        query = (
            select(Delivery)
            .where(Delivery.workspace == workspace, Delivery.contact_id.in_(set(contact_ids)))
            .order_by(Delivery.created_at, Delivery.id)
        )
        return (await self.session.execute(query)).scalars().all()

    async def person_suppressions(
        self, workspace: str, contact_ids: Sequence[str], hashes: Sequence[str]
    ) -> Sequence[Suppression]:
        """Suppressions naming these contacts or the keyed hashes of their addresses."""
        query = select(Suppression).where(
            Suppression.workspace == workspace,
            or_(
                Suppression.contact_id.in_(set(contact_ids)),
                Suppression.address_hash.in_(set(hashes)),
            ),
        )
        return (await self.session.execute(query)).scalars().all()

    # -- the delivery worker ------------------------------------------------------------------

    async def due(self, now: datetime, limit: int) -> list[dict[str, Any]]:
        """Up to `limit` prepared deliveries that are due and held by no live process, locked
        for this transaction (replicas skip each other's rows: SKIP LOCKED)."""
        query = (
            select(*deliveries.c)
            .where(
                deliveries.c.status.in_(WAITING),
                deliveries.c.prepared.is_(True),
                deliveries.c.next_attempt_at <= now,
                or_(deliveries.c.held_until.is_(None), deliveries.c.held_until < now),
            )
            .order_by(deliveries.c.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [dict(r._mapping) for r in await self.session.execute(query)]

    async def start_attempts(
        self, ids: Sequence[str], now: datetime, holder: str | None = None
    ) -> list[dict[str, Any]]:
        """Record the attempt about to be made on each delivery, before anything is sent; with
        `holder`, only on the deliveries that process still holds (another may have taken one
        whose hold ran out). Returns the deliveries started, as they now are."""
        if not ids:
            return []
        conditions: list[ColumnElement[bool]] = [
            deliveries.c.id.in_(ids),
            deliveries.c.status.in_(WAITING),
        ]
        if holder is not None:
            conditions.append(deliveries.c.held_by == holder)
        start = (
            update(deliveries)
            .where(*conditions)
            .values(
                status="sending",
                attempts=deliveries.c.attempts + 1,
                claimed_at=now,
                updated_at=now,
                # Due no more (out of the due index): recording its outcome then changes no
                # indexed column unless it is retried (a HOT update).
                next_attempt_at=None,
                first_attempt_at=func.coalesce(deliveries.c.first_attempt_at, now),
                held_by=None,
                held_until=None,
            )
            .returning(*deliveries.c)
        )
        if self.session.get_bind().dialect.name == "postgresql":
            # Their attempt rows in the same statement (a CTE), not one INSERT per row.
            started = start.cte("started")
            recorded = attempts.insert().from_select(
                ["delivery_id", "number", "started_at"],
                select(started.c.id, started.c.attempts, started.c.claimed_at),
            )
            query = select(*started.c).add_cte(recorded.cte("recorded"))
            return [dict(r._mapping) for r in await self.session.execute(query)]
        rows = [dict(r._mapping) for r in await self.session.execute(start)]
        await self.add_attempts(rows)
        return rows

    async def add_attempts(self, started: Sequence[Mapping[str, Any]]) -> None:
        """The attempt rows of deliveries just started (`attempts` numbers the attempt,
        `claimed_at` is when it started)."""
        if started:
            await self.session.execute(
                attempts.insert(),
                [
                    {"delivery_id": r["id"], "number": r["attempts"], "started_at": r["claimed_at"]}
                    for r in started
                ],
            )

    async def hold(self, ids: Sequence[str], holder: str, until: datetime) -> None:
        """Lease deliveries to a process that keeps them in memory until their pacing slot;
        no attempt is recorded, so if it dies they are claimed again once `until` passes."""
        if ids:
            await self.session.execute(
                update(deliveries)
                .where(deliveries.c.id.in_(ids))
                .values(held_by=holder, held_until=until)
            )

    async def unprepared_due(self, now: datetime, limit: int) -> list[dict[str, Any]]:
        """Deliveries still waiting for their contact, due for another look."""
        query = (
            select(*deliveries.c)
            .where(
                deliveries.c.status == "queued",
                deliveries.c.prepared.is_(False),
                deliveries.c.next_attempt_at <= now,
            )
            .order_by(deliveries.c.next_attempt_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [dict(r._mapping) for r in await self.session.execute(query)]

    async def finish_attempts(self, results: Sequence[Mapping[str, Any]]) -> None:
        """Complete attempt rows: `delivery_id`, `number`, `finished_at`, `outcome`,
        `status_code`, `response`."""
        if not results:
            return
        if self.session.get_bind().dialect.name == "postgresql":
            keys = ("delivery_id", "number")
            await self._update_from_arrays(attempts, keys, ATTEMPT_OUTCOME, results)
            return
        stmt = (
            update(attempts)
            .where(
                attempts.c.delivery_id == bindparam("b_delivery_id"),
                attempts.c.number == bindparam("b_number"),
            )
            .values(
                finished_at=bindparam("b_finished_at"),
                outcome=bindparam("b_outcome"),
                status_code=bindparam("b_status_code"),
                response=bindparam("b_response"),
            )
        )
        await self.session.execute(stmt, [{f"b_{k}": v for k, v in r.items()} for r in results])

    async def stale_sending(self, claimed_before: datetime, limit: int) -> list[dict[str, Any]]:
        """Deliveries claimed before `claimed_before` and never recorded: the process died
        between sending and recording, so whether the provider got them is unknown. Found by
        their unfinished attempt (a small partial index), not by their status, which no index
        holds (see migration 0006)."""
        query = (
            select(*deliveries.c)
            .join(
                attempts,
                and_(
                    attempts.c.delivery_id == deliveries.c.id,
                    attempts.c.number == deliveries.c.attempts,
                ),
            )
            .where(
                attempts.c.finished_at.is_(None),
                attempts.c.started_at < claimed_before,
                deliveries.c.status == "sending",
            )
            .limit(limit)
            .with_for_update(of=deliveries, skip_locked=True)
        )
        return [dict(r._mapping) for r in await self.session.execute(query)]

"""notifier's repository: the only module that builds queries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, cast

import orjson
from sqlalchemy import Table, and_, bindparam, delete, func, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from services.notifier.models import (
    Attempt,
    Channel,
    ContactView,
    Delivery,
    Suppression,
    Template,
    WorkspaceSettings,
)

# Column types for the array updates on PostgreSQL (see `_update_from_arrays`).
_PG_TYPES = {
    "id": "varchar",
    "delivery_id": "varchar",
    "number": "integer",
    "status": "varchar",
    "reason": "text",
    "attempts": "integer",
    "next_attempt_at": "timestamptz",
    "finished_at": "timestamptz",
    "updated_at": "timestamptz",
    "provider_message_id": "varchar",
    "channel_id": "varchar",
    "kind": "varchar",
    "recipient": "varchar",
    "prepared": "boolean",
    "message": "jsonb",
    "outcome": "varchar",
    "status_code": "integer",
    "response": "text",
    "held_by": "varchar",
    "held_until": "timestamptz",
}


@dataclass(frozen=True)
class IntakeReads:
    """What preparing a batch of requests reads: the workspace's settings, the contacts'
    snapshots by id, and the channels each reference (an id or a name) names."""

    settings: dict[str, Any]
    contacts: dict[str, dict[str, Any]]
    channels: dict[str, Channel]


# The three reads of `IntakeReads` in one round trip on PostgreSQL (plain SQL: nothing to
# compile per batch). `to_jsonb` of a channel row gives its columns by name.
_INTAKE_READS = text(
    "SELECT"
    ' (SELECT "values" FROM workspace_settings WHERE workspace = :w) AS settings,'
    " (SELECT coalesce(jsonb_object_agg(id, snapshot), '{}') FROM contacts"
    "   WHERE workspace = :w AND id = ANY(CAST(:contacts AS varchar[]))) AS contacts,"
    " (SELECT coalesce(jsonb_agg(to_jsonb(c)), '[]') FROM channels AS c"
    "   WHERE workspace = :w AND (id = ANY(CAST(:refs AS varchar[]))"
    "   OR name = ANY(CAST(:refs AS varchar[])))) AS channels"
)
deliveries = cast(Table, Delivery.__table__)
attempts = cast(Table, Attempt.__table__)
contacts = cast(Table, ContactView.__table__)
WAITING = ("queued", "retrying")
# What completing an attempt row writes.
ATTEMPT_OUTCOME = ("finished_at", "outcome", "status_code", "response")
_DELIVERY_TYPES = _PG_TYPES | {
    "workspace": "varchar",
    "idempotency_key": "varchar",
    "contact_id": "varchar",
    "channel": "varchar",
    "purpose": "varchar",
    "correlation_id": "text",
    "traceparent": "varchar",
    "requested_by": "varchar",
    "created_at": "timestamptz",
    "claimed_at": "timestamptz",
    "first_attempt_at": "timestamptz",
}


def _waiting_for(workspace: str, contact_ids: Sequence[str]) -> list[ColumnElement[bool]]:
    """Deliveries accepted before their contact was known, still waiting for it."""
    return [
        deliveries.c.workspace == workspace,
        deliveries.c.contact_id.in_(contact_ids),
        deliveries.c.status == "queued",
        deliveries.c.prepared.is_(False),
    ]


def _array_update(
    table: Table,
    keys: Sequence[str],
    names: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
    tag: str,
) -> tuple[str, dict[str, list[Any]]]:
    """`UPDATE … FROM unnest(arrays)` of many rows' changes (PostgreSQL), its parameters
    named `<tag><n>`: the SQL and the arrays."""
    columns = [*keys, *names]
    arrays: dict[str, list[Any]] = {}
    casts = []
    for i, name in enumerate(columns):
        kind = _PG_TYPES[name]
        values = [row[name] for row in rows]
        if kind == "jsonb":
            values = [None if v is None else orjson.dumps(v).decode() for v in values]
            kind = "text"
        casts.append(f"CAST(:{tag}{i} AS {kind}[])")
        arrays[f"{tag}{i}"] = values
    alias = ", ".join(f"c{i}" for i in range(len(columns)))
    sets = ", ".join(
        f"{name} = v.c{len(keys) + j}" + ("::jsonb" if _PG_TYPES[name] == "jsonb" else "")
        for j, name in enumerate(names)
    )
    match = " AND ".join(f"t.{key} = v.c{i}" for i, key in enumerate(keys))
    sql = (
        f"UPDATE {table.name} AS t SET {sets} FROM unnest({', '.join(casts)})"
        f" AS v({alias}) WHERE {match}"
    )
    return sql, arrays


def _json(value: Any) -> Any:
    """A JSON column as the driver gives it through plain SQL (text), decoded."""
    return orjson.loads(value) if isinstance(value, str | bytes) else value


class Store(Protocol):
    """What the use cases need from persistence (services.notifier.store implements it)."""

    def add(self, row: Channel | Template) -> None: ...
    async def flush(self) -> None: ...
    async def remove(self, row: Channel | Template) -> None: ...
    async def channel(self, workspace: str, id_or_name: str) -> Channel | None: ...
    async def channels(self, workspace: str) -> Sequence[Channel]: ...
    async def channels_named(self, workspace: str, refs: Sequence[str]) -> dict[str, Channel]: ...
    async def channels_by_id(self, ids: Sequence[str]) -> dict[str, Channel]: ...
    async def template(self, workspace: str, id_or_name: str) -> Template | None: ...
    async def templates(self, workspace: str) -> Sequence[Template]: ...
    async def workspace_settings(self, workspace: str) -> dict[str, Any]: ...
    async def save_workspace_settings(
        self, workspace: str, values: Mapping[str, Any], now: datetime
    ) -> None: ...
    async def upsert_contacts(
        self, rows: Sequence[Mapping[str, Any]], now: datetime | None = None
    ) -> int: ...
    async def contacts(self, workspace: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]: ...
    async def erase_contact(self, workspace: str, contact_id: str) -> None: ...
    async def erase_projection(self, workspace: str, contact_id: str) -> None: ...
    async def suppressions(self, workspace: str, hashes: Sequence[str]) -> dict[str, str]: ...
    async def suppress(
        self,
        workspace: str,
        address_hash: str,
        reason: str,
        contact_id: str | None,
        now: datetime,
        detail: str | None = None,
    ) -> None: ...
    async def suppression(self, workspace: str, address_hash: str) -> Suppression | None: ...
    async def lift_suppression(self, workspace: str, address_hash: str) -> bool: ...
    async def contact_ids_by_email(self, workspace: str, email: str) -> list[str]: ...
    async def marketing_sent_since(
        self, workspace: str, contact_ids: Sequence[str], since: datetime
    ) -> dict[str, int]: ...
    async def known_keys(self, workspace: str, keys: Sequence[str]) -> set[str]: ...
    async def intake_reads(
        self, workspace: str, contact_ids: Sequence[str], channel_refs: Sequence[str]
    ) -> IntakeReads: ...
    async def insert_deliveries(self, rows: Sequence[Mapping[str, Any]]) -> set[str]: ...
    async def update_deliveries(self, changes: Sequence[Mapping[str, Any]]) -> None: ...
    async def delivery(self, workspace: str, delivery_id: str) -> Delivery | None: ...
    async def list_deliveries(
        self,
        workspace: str,
        contact_id: str | None,
        status: str | None,
        limit: int,
        before: tuple[datetime, str] | None,
    ) -> Sequence[Delivery]: ...
    async def attempts_of(self, ids: Sequence[str]) -> dict[str, list[Attempt]]: ...
    async def finish_attempts(self, results: Sequence[Mapping[str, Any]]) -> None: ...
    async def record_attempts(
        self, changes: Sequence[Mapping[str, Any]], finished: Sequence[Mapping[str, Any]]
    ) -> None: ...
    async def add_attempts(self, started: Sequence[Mapping[str, Any]]) -> None: ...
    async def person_deliveries(
        self, workspace: str, contact_ids: Sequence[str]
    ) -> Sequence[Delivery]: ...
    async def person_suppressions(
        self, workspace: str, contact_ids: Sequence[str], hashes: Sequence[str]
    ) -> Sequence[Suppression]: ...


class NotifierStore:
    """Reads and writes notifier's tables in the unit of work's session."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def _insert(self, table: Any) -> Any:
        dialect = self.session.get_bind().dialect.name
        return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)

    # -- channels and templates ---------------------------------------------------------------

    def add(self, row: Channel | Template) -> None:
        self.session.add(row)

    async def flush(self) -> None:
        await self.session.flush()

    async def remove(self, row: Channel | Template) -> None:
        await self.session.delete(row)

    async def channel(self, workspace: str, id_or_name: str) -> Channel | None:
        query = select(Channel).where(
            Channel.workspace == workspace,
            or_(Channel.id == id_or_name, Channel.name == id_or_name),
        )
        return (await self.session.execute(query)).scalars().first()

    async def channels(self, workspace: str) -> Sequence[Channel]:
        query = select(Channel).where(Channel.workspace == workspace).order_by(Channel.name)
        return (await self.session.execute(query)).scalars().all()

    async def channels_named(self, workspace: str, refs: Sequence[str]) -> dict[str, Channel]:
        """The workspace's channels each reference (an id or a name) names, in one query."""
        wanted = set(refs)
        if not wanted:
            return {}
        query = select(Channel).where(
            Channel.workspace == workspace,
            or_(Channel.id.in_(wanted), Channel.name.in_(wanted)),
        )
        found: dict[str, Channel] = {}
        for channel in (await self.session.execute(query)).scalars():
            for ref in (channel.id, channel.name):
                if ref in wanted:
                    found[ref] = channel
        return found

    async def channels_by_id(self, ids: Sequence[str]) -> dict[str, Channel]:
        if not ids:
            return {}
        rows = await self.session.execute(select(Channel).where(Channel.id.in_(set(ids))))
        return {c.id: c for c in rows.scalars()}

    async def template(self, workspace: str, id_or_name: str) -> Template | None:
        query = select(Template).where(
            Template.workspace == workspace,
            or_(Template.id == id_or_name, Template.name == id_or_name),
        )
        return (await self.session.execute(query)).scalars().first()

    async def templates(self, workspace: str) -> Sequence[Template]:
        query = select(Template).where(Template.workspace == workspace).order_by(Template.name)
        return (await self.session.execute(query)).scalars().all()

    # -- workspace settings -------------------------------------------------------------------

    async def workspace_settings(self, workspace: str) -> dict[str, Any]:
        row = await self.session.get(WorkspaceSettings, workspace)
        return dict(row.values) if row else {}

    async def save_workspace_settings(
        self, workspace: str, values: Mapping[str, Any], now: datetime
    ) -> None:
        row = await self.session.get(WorkspaceSettings, workspace)
        if row is None:
            self.session.add(
                WorkspaceSettings(workspace=workspace, values=dict(values), updated_at=now)
            )
        else:
            row.values = dict(values)
            row.updated_at = now

    # -- contact projection -------------------------------------------------------------------

    async def upsert_contacts(
        self, rows: Sequence[Mapping[str, Any]], now: datetime | None = None
    ) -> int:
        """Insert or replace snapshots; an older snapshot never overwrites a newer one. With
        `now`, deliveries waiting for one of these contacts become due then; returns how many
        did."""
        if not rows:
            return 0
        if self.session.get_bind().dialect.name == "postgresql":
            return await self._upsert_contacts_from_arrays(rows, now)
        stmt = self._insert(contacts).values(list(rows))
        stmt = stmt.on_conflict_do_update(
            index_elements=[contacts.c.workspace, contacts.c.id],
            set_={"snapshot": stmt.excluded.snapshot, "updated_at": stmt.excluded.updated_at},
            where=contacts.c.updated_at <= stmt.excluded.updated_at,
        )
        await self.session.execute(stmt)
        if now is None:
            return 0
        woken = 0
        for workspace in {r["workspace"] for r in rows}:
            ids = [r["id"] for r in rows if r["workspace"] == workspace]
            result = await self.session.execute(
                update(deliveries)
                .where(*_waiting_for(workspace, ids))
                .values(next_attempt_at=now)
                .returning(deliveries.c.id)
            )
            woken += len(result.all())
        return woken

    async def _upsert_contacts_from_arrays(
        self, rows: Sequence[Mapping[str, Any]], now: datetime | None
    ) -> int:
        """The upsert as one plain-SQL statement (arrays, nothing compiled per batch size),
        and the waiting deliveries of the contacts it wrote made due in a CTE of it."""
        params: dict[str, Any] = {
            "ws": [r["workspace"] for r in rows],
            "ids": [r["id"] for r in rows],
            "snaps": [orjson.dumps(r["snapshot"]).decode() for r in rows],
            "ats": [r["updated_at"] for r in rows],
        }
        upsert = (
            "INSERT INTO contacts (workspace, id, snapshot, updated_at)"
            " SELECT v.ws, v.id, CAST(v.snap AS jsonb), v.at FROM unnest(CAST(:ws AS varchar[]),"
            " CAST(:ids AS varchar[]), CAST(:snaps AS text[]), CAST(:ats AS timestamptz[]))"
            " AS v(ws, id, snap, at)"
            " ON CONFLICT (workspace, id) DO UPDATE"
            " SET snapshot = excluded.snapshot, updated_at = excluded.updated_at"
            " WHERE contacts.updated_at <= excluded.updated_at"
        )
        if now is None:
            await self.session.execute(text(upsert), params)
            return 0
        sql = (
            f"WITH written AS ({upsert} RETURNING workspace, id)"
            " UPDATE deliveries AS d SET next_attempt_at = CAST(:now AS timestamptz)"
            " FROM written AS w WHERE d.workspace = w.workspace AND d.contact_id = w.id"
            " AND d.status = 'queued' AND d.prepared = false RETURNING d.id"
        )
        return len((await self.session.execute(text(sql), params | {"now": now})).all())

    async def contacts(self, workspace: str, ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        if not ids:
            return {}
        query = select(contacts.c.id, contacts.c.snapshot).where(
            contacts.c.workspace == workspace, contacts.c.id.in_(set(ids))
        )
        return {row.id: dict(row.snapshot) for row in await self.session.execute(query)}

    async def erase_projection(self, workspace: str, contact_id: str) -> None:
        await self.session.execute(
            delete(contacts).where(contacts.c.workspace == workspace, contacts.c.id == contact_id)
        )

    async def erase_contact(self, workspace: str, contact_id: str) -> None:
        """Everything notifier holds on a contact goes; its suppressions stay, by hash only."""
        await self.session.execute(
            delete(contacts).where(contacts.c.workspace == workspace, contacts.c.id == contact_id)
        )
        owned = select(deliveries.c.id).where(
            deliveries.c.workspace == workspace, deliveries.c.contact_id == contact_id
        )
        await self.session.execute(delete(attempts).where(attempts.c.delivery_id.in_(owned)))
        await self.session.execute(
            delete(deliveries).where(
                deliveries.c.workspace == workspace, deliveries.c.contact_id == contact_id
            )
        )
        await self.session.execute(
            update(Suppression)
            .where(Suppression.workspace == workspace, Suppression.contact_id == contact_id)
            .values(contact_id=None)
        )

    # -- suppression --------------------------------------------------------------------------

    async def suppressions(self, workspace: str, hashes: Sequence[str]) -> dict[str, str]:
        if not hashes:
            return {}
        query = select(Suppression.address_hash, Suppression.reason).where(
            Suppression.workspace == workspace, Suppression.address_hash.in_(set(hashes))
        )
        return {row.address_hash: row.reason for row in await self.session.execute(query)}

    async def suppress(
        self,
        workspace: str,
        address_hash: str,
        reason: str,
        contact_id: str | None,
        now: datetime,
        detail: str | None = None,
    ) -> None:
        stmt = self._insert(Suppression.__table__).values(
            workspace=workspace,
            address_hash=address_hash,
            reason=reason,
            contact_id=contact_id,
            detail=detail,
            created_at=now,
        )
        changes: dict[str, Any] = {"reason": stmt.excluded.reason}
        if contact_id is not None:
            changes["contact_id"] = stmt.excluded.contact_id
        if detail is not None:
            changes["detail"] = stmt.excluded.detail
        stmt = stmt.on_conflict_do_update(
            index_elements=["workspace", "address_hash"], set_=changes
        )
        await self.session.execute(stmt)

    async def suppression(self, workspace: str, address_hash: str) -> Suppression | None:
        return await self.session.get(Suppression, (workspace, address_hash))

    async def lift_suppression(self, workspace: str, address_hash: str) -> bool:
        result = await self.session.execute(
            delete(Suppression).where(
                Suppression.workspace == workspace, Suppression.address_hash == address_hash
            )
        )
        return bool(getattr(result, "rowcount", 0))

    async def contact_ids_by_email(self, workspace: str, email: str) -> list[str]:
        """Contacts of the projection whose own address this is (lower-cased, trimmed)."""
        query = select(ContactView.id).where(
            ContactView.workspace == workspace,
            func.lower(func.trim(ContactView.snapshot["email"].as_string())) == email,
        )
        return list((await self.session.execute(query)).scalars())

    async def marketing_sent_since(
        self, workspace: str, contact_ids: Sequence[str], since: datetime
    ) -> dict[str, int]:
        """Marketing e-mails per contact accepted for sending since `since` (the daily cap)."""
        if not contact_ids:
            return {}
        query = (
            select(deliveries.c.contact_id, func.count())
            .where(
                deliveries.c.workspace == workspace,
                deliveries.c.contact_id.in_(set(contact_ids)),
                deliveries.c.purpose == "marketing",
                deliveries.c.kind == "email",
                deliveries.c.status.in_(("queued", "sending", "sent", "retrying", "unknown")),
                deliveries.c.created_at >= since,
            )
            .group_by(deliveries.c.contact_id)
        )
        return {row[0]: int(row[1]) for row in await self.session.execute(query)}

    # -- deliveries ---------------------------------------------------------------------------

    async def known_keys(self, workspace: str, keys: Sequence[str]) -> set[str]:
        if not keys:
            return set()
        query = select(deliveries.c.idempotency_key).where(
            deliveries.c.workspace == workspace, deliveries.c.idempotency_key.in_(set(keys))
        )
        return set((await self.session.execute(query)).scalars())

    async def intake_reads(
        self, workspace: str, contact_ids: Sequence[str], channel_refs: Sequence[str]
    ) -> IntakeReads:
        if self.session.get_bind().dialect.name != "postgresql":
            return IntakeReads(
                await self.workspace_settings(workspace),
                await self.contacts(workspace, contact_ids),
                await self.channels_named(workspace, channel_refs),
            )
        wanted = list(set(channel_refs))
        params = {"w": workspace, "contacts": list(set(contact_ids)), "refs": wanted}
        settings, found, listed = (await self.session.execute(_INTAKE_READS, params)).one()
        channels: dict[str, Channel] = {}
        for values in _json(listed):
            channel = Channel(
                **values
                | {
                    "created_at": datetime.fromisoformat(values["created_at"]),
                    "updated_at": datetime.fromisoformat(values["updated_at"]),
                }
            )
            for ref in (channel.id, channel.name):
                if ref in wanted:
                    channels[ref] = channel
        return IntakeReads(dict(_json(settings) or {}), _json(found), channels)

    async def insert_deliveries(self, rows: Sequence[Mapping[str, Any]]) -> set[str]:
        """Insert new deliveries; a key already there (another replica) is skipped. Returns
        the ids inserted. A delivery inserted as `sending` (its first attempt started by the
        inserting transaction) gets its attempt row in the same statement on PostgreSQL."""
        if not rows:
            return set()
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
        batch size; the attempt rows of deliveries inserted as `sending` in a CTE of it."""
        names = [c.name for c in deliveries.c]
        arrays, columns = {}, []
        for i, name in enumerate(names):
            kind = _DELIVERY_TYPES[name]
            values = [row[name] for row in rows]
            if kind == "jsonb":
                values = [None if v is None else orjson.dumps(v).decode() for v in values]
                columns.append(f"CAST(v.c{i} AS jsonb)")
                kind = "text"
            else:
                columns.append(f"v.c{i}")
            arrays[f"a{i}"] = (values, kind)
        unnest = ", ".join(
            f"CAST(:a{i} AS {kind}[])" for i, (_, kind) in enumerate(arrays.values())
        )
        alias = ", ".join(f"c{i}" for i in range(len(names)))
        sql = (
            f"WITH new AS (INSERT INTO deliveries ({', '.join(names)})"
            f" SELECT {', '.join(columns)} FROM unnest({unnest}) AS v({alias})"
            " ON CONFLICT (workspace, idempotency_key) DO NOTHING"
            " RETURNING id, status, attempts, claimed_at),"
            " started AS (INSERT INTO attempts (delivery_id, number, started_at)"
            " SELECT id, attempts, claimed_at FROM new WHERE status = 'sending')"
            " SELECT id FROM new"
        )
        params = {key: values for key, (values, _) in arrays.items()}
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
        sql, arrays = _array_update(table, keys, names, rows, "a")
        await self.session.execute(text(sql), arrays)

    async def record_attempts(
        self, changes: Sequence[Mapping[str, Any]], finished: Sequence[Mapping[str, Any]]
    ) -> None:
        """Finished attempts: their deliveries' changes (as `update_deliveries`) and their
        attempt rows completed (as `finish_attempts`); one statement on PostgreSQL."""
        if not changes or not finished or self.session.get_bind().dialect.name != "postgresql":
            await self.update_deliveries(changes)
            await self.finish_attempts(finished)
            return
        names = [k for k in changes[0] if k != "id"]
        first, params = _array_update(deliveries, ("id",), names, changes, "d")
        keys = ("delivery_id", "number")
        second, more = _array_update(attempts, keys, ATTEMPT_OUTCOME, finished, "f")
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
                first_attempt_at=func.coalesce(deliveries.c.first_attempt_at, now),
                held_by=None,
                held_until=None,
            )
            .returning(*deliveries.c)
        )
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
        between sending and recording, so whether the provider got them is unknown."""
        query = (
            select(*deliveries.c)
            .where(deliveries.c.status == "sending", deliveries.c.claimed_at < claimed_before)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [dict(r._mapping) for r in await self.session.execute(query)]

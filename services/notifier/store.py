"""notifier's repository: channels, templates, settings, the contact projection and
suppressions; deliveries and attempts are `delivery/store.py`, what both share `rows.py`. Only
these build queries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

import orjson
from sqlalchemy import delete, func, or_, select, text, update
from sqlalchemy.exc import IntegrityError

from services.notifier.delivery.store import DeliveriesStore
from services.notifier.models import (
    Attempt,
    Channel,
    ContactView,
    Delivery,
    Suppression,
    Template,
    WorkspaceSettings,
    inbox,
)
from services.notifier.rows import (
    INTAKE_READS,
    IntakeReads,
    attempts,
    contacts,
    deliveries,
    json_value,
    waiting_for,
)
from shared.inbox import AlreadyHandled, claim_sql


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
    async def insert_deliveries(
        self, rows: Sequence[Mapping[str, Any]], defer: bool = False
    ) -> set[str]: ...
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
        self,
        changes: Sequence[Mapping[str, Any]],
        finished: Sequence[Mapping[str, Any]],
        defer: bool = False,
    ) -> None: ...
    async def add_attempts(self, started: Sequence[Mapping[str, Any]]) -> None: ...
    async def person_deliveries(
        self, workspace: str, contact_ids: Sequence[str]
    ) -> Sequence[Delivery]: ...
    async def person_suppressions(
        self, workspace: str, contact_ids: Sequence[str], hashes: Sequence[str]
    ) -> Sequence[Suppression]: ...


class NotifierStore(DeliveriesStore):
    """Reads and writes notifier's tables in the unit of work's session."""

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
                .where(*waiting_for(workspace, ids))
                .values(next_attempt_at=now)
                .returning(deliveries.c.id)
            )
            woken += len(result.all())
        return woken

    async def project_claiming(
        self,
        rows: Sequence[Mapping[str, Any]],
        now: datetime,
        consumer: str,
        event_ids: Sequence[str],
    ) -> int:
        """PostgreSQL, in autocommit: `upsert_contacts(rows, now)` and the inbox claim of
        `event_ids` for `consumer`, one statement that commits by itself. The claim is strict:
        an event handled before fails the whole statement, nothing written (`AlreadyHandled`;
        the upsert itself breaks no key)."""
        claim = claim_sql(inbox.name, ":consumer", ":now", ":events", strict=True)
        params = {"consumer": consumer, "events": list(event_ids)}
        try:
            return await self._upsert_contacts_from_arrays(rows, now, (claim, params))
        except IntegrityError as exc:
            raise AlreadyHandled(f"{consumer}: an event of the batch was seen before") from exc

    async def _upsert_contacts_from_arrays(
        self,
        rows: Sequence[Mapping[str, Any]],
        now: datetime | None,
        claim: tuple[str, dict[str, Any]] | None = None,
    ) -> int:
        """The upsert as one plain-SQL statement (arrays, nothing compiled per batch size),
        and the waiting deliveries of the contacts it wrote made due in a CTE of it (and
        `claim`, an inbox insert and its parameters, in another)."""
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
        claimed = ""
        if claim is not None:
            claimed = f"claimed AS ({claim[0]}), "
            params |= claim[1]
        sql = (
            f"WITH {claimed}written AS ({upsert} RETURNING workspace, id)"
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

    # -- the intake's one read ----------------------------------------------------------------

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
        settings, found, listed = (await self.session.execute(INTAKE_READS, params)).one()
        channels: dict[str, Channel] = {}
        for values in json_value(listed):
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
        return IntakeReads(dict(json_value(settings) or {}), json_value(found), channels)

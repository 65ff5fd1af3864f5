"""The contacts projection (attributes for fit rules, email to resolve engagement, tombstones),
engagement set aside for contacts unknown or erased, and erasure of everything on a contact."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import orjson
from sqlalchemy import and_, delete, func, select

from services.scoring.models import (
    ContactRow,
    LedgerRow,
    RfmRow,
    ScoreRow,
    SetAsideRow,
    TimerRow,
)
from services.scoring.sql import SqlBase, chunks
from shared.db import insert_rows
from shared.erasure import email_identity, identity_digest


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
class SetAside:
    contact_id: str | None
    email: str | None
    type: str
    occurred_at: datetime
    data: dict[str, Any]


class ContactStore(Protocol):
    """The contacts projection and engagement set aside, as the handlers need them."""

    async def contacts(self, workspace: str, ids: Iterable[str]) -> dict[str, Contact]: ...
    async def identities(self, workspace: str, ids: Iterable[str]) -> dict[str, Identity]: ...
    async def contact_ids_by_email(
        self, workspace: str, emails: Iterable[str]
    ) -> dict[str, str]: ...
    async def lock_identities(self, workspace: str, keys: Iterable[str]) -> None: ...
    async def save_contact(self, workspace: str, contact: Contact) -> None: ...
    async def save_contacts(self, workspace: str, contacts: Sequence[Contact]) -> None: ...
    async def count_contacts(self, workspace: str) -> int: ...
    async def contacts_after(self, workspace: str, cursor: str, limit: int) -> list[Contact]: ...
    async def erase_contact(self, workspace: str, contact_id: str) -> None: ...
    async def erase_set_aside_of(self, workspace: str, identity_digests: Iterable[str]) -> None: ...
    async def set_aside_of(
        self, workspace: str, contact_ids: Sequence[str], identity_digests: Iterable[str]
    ) -> list[dict[str, Any]]: ...
    async def set_aside(self, rows: Sequence[Mapping[str, Any]]) -> None: ...
    async def take_set_aside_of(
        self, workspace: str, contact_ids: Sequence[str], emails: Sequence[str]
    ) -> list[SetAside]: ...


class SqlContacts(SqlBase):
    # --- contacts projection ----------------------------------------------------------------

    async def contacts(self, workspace: str, ids: Iterable[str]) -> dict[str, Contact]:
        wanted = sorted(set(ids))
        found: dict[str, Contact] = {}
        for part in chunks(wanted):
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
        if self.postgres:
            # Every polled engagement event's contact: rows straight from the driver. Not
            # `probe_each`: (workspace, email) is indexed too (see its docstring).
            rows = await (await self.driver()).fetch(
                "SELECT contact_id, erased, attributes->>'merged_into' FROM contacts"
                " WHERE workspace = $1 AND contact_id = ANY($2::varchar[])",
                workspace,
                wanted,
            )
            return {cid: Identity(cid, erased, into) for cid, erased, into in rows}
        merged_into = ContactRow.attributes["merged_into"].as_string()
        for part in chunks(wanted):
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
        for part in chunks(wanted):
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
        # One statement for any number of keys, taken in the order of the sorted array (a
        # function scan yields its rows in order): transactions never wait on each other in
        # a circle.
        await (await self.driver()).execute(
            "SELECT count(pg_advisory_xact_lock(hashtext(k))) FROM unnest($1::text[]) AS k",
            [f"leadwire-scoring:{workspace}:{key}" for key in sorted(set(keys))],
        )

    async def save_contact(self, workspace: str, contact: Contact) -> None:
        await self.save_contacts(workspace, [contact])

    async def save_contacts(self, workspace: str, contacts: Sequence[Contact]) -> None:
        """Upsert contacts (one row per id: the last of the sequence wins), in id order."""
        latest = {c.id: c for c in contacts}
        await self._upsert(
            ContactRow.__table__,  # type: ignore[arg-type]
            [
                {
                    "workspace": workspace,
                    "contact_id": c.id,
                    "email": c.email,
                    "attributes": c.attributes,
                    "erased": c.erased,
                }
                for _, c in sorted(latest.items())
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

    # --- engagement set aside ---------------------------------------------------------------

    async def set_aside(self, rows: Sequence[Mapping[str, Any]]) -> None:
        await insert_rows(self.session, SetAsideRow.__table__, rows)  # type: ignore[arg-type]

    async def take_set_aside_of(
        self, workspace: str, contact_ids: Sequence[str], emails: Sequence[str]
    ) -> list[SetAside]:
        """Engagement kept for contacts unknown at the time (by id or email), removed here."""
        if not (contact_ids or emails):
            return []
        if self.postgres:
            rows = await (await self.driver()).fetch(
                "DELETE FROM set_aside WHERE workspace = $1 AND reason = 'unknown_contact'"
                " AND (contact_id = ANY($2::varchar[]) OR email = ANY($3::varchar[]))"
                " RETURNING contact_id, email, type, occurred_at, data::text",
                workspace,
                list(contact_ids),
                list(emails),
            )
            return [
                SetAside(cid, email, kind, occurred, orjson.loads(data))
                for cid, email, kind, occurred, data in rows
            ]
        found: list[SetAside] = []
        for ids, addresses in _pairs_of_chunks(contact_ids, emails):
            where = and_(
                SetAsideRow.workspace == workspace,
                SetAsideRow.reason == "unknown_contact",
                SetAsideRow.contact_id.in_(ids) | SetAsideRow.email.in_(addresses),
            )
            rows = (await self.session.execute(select(SetAsideRow).where(where))).scalars().all()
            if rows:
                await self.session.execute(
                    delete(SetAsideRow).where(SetAsideRow.id.in_([r.id for r in rows]))
                )
            found += [SetAside(r.contact_id, r.email, r.type, r.occurred_at, r.data) for r in rows]
        return found

    async def count_set_aside(self, workspace: str) -> int:
        return int(
            await self.session.scalar(
                select(func.count())
                .select_from(SetAsideRow)
                .where(SetAsideRow.workspace == workspace)
            )
            or 0
        )


def _pairs_of_chunks(
    first: Sequence[str], second: Sequence[str]
) -> list[tuple[Sequence[str], Sequence[str]]]:
    """Both lists cut into chunks side by side (SQLite's bound on parameters per statement)."""
    left, right = list(chunks(first)), list(chunks(second))
    count = max(len(left), len(right))
    return [
        (left[i] if i < len(left) else [], right[i] if i < len(right) else []) for i in range(count)
    ]

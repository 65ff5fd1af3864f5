"""The contacts repository's base and its queries of people: contact rows, identities, tags,
lists, custom field definitions, timeline activities and lifecycle history."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, cast

import orjson
from sqlalchemy import (
    ColumnElement,
    String,
    Table,
    and_,
    any_,
    delete,
    func,
    literal,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from services.contacts import domain
from services.contacts.domain import FieldDefinition
from services.contacts.models import (
    Activity,
    Contact,
    ContactList,
    ContactTag,
    FieldDefinitionRow,
    LifecycleChangeRow,
)
from shared.db import (
    UtcDateTime,
    defer_json_rows,
    defer_json_update,
    insert_for,
    insert_json_rows,
    integrity_errors_as,
    update_json_rows,
)

LIVE = Contact.merged_into.is_(None)


CONTACTS = cast(Table, Contact.__table__)


ACTIVITIES = cast(Table, Activity.__table__)


LIFECYCLE_CHANGES = cast(Table, LifecycleChangeRow.__table__)


CONTACT_TAGS = cast(Table, ContactTag.__table__)


FIELD_DEFINITIONS = cast(Table, FieldDefinitionRow.__table__)


def definitions_over_defaults(rows: Iterable[Mapping[Any, Any]]) -> dict[str, FieldDefinition]:
    """A workspace's field definitions (rows of `field_definitions`, as mappings) over the
    out-of-the-box ones, which it may redefine."""
    result = dict(domain.DEFAULT_FIELDS)
    for row in rows:
        low, high = row["min"], row["max"]
        result[row["name"]] = FieldDefinition(
            name=row["name"],
            type=row["type"],
            label=row["label"],
            required=row["required"],
            options=tuple(row["options"] or ()),
            min=None if low is None else float(low),  # a whole float comes back from JSON an int
            max=None if high is None else float(high),
            max_length=row["max_length"],
            pattern=row["pattern"],
        )
    return result


# --- keyset pagination ------------------------------------------------------------------

SORTS: dict[str, tuple[str, bool]] = {
    "created_at": ("datetime", False),
    "updated_at": ("datetime", False),
    "last_interaction_at": ("datetime", True),
    "email": ("text", True),
    "last_name": ("text", True),
    "company": ("text", True),
    "score": ("number", True),
}


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _sort_expression(name: str) -> ColumnElement[Any]:
    kind, nullable = SORTS[name]
    column: ColumnElement[Any] = getattr(Contact, name)
    if not nullable:
        return column
    if kind == "datetime":
        return func.coalesce(column, literal(EPOCH, UtcDateTime))
    if kind == "number":
        return func.coalesce(column, -1e300)
    return func.coalesce(column, "")


def encode_cursor(values: Sequence[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(values))).decode().rstrip("=")


def decode_cursor(cursor: str) -> list[Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = orjson.loads(raw)
    except ValueError as exc:
        raise domain.violation("cursor", "invalid_cursor", "not a cursor from this API") from exc
    if not isinstance(values, list) or len(values) != 2:
        raise domain.violation("cursor", "invalid_cursor", "not a cursor from this API")
    return values


def _keyset(
    stmt: Any,
    expr: Any,
    id_col: Any,
    kind: str,
    descending: bool,
    cursor: str | None,
    limit: int,
) -> Any:
    if cursor:
        value, last_id = decode_cursor(cursor)
        if kind == "datetime":
            try:
                value = literal(datetime.fromisoformat(value), UtcDateTime)
            except (TypeError, ValueError) as exc:
                raise domain.violation("cursor", "invalid_cursor", "bad cursor") from exc
        if descending:
            stmt = stmt.where(or_(expr < value, and_(expr == value, id_col < last_id)))
        else:
            stmt = stmt.where(or_(expr > value, and_(expr == value, id_col > last_id)))
    order = (expr.desc(), id_col.desc()) if descending else (expr.asc(), id_col.asc())
    return stmt.order_by(*order).limit(limit + 1)


def _cursor_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return value


class PeopleStore:
    """Every query of contact rows and what hangs on them, over the session of one unit of work."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self._deferring = False

    def defer_writes(self) -> None:
        """Leave the inserts and batch updates that follow (contacts, tags, timeline,
        lifecycle, a team's rotation) to the statement that ends the transaction: for a use
        case that reads none of them back."""
        self._deferring = True

    @property
    def dialect(self) -> str:
        return self.session.get_bind().dialect.name

    def _insert(self, table: Any) -> Any:
        return insert_for(self.session, table)

    async def contact(self, workspace: str, contact_id: str, lock: bool = False) -> Contact | None:
        stmt = select(Contact).where(Contact.workspace == workspace, Contact.id == contact_id)
        if lock:
            stmt = stmt.with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def contacts_by_ids(
        self, workspace: str, ids: Iterable[str], lock: bool = False
    ) -> list[Contact]:
        stmt = (
            select(Contact)
            .where(Contact.workspace == workspace, Contact.id.in_(list(ids)))
            .order_by(Contact.id)
        )
        if lock:
            stmt = stmt.with_for_update()
        return list((await self.session.execute(stmt)).scalars())

    async def contact_by_identity(
        self, workspace: str, email: str | None = None, phone: str | None = None
    ) -> Contact | None:
        if email:
            stmt = select(Contact).where(Contact.workspace == workspace, Contact.email == email)
        elif phone:
            stmt = select(Contact).where(Contact.workspace == workspace, Contact.phone == phone)
        else:
            return None
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def contact_states_by_identities(
        self, workspace: str, emails: Iterable[str], phones: Iterable[str]
    ) -> list[dict[str, Any]]:
        """The contacts holding any of these emails or phones, locked for this transaction, as
        plain column dicts (no ORM objects to build and track on the bulk capture path)."""
        emails, phones = sorted(set(emails)), sorted(set(phones))
        found: dict[str, dict[str, Any]] = {}
        # One query per identity (an OR of both would defeat the indexes), each with a single
        # array parameter on PostgreSQL so the plan is reused whatever the batch size.
        for column, values in ((CONTACTS.c.email, emails), (CONTACTS.c.phone, phones)):
            if not values:
                continue
            if self.dialect == "postgresql":
                match = column == any_(literal(values, ARRAY(String)))
            else:
                match = column.in_(values)
            stmt = (
                select(CONTACTS)
                .where(CONTACTS.c.workspace == workspace, match)
                .order_by(CONTACTS.c.id)  # one lock order, so two batches never deadlock
                .with_for_update()
            )
            for row in (await self.session.execute(stmt)).mappings():
                found[row["id"]] = dict(row)
        return list(found.values())

    async def update_contacts(self, rows: Sequence[dict[str, Any]]) -> None:
        """Many contacts updated in one statement: each row is `id` plus the same columns to
        set (the caller locked the rows beforehand)."""
        write = defer_json_update if self._deferring else update_json_rows
        await write(self.session, CONTACTS, rows)

    async def _insert_many(
        self, table: Table, rows: Sequence[dict[str, Any]], ignore_conflicts: bool = False
    ) -> None:
        """Many rows (all with the same keys) in one statement; with `ignore_conflicts`, rows
        whose key exists (in the table or earlier in `rows`) are skipped."""
        write = defer_json_rows if self._deferring else insert_json_rows
        await write(self.session, table, rows, ignore=ignore_conflicts)

    async def insert_contacts(self, rows: Sequence[dict[str, Any]]) -> None:
        """Many new contacts in one statement (no ORM bookkeeping per row)."""
        await self._insert_many(CONTACTS, rows)

    def add(self, row: Any) -> None:
        self.session.add(row)

    async def flush(self, on_conflict: Exception | None = None) -> None:
        """Write pending changes; with `on_conflict`, a broken unique constraint raises it."""
        if on_conflict is None:
            await self.session.flush()
            return
        async with integrity_errors_as(on_conflict):
            await self.session.flush()

    async def delete_contact_row(self, contact_id: str) -> None:
        await self.session.execute(delete(Contact).where(Contact.id == contact_id))

    async def tags_of(self, ids: Iterable[str]) -> dict[str, list[str]]:
        return await self._labels_of(ContactTag.contact_id, ContactTag.tag, ids)

    async def lists_of(self, ids: Iterable[str]) -> dict[str, list[str]]:
        return await self._labels_of(ContactList.contact_id, ContactList.list, ids)

    async def _labels_of(
        self, contact_id: Any, label: Any, ids: Iterable[str]
    ) -> dict[str, list[str]]:
        """Sorted labels (tags or list names) per contact, every id present."""
        ids = list(ids)
        result: dict[str, list[str]] = {i: [] for i in ids}
        if not ids:
            return result
        rows = await self.session.execute(
            select(contact_id, label).where(contact_id.in_(ids)).order_by(label)
        )
        for owner, name in rows:
            result[owner].append(name)
        return result

    async def add_tags(self, workspace: str, pairs: Iterable[tuple[str, str]]) -> None:
        """Tag contacts; a tag a contact already has (or is given twice) is kept once."""
        rows = [{"contact_id": c, "tag": t, "workspace": workspace} for c, t in pairs]
        await self._insert_many(CONTACT_TAGS, rows, ignore_conflicts=True)

    async def remove_tag(self, contact_id: str, tag: str) -> None:
        await self.session.execute(
            delete(ContactTag).where(ContactTag.contact_id == contact_id, ContactTag.tag == tag)
        )

    async def add_to_list(self, workspace: str, contact_id: str, name: str) -> None:
        await self.session.execute(
            self._insert(ContactList).on_conflict_do_nothing(),
            [{"contact_id": contact_id, "list": name, "workspace": workspace}],
        )

    async def remove_from_list(self, contact_id: str, name: str) -> None:
        await self.session.execute(
            delete(ContactList).where(
                ContactList.contact_id == contact_id, ContactList.list == name
            )
        )

    async def lists(self, workspace: str) -> list[tuple[str, int]]:
        rows = await self.session.execute(
            select(ContactList.list, func.count())
            .where(ContactList.workspace == workspace)
            .group_by(ContactList.list)
            .order_by(ContactList.list)
        )
        return [(name, int(n)) for name, n in rows]

    async def tags(self, workspace: str) -> list[tuple[str, int]]:
        rows = await self.session.execute(
            select(ContactTag.tag, func.count())
            .where(ContactTag.workspace == workspace)
            .group_by(ContactTag.tag)
            .order_by(ContactTag.tag)
        )
        return [(name, int(n)) for name, n in rows]

    async def field_definitions(self, workspace: str) -> dict[str, FieldDefinition]:
        """The workspace's definitions over the out-of-the-box ones (which it may redefine)."""
        stmt = select(FIELD_DEFINITIONS).where(FIELD_DEFINITIONS.c.workspace == workspace)
        return definitions_over_defaults((await self.session.execute(stmt)).mappings())

    async def save_field_definition(self, workspace: str, d: FieldDefinition) -> None:
        row = await self.session.get(FieldDefinitionRow, (workspace, d.name))
        if row is None:
            row = FieldDefinitionRow(workspace=workspace, name=d.name)
            self.session.add(row)
        row.type, row.label, row.required = d.type, d.label, d.required
        row.options, row.min, row.max = list(d.options), d.min, d.max
        row.max_length, row.pattern = d.max_length, d.pattern

    async def delete_field_definition(self, workspace: str, name: str) -> bool:
        result = await self.session.execute(
            delete(FieldDefinitionRow).where(
                FieldDefinitionRow.workspace == workspace, FieldDefinitionRow.name == name
            )
        )
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def add_activities(self, rows: Sequence[dict[str, Any]]) -> None:
        await self._insert_many(ACTIVITIES, rows)

    async def timeline(
        self, contact_id: str, cursor: str | None, limit: int
    ) -> tuple[list[Activity], str | None]:
        stmt = select(Activity, Activity.occurred_at.label("sort_value")).where(
            Activity.contact_id == contact_id
        )
        query: Any = _keyset(
            stmt, Activity.occurred_at, Activity.id, "datetime", True, cursor, limit
        )
        rows = (await self.session.execute(query)).all()
        items = [r[0] for r in rows[:limit]]
        nxt = None
        if len(rows) > limit:
            last = rows[limit - 1][0]
            nxt = encode_cursor([_cursor_value(last.occurred_at), last.id])
        return items, nxt

    async def add_lifecycle_changes(self, rows: Sequence[dict[str, Any]]) -> None:
        await self._insert_many(LIFECYCLE_CHANGES, rows)

    async def lifecycle_history(self, contact_id: str) -> list[LifecycleChangeRow]:
        stmt = (
            select(LifecycleChangeRow)
            .where(LifecycleChangeRow.contact_id == contact_id)
            .order_by(LifecycleChangeRow.changed_at, LifecycleChangeRow.id)
        )
        return list((await self.session.execute(stmt)).scalars())

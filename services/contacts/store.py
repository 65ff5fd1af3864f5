"""The contacts repository: the only module that builds queries, including the segment filter
compiler (filter tree → SQL expression, for SQLite and PostgreSQL alike)."""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, cast

import orjson
from sqlalchemy import (
    ColumnElement,
    String,
    Table,
    and_,
    any_,
    delete,
    exists,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
    type_coerce,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from services.contacts import domain
from services.contacts.domain import FieldDefinition
from services.contacts.duplicates import domain as duplicates_domain
from services.contacts.models import (
    Activity,
    Contact,
    ContactList,
    ContactTag,
    FieldDefinitionRow,
    LifecycleChangeRow,
    MergeRecord,
    Owner,
    Segment,
    SegmentMember,
    TaskRow,
    Team,
    erasures,
    outbox,
)
from services.contacts.segments import domain as segments_domain
from services.contacts.segments.domain import Condition, Filter, Group
from shared import erasure
from shared.db import (
    UtcDateTime,
    insert_for,
    insert_json_rows,
    integrity_errors_as,
    try_xact_lock,
    update_json_rows,
)
from shared.events.topics import contact_key

LIVE = Contact.merged_into.is_(None)
CONTACTS = cast(Table, Contact.__table__)
ACTIVITIES = cast(Table, Activity.__table__)
LIFECYCLE_CHANGES = cast(Table, LifecycleChangeRow.__table__)
CONTACT_TAGS = cast(Table, ContactTag.__table__)


# --- the segment filter compiler ------------------------------------------------------------


def compile_filter(node: Filter, now: datetime, dialect: str) -> ColumnElement[bool]:
    """The SQL condition on `contacts` a filter tree means at `now`."""
    if isinstance(node, Group):
        parts = [compile_filter(child, now, dialect) for child in node.children]
        if node.op == "and":
            return and_(true(), *parts)
        if node.op == "or":
            return or_(false(), *parts)
        return not_(parts[0])
    return _condition(node, now, dialect)


def _membership(condition: Condition) -> ColumnElement[bool]:
    if condition.field == "tags":
        member = select(ContactTag.contact_id).where(ContactTag.contact_id == Contact.id)
        if condition.value is not None:
            member = member.where(ContactTag.tag == condition.value)
    else:
        member = select(ContactList.contact_id).where(ContactList.contact_id == Contact.id)
        if condition.value is not None:
            member = member.where(ContactList.list == condition.value)
    return exists(member)


def _multi_select(condition: Condition, dialect: str) -> ColumnElement[bool]:
    name = condition.field
    if dialect == "postgresql":
        element = type_coerce(Contact.custom_fields, JSONB)[name]
        if condition.value is None:
            return func.coalesce(func.jsonb_array_length(element), 0) > 0
        # A missing field is NULL in SQL; coalesce so `not_contains` keeps such contacts.
        contained: ColumnElement[bool] = func.coalesce(element.contains([condition.value]), false())
        return contained
    path = f'$."{name}"'
    if condition.value is None:
        return func.coalesce(func.json_array_length(Contact.custom_fields, path), 0) > 0
    each = func.json_each(Contact.custom_fields, path).table_valued("value")
    return exists(select(literal(1)).select_from(each).where(each.c.value == condition.value))


def _column(condition: Condition) -> ColumnElement[Any]:
    if not condition.custom:
        column: ColumnElement[Any] = getattr(Contact, condition.field)
        return column
    element = Contact.custom_fields[condition.field]
    value: ColumnElement[Any]
    if condition.kind == "number":
        value = element.as_float()
    elif condition.kind == "boolean":
        value = element.as_boolean()
    else:
        value = element.as_string()
    return value


def _condition(c: Condition, now: datetime, dialect: str) -> ColumnElement[bool]:
    if c.kind in ("set", "multi"):
        probe = Condition(c.field, c.kind, c.op, c.value if c.op.endswith("contains") else None)
        has = _membership(probe) if c.kind == "set" else _multi_select(probe, dialect)
        return not_(has) if c.op in ("not_contains", "is_empty") else has
    col = _column(c)
    op, value = c.op, c.value
    if op in ("is_empty", "is_not_empty"):
        empty = col.is_(None) | (col == "") if c.kind == "text" else col.is_(None)
        return empty if op == "is_empty" else not_(empty)
    if op in segments_domain.RELATIVE_OPS:
        start, end = segments_domain.relative_window(op, value, now)
        low: Any
        high: Any
        if c.kind == "date":
            low = start.date().isoformat() if start else None
            high = end.date().isoformat() if end else None
        else:
            low = literal(start, UtcDateTime) if start else None
            high = literal(end, UtcDateTime) if end else None
        if op == "older_than_days":
            return and_(col.is_not(None), col < high)
        return and_(col.is_not(None), col >= low, col <= high)
    if c.kind == "datetime" and op in ("before", "after"):
        moment = literal(value, UtcDateTime)
        return col < moment if op == "before" else col > moment
    if op in ("eq", "before", "after", "gt", "gte", "lt", "lte"):
        compare = {
            "eq": col.__eq__,
            "before": col.__lt__,
            "after": col.__gt__,
            "gt": col.__gt__,
            "gte": col.__ge__,
            "lt": col.__lt__,
            "lte": col.__le__,
        }[op]
        compared: ColumnElement[bool] = compare(value)
        return compared
    if op == "neq":
        return or_(col != value, col.is_(None))
    if op == "in":
        return col.in_(list(value))
    if op == "not_in":
        return or_(col.not_in(list(value)), col.is_(None))
    if op == "contains":
        return col.icontains(value, autoescape=True)
    if op == "starts_with":
        return col.istartswith(value, autoescape=True)
    raise ValueError(f"unsupported op {op}")


# --- pagination -----------------------------------------------------------------------------

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


@dataclass(frozen=True)
class Page:
    items: list[Contact]
    next_cursor: str | None


# --- the repository -------------------------------------------------------------------------


@dataclass(frozen=True)
class ErasureSubject:
    """What identifies an erased person beyond their contact id (see `erasure_subject`)."""

    merged_ids: list[str]
    identities: list[str]
    submission_ids: list[str]


class ContactsStore:
    """Every query the contacts service runs, over the session of one unit of work."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    @property
    def dialect(self) -> str:
        return self.session.get_bind().dialect.name

    def _insert(self, table: Any) -> Any:
        return insert_for(self.session, table)

    async def take_sweep_lock(self) -> bool:
        """On PostgreSQL, one replica at a time sweeps segments (lock held until commit)."""
        return await try_xact_lock(self.session, "leadwire-contacts-segment-sweep")

    # contacts --------------------------------------------------------------------------------

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
        await update_json_rows(self.session, CONTACTS, rows)

    async def _insert_many(
        self, table: Table, rows: Sequence[dict[str, Any]], ignore_conflicts: bool = False
    ) -> None:
        """Many rows (all with the same keys) in one statement; with `ignore_conflicts`, rows
        whose key exists (in the table or earlier in `rows`) are skipped."""
        await insert_json_rows(self.session, table, rows, ignore=ignore_conflicts)

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

    async def page(
        self,
        workspace: str,
        node: Filter | None,
        now: datetime,
        sort: str,
        cursor: str | None,
        limit: int,
        extra: Sequence[ColumnElement[bool]] = (),
    ) -> Page:
        descending = sort.startswith("-")
        name = sort.lstrip("-")
        if name not in SORTS:
            raise domain.violation("sort", "invalid_sort", f"one of {sorted(SORTS)}")
        expr = _sort_expression(name)
        stmt = select(Contact, expr.label("sort_value")).where(
            Contact.workspace == workspace, LIVE, *extra
        )
        if node is not None:
            stmt = stmt.where(compile_filter(node, now, self.dialect))
        stmt = _keyset(stmt, expr, Contact.id, SORTS[name][0], descending, cursor, limit)
        rows = (await self.session.execute(stmt)).all()
        items = [r[0] for r in rows[:limit]]
        next_cursor = None
        if len(rows) > limit:
            last = rows[limit - 1]
            next_cursor = encode_cursor([_cursor_value(last.sort_value), last[0].id])
        return Page(items, next_cursor)

    async def count(self, workspace: str, node: Filter | None, now: datetime) -> int:
        stmt = select(func.count()).select_from(Contact).where(Contact.workspace == workspace, LIVE)
        if node is not None:
            stmt = stmt.where(compile_filter(node, now, self.dialect))
        return int(await self.session.scalar(stmt) or 0)

    async def matching_ids(
        self, workspace: str, node: Filter, now: datetime, among: Iterable[str]
    ) -> set[str]:
        stmt = select(Contact.id).where(
            Contact.workspace == workspace,
            LIVE,
            Contact.id.in_(list(among)),
            compile_filter(node, now, self.dialect),
        )
        return set((await self.session.execute(stmt)).scalars())

    async def delete_contact_row(self, contact_id: str) -> None:
        await self.session.execute(delete(Contact).where(Contact.id == contact_id))

    async def redirect_stubs(self, old_survivor: str, new_survivor: str) -> None:
        await self.session.execute(
            update(Contact)
            .where(Contact.merged_into == old_survivor)
            .values(merged_into=new_survivor)
        )

    # tags and lists --------------------------------------------------------------------------

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

    async def move_memberships(self, workspace: str, source: str, target: str) -> None:
        """Tags and lists of `source` become `target`'s (no duplicates), then leave `source`."""
        tags = (await self.tags_of([source]))[source]
        names = (await self.lists_of([source]))[source]
        await self.add_tags(workspace, [(target, t) for t in tags])
        for name in names:
            await self.add_to_list(workspace, target, name)
        await self.session.execute(delete(ContactTag).where(ContactTag.contact_id == source))
        await self.session.execute(delete(ContactList).where(ContactList.contact_id == source))

    # field definitions -----------------------------------------------------------------------

    async def field_definitions(self, workspace: str) -> dict[str, FieldDefinition]:
        """The workspace's definitions over the out-of-the-box ones (which it may redefine)."""
        rows = (
            await self.session.execute(
                select(FieldDefinitionRow).where(FieldDefinitionRow.workspace == workspace)
            )
        ).scalars()
        result = dict(domain.DEFAULT_FIELDS)
        for row in rows:
            result[row.name] = FieldDefinition(
                name=row.name,
                type=row.type,
                label=row.label,
                required=row.required,
                options=tuple(row.options or ()),
                min=row.min,
                max=row.max,
                max_length=row.max_length,
                pattern=row.pattern,
            )
        return result

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

    # timeline --------------------------------------------------------------------------------

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

    async def move_history(self, source: str, target: str) -> None:
        """Timeline, lifecycle history and tasks of `source` now belong to `target`."""
        for model in (Activity, LifecycleChangeRow, TaskRow):
            await self.session.execute(
                update(model).where(model.contact_id == source).values(contact_id=target)
            )

    # lifecycle -------------------------------------------------------------------------------

    async def add_lifecycle_changes(self, rows: Sequence[dict[str, Any]]) -> None:
        await self._insert_many(LIFECYCLE_CHANGES, rows)

    async def lifecycle_history(self, contact_id: str) -> list[LifecycleChangeRow]:
        stmt = (
            select(LifecycleChangeRow)
            .where(LifecycleChangeRow.contact_id == contact_id)
            .order_by(LifecycleChangeRow.changed_at, LifecycleChangeRow.id)
        )
        return list((await self.session.execute(stmt)).scalars())

    # owners, teams ---------------------------------------------------------------------------

    async def team(self, workspace: str, team_id: str, lock: bool = False) -> Team | None:
        stmt = select(Team).where(Team.workspace == workspace, Team.id == team_id)
        if lock:
            stmt = stmt.with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def teams(self, workspace: str) -> list[Team]:
        stmt = select(Team).where(Team.workspace == workspace).order_by(Team.name)
        return list((await self.session.execute(stmt)).scalars())

    async def owner(self, workspace: str, owner_id: str) -> Owner | None:
        stmt = select(Owner).where(Owner.workspace == workspace, Owner.id == owner_id)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def owners(self, workspace: str, team_id: str | None = None) -> list[Owner]:
        stmt = select(Owner).where(Owner.workspace == workspace)
        if team_id is not None:
            stmt = stmt.where(Owner.team_id == team_id)
        stmt = stmt.order_by(Owner.position, Owner.id)
        return list((await self.session.execute(stmt)).scalars())

    async def next_owner_position(self, team_id: str | None) -> int:
        value = await self.session.scalar(
            select(func.max(Owner.position)).where(Owner.team_id == team_id)
        )
        return int(value or 0) + 1

    # tasks -----------------------------------------------------------------------------------

    async def task(self, workspace: str, task_id: str) -> TaskRow | None:
        stmt = select(TaskRow).where(TaskRow.workspace == workspace, TaskRow.id == task_id)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def tasks(
        self,
        workspace: str,
        today: date,
        assignee: str | None,
        contact_id: str | None,
        status: str | None,
        overdue: bool,
        limit: int,
    ) -> list[TaskRow]:
        stmt = select(TaskRow).where(TaskRow.workspace == workspace)
        if assignee is not None:
            stmt = stmt.where(TaskRow.assignee_id == assignee)
        if contact_id is not None:
            stmt = stmt.where(TaskRow.contact_id == contact_id)
        if status is not None:
            stmt = stmt.where(TaskRow.status == status)
        if overdue:
            stmt = stmt.where(TaskRow.status == "open", TaskRow.due_date < today)
        stmt = stmt.order_by(TaskRow.due_date.is_(None), TaskRow.due_date, TaskRow.id).limit(limit)
        return list((await self.session.execute(stmt)).scalars())

    async def tasks_of(self, contact_id: str) -> list[TaskRow]:
        stmt = select(TaskRow).where(TaskRow.contact_id == contact_id).order_by(TaskRow.created_at)
        return list((await self.session.execute(stmt)).scalars())

    # segments --------------------------------------------------------------------------------

    async def segment(self, workspace: str, segment_id: str) -> Segment | None:
        stmt = select(Segment).where(Segment.workspace == workspace, Segment.id == segment_id)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def segments(self, workspace: str | None = None) -> list[Segment]:
        stmt = select(Segment).order_by(Segment.workspace, Segment.created_at, Segment.id)
        if workspace is not None:
            stmt = stmt.where(Segment.workspace == workspace)
        return list((await self.session.execute(stmt)).scalars())

    async def members_among(self, segment_id: str, ids: Iterable[str]) -> set[str]:
        stmt = select(SegmentMember.contact_id).where(
            SegmentMember.segment_id == segment_id, SegmentMember.contact_id.in_(list(ids))
        )
        return set((await self.session.execute(stmt)).scalars())

    async def segments_of(self, contact_id: str) -> list[str]:
        stmt = select(SegmentMember.segment_id).where(SegmentMember.contact_id == contact_id)
        return list((await self.session.execute(stmt)).scalars())

    async def entering(self, segment: Segment, node: Filter, now: datetime) -> list[str]:
        """Contacts matching the segment's filter that are not members yet."""
        member = select(SegmentMember.contact_id).where(
            SegmentMember.segment_id == segment.id, SegmentMember.contact_id == Contact.id
        )
        stmt = select(Contact.id).where(
            Contact.workspace == segment.workspace,
            LIVE,
            compile_filter(node, now, self.dialect),
            ~exists(member),
        )
        return list((await self.session.execute(stmt)).scalars())

    async def leaving(self, segment: Segment, node: Filter, now: datetime) -> list[str]:
        """Members that no longer match the segment's filter (or no longer exist)."""
        still = select(Contact.id).where(
            Contact.id == SegmentMember.contact_id,
            LIVE,
            compile_filter(node, now, self.dialect),
        )
        stmt = select(SegmentMember.contact_id).where(
            SegmentMember.segment_id == segment.id, ~exists(still)
        )
        return list((await self.session.execute(stmt)).scalars())

    async def add_members(
        self, workspace: str, segment_id: str, ids: Iterable[str], now: datetime
    ) -> None:
        rows = [
            {"segment_id": segment_id, "contact_id": i, "workspace": workspace, "entered_at": now}
            for i in ids
        ]
        if rows:
            await self.session.execute(self._insert(SegmentMember).on_conflict_do_nothing(), rows)

    async def remove_members(self, segment_id: str, ids: Iterable[str]) -> None:
        ids = list(ids)
        if ids:
            await self.session.execute(
                delete(SegmentMember).where(
                    SegmentMember.segment_id == segment_id, SegmentMember.contact_id.in_(ids)
                )
            )

    async def delete_segment(self, segment_id: str) -> None:
        await self.session.execute(
            delete(SegmentMember).where(SegmentMember.segment_id == segment_id)
        )
        await self.session.execute(delete(Segment).where(Segment.id == segment_id))

    # merges ----------------------------------------------------------------------------------

    async def merges_of(self, contact_id: str) -> list[MergeRecord]:
        stmt = (
            select(MergeRecord)
            .where(or_(MergeRecord.survivor_id == contact_id, MergeRecord.merged_id == contact_id))
            .order_by(MergeRecord.merged_at)
        )
        return list((await self.session.execute(stmt)).scalars())

    # erasure ---------------------------------------------------------------------------------

    async def erasure_subject(self, contact_id: str) -> ErasureSubject:
        """Who is erased with this contact: the duplicates merged into it, every e-mail and
        phone the person was known by (their records and captured leads), their submissions."""
        stubs = select(Contact.id).where(Contact.merged_into == contact_id)
        ids = [contact_id, *(await self.session.execute(stubs)).scalars()]
        found: set[str] = set()
        rows = await self.session.execute(
            select(Contact.email, Contact.phone).where(Contact.id.in_(ids))
        )
        for email, phone in rows:
            found.update(erasure.identities(email, phone))
        submission_ids: set[str] = set()
        captures = await self.session.execute(
            select(Activity.data).where(
                Activity.contact_id.in_(ids), Activity.kind == "lead.captured"
            )
        )
        for (data,) in captures:
            found.update(erasure.identities(data.get("email"), data.get("phone")))
            if data.get("submission_id"):
                submission_ids.add(str(data["submission_id"]))
        return ErasureSubject(ids[1:], sorted(found), sorted(submission_ids))

    async def record_erasures(self, workspace: str, digests: list[str], at: datetime) -> None:
        await erasure.record_erasures(self.session, erasures, workspace, digests, at)

    async def erasures(self, workspace: str, digests: Iterable[str]) -> dict[str, datetime]:
        return await erasure.erased_at(self.session, erasures, workspace, digests)

    async def erase(self, workspace: str, contact_id: str, event_key: str) -> None:
        """Delete every row holding this person's data, including outbox rows about them."""
        stubs = select(Contact.id).where(Contact.merged_into == contact_id)
        merged_ids = [contact_id, *(await self.session.execute(stubs)).scalars()]
        for model in (Activity, LifecycleChangeRow, TaskRow, ContactTag, ContactList):
            await self.session.execute(delete(model).where(model.contact_id.in_(merged_ids)))
        await self.session.execute(
            delete(SegmentMember).where(SegmentMember.contact_id.in_(merged_ids))
        )
        await self.session.execute(
            delete(MergeRecord).where(
                or_(MergeRecord.survivor_id.in_(merged_ids), MergeRecord.merged_id.in_(merged_ids))
            )
        )
        await self.session.execute(delete(Contact).where(Contact.id.in_(merged_ids)))
        # Events about the person and about each duplicate merged into them (keyed by its id).
        keys = [event_key, *(contact_key(workspace, merged) for merged in merged_ids[1:])]
        await self.session.execute(delete(outbox).where(outbox.c.key.in_(keys)))

    # reports ---------------------------------------------------------------------------------

    async def stage_counts(self, workspace: str) -> dict[str, int]:
        rows = await self.session.execute(
            select(Contact.lifecycle_stage, func.count())
            .where(Contact.workspace == workspace, LIVE)
            .group_by(Contact.lifecycle_stage)
        )
        return {stage: int(n) for stage, n in rows}

    async def stage_entries(self, workspace: str, start: datetime, end: datetime) -> dict[str, int]:
        rows = await self.session.execute(
            select(
                LifecycleChangeRow.to_stage,
                func.count(func.distinct(LifecycleChangeRow.contact_id)),
            )
            .where(
                LifecycleChangeRow.workspace == workspace,
                LifecycleChangeRow.changed_at >= literal(start, UtcDateTime),
                LifecycleChangeRow.changed_at < literal(end, UtcDateTime),
            )
            .group_by(LifecycleChangeRow.to_stage)
        )
        return {stage: int(n) for stage, n in rows}

    async def customers_at(self, workspace: str, moment: datetime) -> int:
        """Contacts whose latest lifecycle change at or before `moment` made them customers."""
        latest = (
            select(
                LifecycleChangeRow.contact_id,
                func.max(LifecycleChangeRow.changed_at).label("at"),
            )
            .where(
                LifecycleChangeRow.workspace == workspace,
                LifecycleChangeRow.changed_at <= literal(moment, UtcDateTime),
            )
            .group_by(LifecycleChangeRow.contact_id)
            .subquery()
        )
        stmt = (
            select(func.count(func.distinct(LifecycleChangeRow.contact_id)))
            .join(
                latest,
                and_(
                    latest.c.contact_id == LifecycleChangeRow.contact_id,
                    latest.c.at == LifecycleChangeRow.changed_at,
                ),
            )
            .where(LifecycleChangeRow.to_stage == "customer")
        )
        return int(await self.session.scalar(stmt) or 0)

    async def churned_between(
        self, workspace: str, start: datetime, end: datetime
    ) -> list[tuple[str, str | None, str | None]]:
        rows = await self.session.execute(
            select(
                LifecycleChangeRow.contact_id,
                LifecycleChangeRow.churn_reason,
                LifecycleChangeRow.churn_reason_text,
            ).where(
                LifecycleChangeRow.workspace == workspace,
                LifecycleChangeRow.to_stage == "churned",
                LifecycleChangeRow.from_stage == "customer",
                LifecycleChangeRow.changed_at > literal(start, UtcDateTime),
                LifecycleChangeRow.changed_at <= literal(end, UtcDateTime),
            )
        )
        return [(c, r, t) for c, r, t in rows]

    async def sample_ids(
        self, workspace: str, condition: ColumnElement[bool], samples: int
    ) -> tuple[int, list[str]]:
        base = and_(Contact.workspace == workspace, LIVE, condition)
        count = int(
            await self.session.scalar(select(func.count()).select_from(Contact).where(base)) or 0
        )
        ids = (
            await self.session.execute(
                select(Contact.id).where(base).order_by(Contact.id).limit(samples)
            )
        ).scalars()
        return count, list(ids)

    async def missing_identity(self, workspace: str, samples: int) -> tuple[int, list[str]]:
        return await self.sample_ids(
            workspace, and_(Contact.email.is_(None), Contact.phone.is_(None)), samples
        )

    async def missing_custom(
        self, workspace: str, name: str, samples: int
    ) -> tuple[int, list[str]]:
        return await self.sample_ids(
            workspace, Contact.custom_fields[name].as_string().is_(None), samples
        )

    async def stale(
        self, workspace: str, now: datetime, days: int, samples: int
    ) -> tuple[int, list[str]]:
        cutoff = literal(now - timedelta(days=days), UtcDateTime)
        seen = func.coalesce(Contact.last_interaction_at, Contact.created_at)
        return await self.sample_ids(workspace, seen < cutoff, samples)

    async def unsubscribed(self, workspace: str, samples: int) -> tuple[int, list[str]]:
        return await self.sample_ids(
            workspace, Contact.subscription_status.in_(["unsubscribed", "bounced"]), samples
        )

    async def recent_custom_fields(
        self, workspace: str, limit: int
    ) -> list[tuple[str, dict[str, Any]]]:
        rows = await self.session.execute(
            select(Contact.id, Contact.custom_fields)
            .where(Contact.workspace == workspace, LIVE)
            .order_by(Contact.updated_at.desc())
            .limit(limit)
        )
        return [(i, dict(c or {})) for i, c in rows]

    async def people(self, workspace: str, limit: int) -> list[duplicates_domain.DuplicatePerson]:
        rows = await self.session.execute(
            select(
                Contact.id,
                Contact.email,
                Contact.phone,
                Contact.first_name,
                Contact.last_name,
                Contact.company,
            )
            .where(Contact.workspace == workspace, LIVE)
            .order_by(Contact.updated_at.desc())
            .limit(limit)
        )
        return [duplicates_domain.DuplicatePerson(*row) for row in rows]

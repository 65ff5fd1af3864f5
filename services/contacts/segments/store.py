"""Queries of filters and segments: the segment filter compiler (filter tree → SQL expression,
for SQLite and PostgreSQL alike), keyset pagination of contact listings and segment membership."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    and_,
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
)
from sqlalchemy.dialects.postgresql import JSONB

from services.contacts import domain
from services.contacts.models import (
    Contact,
    ContactList,
    ContactTag,
    Segment,
    SegmentMember,
)
from services.contacts.people.store import (
    LIVE,
    SORTS,
    PeopleStore,
    _cursor_value,
    _keyset,
    _sort_expression,
    encode_cursor,
)
from services.contacts.segments import domain as segments_domain
from services.contacts.segments.domain import Condition, Filter, Group, Page
from shared.db import UtcDateTime, try_xact_lock


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


class SegmentsStore(PeopleStore):
    """Contact listings by filter and segment membership."""

    async def take_sweep_lock(self) -> bool:
        """On PostgreSQL, one replica at a time sweeps segments (lock held until commit)."""
        return await try_xact_lock(self.session, "leadwire-contacts-segment-sweep")

    async def page(
        self,
        workspace: str,
        node: Filter | None,
        now: datetime,
        sort: str,
        cursor: str | None,
        limit: int,
    ) -> Page[Contact]:
        descending = sort.startswith("-")
        name = sort.lstrip("-")
        if name not in SORTS:
            raise domain.violation("sort", "invalid_sort", f"one of {sorted(SORTS)}")
        expr = _sort_expression(name)
        stmt = select(Contact, expr.label("sort_value")).where(Contact.workspace == workspace, LIVE)
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

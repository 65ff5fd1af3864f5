"""The segment filter language: parsing a filter tree against a workspace's fields, and what
its relative-date conditions mean at a given moment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Generic, Literal, TypeVar

from services.contacts.domain import (
    CHURN_REASONS,
    LIFECYCLE_STAGES,
    SUBSCRIPTION_STATUSES,
    FieldDefinition,
    RuleViolation,
    normalise_list_name,
    normalise_tag,
)

FieldKind = Literal["text", "enum", "number", "datetime", "date", "boolean", "set", "multi"]


CORE_FILTER_FIELDS: dict[str, FieldKind] = {
    "id": "text",
    "email": "text",
    "phone": "text",
    "first_name": "text",
    "last_name": "text",
    "company": "text",
    "job_title": "text",
    "country": "text",
    "source": "text",
    "owner_id": "text",
    "churn_reason": "enum",
    "lifecycle_stage": "enum",
    "subscription_status": "enum",
    "score": "number",
    "created_at": "datetime",
    "updated_at": "datetime",
    "last_interaction_at": "datetime",
    "tags": "set",
    "lists": "set",
}


ENUM_VALUES: dict[str, tuple[str, ...]] = {
    "lifecycle_stage": LIFECYCLE_STAGES,
    "subscription_status": SUBSCRIPTION_STATUSES,
    "churn_reason": CHURN_REASONS,
}


CUSTOM_KINDS: dict[str, FieldKind] = {
    "text": "text",
    "select": "text",
    "number": "number",
    "date": "date",
    "boolean": "boolean",
    "multi_select": "multi",
}


EMPTY_OPS = ("is_empty", "is_not_empty")


RELATIVE_OPS = ("older_than_days", "within_last_days", "within_next_days")


OPS_BY_KIND: dict[FieldKind, tuple[str, ...]] = {
    "text": ("eq", "neq", "in", "not_in", "contains", "starts_with", *EMPTY_OPS),
    "enum": ("eq", "neq", "in", "not_in", *EMPTY_OPS),
    "number": ("eq", "neq", "gt", "gte", "lt", "lte", *EMPTY_OPS),
    "datetime": ("before", "after", *RELATIVE_OPS, *EMPTY_OPS),
    "date": ("eq", "before", "after", *RELATIVE_OPS, *EMPTY_OPS),
    "boolean": ("eq", *EMPTY_OPS),
    "set": ("contains", "not_contains", "is_empty", "is_not_empty"),
    "multi": ("contains", "not_contains", *EMPTY_OPS),
}


MAX_FILTER_DEPTH = 8


MAX_CONDITIONS = 50


@dataclass(frozen=True)
class Condition:
    """One test on one field; `custom` says whether it reads a custom field."""

    field: str
    kind: FieldKind
    op: str
    value: Any
    custom: bool = False

    @property
    def time_based(self) -> bool:
        return self.op in RELATIVE_OPS


@dataclass(frozen=True)
class Group:
    """`and`/`or` over children, or `not` over exactly one."""

    op: Literal["and", "or", "not"]
    children: tuple[Filter, ...] = field(default_factory=tuple)


Filter = Condition | Group


def is_time_based(node: Filter) -> bool:
    if isinstance(node, Condition):
        return node.time_based
    return any(is_time_based(c) for c in node.children)


def parse_filter(raw: Any, custom_fields: Mapping[str, FieldDefinition]) -> Filter:
    """Validate a JSON filter into a tree; RuleViolation names the path of every mistake.

    `{"and": [...]}`, `{"or": [...]}`, `{"not": {...}}` and conditions
    `{"field": "last_interaction_at", "op": "older_than_days", "value": 30}`; custom fields are
    `custom_fields.<name>` (or the bare name when it is not a core field).
    """
    errors: list[dict[str, str]] = []
    count = [0]
    node = _parse(raw, "filter", 0, custom_fields, errors, count)
    if count[0] > MAX_CONDITIONS:
        errors.append(
            {"field": "filter", "code": "too_many", "message": f"at most {MAX_CONDITIONS}"}
        )
    if errors or node is None:
        raise RuleViolation(errors or [{"field": "filter", "code": "invalid", "message": "?"}])
    return node


def _parse(
    raw: Any,
    path: str,
    depth: int,
    custom_fields: Mapping[str, FieldDefinition],
    errors: list[dict[str, str]],
    count: list[int],
) -> Filter | None:
    def fail(code: str, message: str, where: str = path) -> None:
        errors.append({"field": where, "code": code, "message": message})

    if depth > MAX_FILTER_DEPTH:
        fail("too_deep", f"groups nest at most {MAX_FILTER_DEPTH} deep")
        return None
    if not isinstance(raw, dict):
        fail("not_an_object", "a filter is an object")
        return None
    groups = [k for k in ("and", "or", "not") if k in raw]
    if groups:
        if len(raw) != 1:
            fail("ambiguous", "a group has exactly one key: and, or or not")
            return None
        key = groups[0]
        if key == "not":
            child = _parse(raw["not"], f"{path}.not", depth + 1, custom_fields, errors, count)
            return Group("not", (child,)) if child is not None else None
        items = raw[key]
        if not isinstance(items, list) or not items:
            fail("empty_group", f"`{key}` needs a non-empty list", f"{path}.{key}")
            return None
        children = [
            _parse(item, f"{path}.{key}[{i}]", depth + 1, custom_fields, errors, count)
            for i, item in enumerate(items)
        ]
        if any(c is None for c in children):
            return None
        return Group(key, tuple(c for c in children if c is not None))  # type: ignore[arg-type]
    count[0] += 1
    name, op = raw.get("field"), raw.get("op")
    if not isinstance(name, str) or not isinstance(op, str):
        fail("invalid_condition", "a condition has `field`, `op` and usually `value`")
        return None
    custom = False
    kind: FieldKind
    if name in CORE_FILTER_FIELDS:
        kind = CORE_FILTER_FIELDS[name]
    else:
        bare = name.removeprefix("custom_fields.")
        definition = custom_fields.get(bare)
        if definition is None:
            fail("unknown_field", f"no field {name!r}", f"{path}.field")
            return None
        name, kind, custom = bare, CUSTOM_KINDS[definition.type], True
    if op not in OPS_BY_KIND[kind]:
        fail("invalid_op", f"{name} takes {list(OPS_BY_KIND[kind])}", f"{path}.op")
        return None
    value = raw.get("value")
    where = f"{path}.value"
    if op in EMPTY_OPS:
        return Condition(name, kind, op, None, custom)
    if op in RELATIVE_OPS:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 36500:
            fail("invalid_value", "a whole number of days", where)
            return None
        return Condition(name, kind, op, value, custom)
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            fail("invalid_value", "a non-empty list of strings", where)
            return None
        if kind == "enum" and (bad := [v for v in value if v not in ENUM_VALUES[name]]):
            fail("invalid_value", f"{bad} not in {list(ENUM_VALUES[name])}", where)
            return None
        return Condition(name, kind, op, tuple(value), custom)
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            fail("invalid_value", "a number", where)
            return None
        return Condition(name, kind, op, float(value), custom)
    if kind == "boolean":
        if not isinstance(value, bool):
            fail("invalid_value", "true or false", where)
            return None
        return Condition(name, kind, op, value, custom)
    if kind == "datetime":
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            fail("invalid_value", "an ISO date or date-time", where)
            return None
        return Condition(name, kind, op, moment.replace(tzinfo=moment.tzinfo or UTC), custom)
    if kind == "date":
        try:
            day = date.fromisoformat(str(value)[:10])
        except ValueError:
            fail("invalid_value", "an ISO date", where)
            return None
        return Condition(name, kind, op, day.isoformat(), custom)
    if not isinstance(value, str) or not value:
        fail("invalid_value", "a non-empty string", where)
        return None
    if kind == "enum" and value not in ENUM_VALUES[name]:
        fail("invalid_value", f"one of {list(ENUM_VALUES[name])}", where)
        return None
    if name == "email":
        value = value.strip().lower()
    if kind == "set":
        value = normalise_tag(value) if name == "tags" else normalise_list_name(value)
    return Condition(name, kind, op, value, custom)


def relative_window(op: str, days: int, now: datetime) -> tuple[datetime | None, datetime | None]:
    """The [start, end] a relative-date condition means at `now` (None = unbounded)."""
    span = timedelta(days=days)
    if op == "older_than_days":
        return None, now - span
    if op == "within_last_days":
        return now - span, now
    return now, now + span


T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a listing in a stable order, and the cursor of the next (None: the last)."""

    items: list[T]
    next_cursor: str | None

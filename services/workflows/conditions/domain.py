"""The condition language of segments, evaluated in memory against workflows' own projection.

It is the grammar contacts compiles to SQL for segments (`{"and": [...]}`, `{"or": [...]}`,
`{"not": {...}}` and conditions `{"field": ..., "op": ..., "value": ...}`), with two additions a
run needs: `segments` (the segments a contact is in) and `run.<step id>` (the outcome an earlier
step of the same run had). Event conditions (`page.viewed` whose `url` contains `/pricing`) use
the same language over an event's data, whose field kinds are read from the values.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

LIFECYCLE_STAGES: tuple[str, ...] = (
    "subscriber",
    "lead",
    "mql",
    "sql",
    "opportunity",
    "customer",
    "churned",
)
SUBSCRIPTION_STATUSES: tuple[str, ...] = ("subscribed", "unsubscribed", "bounced")
CHURN_REASONS: tuple[str, ...] = ("budget", "missing_feature", "competitor", "service", "other")

FieldKind = Literal["text", "enum", "number", "datetime", "date", "boolean", "set", "any"]
CORE_FIELDS: dict[str, FieldKind] = {
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
    "segments": "set",
}
DATE_FIELDS = tuple(name for name, kind in CORE_FIELDS.items() if kind == "datetime")
ENUM_VALUES: dict[str, tuple[str, ...]] = {
    "lifecycle_stage": LIFECYCLE_STAGES,
    "subscription_status": SUBSCRIPTION_STATUSES,
    "churn_reason": CHURN_REASONS,
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
    "set": ("contains", "not_contains", *EMPTY_OPS),
}
# A custom field's or an event property's kind is only known from its value.
ANY_OPS: tuple[str, ...] = tuple(dict.fromkeys(op for ops in OPS_BY_KIND.values() for op in ops))
MAX_DEPTH = 8
MAX_CONDITIONS = 50
Errors = list[dict[str, str]]


@dataclass(frozen=True)
class Condition:
    """One test on one field. `kind` "any" reads the kind from the value at evaluation."""

    field: str
    kind: FieldKind
    op: str
    value: Any


@dataclass(frozen=True)
class Group:
    op: Literal["and", "or", "not"]
    children: tuple[Filter, ...] = field(default_factory=tuple)


Filter = Condition | Group
Scope = Literal["contact", "event"]


def parse(
    raw: Any, path: str, scope: Scope, errors: Errors, steps: frozenset[str] = frozenset()
) -> Filter | None:
    """Validate a JSON filter into a tree, appending every mistake (with its path) to `errors`.

    `scope` "contact" knows the core fields, `custom_fields.<name>` and `run.<step id>` (one of
    `steps`); "event" accepts any field of the event's data.
    """
    count = [0]
    node = _parse(raw, path, 0, scope, steps, errors, count)
    if count[0] > MAX_CONDITIONS:
        errors.append({"field": path, "code": "too_many", "message": f"at most {MAX_CONDITIONS}"})
    return node


def _parse(
    raw: Any,
    path: str,
    depth: int,
    scope: Scope,
    steps: frozenset[str],
    errors: Errors,
    count: list[int],
) -> Filter | None:
    def fail(code: str, message: str, where: str = path) -> None:
        errors.append({"field": where, "code": code, "message": message})

    if depth > MAX_DEPTH:
        fail("too_deep", f"groups nest at most {MAX_DEPTH} deep")
        return None
    if not isinstance(raw, dict):
        fail("not_an_object", "a condition is an object")
        return None
    groups = [k for k in ("and", "or", "not") if k in raw]
    if groups:
        if len(raw) != 1:
            fail("ambiguous", "a group has exactly one key: and, or or not")
            return None
        key = groups[0]
        if key == "not":
            child = _parse(raw["not"], f"{path}.not", depth + 1, scope, steps, errors, count)
            return Group("not", (child,)) if child is not None else None
        items = raw[key]
        if not isinstance(items, list) or not items:
            fail("empty_group", f"`{key}` needs a non-empty list", f"{path}.{key}")
            return None
        children = [
            _parse(item, f"{path}.{key}[{i}]", depth + 1, scope, steps, errors, count)
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
    kind = field_kind(name, scope, steps)
    if kind is None:
        fail("unknown_field", f"no field {name!r}", f"{path}.field")
        return None
    allowed = ANY_OPS if kind == "any" else OPS_BY_KIND[kind]
    if op not in allowed:
        fail("invalid_op", f"{name} takes {list(allowed)}", f"{path}.op")
        return None
    value, problem = _value(name, kind, op, raw.get("value"))
    if problem:
        fail("invalid_value", problem, f"{path}.value")
        return None
    return Condition(name, kind, op, value)


def field_kind(name: str, scope: Scope, steps: frozenset[str]) -> FieldKind | None:
    """The kind of a field a condition may name; None when no such field exists."""
    if scope == "event":
        return "any" if name else None
    if name in CORE_FIELDS:
        return CORE_FIELDS[name]
    if name.startswith("run."):
        return "text" if name.removeprefix("run.") in steps else None
    if name.startswith("custom_fields.") and is_identifier(name.removeprefix("custom_fields.")):
        return "any"
    return None


def is_identifier(name: str) -> bool:
    return bool(name) and name[0].isalpha() and all(c.isalnum() or c == "_" for c in name)


def _value(name: str, kind: FieldKind, op: str, value: Any) -> tuple[Any, str | None]:
    if op in EMPTY_OPS:
        return None, None
    if op in RELATIVE_OPS:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 36500:
            return None, "a whole number of days"
        return value, None
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            return None, "a non-empty list of strings"
        if kind == "enum" and (bad := [v for v in value if v not in ENUM_VALUES[name]]):
            return None, f"{bad} not in {list(ENUM_VALUES[name])}"
        return tuple(value), None
    if op in ("gt", "gte", "lt", "lte") or kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None, "a number"
        return float(value), None
    if kind == "boolean":
        return (value, None) if isinstance(value, bool) else (None, "true or false")
    if op in ("before", "after") or kind in ("datetime", "date"):
        moment = to_datetime(value)
        return (moment, None) if moment is not None else (None, "an ISO date or date-time")
    if kind == "any" and isinstance(value, bool | int | float):
        return value, None
    if not isinstance(value, str) or not value:
        return None, "a non-empty string"
    if kind == "enum" and value not in ENUM_VALUES[name]:
        return None, f"one of {list(ENUM_VALUES[name])}"
    if name == "email":
        value = value.strip().lower()
    if kind == "set" and name != "segments":
        value = value.strip().lower()
    return value, None


def to_datetime(value: Any) -> datetime | None:
    """An aware datetime from a datetime, a date or an ISO string (dates at 00:00 UTC)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --- evaluation -----------------------------------------------------------------------------


def lookup(record: Mapping[str, Any], name: str, outcomes: Mapping[str, str]) -> Any:
    """A field's value: core fields, `custom_fields.<name>`, `run.<step>` or an event's data."""
    if name.startswith("run."):
        return outcomes.get(name.removeprefix("run."))
    if name.startswith("custom_fields."):
        custom = record.get("custom_fields") or {}
        return custom.get(name.removeprefix("custom_fields.")) if isinstance(custom, dict) else None
    return record.get(name)


def matches(
    node: Filter,
    record: Mapping[str, Any],
    now: datetime,
    outcomes: Mapping[str, str] | None = None,
) -> bool:
    """Whether a contact (or an event's data) satisfies the filter at `now`."""
    if isinstance(node, Group):
        if node.op == "and":
            return all(matches(c, record, now, outcomes) for c in node.children)
        if node.op == "or":
            return any(matches(c, record, now, outcomes) for c in node.children)
        return not matches(node.children[0], record, now, outcomes)
    return _test(node, lookup(record, node.field, outcomes or {}), now)


def _is_empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


def _test(cond: Condition, value: Any, now: datetime) -> bool:
    op, expected = cond.op, cond.value
    if op == "is_empty":
        return _is_empty(value)
    if op == "is_not_empty":
        return not _is_empty(value)
    if value is None:
        return op in ("neq", "not_in", "not_contains")
    if isinstance(value, list | tuple | set | frozenset):
        members = {str(v).lower() for v in value}
        if op == "contains":
            return str(expected).lower() in members
        if op == "not_contains":
            return str(expected).lower() not in members
        return False
    if op in RELATIVE_OPS or op in ("before", "after") or cond.kind in ("datetime", "date"):
        return _test_time(op, expected, to_datetime(value), now)
    if (
        op in ("gt", "gte", "lt", "lte")
        or cond.kind == "number"
        or (
            cond.kind == "any"
            and isinstance(expected, int | float)
            and not isinstance(expected, bool)
        )
    ):
        return _test_number(op, expected, value)
    if isinstance(expected, bool) or isinstance(value, bool):
        return op == "eq" and value == expected
    text = str(value)
    if op == "eq":
        return text == str(expected)
    if op == "neq":
        return text != str(expected)
    if op == "in":
        return text in expected
    if op == "not_in":
        return text not in expected
    if op == "contains":
        return str(expected).lower() in text.lower()
    if op == "not_contains":
        return str(expected).lower() not in text.lower()
    if op == "starts_with":
        return text.lower().startswith(str(expected).lower())
    return False


def _test_number(op: str, expected: Any, value: Any) -> bool:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return op == "neq"
    target = float(expected)
    return {
        "eq": number == target,
        "neq": number != target,
        "gt": number > target,
        "gte": number >= target,
        "lt": number < target,
        "lte": number <= target,
    }.get(op, False)


def _test_time(op: str, expected: Any, moment: datetime | None, now: datetime) -> bool:
    if moment is None:
        return False
    if op == "before":
        return bool(moment < expected)
    if op == "after":
        return bool(moment > expected)
    if op == "eq":
        return bool(moment.date() == expected.date())
    span = timedelta(days=int(expected))
    if op == "older_than_days":
        return moment <= now - span
    if op == "within_last_days":
        return now - span <= moment <= now
    if op == "within_next_days":
        return now <= moment <= now + span
    return False

"""The condition language of segments (`shared.conditions`), evaluated in memory against
workflows' own projection, with two additions a run needs: `segments` (the segments a contact
is in) and `run.<step id>` (the outcome an earlier step of the same run had). Event conditions
(`page.viewed` whose `url` contains `/pricing`) use the same language over an event's data,
whose field kinds are read from the values.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from shared.conditions import CORE_FIELDS as SHARED_CORE_FIELDS
from shared.conditions import LIFECYCLE_STAGES as LIFECYCLE_STAGES
from shared.conditions import RELATIVE_OPS as RELATIVE_OPS
from shared.conditions import Condition as Condition
from shared.conditions import Errors, Field, FieldKind, check_choice, parse_tree
from shared.conditions import Filter as Filter
from shared.conditions import Group as Group

# A run can also test the segments a contact is in.
CORE_FIELDS: dict[str, FieldKind] = SHARED_CORE_FIELDS | {"segments": "set"}
DATE_FIELDS = tuple(name for name, kind in CORE_FIELDS.items() if kind == "datetime")
Scope = Literal["contact", "event"]


def parse(
    raw: Any, path: str, scope: Scope, errors: Errors, steps: frozenset[str] = frozenset()
) -> Filter | None:
    """Validate a JSON filter into a tree, appending every mistake (with its path) to `errors`.

    `scope` "contact" knows the core fields, `custom_fields.<name>` and `run.<step id>` (one of
    `steps`); "event" accepts any field of the event's data.
    """

    def resolve(name: str) -> Field | None:
        kind = field_kind(name, scope, steps)
        return None if kind is None else Field(name, kind)

    return parse_tree(raw, path, errors, resolve, _check_value)


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


def _check_value(found: Field, op: str, value: Any) -> tuple[Any, str | None]:
    """A condition's value as the evaluator compares it: a field whose kind only its value
    tells is compared by the kind of the expected value."""
    if (checked := check_choice(found, op, value)) is not None:
        return checked
    kind = found.kind
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
    if found.name == "email":
        value = value.strip().lower()
    if kind == "set" and found.name != "segments":
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

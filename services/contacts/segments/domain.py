"""The segment filter language: parsing a filter tree against a workspace's fields, and what
its relative-date conditions mean at a given moment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Generic, TypeVar

from services.contacts.domain import (
    FieldDefinition,
    RuleViolation,
    normalise_list_name,
    normalise_tag,
)
from shared.conditions import CORE_FIELDS, Errors, Field, FieldKind, check_choice, parse_tree
from shared.conditions import RELATIVE_OPS as RELATIVE_OPS
from shared.conditions import Condition as Condition
from shared.conditions import Filter as Filter
from shared.conditions import Group as Group
from shared.conditions import is_time_based as is_time_based

# A custom field's definition type → the kind of condition it takes.
CUSTOM_KINDS: dict[str, FieldKind] = {
    "text": "text",
    "select": "text",
    "number": "number",
    "date": "date",
    "boolean": "boolean",
    "multi_select": "multi",
}


def parse_filter(raw: Any, custom_fields: Mapping[str, FieldDefinition]) -> Filter:
    """Validate a JSON filter (`shared.conditions`) into a tree; RuleViolation names the path of
    every mistake. Custom fields are `custom_fields.<name>`, or the bare name when it is not a
    core field."""

    def resolve(name: str) -> Field | None:
        if name in CORE_FIELDS:
            return Field(name, CORE_FIELDS[name])
        bare = name.removeprefix("custom_fields.")
        definition = custom_fields.get(bare)
        return None if definition is None else Field(bare, CUSTOM_KINDS[definition.type], True)

    errors: Errors = []
    node = parse_tree(raw, "filter", errors, resolve, _check_value)
    if errors or node is None:
        raise RuleViolation(errors or [{"field": "filter", "code": "invalid", "message": "?"}])
    return node


def _check_value(found: Field, op: str, value: Any) -> tuple[Any, str | None]:
    """A condition's value as SQL compares it: numbers as floats, dates as ISO days, tags and
    list names normalised as contacts stores them."""
    if (checked := check_choice(found, op, value)) is not None:
        return checked
    if found.kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None, "a number"
        return float(value), None
    if found.kind == "boolean":
        return (value, None) if isinstance(value, bool) else (None, "true or false")
    if found.kind == "datetime":
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            return None, "an ISO date or date-time"
        return moment.replace(tzinfo=moment.tzinfo or UTC), None
    if found.kind == "date":
        try:
            return date.fromisoformat(str(value)[:10]).isoformat(), None
        except ValueError:
            return None, "an ISO date"
    if not isinstance(value, str) or not value:
        return None, "a non-empty string"
    if found.name == "email":
        return value.strip().lower(), None
    if found.kind == "set":
        return (normalise_tag(value) if found.name == "tags" else normalise_list_name(value)), None
    return value, None


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

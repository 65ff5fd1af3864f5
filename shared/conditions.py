"""The condition language of segments and workflows: its vocabulary, its tree, and the walk that
validates a JSON filter into that tree with the path of every mistake.

`{"and": [...]}`, `{"or": [...]}`, `{"not": {...}}` and conditions
`{"field": "last_interaction_at", "op": "older_than_days", "value": 30}`. Contacts compiles the
tree to SQL for segments; workflows evaluates it in memory for enrollment, branches and event
conditions. What a field name means (core, custom, a run's step) and how a value is checked stay
with each service: they pass them to `parse_tree`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

# The contact model's enumerations, which conditions check values against.
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
ENUM_VALUES: dict[str, tuple[str, ...]] = {
    "lifecycle_stage": LIFECYCLE_STAGES,
    "subscription_status": SUBSCRIPTION_STATUSES,
    "churn_reason": CHURN_REASONS,
}

# "multi" is a multi-select custom field; "any" a field whose kind only its value tells (an
# event's property, or a custom field workflows knows no definition of).
FieldKind = Literal["text", "enum", "number", "datetime", "date", "boolean", "set", "multi", "any"]

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
    "multi": ("contains", "not_contains", *EMPTY_OPS),
}
OPS_BY_KIND["any"] = tuple(dict.fromkeys(op for ops in OPS_BY_KIND.values() for op in ops))
MAX_DEPTH = 8
MAX_CONDITIONS = 50
Errors = list[dict[str, str]]


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


@dataclass(frozen=True)
class Field:
    """What a condition's field name resolved to: the name it is stored under, its kind."""

    name: str
    kind: FieldKind
    custom: bool = False


# A field name → what it is, or None when no such field exists.
FieldResolver = Callable[[str], Field | None]
# (field, op, raw value) → (the value to keep, None) or (None, what a valid value looks like).
ValueChecker = Callable[[Field, str, Any], tuple[Any, str | None]]


def is_time_based(node: Filter) -> bool:
    if isinstance(node, Condition):
        return node.time_based
    return any(is_time_based(c) for c in node.children)


def valid_days(value: Any) -> bool:
    """A relative-date condition's value: a whole number of days, up to a century."""
    return not isinstance(value, bool) and isinstance(value, int) and 0 <= value <= 36500


def parse_tree(
    raw: Any, path: str, errors: Errors, resolve: FieldResolver, check: ValueChecker
) -> Filter | None:
    """Validate a JSON filter into a tree, appending every mistake (with its path) to `errors`;
    None when there was one."""
    count = [0]
    node = _walk(raw, path, 0, errors, count, resolve, check)
    if count[0] > MAX_CONDITIONS:
        errors.append({"field": path, "code": "too_many", "message": f"at most {MAX_CONDITIONS}"})
    return node


def _walk(
    raw: Any,
    path: str,
    depth: int,
    errors: Errors,
    count: list[int],
    resolve: FieldResolver,
    check: ValueChecker,
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
            child = _walk(raw["not"], f"{path}.not", depth + 1, errors, count, resolve, check)
            return Group("not", (child,)) if child is not None else None
        items = raw[key]
        if not isinstance(items, list) or not items:
            fail("empty_group", f"`{key}` needs a non-empty list", f"{path}.{key}")
            return None
        children = [
            _walk(item, f"{path}.{key}[{i}]", depth + 1, errors, count, resolve, check)
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
    found = resolve(name)
    if found is None:
        fail("unknown_field", f"no field {name!r}", f"{path}.field")
        return None
    allowed = OPS_BY_KIND[found.kind]
    if op not in allowed:
        fail("invalid_op", f"{found.name} takes {list(allowed)}", f"{path}.op")
        return None
    if op in EMPTY_OPS:
        return Condition(found.name, found.kind, op, None, found.custom)
    value, problem = check(found, op, raw.get("value"))
    if problem:
        fail("invalid_value", problem, f"{path}.value")
        return None
    return Condition(found.name, found.kind, op, value, found.custom)


def check_choice(found: Field, op: str, value: Any) -> tuple[Any, str | None] | None:
    """The checks both services make alike: days of a relative-date condition, the list of `in`
    and `not_in`, and an enumeration's members. None when the value is for the caller to
    check."""
    if op in RELATIVE_OPS:
        return (value, None) if valid_days(value) else (None, "a whole number of days")
    enum = ENUM_VALUES.get(found.name) if found.kind == "enum" else None
    if op in ("in", "not_in"):
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            return None, "a non-empty list of strings"
        if enum is not None and (bad := [v for v in value if v not in enum]):
            return None, f"{bad} not in {list(enum)}"
        return tuple(value), None
    if enum is not None and isinstance(value, str) and value and value not in enum:
        return None, f"one of {list(enum)}"
    return None

"""The condition grammar both services parse with: contacts' segments and workflows' conditions
must refuse the same malformed trees with the same codes and paths."""

from __future__ import annotations

from typing import Any

import pytest

from services.contacts.domain import RuleViolation
from services.contacts.segments.domain import parse_filter
from services.workflows.conditions import domain as workflows_conditions
from shared.conditions import MAX_CONDITIONS, MAX_DEPTH, Condition, Group


def contacts_errors(raw: Any) -> list[dict[str, str]]:
    try:
        parse_filter(raw, {})
    except RuleViolation as exc:
        return exc.errors
    return []


def workflows_errors(raw: Any) -> list[dict[str, str]]:
    errors: list[dict[str, str]] = []
    workflows_conditions.parse(raw, "filter", "contact", errors)
    return errors


def nested(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"field": "email", "op": "is_empty"}
    for _ in range(depth):
        node = {"not": node}
    return node


@pytest.mark.parametrize(
    ("raw", "code", "path"),
    [
        ([], "not_an_object", "filter"),
        ({"and": [], "or": []}, "ambiguous", "filter"),
        ({"or": []}, "empty_group", "filter.or"),
        ({"and": [{"op": "eq"}]}, "invalid_condition", "filter.and[0]"),
        ({"field": "nope", "op": "eq", "value": "x"}, "unknown_field", "filter.field"),
        ({"field": "score", "op": "contains", "value": "x"}, "invalid_op", "filter.op"),
        ({"field": "lifecycle_stage", "op": "eq", "value": "vip"}, "invalid_value", "filter.value"),
        (
            {"field": "lifecycle_stage", "op": "in", "value": ["lead", "vip"]},
            "invalid_value",
            "filter.value",
        ),
        (
            {"field": "created_at", "op": "within_last_days", "value": -1},
            "invalid_value",
            "filter.value",
        ),
        ({"field": "score", "op": "gt", "value": "high"}, "invalid_value", "filter.value"),
        (nested(MAX_DEPTH + 1), "too_deep", "filter" + ".not" * (MAX_DEPTH + 1)),
        (
            {"or": [{"field": "email", "op": "is_empty"}] * (MAX_CONDITIONS + 1)},
            "too_many",
            "filter",
        ),
    ],
)
def test_both_services_refuse_alike(raw: Any, code: str, path: str) -> None:
    for errors in (contacts_errors(raw), workflows_errors(raw)):
        assert [(e["code"], e["field"]) for e in errors] == [(code, path)]


def test_both_services_build_the_same_tree() -> None:
    raw = {
        "and": [
            {"field": "lifecycle_stage", "op": "in", "value": ["lead", "mql"]},
            {"not": {"field": "email", "op": "is_empty"}},
            {"field": "score", "op": "gte", "value": 50},
        ]
    }
    expected = Group(
        "and",
        (
            Condition("lifecycle_stage", "enum", "in", ("lead", "mql")),
            Group("not", (Condition("email", "text", "is_empty", None),)),
            Condition("score", "number", "gte", 50.0),
        ),
    )
    assert parse_filter(raw, {}) == expected
    assert workflows_conditions.parse(raw, "filter", "contact", []) == expected

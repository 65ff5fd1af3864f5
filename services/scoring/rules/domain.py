"""The scoring rule language: a versioned rule set per workspace, its validation (every error
with its path) and the compiled matchers that evaluate it. Pure: no I/O.

The models are strict (`"5"` is not a number of points) and forbid unknown keys: they are the
request schema of the rules API, and it must refuse what it does not describe."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.events.contacts import ContactSnapshot
from shared.events.ingest import ENGAGEMENT_TYPES, Engagement

NAME = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
DEFAULT_GROUP = "overall"
DEFAULT_HALF_LIFE_DAYS = 30.0

Op = Literal[
    "eq", "neq", "contains", "contains_any", "in", "not_in", "gt", "gte", "lt", "lte", "exists"
]
LIST_OPS = frozenset({"contains_any", "in", "not_in"})
NUMBER_OPS = frozenset({"gt", "gte", "lt", "lte"})

# What a fit or negative rule may test: the contact snapshot's fields, the email's domain, and
# `custom_fields.<name>` (custom fields are defined in contacts; any name is accepted).
CONTACT_FIELDS = frozenset(ContactSnapshot.model_fields) - {"id", "score", "custom_fields"} | {
    "email_domain"
}
_ENGAGEMENT_BASE = frozenset(Engagement.model_fields) - {"engagement_id", "occurred_at"}
CUSTOM_FIELD = re.compile(r"^custom_fields\.[A-Za-z0-9_-]{1,100}$")
PROPERTY = re.compile(r"^properties\.[A-Za-z0-9_-]{1,100}$")


class Condition(BaseModel):
    """`field` `op` `value`, e.g. `url contains /pricing`, `company_size gte 50`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    field: str
    op: Op
    value: Any = None


class Limit(BaseModel):
    """A frequency cap: the rule awards its points at most `times` times per `per_days`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    times: int = Field(gt=0)
    per_days: float = Field(gt=0)


class Rule(BaseModel):
    """Engagement rules match an event type (and conditions on it); fit and negative rules
    match the contact's attributes. Points go to one score group."""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: str = Field(pattern=NAME)
    kind: Literal["engagement", "fit", "negative"]
    event: str | None = None
    when: list[Condition] = Field(default_factory=list)
    points: float
    group: str = Field(default=DEFAULT_GROUP, pattern=NAME)
    limit: Limit | None = None


class Group(BaseModel):
    """A score group: each contact has one score per group; `cap` bounds it."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(pattern=NAME)
    cap: float | None = Field(default=None, gt=0)
    half_life_days: float = Field(default=DEFAULT_HALF_LIFE_DAYS, gt=0)


class Threshold(BaseModel):
    """Crossed up at `at`; crossed down only below `at - margin` (hysteresis)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str = Field(pattern=NAME)
    group: str = Field(default=DEFAULT_GROUP, pattern=NAME)
    at: float
    margin: float = Field(default=5.0, ge=0)


class RuleSetBody(BaseModel):
    """A whole rule set as written (YAML or JSON)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    groups: list[Group] = Field(default_factory=lambda: [Group(name=DEFAULT_GROUP)])
    thresholds: list[Threshold] = Field(default_factory=list)
    rules: list[Rule] = Field(default_factory=list)


@dataclass(frozen=True)
class Problem:
    """One validation error: where (a dotted path into the rule set), a code and a message."""

    path: str
    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.path, "code": self.code, "message": self.message}


class InvalidRuleSet(ValueError):
    """A rule set with errors; `problems` lists every one of them."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__("; ".join(f"{p.path}: {p.message}" for p in problems))
        self.problems = list(problems)


def parse_rule_set(raw: Any) -> RuleSetBody:
    """A valid rule set from its JSON/YAML shape, or InvalidRuleSet with every error's path."""
    try:
        body = RuleSetBody.model_validate(raw)
    except ValidationError as exc:
        raise InvalidRuleSet(
            [
                Problem(".".join(str(p) for p in e["loc"]) or "body", e["type"], e["msg"])
                for e in exc.errors()
            ]
        ) from None
    problems = check(body)
    if problems:
        raise InvalidRuleSet(problems)
    return body


def check(body: RuleSetBody) -> list[Problem]:
    """The errors a schema cannot see: references, kinds, fields, order."""
    problems: list[Problem] = []
    groups = [g.name for g in body.groups]
    for i, name in enumerate(groups):
        if name in groups[:i]:
            problems.append(Problem(f"groups.{i}.name", "duplicate", f"group {name!r} repeats"))
    ids: set[str] = set()
    for i, rule in enumerate(body.rules):
        at = f"rules.{i}"
        if rule.id in ids:
            problems.append(Problem(f"{at}.id", "duplicate", f"rule id {rule.id!r} repeats"))
        ids.add(rule.id)
        if rule.group not in groups:
            problems.append(Problem(f"{at}.group", "unknown_group", f"no group {rule.group!r}"))
        problems.extend(_check_rule(rule, at))
    last: dict[str, tuple[float, set[str]]] = {}
    for i, threshold in enumerate(body.thresholds):
        at = f"thresholds.{i}"
        if threshold.group not in groups:
            problems.append(
                Problem(f"{at}.group", "unknown_group", f"no group {threshold.group!r}")
            )
        level, names = last.get(threshold.group, (float("-inf"), set()))
        if threshold.at <= level:
            problems.append(
                Problem(
                    f"{at}.at",
                    "out_of_order",
                    f"thresholds of a group must rise: {threshold.at:g} after {level:g}",
                )
            )
        if threshold.name in names:
            problems.append(
                Problem(f"{at}.name", "duplicate", f"threshold {threshold.name!r} repeats")
            )
        last[threshold.group] = (max(level, threshold.at), names | {threshold.name})
    return problems


def _check_rule(rule: Rule, at: str) -> list[Problem]:
    problems: list[Problem] = []
    if rule.kind == "engagement":
        if rule.event is None:
            problems.append(Problem(f"{at}.event", "missing", "an engagement rule needs `event`"))
        elif rule.event not in ENGAGEMENT_TYPES:
            known = ", ".join(sorted(ENGAGEMENT_TYPES))
            problems.append(
                Problem(f"{at}.event", "unknown_event", f"unknown {rule.event!r}; known: {known}")
            )
        if rule.points == 0:
            problems.append(Problem(f"{at}.points", "zero", "points must not be 0"))
    else:
        if rule.event is not None:
            problems.append(
                Problem(f"{at}.event", "unexpected", f"a {rule.kind} rule has no event")
            )
        if rule.limit is not None:
            problems.append(Problem(f"{at}.limit", "unexpected", "only engagement rules limit"))
        if rule.kind == "fit" and rule.points <= 0:
            problems.append(Problem(f"{at}.points", "not_positive", "fit points must be > 0"))
        if rule.kind == "negative" and rule.points >= 0:
            problems.append(Problem(f"{at}.points", "not_negative", "negative points must be < 0"))
        if not rule.when:
            problems.append(
                Problem(f"{at}.when", "missing", f"a {rule.kind} rule needs a condition")
            )
    for j, condition in enumerate(rule.when):
        problems.extend(_check_condition(rule, condition, f"{at}.when.{j}"))
    return problems


def _check_condition(rule: Rule, condition: Condition, at: str) -> list[Problem]:
    problems = []
    if not _field_exists(rule, condition.field):
        problems.append(
            Problem(f"{at}.field", "unknown_field", f"no field {condition.field!r} to test here")
        )
    value = condition.value
    if condition.op in LIST_OPS and not (isinstance(value, list) and value):
        problems.append(Problem(f"{at}.value", "not_a_list", f"`{condition.op}` takes a list"))
    if condition.op in NUMBER_OPS and (
        not isinstance(value, int | float) or isinstance(value, bool)
    ):
        problems.append(Problem(f"{at}.value", "not_a_number", f"`{condition.op}` takes a number"))
    if condition.op in {"eq", "neq", "contains"} and (value is None or isinstance(value, list)):
        problems.append(Problem(f"{at}.value", "not_a_scalar", f"`{condition.op}` takes a value"))
    if condition.op == "exists" and not isinstance(value, bool | None):
        problems.append(Problem(f"{at}.value", "not_a_boolean", "`exists` takes true or false"))
    return problems


def _field_exists(rule: Rule, name: str) -> bool:
    if rule.kind != "engagement":
        return name in CONTACT_FIELDS or bool(CUSTOM_FIELD.match(name))
    if PROPERTY.match(name):
        return True
    model = ENGAGEMENT_TYPES.get(rule.event or "")
    fields = frozenset(model.model_fields) if model else _ENGAGEMENT_BASE
    return name in fields - {"engagement_id", "occurred_at", "properties"}


# --- evaluation -----------------------------------------------------------------------------

Lookup = Callable[[str], Any]


def lookup_in(record: Mapping[str, Any]) -> Lookup:
    """Field access into an event's data or a contact's attributes: `properties.x`,
    `custom_fields.x` and the derived `email_domain`."""

    def get(name: str) -> Any:
        head, _, tail = name.partition(".")
        if tail:
            nested = record.get(head)
            return nested.get(tail) if isinstance(nested, dict) else None
        if name == "email_domain":
            email = record.get("email")
            return email.rsplit("@", 1)[-1].lower() if isinstance(email, str) else None
        return record.get(name)

    return get


def _number(value: Any) -> float | None:
    """A number, or the lower bound of a range written as text (`"51-200"`, `"1000+"`)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        found = re.match(r"^\s*(-?\d+(?:\.\d+)?)", value)
        return float(found.group(1)) if found else None
    return None


def _fold(value: Any) -> Any:
    return value.casefold() if isinstance(value, str) else value


def _contains(haystack: Any, needle: Any) -> bool:
    if isinstance(haystack, str):
        return str(needle).casefold() in haystack.casefold()
    if isinstance(haystack, list):
        return _fold(needle) in {_fold(item) for item in haystack}
    return False


def matches(condition: Condition, get: Lookup) -> bool:
    """Whether a record satisfies one condition; text compares case-insensitively."""
    actual = get(condition.field)
    op, value = condition.op, condition.value
    if op == "exists":
        return (actual not in (None, "", [])) == (value is not False)
    if actual is None:
        return op in {"neq", "not_in"}
    if op == "eq":
        return bool(_fold(actual) == _fold(value))
    if op == "neq":
        return bool(_fold(actual) != _fold(value))
    if op == "contains":
        return _contains(actual, value)
    if op == "contains_any":
        return any(_contains(actual, v) for v in value)
    if op in {"in", "not_in"}:
        folded = {_fold(v) for v in value}
        inside = (
            any(_fold(a) in folded for a in actual)
            if isinstance(actual, list)
            else _fold(actual) in folded
        )
        return inside == (op == "in")
    number = _number(actual)
    if number is None:
        return False
    bound = float(value)
    return {
        "gt": number > bound,
        "gte": number >= bound,
        "lt": number < bound,
        "lte": number <= bound,
    }[op]


@dataclass(frozen=True)
class RuleSet:
    """A saved, valid rule set: its version and body, indexed for evaluation."""

    version: int
    body: RuleSetBody
    groups: dict[str, Group] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "groups", {g.name: g for g in self.body.groups})

    @cached_property
    def engagement_rules(self) -> dict[str, list[Rule]]:
        """Engagement rules by the event type they match."""
        by_type: dict[str, list[Rule]] = {}
        for rule in self.body.rules:
            if rule.kind == "engagement" and rule.event:
                by_type.setdefault(rule.event, []).append(rule)
        return by_type

    @cached_property
    def attribute_rules(self) -> list[Rule]:
        """Fit and negative rules."""
        return [r for r in self.body.rules if r.kind != "engagement"]

    def thresholds(self, group: str) -> list[Threshold]:
        """The group's thresholds (a shared list: callers only read it)."""
        return self._thresholds.get(group, [])

    @cached_property
    def _thresholds(self) -> dict[str, list[Threshold]]:
        by_group: dict[str, list[Threshold]] = {}
        for threshold in self.body.thresholds:
            by_group.setdefault(threshold.group, []).append(threshold)
        return by_group

    @cached_property
    def rules_by_id(self) -> dict[str, Rule]:
        return {r.id: r for r in self.body.rules}

    @cached_property
    def _by_event(self) -> dict[str, tuple[list[Rule], list[Rule]]]:
        """Per event type: the rules without conditions, and those with some."""
        return {
            event: ([r for r in rules if not r.when], [r for r in rules if r.when])
            for event, rules in self.engagement_rules.items()
        }

    def matching_engagement(self, event_type: str, data: Mapping[str, Any]) -> list[Rule]:
        """The engagement rules an event satisfies (frequency limits are the state's business).
        The list returned may be shared: callers only read it."""
        found = self._by_event.get(event_type)
        if found is None:
            return []
        plain, conditional = found
        if not conditional:
            return plain
        get = lookup_in(data)
        return plain + [r for r in conditional if all(matches(c, get) for c in r.when)]

    def matching_attributes(self, attributes: Mapping[str, Any]) -> list[Rule]:
        """The fit and negative rules a contact's attributes satisfy."""
        get = lookup_in(attributes)
        return [r for r in self.attribute_rules if all(matches(c, get) for c in r.when)]


FREE_MAIL_DOMAINS = [
    "gmail.com",
    "googlemail.com",
    "yahoo.com",
    "hotmail.com",
    "outlook.com",
    "live.com",
    "aol.com",
    "icloud.com",
    "gmx.de",
    "web.de",
    "proton.me",
    "protonmail.com",
]

DEFAULT_RULE_SET: dict[str, Any] = {
    "groups": [{"name": DEFAULT_GROUP, "cap": 200, "half_life_days": DEFAULT_HALF_LIFE_DAYS}],
    "thresholds": [
        {"name": "mql", "at": 50, "margin": 5},
        {"name": "sql", "at": 80, "margin": 5},
    ],
    "rules": [
        {
            "id": "pricing-page",
            "kind": "engagement",
            "event": "page.viewed",
            "when": [{"field": "url", "op": "contains", "value": "/pricing"}],
            "points": 10,
        },
        {"id": "demo-requested", "kind": "engagement", "event": "demo.requested", "points": 30},
        {"id": "meeting-booked", "kind": "engagement", "event": "meeting.booked", "points": 20},
        {
            "id": "content-downloaded",
            "kind": "engagement",
            "event": "content.downloaded",
            "points": 5,
        },
        {
            "id": "webinar-registered",
            "kind": "engagement",
            "event": "webinar.registered",
            "points": 5,
        },
        {
            "id": "email-opened",
            "kind": "engagement",
            "event": "email.opened",
            "points": 1,
            "limit": {"times": 5, "per_days": 30},
        },
        {
            "id": "email-clicked",
            "kind": "engagement",
            "event": "email.clicked",
            "points": 3,
            "limit": {"times": 10, "per_days": 30},
        },
        {
            "id": "senior-title",
            "kind": "fit",
            "when": [
                {"field": "job_title", "op": "contains_any", "value": ["VP", "Head", "Director"]}
            ],
            "points": 15,
        },
        {
            "id": "company-size",
            "kind": "fit",
            "when": [{"field": "custom_fields.company_size", "op": "gte", "value": 50}],
            "points": 10,
        },
        {
            "id": "target-country",
            "kind": "fit",
            "when": [{"field": "country", "op": "in", "value": ["US", "GB", "DE", "FR", "NL"]}],
            "points": 5,
        },
        {
            "id": "unsubscribed",
            "kind": "negative",
            "when": [{"field": "subscription_status", "op": "eq", "value": "unsubscribed"}],
            "points": -20,
        },
        {
            "id": "free-mail",
            "kind": "negative",
            "when": [{"field": "email_domain", "op": "in", "value": FREE_MAIL_DOMAINS}],
            "points": -5,
        },
    ],
}


@functools.cache
def default_rule_set() -> RuleSet:
    """What a workspace scores by before it saves a rule set of its own (version 0); parsed
    once (a `RuleSet` is never changed)."""
    return RuleSet(0, parse_rule_set(DEFAULT_RULE_SET))

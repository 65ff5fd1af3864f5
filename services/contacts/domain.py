"""Pure rules of the contacts service: identity, captures, fields, merges, lifecycle, segments,
rotation, duplicates and KPIs. No I/O: everything here is a function of its arguments."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

import idna
import phonenumbers
from rapidfuzz import fuzz

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
FIELD_TYPES: tuple[str, ...] = ("text", "number", "date", "boolean", "select", "multi_select")
ROTATION_RULES: tuple[str, ...] = ("round_robin", "weighted")

# Core fields a person can write (over the API or by `contact.set_field`).
TEXT_FIELDS: tuple[str, ...] = (
    "first_name",
    "last_name",
    "company",
    "job_title",
    "country",
    "source",
)
IDENTITY_FIELDS: tuple[str, ...] = ("email", "phone")
WRITABLE_CORE_FIELDS: tuple[str, ...] = IDENTITY_FIELDS + TEXT_FIELDS
# Fields a merge chooses between (identity included: the survivor may take the other's email).
MERGEABLE_FIELDS: tuple[str, ...] = (
    *WRITABLE_CORE_FIELDS,
    "lifecycle_stage",
    "owner_id",
    "subscription_status",
    "churn_reason",
    "churn_reason_text",
    "score",
    "last_interaction_at",
)

Clock = Callable[[], datetime]


def system_clock() -> datetime:
    return datetime.now(UTC)


class RuleViolation(Exception):
    """A write breaks a rule; `errors` name each failing field, a machine code and the reason."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{e['field']} ({e['code']}): {e['message']}" for e in errors))
        self.errors = errors


def violation(field_name: str, code: str, message: str) -> RuleViolation:
    return RuleViolation([{"field": field_name, "code": code, "message": message}])


def is_empty(value: Any) -> bool:
    return value is None or value == "" or value == [] or value == {}


# --- identity -------------------------------------------------------------------------------


def normalise_email(raw: str | None) -> str | None:
    """Trimmed and lower-cased: contacts treats addresses case-insensitively, like mail users do."""
    if raw is None:
        return None
    email = raw.strip().lower()
    if not email:
        return None
    if email.count("@") != 1 or email.startswith("@") or email.endswith("@") or " " in email:
        raise violation("email", "invalid_email", f"{raw!r} is not an email address")
    local, _, host = email.partition("@")
    # An internationalised domain in the form ingest stores it (email-validator's rule): IDNA
    # (ASCII) beside an ASCII local part, Unicode beside an internationalised local part.
    try:
        if local.isascii() and not host.isascii():
            host = idna.encode(host, uts46=True).decode()
        elif not local.isascii() and "xn--" in host:
            host = idna.decode(host)
    except idna.IDNAError as exc:
        raise violation("email", "invalid_email", f"{raw!r} has an invalid domain") from exc
    return f"{local}@{host}"


def normalise_phone(raw: str | None, region: str | None = None) -> str | None:
    """E.164 (`+4930123456`); a national number needs the contact's country as its region."""
    if raw is None or not raw.strip():
        return None
    try:
        number = phonenumbers.parse(raw, (region or "").upper() or None)
    except phonenumbers.NumberParseException as exc:
        raise violation("phone", "invalid_phone", f"{raw!r} is not a phone number") from exc
    if not phonenumbers.is_valid_number(number):
        raise violation("phone", "invalid_phone", f"{raw!r} is not a valid phone number")
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def email_local_key(email: str) -> str:
    """The local part with plus-tags and dots removed: `j.doe+news@x` and `jdoe@x` collide."""
    local, _, domain = email.partition("@")
    local = local.split("+", 1)[0].replace(".", "")
    return f"{local}@{domain}"


@dataclass(frozen=True)
class Capture:
    """The person a `lead.captured` event describes, normalised for matching and writing."""

    email: str | None
    phone: str | None
    fields: dict[str, Any]  # core text fields, non-empty only
    custom_fields: dict[str, Any]  # non-empty only
    tags: tuple[str, ...]


def capture_from_lead(
    email: str | None,
    phone: str | None,
    fields: Mapping[str, Any],
    custom_fields: Mapping[str, Any],
    tags: Iterable[str],
) -> Capture:
    """Tidy a captured lead's fields. Its identity is taken as ingest published it: the email
    by ingest's identity rule (see `LeadCaptured.email`), the phone in E.164; never parsed
    again."""
    return Capture(
        email=email or None,
        phone=phone or None,
        fields={k: v.strip() for k, v in fields.items() if isinstance(v, str) and v.strip()},
        custom_fields={k: v for k, v in custom_fields.items() if not is_empty(v)},
        tags=tuple(dict.fromkeys(normalise_tag(t) for t in tags if t and t.strip())),
    )


def match_contact(
    capture: Capture, by_email: Mapping[str, str], by_phone: Mapping[str, str]
) -> tuple[str | None, str]:
    """Which contact a capture belongs to: same email, else same phone, else none (a new one)."""
    if capture.email and capture.email in by_email:
        return by_email[capture.email], "email"
    if capture.phone and capture.phone in by_phone:
        return by_phone[capture.phone], "phone"
    return None, "new"


def capture_changes(
    current: Mapping[str, Any], capture: Capture, phone_taken: bool, email_taken: bool
) -> dict[str, Any]:
    """What a capture changes on an existing contact.

    Empty values never overwrite filled ones. A filled identity (email, phone) is never replaced
    by a capture: the person is found by it, and the other value stays on the timeline. Other
    fields take the newest non-empty value. An identity another contact holds is not copied.
    """
    changes: dict[str, Any] = {}
    if capture.email and not current.get("email") and not email_taken:
        changes["email"] = capture.email
    if capture.phone and not current.get("phone") and not phone_taken:
        changes["phone"] = capture.phone
    for name, value in capture.fields.items():
        if current.get(name) != value:
            changes[name] = value
    custom = dict(current.get("custom_fields") or {})
    merged = custom | capture.custom_fields
    if merged != custom:
        changes["custom_fields"] = merged
    return changes


def normalise_tag(tag: str) -> str:
    return tag.strip().lower()[:100]


def normalise_list_name(name: str) -> str:
    clean = re.sub(r"[^a-z0-9_-]+", "-", name.strip().lower()).strip("-")
    if not clean:
        raise violation("list", "invalid_list", "a list name needs letters or digits")
    return clean[:100]


# --- custom fields --------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldDefinition:
    """A workspace's custom field: its type, whether it is required, and its validation."""

    name: str
    type: str
    label: str | None = None
    required: bool = False
    options: tuple[str, ...] = ()
    min: float | None = None
    max: float | None = None
    max_length: int | None = None
    pattern: str | None = None


# Out of the box, every workspace has these as ordinary custom fields (it may redefine them).
DEFAULT_FIELDS: dict[str, FieldDefinition] = {
    d.name: d
    for d in (
        FieldDefinition("subscription_end_date", "date", "Subscription end date"),
        FieldDefinition("product_requests", "multi_select", "Product requests"),
        FieldDefinition("industry", "text", "Industry", max_length=200),
        FieldDefinition(
            "company_size",
            "select",
            "Company size",
            options=("1-10", "11-50", "51-200", "201-1000", "1001-5000", "5000+"),
        ),
    )
}
FIELD_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
RESERVED_FIELD_NAMES = frozenset(
    {*MERGEABLE_FIELDS, "id", "tags", "lists", "created_at", "updated_at", "custom_fields"}
)


def check_definition(definition: FieldDefinition) -> None:
    """A field definition must be well-formed before it can validate anything."""
    errors: list[dict[str, str]] = []
    if not FIELD_NAME_RE.match(definition.name) or definition.name in RESERVED_FIELD_NAMES:
        errors.append(
            {
                "field": "name",
                "code": "invalid_name",
                "message": "lower-case letters, digits and _; not a core field name",
            }
        )
    if definition.type not in FIELD_TYPES:
        errors.append({"field": "type", "code": "invalid_type", "message": f"one of {FIELD_TYPES}"})
    if definition.type in ("select",) and not definition.options:
        errors.append(
            {"field": "options", "code": "required", "message": "a select field needs options"}
        )
    if definition.pattern is not None:
        try:
            re.compile(definition.pattern)
        except re.error:
            errors.append({"field": "pattern", "code": "invalid_pattern", "message": "not a regex"})
    if errors:
        raise RuleViolation(errors)


def validate_field_value(definition: FieldDefinition, value: Any, optional: bool = False) -> Any:
    """The stored form of a custom field value, or RuleViolation naming the field and reason."""
    name = f"custom_fields.{definition.name}"
    if is_empty(value):
        if definition.required and not optional:
            raise violation(name, "required", f"{definition.name} is required")
        return None
    kind = definition.type
    if kind == "text" or kind == "select":
        if not isinstance(value, str):
            raise violation(name, "not_text", "must be a string")
        value = value.strip()
        if kind == "select" and definition.options and value not in definition.options:
            raise violation(name, "not_an_option", f"must be one of {list(definition.options)}")
        if definition.max_length is not None and len(value) > definition.max_length:
            raise violation(name, "too_long", f"at most {definition.max_length} characters")
        if definition.pattern is not None and not re.fullmatch(definition.pattern, value):
            raise violation(name, "pattern", f"must match {definition.pattern}")
        return value
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise violation(name, "not_a_number", "must be a number")
        try:
            number = float(value)
        except ValueError as exc:
            raise violation(name, "not_a_number", "must be a number") from exc
        if definition.min is not None and number < definition.min:
            raise violation(name, "too_small", f"at least {definition.min}")
        if definition.max is not None and number > definition.max:
            raise violation(name, "too_large", f"at most {definition.max}")
        return int(number) if number.is_integer() else number
    if kind == "date":
        try:
            return date.fromisoformat(str(value)[:10]).isoformat()
        except ValueError as exc:
            raise violation(name, "not_a_date", "must be an ISO date (YYYY-MM-DD)") from exc
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise violation(name, "not_a_boolean", "must be true or false")
    if kind == "multi_select":
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
            raise violation(name, "not_a_list", "must be a list of strings")
        clean = list(dict.fromkeys(i.strip() for i in items if i.strip()))
        if definition.options:
            bad = [i for i in clean if i not in definition.options]
            if bad:
                raise violation(
                    name, "not_an_option", f"{bad} not among {list(definition.options)}"
                )
        return clean
    raise violation(name, "invalid_type", f"unknown field type {kind}")


def validate_custom_fields(
    values: Mapping[str, Any],
    definitions: Mapping[str, FieldDefinition],
    *,
    existing: Mapping[str, Any] | None = None,
    check_required: bool = False,
    allow_unknown: bool = False,
) -> dict[str, Any]:
    """The new custom fields after applying `values`; raises listing every failing field."""
    result = dict(existing or {})
    errors: list[dict[str, str]] = []
    for name, value in values.items():
        definition = definitions.get(name)
        if definition is None:
            if allow_unknown:
                result[name] = value
                continue
            errors.append(
                {
                    "field": f"custom_fields.{name}",
                    "code": "unknown_field",
                    "message": f"no custom field {name!r} is defined",
                }
            )
            continue
        try:
            clean = validate_field_value(definition, value)
        except RuleViolation as exc:
            errors.extend(exc.errors)
            continue
        if clean is None:
            result.pop(name, None)
        else:
            result[name] = clean
    if check_required:
        for definition in definitions.values():
            if definition.required and is_empty(result.get(definition.name)):
                errors.append(
                    {
                        "field": f"custom_fields.{definition.name}",
                        "code": "required",
                        "message": f"{definition.name} is required",
                    }
                )
    if errors:
        raise RuleViolation(errors)
    return result


def invalid_custom_values(
    values: Mapping[str, Any], definitions: Mapping[str, FieldDefinition]
) -> list[dict[str, str]]:
    """Every stored value that breaks its definition (for the data-quality report)."""
    errors: list[dict[str, str]] = []
    for name, value in values.items():
        definition = definitions.get(name)
        if definition is None:
            continue
        try:
            validate_field_value(definition, value)
        except RuleViolation as exc:
            errors.extend(exc.errors)
    return errors


def accept_captured_fields(
    values: Mapping[str, Any], definitions: Mapping[str, FieldDefinition]
) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """A capture keeps every valid custom value (undefined ones as sent) and reports the rest."""
    accepted: dict[str, Any] = {}
    rejected: list[dict[str, str]] = []
    for name, value in values.items():
        definition = definitions.get(name)
        if definition is None:
            accepted[name] = value
            continue
        try:
            clean = validate_field_value(definition, value, optional=True)
        except RuleViolation as exc:
            rejected.extend(exc.errors)
            continue
        if clean is not None:
            accepted[name] = clean
    return accepted, rejected


# --- lifecycle ------------------------------------------------------------------------------


@dataclass(frozen=True)
class LifecycleChange:
    to_stage: str
    churn_reason: str | None
    churn_reason_text: str | None


def check_lifecycle_change(
    stage: str, churn_reason: str | None, churn_reason_text: str | None
) -> LifecycleChange:
    """A valid stage; `churned` needs a known reason, and `other` needs its text."""
    if stage not in LIFECYCLE_STAGES:
        raise violation("lifecycle_stage", "invalid_stage", f"one of {list(LIFECYCLE_STAGES)}")
    if stage != "churned":
        return LifecycleChange(stage, None, None)
    if churn_reason not in CHURN_REASONS:
        raise violation(
            "churn_reason", "churn_reason_required", f"churned needs one of {list(CHURN_REASONS)}"
        )
    text = (churn_reason_text or "").strip() or None
    if churn_reason == "other" and not text:
        raise violation("churn_reason_text", "required", "reason `other` needs a text")
    return LifecycleChange(stage, churn_reason, text)


def check_subscription_status(status: str) -> str:
    if status not in SUBSCRIPTION_STATUSES:
        raise violation(
            "subscription_status", "invalid_status", f"one of {list(SUBSCRIPTION_STATUSES)}"
        )
    return status


# --- merge ----------------------------------------------------------------------------------


def choose_merged_values(
    survivor: Mapping[str, Any],
    merged: Mapping[str, Any],
    choices: Mapping[str, str],
) -> dict[str, Any]:
    """The survivor's values after a merge.

    `choices` picks a side per field (`survivor` or `merged`); otherwise the most recently
    updated non-empty value wins. Custom fields merge key by key the same way.
    """
    survivor_newer = survivor["updated_at"] >= merged["updated_at"]
    newer, older = (survivor, merged) if survivor_newer else (merged, survivor)
    unknown = [
        name
        for name in choices
        if name not in MERGEABLE_FIELDS and not name.startswith("custom_fields.")
    ]
    bad_side = [name for name, side in choices.items() if side not in ("survivor", "merged")]
    if unknown or bad_side:
        raise RuleViolation(
            [
                {"field": f"choices.{n}", "code": "unknown_field", "message": "not mergeable"}
                for n in unknown
            ]
            + [
                {"field": f"choices.{n}", "code": "invalid_side", "message": "survivor|merged"}
                for n in bad_side
            ]
        )

    def pick(name: str, a: Any, b: Any, newer_is_survivor: bool) -> Any:
        side = choices.get(name)
        if side == "survivor":
            return a
        if side == "merged":
            return b
        first, second = (a, b) if newer_is_survivor else (b, a)
        return second if is_empty(first) else first

    result: dict[str, Any] = {}
    for name in MERGEABLE_FIELDS:
        result[name] = pick(name, survivor.get(name), merged.get(name), survivor_newer)
    s_custom = survivor.get("custom_fields") or {}
    m_custom = merged.get("custom_fields") or {}
    custom: dict[str, Any] = {}
    for key in dict.fromkeys([*newer.get("custom_fields", {}), *older.get("custom_fields", {})]):
        value = pick(f"custom_fields.{key}", s_custom.get(key), m_custom.get(key), survivor_newer)
        if not is_empty(value):
            custom[key] = value
    result["custom_fields"] = custom
    if result["lifecycle_stage"] != "churned":
        result["churn_reason"] = None
        result["churn_reason_text"] = None
    return result


# --- owner rotation -------------------------------------------------------------------------


@dataclass(frozen=True)
class RotationMember:
    """An owner in a team's rotation, with its weight and smooth-weighted running credit."""

    owner_id: str
    active: bool
    weight: int = 1
    credit: int = 0


def pick_round_robin(members: Sequence[RotationMember], last_owner_id: str | None) -> str:
    """The next active owner after the last one, in the team's fixed order."""
    active = [m for m in members if m.active]
    if not active:
        raise violation("team_id", "no_active_owner", "the team has no active owner")
    order = [m.owner_id for m in members]
    start = order.index(last_owner_id) + 1 if last_owner_id in order else 0
    for i in range(len(members)):
        candidate = members[(start + i) % len(members)]
        if candidate.active:
            return candidate.owner_id
    raise AssertionError("unreachable: an active owner exists")


def pick_weighted(members: Sequence[RotationMember]) -> tuple[str, dict[str, int]]:
    """Smooth weighted round-robin (as nginx): over any window each active owner gets its share.

    Returns the chosen owner and every active member's new credit.
    """
    active = [m for m in members if m.active and m.weight > 0]
    if not active:
        raise violation("team_id", "no_active_owner", "the team has no active owner")
    total = sum(m.weight for m in active)
    credits = {m.owner_id: m.credit + m.weight for m in active}
    chosen = max(active, key=lambda m: (credits[m.owner_id], -active.index(m))).owner_id
    credits[chosen] -= total
    return chosen, credits


# --- segments: the filter language ----------------------------------------------------------

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


# --- duplicates -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DuplicatePerson:
    id: str
    email: str | None
    phone: str | None
    first_name: str | None
    last_name: str | None
    company: str | None


@dataclass(frozen=True)
class DuplicateCandidate:
    """Two contacts that may be one person, with a 0-100 similarity and why."""

    a: str
    b: str
    score: float
    reasons: tuple[str, ...]


def _full_name(p: DuplicatePerson) -> str:
    return " ".join(x for x in (p.first_name, p.last_name) if x).strip().lower()


def find_duplicates(
    people: Sequence[DuplicatePerson], threshold: float = 85.0
) -> list[DuplicateCandidate]:
    """Candidates beyond exact matches, never merged automatically.

    Blocks people by company, email local-part key and phone's last 8 digits, then scores pairs
    inside each block with rapidfuzz: similar name at the same company, email local-part
    variants (dots, plus-tags, typos at one domain), same phone digits with another email.
    """
    blocks: dict[str, list[DuplicatePerson]] = {}
    for p in people:
        if p.company:
            blocks.setdefault("c:" + p.company.strip().lower(), []).append(p)
        if p.email:
            blocks.setdefault("e:" + email_local_key(p.email), []).append(p)
            blocks.setdefault("d:" + p.email.partition("@")[2], []).append(p)
        if p.phone:
            digits = re.sub(r"\D", "", p.phone)
            blocks.setdefault("p:" + digits[-8:], []).append(p)
    found: dict[tuple[str, str], DuplicateCandidate] = {}
    for key, members in blocks.items():
        if len(members) < 2 or len(members) > 500:
            continue  # a huge block (a free-mail domain) is not a signal by itself
        for i, a in enumerate(members):
            for b in members[i + 1 :]:
                candidate = _compare(a, b, key[0])
                if candidate is None or candidate.score < threshold:
                    continue
                pair = (min(a.id, b.id), max(a.id, b.id))
                previous = found.get(pair)
                if previous is None or previous.score < candidate.score:
                    found[pair] = DuplicateCandidate(
                        pair[0], pair[1], candidate.score, candidate.reasons
                    )
    return sorted(found.values(), key=lambda c: (-c.score, c.a, c.b))


def _compare(a: DuplicatePerson, b: DuplicatePerson, block: str) -> DuplicateCandidate | None:
    if a.id == b.id:
        return None
    name_a, name_b = _full_name(a), _full_name(b)
    if block == "c" and name_a and name_b:
        score = float(fuzz.token_sort_ratio(name_a, name_b))
        return DuplicateCandidate(a.id, b.id, score, ("similar_name_same_company",))
    if block in ("e", "d") and a.email and b.email:
        if email_local_key(a.email) == email_local_key(b.email):
            return DuplicateCandidate(a.id, b.id, 95.0, ("email_local_part_variant",))
        local_a, local_b = a.email.partition("@")[0], b.email.partition("@")[0]
        if block == "d" and min(len(local_a), len(local_b)) >= 5:
            score = float(fuzz.ratio(local_a, local_b))
            if name_a and name_b:
                score = (score + float(fuzz.token_sort_ratio(name_a, name_b))) / 2
            return DuplicateCandidate(a.id, b.id, score, ("email_local_part_variant",))
        return None
    if block == "p" and a.phone and b.phone:
        return DuplicateCandidate(a.id, b.id, 90.0, ("same_phone_other_email",))
    return None


# --- KPIs -----------------------------------------------------------------------------------


def churn_rate(customers_at_start: int, churned_in_period: int) -> float:
    """Customers churned in the period / customers at its start x 100 (0 with no customers)."""
    if customers_at_start <= 0:
        return 0.0
    return round(churned_in_period / customers_at_start * 100, 2)


def funnel_conversions(entered: Mapping[str, int]) -> list[dict[str, Any]]:
    """Conversion between consecutive stages: contacts reaching the next / reaching this x 100."""
    stages = [s for s in LIFECYCLE_STAGES if s != "churned"]
    rows: list[dict[str, Any]] = []
    for here, nxt in itertools.pairwise(stages):
        base = entered.get(here, 0)
        rate = round(entered.get(nxt, 0) / base * 100, 2) if base else None
        rows.append({"from": here, "to": nxt, "rate": rate})
    return rows

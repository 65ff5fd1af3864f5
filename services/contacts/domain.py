"""Pure rules every area of the contacts service shares: identity, tags and lists, custom
fields and the lifecycle. No I/O: everything here is a function of its arguments (each area's
own rules are in its `domain.py`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

import idna
import phonenumbers

# The contact model's enumerations live with the condition language that checks them.
from shared.conditions import CHURN_REASONS as CHURN_REASONS
from shared.conditions import LIFECYCLE_STAGES as LIFECYCLE_STAGES
from shared.conditions import SUBSCRIPTION_STATUSES as SUBSCRIPTION_STATUSES

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
    if not FIELD_NAME_RE.fullmatch(definition.name) or definition.name in RESERVED_FIELD_NAMES:
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


# --- KPIs -----------------------------------------------------------------------------------

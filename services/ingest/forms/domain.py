"""Pure rules of forms: a form's definition (fields, consent, rules) and a post checked
against it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, Literal

import re2
from pydantic import BaseModel, Field, field_validator, model_validator

from services.ingest.domain import (
    CHECKED_VALUES,
    CONSENT_FIELD,
    CONTACT_FIELDS,
    FIELD_NAME_RE,
    MAX_NAME,
    MAX_TEXT,
    TRACKING_FIELDS,
    FieldProblem,
    InvalidValue,
    Rejected,
    Spam,
    Verdict,
    as_text,
    build_lead,
    check_region,
    collapse,
    first_value,
    is_lead_target,
    normalise_date,
    normalise_email,
    normalise_number,
    normalise_phone,
)

FieldType = Literal[
    "email",
    "phone",
    "text",
    "textarea",
    "number",
    "date",
    "select",
    "multi-select",
    "checkbox",
    "hidden",
]


@lru_cache(maxsize=1024)
def author_pattern(pattern: str) -> Any:
    """A form author's validation pattern, compiled with RE2: matching takes linear time
    whatever the pattern, so a pattern like `(a+)+$` cannot stall the process on a crafted
    value (no backreferences or lookarounds; such a pattern is refused when the form is saved)."""
    options = re2.Options()
    options.log_errors = False  # a refused pattern is answered with a 422, not logged to stderr
    return re2.compile(pattern, options)


class FormField(BaseModel):
    """One input of a form and the contact or custom field it fills."""

    name: str = Field(pattern=FIELD_NAME_RE)
    type: FieldType = "text"
    label: str = Field(min_length=1, max_length=200)
    required: bool = False
    max_length: int | None = Field(default=None, ge=1, le=MAX_TEXT)
    pattern: str | None = Field(default=None, max_length=500)
    options: list[str] = Field(default_factory=list, max_length=500)
    # `email`, `phone`, `first_name`, … or `custom.<key>`; by default the field's own name
    # when that is a contact field, else `custom.<name>`.
    maps_to: str | None = None
    placeholder: str | None = Field(default=None, max_length=200)
    help_text: str | None = Field(default=None, max_length=500)

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                author_pattern(value)
            except re2.error as exc:
                reason = exc.args[0].decode() if isinstance(exc.args[0], bytes) else exc.args[0]
                raise ValueError(f"pattern does not compile (RE2 syntax): {reason}") from exc
        return value

    @field_validator("maps_to")
    @classmethod
    def _known_target(cls, value: str | None) -> str | None:
        if value is not None and not is_lead_target(value):
            raise ValueError(f"maps_to must be one of {', '.join(CONTACT_FIELDS)} or custom.<key>")
        return value

    @model_validator(mode="after")
    def _options_for_choices(self) -> FormField:
        if self.type in ("select", "multi-select") and not self.options:
            raise ValueError(f"a {self.type} field needs options")
        return self

    @property
    def target(self) -> str:
        if self.maps_to:
            return self.maps_to
        return self.name if self.name in CONTACT_FIELDS else f"custom.{self.name}"


class ConsentSpec(BaseModel):
    """The consent checkbox (named `consent`) and the text the person agrees to."""

    text: str = Field(min_length=1, max_length=2000)
    required: bool = True


class FormRules(BaseModel):
    """What a submission is checked against: a form's fields, consent and honeypot."""

    fields: list[FormField] = Field(min_length=1, max_length=100)
    consent: ConsentSpec | None = None
    default_region: str | None = None
    honeypot_field: str = Field(default="website", pattern=FIELD_NAME_RE)

    @field_validator("default_region")
    @classmethod
    def _known_region(cls, value: str | None) -> str | None:
        return check_region(value)

    @model_validator(mode="after")
    def _distinct_names(self) -> FormRules:
        names = [f.name for f in self.fields]
        reserved = {*TRACKING_FIELDS, CONSENT_FIELD, self.honeypot_field}
        if len(set(names)) != len(names):
            raise ValueError("field names must be distinct")
        if clash := reserved & set(names):
            raise ValueError(
                f"field names {sorted(clash)} are reserved (tracking, consent, honeypot)"
            )
        return self


def check_form_submission(
    rules: FormRules, data: Mapping[str, Sequence[str]], *, skip_honeypot: bool = False
) -> Verdict:
    """Check a posted form against its definition and map it onto a lead."""
    if not skip_honeypot and first_value(data.get(rules.honeypot_field, ())).strip():
        return Spam("spam.honeypot")
    problems: list[FieldProblem] = []
    mapped: dict[str, Any] = {}

    for spec in rules.fields:
        values = [v for v in data.get(spec.name, ()) if v is not None]
        try:
            value = _check_field(spec, values, rules.default_region)
        except InvalidValue as exc:
            problems.append(FieldProblem(spec.name, exc.code, exc.message))
            continue
        if value is None:
            continue
        target = spec.target
        if target == "tags":
            mapped["tags"] = value if isinstance(value, list) else [str(value)]
        elif target == "consent":
            mapped["consent"] = value
        else:
            mapped[target] = value

    for name in TRACKING_FIELDS:
        if value := first_value(data.get(name, ())).strip():
            mapped.setdefault(name, value)

    if rules.consent is not None:
        checked = first_value(data.get(CONSENT_FIELD, ())).strip().lower() in CHECKED_VALUES
        if rules.consent.required and not checked:
            problems.append(FieldProblem(CONSENT_FIELD, "required", "consent is required"))
        mapped["consent"] = {"granted": checked, "text": rules.consent.text}

    by_target = {spec.target: spec.name for spec in rules.fields}
    clean = frozenset(
        spec.target
        for spec in rules.fields
        if (spec.type, spec.target) in (("email", "email"), ("phone", "phone"))
    )
    verdict = build_lead(mapped, rules.default_region, clean=clean)
    if isinstance(verdict, Rejected):
        for problem in verdict.problems:
            name = by_target.get(problem.field, problem.field)
            if not any(p.field == name for p in problems):
                problems.append(FieldProblem(name, problem.code, problem.message))
    if problems:
        return Rejected(tuple(problems))
    return verdict


def _check_field(spec: FormField, values: list[str], region: str | None) -> Any:
    """The field's clean value, None when empty and optional; raises InvalidValue."""
    if spec.type == "checkbox":
        checked = first_value(values).strip().lower() in CHECKED_VALUES
        if spec.required and not checked:
            raise InvalidValue("required", f"{spec.label} is required")
        return checked
    if spec.type == "multi-select":
        chosen = [v.strip() for v in values if v.strip()]
        if not chosen:
            if spec.required:
                raise InvalidValue("required", f"{spec.label} is required")
            return None
        if unknown := [v for v in chosen if v not in spec.options]:
            raise InvalidValue("not_an_option", f"{unknown[0]!r} is not one of the options")
        return chosen
    raw = first_value(values).strip()
    if not raw:
        if spec.required:
            raise InvalidValue("required", f"{spec.label} is required")
        return None
    limit = spec.max_length or (MAX_TEXT if spec.type == "textarea" else MAX_NAME * 5)
    if len(raw) > limit:
        raise InvalidValue("too_long", f"{spec.label} has at most {limit} characters")
    if spec.pattern is not None and author_pattern(spec.pattern).fullmatch(raw) is None:
        raise InvalidValue("pattern", f"{spec.label} is not in the expected format")
    match spec.type:
        case "email":
            return normalise_email(raw)
        case "phone":
            return normalise_phone(raw, region)
        case "number":
            return normalise_number(raw)
        case "date":
            return normalise_date(raw)
        case "select":
            if raw not in spec.options:
                raise InvalidValue("not_an_option", f"{raw!r} is not one of the options")
            return raw
        case "textarea":
            return raw
        case _:
            return collapse(raw)


def form_values(payload: Mapping[str, Any]) -> dict[str, list[str]]:
    """A JSON form post as the same multi-valued text a browser would send."""
    result: dict[str, list[str]] = {}
    for key, value in payload.items():
        items = value if isinstance(value, list) else [value]
        texts = [t for t in (as_text(item) for item in items) if t is not None]
        result[str(key)] = texts
    return result

"""Ingest's pure rules: form definitions, normalisation, validation, signatures, rate limits.

No I/O here. Normalisation leans on well-kept libraries (email-validator, phonenumbers,
pycountry) rather than regexes of our own.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any, Literal

import phonenumbers
import pycountry
import re2
from email_validator import EmailNotValidError, validate_email
from pydantic import BaseModel, Field, field_validator, model_validator

from shared.events.ingest import (
    ENGAGEMENT_TYPES,
    EmailClicked,
    Engagement,
    PageViewed,
    PurchaseCompleted,
)
from shared.identity import email_identity, phone_identity

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
CONTACT_FIELDS: tuple[str, ...] = (
    "email",
    "phone",
    "first_name",
    "last_name",
    "company",
    "job_title",
    "country",
)
UTM_FIELDS: tuple[str, ...] = (
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
)
# Captured automatically on every form, whatever its definition says.
TRACKING_FIELDS: tuple[str, ...] = (*UTM_FIELDS, "referrer", "page_url")
CONSENT_FIELD = "consent"
FIELD_NAME_RE = r"^[a-z][a-z0-9_]{0,62}$"
CHECKED_VALUES = frozenset({"on", "true", "1", "yes", "checked"})

MAX_EMAIL = 254
MAX_NAME = 200
MAX_TEXT = 10_000
MAX_TRACKING = 2048
MAX_CUSTOM_FIELDS = 100
MAX_TAGS = 50
MAX_TAG = 100  # contacts' own limit on a tag
MAX_CUSTOM_KEY = 100


# ---------------------------------------------------------------------------------------------
# Form definitions


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


def check_region(value: str | None) -> str | None:
    if value is None:
        return None
    region = value.strip().upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError(f"{value!r} is not a phone region (ISO 3166 alpha-2)")
    return region


def is_lead_target(target: str) -> bool:
    if target in CONTACT_FIELDS or target in TRACKING_FIELDS or target in ("tags", "consent"):
        return True
    prefix, _, key = target.partition(".")
    return prefix == "custom" and re.fullmatch(FIELD_NAME_RE, key) is not None


# ---------------------------------------------------------------------------------------------
# Outcomes


@dataclass(frozen=True)
class FieldProblem:
    """One failing field: where, a machine-readable code, and a sentence for people."""

    field: str
    code: str
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "code": self.code, "message": self.message}


class InvalidValue(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class CleanLead:
    """A normalised lead, ready to be published."""

    email: str | None = None
    phone: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    company: str | None = None
    job_title: str | None = None
    country: str | None = None
    custom_fields: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    utm: dict[str, str] = field(default_factory=dict)
    referrer: str | None = None
    page_url: str | None = None
    consent_granted: bool | None = None
    consent_text: str | None = None

    @property
    def dedupe_key(self) -> str:
        """The identity a lead is keyed by: its e-mail address, else its E.164 phone (one
        rule with every service's, `shared.identity`, so an erasure finds what it keys)."""
        if self.email:
            return email_identity(self.email)
        if self.phone:
            return phone_identity(self.phone)
        raise ValueError("a lead without identity has no dedupe key")


@dataclass(frozen=True)
class Accepted:
    lead: CleanLead


@dataclass(frozen=True)
class Rejected:
    problems: tuple[FieldProblem, ...]


@dataclass(frozen=True)
class Spam:
    reason: str


Verdict = Accepted | Rejected | Spam


# ---------------------------------------------------------------------------------------------
# Normalisation of single values


def collapse(value: str) -> str:
    """NFC, trimmed, inner whitespace runs collapsed to one space."""
    return " ".join(unicodedata.normalize("NFC", value).split())


def normalise_email(raw: str) -> str:
    """The identity rule of an e-mail address, applied once, here at the door: trimmed,
    syntax-checked (no DNS), the domain IDNA-encoded, and the whole address lower-cased.

    The local part is case-sensitive in RFC 5321's letter, but no mailbox provider treats it
    so and people type it either way: `Ada@x.org` and `ada@x.org` are one person. Every
    service downstream (contacts above all) takes the published address as it is."""
    value = raw.strip()
    if len(value) > MAX_EMAIL:
        raise InvalidValue("too_long", f"an e-mail address has at most {MAX_EMAIL} characters")
    try:
        checked = validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidValue("invalid_email", str(exc)) from exc
    return (checked.ascii_email or checked.normalized).strip().lower()


def normalise_phone(raw: str, region: str | None) -> str:
    """E.164, parsed with the form's default region for numbers written without +country."""
    value = raw.strip()
    if len(value) > 40:
        raise InvalidValue("too_long", "a phone number has at most 40 characters")
    try:
        number = phonenumbers.parse(value, region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidValue("invalid_phone", f"not a phone number: {exc}") from exc
    if not phonenumbers.is_valid_number(number):
        raise InvalidValue("invalid_phone", "not a valid phone number for its region")
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


PHONE_LIKE = re.compile(r"\+?[0-9 ().\-/]{6,40}")
MAX_LEAVES_SEARCHED = 500


def identities_in(data: Any, region: str | None) -> tuple[str | None, str | None]:
    """The first e-mail address and phone number anywhere in a submission's data, normalised as
    on an accepted lead: how a quarantined submission, which has no lead, names its person."""
    email: str | None = None
    phone: str | None = None
    stack: list[Any] = [data]
    searched = 0
    while stack and searched < MAX_LEAVES_SEARCHED and (email is None or phone is None):
        node = stack.pop()
        if isinstance(node, Mapping):
            stack.extend(reversed(list(node.values())))
        elif isinstance(node, list):
            stack.extend(reversed(node))
        elif isinstance(node, str):
            searched += 1
            text = node.strip()
            try:
                if email is None and "@" in text:
                    email = normalise_email(text)
                elif phone is None and PHONE_LIKE.fullmatch(text):
                    phone = normalise_phone(text, region)
            except InvalidValue:
                continue
    return email, phone


def normalise_country(raw: str) -> str:
    """ISO 3166-1 alpha-2 from a code (alpha-2 or alpha-3) or an English name."""
    value = collapse(raw)
    try:
        country = pycountry.countries.lookup(value)
    except LookupError as exc:
        raise InvalidValue("invalid_country", f"{value!r} is not a known country") from exc
    return str(country.alpha_2)


def normalise_date(raw: str) -> str:
    """ISO 8601: a date stays `YYYY-MM-DD`, a date-time becomes UTC `YYYY-MM-DDTHH:MM:SSZ`."""
    value = raw.strip()
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidValue("invalid_date", "not an ISO 8601 date (YYYY-MM-DD)") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def normalise_number(raw: str) -> int | float:
    try:
        number = Decimal(raw.strip())
    except InvalidOperation as exc:
        raise InvalidValue("not_a_number", "not a number") from exc
    if not number.is_finite():
        raise InvalidValue("not_a_number", "not a finite number")
    return int(number) if number == number.to_integral_value() else float(number)


def normalise_text(raw: str, limit: int = MAX_NAME) -> str:
    value = collapse(raw)
    if len(value) > limit:
        raise InvalidValue("too_long", f"at most {limit} characters")
    return value


def normalise_currency(raw: str) -> str:
    code = raw.strip().upper()
    if pycountry.currencies.get(alpha_3=code) is None:
        raise InvalidValue("invalid_currency", f"{raw!r} is not an ISO 4217 currency")
    return code


# ---------------------------------------------------------------------------------------------
# Leads from flat values (API, webhooks, and the mapped result of a form)


def _first(values: Sequence[str]) -> str:
    return values[0] if values else ""


def _as_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | Decimal | str):
        return str(value)
    return None


def build_lead(
    values: Mapping[str, Any],
    region: str | None,
    *,
    prefix: str = "",
    clean: frozenset[str] = frozenset(),
) -> Accepted | Rejected:
    """A lead from lead-field values (`email`, `phone`, `custom.x`, `utm_source`, …).

    Every failing field is reported, each with a code; a lead needs an e-mail or a phone.
    """
    lead = CleanLead()
    problems: list[FieldProblem] = []

    def fail(name: str, code: str, message: str) -> None:
        problems.append(FieldProblem(prefix + name, code, message))

    def text_of(name: str) -> str | None:
        raw = values.get(name)
        if raw is None:
            return None
        text = _as_text(raw)
        if text is None:
            fail(name, "not_text", "expected text")
            return None
        return text if text.strip() else None

    region = values.get("default_region") or region
    if region is not None:
        try:
            region = check_region(str(region))
        except ValueError:
            fail("default_region", "invalid_region", "not a phone region")
            region = None
    normalisers = {
        "email": normalise_email,
        "phone": lambda raw: normalise_phone(raw, region),
        "first_name": normalise_text,
        "last_name": normalise_text,
        "company": normalise_text,
        "job_title": normalise_text,
        "country": normalise_country,
    }
    for name, normalise in normalisers.items():
        raw = text_of(name)
        if raw is None:
            continue
        if name in clean:  # already normalised by its form field's type
            setattr(lead, name, raw)
            continue
        try:
            setattr(lead, name, normalise(raw))
        except InvalidValue as exc:
            fail(name, exc.code, exc.message)

    for name in TRACKING_FIELDS:
        raw = text_of(name)
        if raw is None:
            continue
        if name in UTM_FIELDS:
            if len(raw.strip()) > MAX_TRACKING:
                fail(name, "too_long", f"at most {MAX_TRACKING} characters")
                continue
            lead.utm[name.removeprefix("utm_")] = raw.strip()
        else:
            # A referrer or page address is context, not campaign data: a long one is cut.
            setattr(lead, name, raw.strip()[:MAX_TRACKING])

    custom: dict[str, Any] = {}
    declared = values.get("custom_fields")
    if declared is not None:
        if isinstance(declared, Mapping):
            custom.update(declared)
        else:
            fail("custom_fields", "not_an_object", "expected an object")
    for key, value in values.items():
        if key.startswith("custom."):
            custom[key.removeprefix("custom.")] = value
    if len(custom) > MAX_CUSTOM_FIELDS:
        fail("custom_fields", "too_many", f"at most {MAX_CUSTOM_FIELDS} custom fields")
    for key, value in custom.items():
        if len(str(key)) > MAX_CUSTOM_KEY:
            fail(
                "custom_fields",
                "key_too_long",
                f"a custom field name has at most {MAX_CUSTOM_KEY} characters",
            )
            continue
        if isinstance(value, str):
            if len(value) > MAX_TEXT:
                fail(f"custom.{key}", "too_long", f"at most {MAX_TEXT} characters")
                continue
            value = value.strip()
        lead.custom_fields[str(key)] = value

    tags = values.get("tags")
    if tags is not None:
        if isinstance(tags, str):
            tags = tags.split(",")
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            fail("tags", "not_a_list", "expected a list of strings")
        elif len(tags) > MAX_TAGS:
            fail("tags", "too_many", f"at most {MAX_TAGS} tags")
        elif any(len(collapse(t)) > MAX_TAG for t in tags):
            fail("tags", "too_long", f"a tag has at most {MAX_TAG} characters")
        else:
            lead.tags = sorted({collapse(t).lower() for t in tags if t.strip()})

    consent = values.get("consent")
    if isinstance(consent, Mapping):
        lead.consent_granted = bool(consent.get("granted"))
        lead.consent_text = _as_text(consent.get("text"))
    elif consent is not None:
        lead.consent_granted = (_as_text(consent) or "").strip().lower() in CHECKED_VALUES

    identity_failed = any(p.field in (prefix + "email", prefix + "phone") for p in problems)
    if not lead.email and not lead.phone and not identity_failed:
        fail("email", "identity_required", "an e-mail address or a phone number is required")
    return Rejected(tuple(problems)) if problems else Accepted(lead)


# ---------------------------------------------------------------------------------------------
# Form submissions


def check_form_submission(
    rules: FormRules, data: Mapping[str, Sequence[str]], *, skip_honeypot: bool = False
) -> Verdict:
    """Check a posted form against its definition and map it onto a lead."""
    if not skip_honeypot and _first(data.get(rules.honeypot_field, ())).strip():
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
        if value := _first(data.get(name, ())).strip():
            mapped.setdefault(name, value)

    if rules.consent is not None:
        checked = _first(data.get(CONSENT_FIELD, ())).strip().lower() in CHECKED_VALUES
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
        checked = _first(values).strip().lower() in CHECKED_VALUES
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
    raw = _first(values).strip()
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
        texts = [t for t in (_as_text(item) for item in items) if t is not None]
        result[str(key)] = texts
    return result


# ---------------------------------------------------------------------------------------------
# Webhooks: dotted-path mapping and Standard Webhooks signatures

WEBHOOK_TOLERANCE_S = 300
SECRET_PREFIX = "whsec_"


def resolve_path(payload: Any, path: str) -> Any:
    """The value at a dotted path (`data.contact.email`, `items.0.sku`), None when absent."""
    current = payload
    for part in path.split("."):
        if isinstance(current, Mapping):
            current = current.get(part)
        elif isinstance(current, list) and part.lstrip("-").isdigit():
            index = int(part)
            current = current[index] if -len(current) <= index < len(current) else None
        else:
            return None
        if current is None:
            return None
    return current


def map_payload(payload: Any, mapping: Mapping[str, str]) -> dict[str, Any]:
    """Lead-field values from a webhook payload: `{lead_field: dotted_path}`; identity if empty."""
    if not mapping:
        return dict(payload) if isinstance(payload, Mapping) else {}
    values: dict[str, Any] = {}
    for target, path in mapping.items():
        value = resolve_path(payload, path)
        if value is not None:
            values[target] = value
    return values


class SignatureRejected(Exception):
    """A webhook whose signature, timestamp or id does not hold up."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def new_secret(random_bytes: bytes) -> str:
    return SECRET_PREFIX + base64.b64encode(random_bytes).decode()


def secret_key(secret: str) -> bytes:
    try:
        key = base64.b64decode(secret.removeprefix(SECRET_PREFIX), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("a signing secret is `whsec_` followed by base64") from exc
    if len(key) < 16:
        raise ValueError("a signing secret holds at least 16 random bytes")
    return key


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value a sender puts on a message (`v1,<base64 HMAC-SHA256>`)."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify_signature(
    secret: str,
    msg_id: str | None,
    timestamp: str | None,
    signatures: str | None,
    body: bytes,
    now: datetime,
    tolerance_s: int = WEBHOOK_TOLERANCE_S,
) -> None:
    """Standard Webhooks verification; raises SignatureRejected with a reason code."""
    if not msg_id or not timestamp or not signatures:
        raise SignatureRejected(
            "signature_missing", "webhook-id, webhook-timestamp and webhook-signature are required"
        )
    if len(msg_id) > 200:
        raise SignatureRejected("signature_invalid", "webhook-id is too long")
    try:
        sent_at = int(timestamp)
    except ValueError as exc:
        raise SignatureRejected("signature_invalid", "webhook-timestamp is not an integer") from exc
    if abs(now.timestamp() - sent_at) > tolerance_s:
        raise SignatureRejected(
            "signature_stale", f"webhook-timestamp is more than {tolerance_s}s away from now"
        )
    expected = sign(secret, msg_id, sent_at, body).encode()
    for candidate in signatures.split():
        if hmac.compare_digest(candidate.encode(), expected):
            return
    raise SignatureRejected("signature_invalid", "no webhook-signature matches")


# ---------------------------------------------------------------------------------------------
# Rate limits: token buckets, in-process


@dataclass
class _Bucket:
    tokens: float
    updated: float


class TokenBuckets:
    """Token buckets by key: `rate` tokens per second, bursts up to `burst`.

    In-process: each replica counts on its own, so N replicas allow N times the rate.
    """

    def __init__(self, rate: float, burst: float, max_keys: int = 100_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[str, _Bucket] = {}

    def take(
        self, key: str, now: float, rate: float | None = None, burst: float | None = None
    ) -> float:
        """0 when allowed (a token is taken), else the seconds to wait for the next token."""
        rate = self.rate if rate is None else rate
        burst = self.burst if burst is None else burst
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._forget_full(now)
            bucket = self._buckets[key] = _Bucket(burst, now)
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / rate if rate > 0 else math.inf

    def _forget_full(self, now: float) -> None:
        """Drop buckets that have refilled: forgetting them changes nothing."""
        full = [
            k
            for k, b in self._buckets.items()
            if b.tokens + (now - b.updated) * self.rate >= self.burst
        ]
        for key in full or list(self._buckets)[: self.max_keys // 10]:
            del self._buckets[key]


def retry_after(seconds: float) -> int:
    return max(1, math.ceil(seconds))


# ---------------------------------------------------------------------------------------------
# Engagement events


def build_engagement(
    values: Mapping[str, Any], engagement_id: str, now: datetime, *, prefix: str = ""
) -> Engagement | tuple[FieldProblem, ...]:
    """A typed engagement payload, or every failing field; the person is an e-mail or an id."""
    problems: list[FieldProblem] = []
    kind = ENGAGEMENT_TYPES.get(str(values.get("type")))
    if kind is None:
        problems.append(
            FieldProblem(
                prefix + "type",
                "not_an_option",
                f"type must be one of {', '.join(sorted(ENGAGEMENT_TYPES))}",
            )
        )
    email: str | None = None
    if raw_email := values.get("email"):
        try:
            email = normalise_email(str(raw_email))
        except InvalidValue as exc:
            problems.append(FieldProblem(prefix + "email", exc.code, exc.message))
    contact_id = values.get("contact_id") or None
    if email is None and contact_id is None and not values.get("email"):
        problems.append(
            FieldProblem(
                prefix + "email", "identity_required", "an e-mail or contact_id is required"
            )
        )
    occurred_at = values.get("occurred_at") or now
    if isinstance(occurred_at, datetime) and occurred_at.tzinfo is None:
        occurred_at = occurred_at.replace(tzinfo=UTC)
    fields: dict[str, Any] = {
        "engagement_id": engagement_id,
        "email": email,
        "contact_id": contact_id,
        "occurred_at": occurred_at,
        "properties": dict(values.get("properties") or {}),
    }
    if values.get("url"):
        if kind in (PageViewed, EmailClicked):
            fields["url"] = values["url"]
        else:
            fields["properties"].setdefault("url", values["url"])
    if kind is PurchaseCompleted:
        amount = values.get("amount")
        if amount is None:
            problems.append(FieldProblem(prefix + "amount", "required", "amount is required"))
        elif Decimal(amount) < 0:
            problems.append(FieldProblem(prefix + "amount", "negative", "amount must be >= 0"))
        fields["amount"] = amount
        if not values.get("currency"):
            problems.append(FieldProblem(prefix + "currency", "required", "currency is required"))
        else:
            try:
                fields["currency"] = normalise_currency(str(values["currency"]))
            except InvalidValue as exc:
                problems.append(FieldProblem(prefix + "currency", exc.code, exc.message))
    if problems or kind is None:
        return tuple(problems)
    return kind(**fields)

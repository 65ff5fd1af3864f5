"""Ingest's shared pure rules: outcomes, normalisation of single values, a lead built from
flat values, and rate limits (each area's own rules are in its `domain.py`).

No I/O here. Normalisation leans on well-kept libraries (email-validator, phonenumbers,
pycountry) rather than regexes of our own.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import phonenumbers
import pycountry
from email_validator import EmailNotValidError, validate_email

from shared.identity import email_identity, phone_identity

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


def first_value(values: Sequence[str]) -> str:
    return values[0] if values else ""


def as_text(value: Any) -> str | None:
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
        text = as_text(raw)
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
        lead.consent_text = as_text(consent.get("text"))
    elif consent is not None:
        lead.consent_granted = (as_text(consent) or "").strip().lower() in CHECKED_VALUES

    identity_failed = any(p.field in (prefix + "email", prefix + "phone") for p in problems)
    if not lead.email and not lead.phone and not identity_failed:
        fail("email", "identity_required", "an e-mail address or a phone number is required")
    return Rejected(tuple(problems)) if problems else Accepted(lead)


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

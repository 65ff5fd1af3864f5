"""Pure rules of captures: a captured lead as a contact's identity and fields, which
contact it matches, and what it may change on one that exists."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from services.contacts.domain import is_empty, normalise_tag


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

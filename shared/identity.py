"""A person's identities and their digests: pure rules, shared by every service (no I/O).

An identity is how ingest keys a lead and how every service recognises a person: the
lower-cased e-mail address (`email:ann@example.com`) or the E.164 phone (`phone:+4420…`).
Its digest (SHA-256 with the workspace) names the person in an erasure without naming them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime


def email_identity(email: str) -> str:
    """The identity of an e-mail address (lower-cased, as ingest's dedupe keys are)."""
    return f"email:{email.strip().lower()}"


def phone_identity(phone: str) -> str:
    """The identity of an E.164 phone number."""
    return f"phone:{phone.strip()}"


def identities(email: str | None, phone: str | None) -> list[str]:
    found = []
    if email:
        found.append(email_identity(email))
    if phone:
        found.append(phone_identity(phone))
    return found


def identity_digest(workspace: str, identity: str) -> str:
    """SHA-256 of the workspace and an identity: equal for the same person in every service."""
    return hashlib.sha256(f"{workspace}\x1f{identity}".encode()).hexdigest()


def digests(workspace: str, found: Iterable[str]) -> list[str]:
    return sorted({identity_digest(workspace, identity) for identity in found})


def replayed_after_erasure(
    captured_at: datetime, found: Iterable[str], erasures: dict[str, datetime]
) -> bool:
    """True when data captured at `captured_at` about these digests predates their erasure."""
    captured = _utc(captured_at)
    return any((at := erasures.get(d)) is not None and captured <= _utc(at) for d in found)


def _utc(at: datetime) -> datetime:
    # SQLite hands back naive datetimes for timezone-aware columns; they were stored in UTC.
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at

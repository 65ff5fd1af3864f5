"""Pure rules of webhooks: dotted-path mapping of a payload onto lead fields, and Standard
Webhooks signatures."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from datetime import datetime
from typing import Any

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

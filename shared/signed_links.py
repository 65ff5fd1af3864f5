"""Signed public links in e-mail: open pixel, click redirect and one-click unsubscribe.

A link carries its claims (workspace, contact, delivery, target URL) in the clear and an
HMAC-SHA256 over them, so it cannot be forged, nor changed to name another contact or another
target. The key is derived per purpose from the platform's auth secret, which notifier (that
signs) and ingest (that serves the tracking links) both hold.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Any, Literal

import orjson

Purpose = Literal["open", "click", "unsubscribe"]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def link_key(secret: bytes, purpose: Purpose) -> bytes:
    """One key per purpose, so a tracking token never passes as an unsubscribe token."""
    return hmac.new(secret, f"leadwire-link:{purpose}".encode(), hashlib.sha256).digest()


def sign(secret: bytes, purpose: Purpose, claims: dict[str, Any]) -> str:
    """`<claims>.<signature>`, both base64url, safe in a URL path segment."""
    body = _b64(orjson.dumps(claims, option=orjson.OPT_SORT_KEYS))
    mac = hmac.new(link_key(secret, purpose), body.encode(), hashlib.sha256).digest()
    return f"{body}.{_b64(mac)}"


def verify(secret: bytes, purpose: Purpose, token: str) -> dict[str, Any] | None:
    """The claims of a genuine token of this purpose, or None (forged, altered, malformed)."""
    body, _, signature = token.partition(".")
    if not body or not signature:
        return None
    expected = hmac.new(link_key(secret, purpose), body.encode(), hashlib.sha256).digest()
    try:
        if not hmac.compare_digest(expected, _unb64(signature)):
            return None
        claims = orjson.loads(_unb64(body))
    except (ValueError, orjson.JSONDecodeError):
        return None
    return claims if isinstance(claims, dict) else None

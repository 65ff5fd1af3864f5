"""Security headers of ingest's HTML pages (the hosted form and its thank-you page).

The Content-Security-Policy lets the page run only its own inline style and script (marked with
a per-response nonce), post only to ingest and to the form's redirect, and be framed only by
the form's allowed origins (nobody, when it has none): a page holding a lead's details cannot
be clickjacked by an unknown site or made to load or send anything elsewhere.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from urllib.parse import urlsplit


def new_nonce() -> str:
    return secrets.token_urlsafe(16)


def page_headers(
    nonce: str, allowed_origins: Sequence[str] = (), redirect_url: str | None = None
) -> dict[str, str]:
    """The headers every HTML page of a form carries."""
    framers = " ".join(allowed_origins) or "'none'"
    targets = ["'self'"]
    if redirect_url:
        # Browsers apply form-action to the redirect that follows the post (303 to here).
        parts = urlsplit(redirect_url)
        targets.append(f"{parts.scheme}://{parts.netloc}")
    policy = "; ".join(
        (
            "default-src 'none'",
            f"style-src 'nonce-{nonce}'",
            f"script-src 'nonce-{nonce}'",
            "img-src 'self'",
            f"form-action {' '.join(targets)}",
            f"frame-ancestors {framers}",
            "base-uri 'none'",
        )
    )
    return {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "strict-origin-when-cross-origin",
    }

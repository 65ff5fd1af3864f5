"""CORS for the public form endpoint: a form's allowed origins."""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import Request

from services.ingest.forms.handlers import FormSnapshot
from services.ingest.handlers import OriginNotAllowed

CORS_ALLOWED_HEADERS = "content-type, accept, accept-language, x-correlation-id"


def own_origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.headers.get('host', request.url.netloc)}".lower()


def cors_headers(
    form: FormSnapshot, request: Request, received: Mapping[str, str] | None = None
) -> dict[str, str]:
    """CORS headers for an allowed `Origin` (none without one); 403 for any other origin."""
    origin = (request.headers if received is None else received).get("origin")
    if origin is None:
        return {}
    allowed = form.settings.allowed_origins
    if (
        origin.lower() != own_origin(request)
        and "*" not in allowed
        and origin.lower() not in allowed
    ):
        raise OriginNotAllowed(f"Origin {origin} may not post to this form.")
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}

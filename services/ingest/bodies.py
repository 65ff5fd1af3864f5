"""Reading request bodies: the size limit enforced while reading, urlencoded, multipart
(replayed from the bytes already read) and JSON form posts, and content negotiation."""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qsl

from fastapi import Request
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.types import Message

from services.ingest import handlers
from services.ingest.forms import domain as forms_domain
from services.ingest.handlers import UnsupportedMediaType
from shared.errors import InvalidInput, PayloadTooLarge

BROWSER_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


async def read_limited(
    request: Request,
    limit: int,
    headers: Mapping[str, str] | None = None,
    received: Mapping[str, str] | None = None,
) -> bytes:
    """The body, refused with 413 as soon as it passes `limit` (whatever Content-Length says).

    `headers` go on the 413 answer; `received` are the request's headers, when already read
    (see `header_dict`)."""

    def too_large() -> PayloadTooLarge:
        return PayloadTooLarge(f"The body exceeds {limit} bytes.", headers=dict(headers or {}))

    declared = (request.headers if received is None else received).get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large()
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def header_dict(request: Request) -> dict[str, str]:
    """The request's headers as a plain dict (first value of a repeated name, as
    `request.headers.get` gives): one pass, then cheap look-ups on the hot path."""
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in reversed(request.scope["headers"])}


def media_type(request: Request, received: Mapping[str, str] | None = None) -> str:
    found = (request.headers if received is None else received).get("content-type", "")
    return found.split(";")[0].strip().lower()


async def parse_form_body(
    request: Request, body: bytes, received: Mapping[str, str] | None = None
) -> dict[str, list[str]]:
    """Multi-valued text fields from a urlencoded, multipart or JSON form post."""
    kind = media_type(request, received)
    if kind == "application/x-www-form-urlencoded":
        values: dict[str, list[str]] = {}
        for key, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
            values.setdefault(key, []).append(value)
        return values
    if kind == "multipart/form-data":
        return await _parse_multipart(request, body)
    if kind == "application/json" or kind.endswith("+json"):
        payload = handlers.parse_json(body)
        if not isinstance(payload, dict):
            raise InvalidInput(
                "A JSON form post is an object of field names to values.",
                errors=[{"field": "body", "code": "not_an_object", "message": "expected object"}],
            )
        return forms_domain.form_values(payload)
    raise UnsupportedMediaType(
        "Post the form as application/x-www-form-urlencoded, multipart/form-data or JSON."
    )


async def _parse_multipart(request: Request, body: bytes) -> dict[str, list[str]]:
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if delivered:
            return {"type": "http.disconnect"}
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=10, max_fields=500)
    except MultiPartException as exc:
        raise InvalidInput(
            "The multipart body is malformed.",
            errors=[{"field": "body", "code": "malformed", "message": exc.message}],
        ) from exc
    values: dict[str, list[str]] = {}
    try:
        for key, value in form.multi_items():
            # Files are not lead data: only their names are kept, in the raw body anyway.
            text = value.filename or "" if isinstance(value, UploadFile) else value
            values.setdefault(key, []).append(text)
    finally:
        await form.close()
    return values


def wants_html(request: Request, received: Mapping[str, str] | None = None) -> bool:
    """A browser post: urlencoded or multipart, and `Accept` not preferring JSON."""
    if media_type(request, received) not in BROWSER_TYPES:
        return False
    html = json = 0.0
    accept = (request.headers if received is None else received).get("accept", "*/*")
    for part in accept.split(","):
        kind, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        if kind in ("text/html", "application/xhtml+xml"):
            html = max(html, q)
        elif kind in ("application/json", "application/problem+json"):
            json = max(json, q)
    return html >= json


def invalid_body(exc: ValidationError, prefix: str = "") -> InvalidInput:
    errors = [
        {
            "field": prefix + ".".join(str(p) for p in e["loc"]) or "body",
            "code": e["type"],
            "message": e["msg"],
        }
        for e in exc.errors()
    ]
    return InvalidInput("The request is invalid.", errors=errors)

"""Domain errors and the one exception handler that renders every error as problem+json."""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Mapping
from typing import Any, ClassVar

import asyncpg  # type: ignore[import-untyped]
from aiokafka.errors import KafkaError
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from shared.transient import is_transient

PROBLEM_JSON = "application/problem+json"
# What a client is told to wait before retrying while a dependency is down: about the time a
# database or broker takes to restart.
RETRY_AFTER_S = 5
log = logging.getLogger(__name__)


class DomainError(Exception):
    """Base of every error a handler raises on purpose; `code` is the machine-readable reason."""

    status_code: ClassVar[int] = 400
    code: ClassVar[str] = "bad_request"
    # Raised from an event handler, it goes straight to the DLQ: retrying cannot help.
    permanent: ClassVar[bool] = True

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra


class NotFound(DomainError):
    status_code = 404
    code = "not_found"


class Conflict(DomainError):
    status_code = 409
    code = "conflict"


class Unauthorized(DomainError):
    status_code = 401
    code = "unauthorized"


class Forbidden(DomainError):
    status_code = 403
    code = "forbidden"


class InvalidInput(DomainError):
    """422 listing every failing field: `errors=[{"field": ..., "code": ..., "message": ...}]`."""

    status_code = 422
    code = "validation_failed"


class PayloadTooLarge(DomainError):
    status_code = 413
    code = "payload_too_large"


class TooManyRequests(DomainError):
    status_code = 429
    code = "rate_limited"


def problem(
    status: int, code: str, detail: str, headers: Mapping[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = {"type": f"https://leadwire.dev/problems/{code}", "title": code, "status": status}
    body |= {"code": code, "detail": detail, **extra}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def install_error_handlers(app: FastAPI) -> None:
    """Render domain errors, validation errors and HTTP errors as problem+json; never a bare 500."""

    @app.exception_handler(DomainError)
    async def on_domain_error(_: Request, exc: DomainError) -> JSONResponse:
        headers: dict[str, str] | None = exc.extra.pop("headers", None)
        return problem(exc.status_code, exc.code, exc.message, headers=headers, **exc.extra)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {"field": _location(tuple(e["loc"])), "code": e["type"], "message": e["msg"]}
            for e in exc.errors()
        ]
        return problem(422, "validation_failed", "The request is invalid.", errors=errors)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = exc.headers
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": allowed_methods(request)}
        code = {
            404: "not_found",
            405: "method_not_allowed",
            413: PayloadTooLarge.code,
            429: TooManyRequests.code,
        }.get(exc.status_code, "http_error")
        return problem(exc.status_code, code, str(exc.detail), headers=headers)

    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        if is_transient(exc):
            log.warning("dependency unavailable", extra={"error": str(exc) or type(exc).__name__})
            return dependency_unavailable()
        log.exception("unhandled error", exc_info=exc)
        return problem(500, "internal_error", "An unexpected error occurred.")

    @app.exception_handler(ClientDisconnect)
    async def on_client_gone(_: Request, exc: ClientDisconnect) -> JSONResponse:
        # The client closed the connection while sending its body: nobody reads the answer,
        # and it is not our error. 499 is the status proxies record for it.
        log.info("client disconnected before its request was read")
        return problem(499, "client_disconnected", "The client closed the connection.")

    # The failures of a dependency are registered by class as well as under `Exception`:
    # Starlette sends `Exception` to its outermost middleware, which answers and then re-raises
    # to the server, and uvicorn logs it and drops the keep-alive connection. A handler for a
    # specific class answers from inside the stack, and the connection stays open.
    for cls in (*DEPENDENCY_ERRORS, Exception):
        app.add_exception_handler(cls, on_unexpected)


def allowed_methods(request: Request) -> str:
    """The methods the API documents at the request's path: Starlette's 405 names only those
    of the first route matching it, though one path often has a route per method. Where two
    templates match (`/contacts/count` and `/contacts/{contact_id}`), the one with fewer
    parameters is the path's own, as it is the one routed to first."""
    path = request.scope["path"]
    templates: list[tuple[re.Pattern[str], int, list[str]]] | None = getattr(
        request.app.state, "allow_templates", None
    )
    if templates is None:
        templates = []
        for template, item in request.app.openapi().get("paths", {}).items():
            parts = re.split(r"(\{[^}]+\})", template)
            regex = "".join("[^/]+" if i % 2 else re.escape(p) for i, p in enumerate(parts))
            methods = [m.upper() for m in item if m.upper() in HTTP_METHODS]
            templates.append((re.compile(regex), len(parts) // 2, methods))
        request.app.state.allow_templates = templates
    matching = [(params, methods) for regex, params, methods in templates if regex.fullmatch(path)]
    if not matching:
        return ""
    _, methods = min(matching, key=lambda found: found[0])
    return ", ".join(methods)


HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def dependency_unavailable() -> JSONResponse:
    """503 with `Retry-After`: the request was fine, a database or broker is not reachable."""
    return problem(
        503,
        "dependency_unavailable",
        "A service this request needs is unavailable; retry later.",
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


# Exception classes a database or broker outage raises (see shared.transient for which of
# their instances count as an outage).
DEPENDENCY_ERRORS: tuple[type[Exception], ...] = (
    OSError,  # refused, reset, timed out
    SQLAlchemyError,
    KafkaError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    sqlite3.Error,
)

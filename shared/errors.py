"""Domain errors and the one exception handler that renders every error as problem+json."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

PROBLEM_JSON = "application/problem+json"
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
    async def on_http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {
            404: "not_found",
            405: "method_not_allowed",
            413: PayloadTooLarge.code,
            429: TooManyRequests.code,
        }.get(exc.status_code, "http_error")
        return problem(exc.status_code, code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(Exception)
    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return problem(500, "internal_error", "An unexpected error occurred.")

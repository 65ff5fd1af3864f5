"""The error answers of every operation, documented from one definition of problem+json.

Every service's OpenAPI document gets them from `shared.app.create_app`, so a new service is
documented for what its errors look like without writing a line: 503 everywhere (a dependency
down, with `Retry-After`), 401/403 where a bearer token is required, 404 where the path names
an object, 400 and 422 where a request carries parameters or a body. Routes add the answers
only they give (409, 413, 415, 429) with `problems(...)`.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from shared.errors import PROBLEM_JSON

PROBLEM_REF = "#/components/schemas/Problem"

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "An error (RFC 9457 problem details) with a machine-readable `code`.",
    "type": "object",
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "code": {"type": "string", "description": "Machine-readable reason."},
        "detail": {"type": "string"},
        "errors": {
            "type": "array",
            "description": "Each failing field, for validation errors.",
            "items": {
                "type": "object",
                "properties": {
                    "field": {"type": "string"},
                    "code": {"type": "string"},
                    "message": {"type": "string"},
                },
                "required": ["field", "code", "message"],
            },
        },
    },
    "required": ["type", "title", "status", "code", "detail"],
    "additionalProperties": True,
}

DESCRIPTIONS: dict[int, str] = {
    400: "The body is not well-formed (malformed JSON, say).",
    401: "No valid bearer token.",
    403: "The token lacks the scope this operation needs.",
    404: "No such object in this workspace.",
    409: "Conflicts with the current state (an idempotency key reused with another body, say).",
    413: "The body is larger than this operation accepts.",
    415: "The body's content type is not one this operation reads.",
    422: "The request is invalid: each failing field is listed in `errors`.",
    429: "Too many requests: retry after `Retry-After` seconds.",
    503: "A dependency (database, broker) is unavailable: retry after `Retry-After` seconds.",
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying.",
        "schema": {"type": "integer", "minimum": 0},
    }
}


def problem_response(status: int) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": DESCRIPTIONS[status],
        "content": {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_REF}}},
    }
    if status in (429, 503):
        answer["headers"] = dict(_RETRY_AFTER)
    return answer


def inline_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON Schema with its `$defs` references inlined (our request models do not recurse)."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(defs[node["$ref"].rsplit("/", 1)[-1]])
            if "mapping" in node and "propertyName" in node:  # a discriminator's `$defs` refs
                return {"propertyName": node["propertyName"]}
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The `responses=` of a route for the error answers only it gives (409, 413, 415, 429)."""
    return {status: problem_response(status) for status in statuses}


def _implied(path: str, operation: dict[str, Any]) -> list[int]:
    """The error answers the platform gives to an operation of this shape."""
    statuses = [503]
    if operation.get("security"):
        statuses += [401, 403]
    if "{" in path:
        statuses.append(404)
    if "requestBody" in operation:
        statuses += [400, 422]
    elif operation.get("parameters"):
        statuses.append(422)
    return statuses


# Bounds pydantic leaves under its own names when a validator wraps a constrained optional
# number (shared.api_types.StrictInt | None): JSON Schema's names for them.
_BOUNDS = {"ge": "minimum", "le": "maximum", "gt": "exclusiveMinimum", "lt": "exclusiveMaximum"}


def _json_schema_bounds(node: Any) -> None:
    if isinstance(node, dict):
        if node.get("type") in ("integer", "number"):
            for raw, name in _BOUNDS.items():
                if raw in node:
                    node[name] = node.pop(raw)
        for child in node.values():
            _json_schema_bounds(child)
    elif isinstance(node, list):
        for child in node:
            _json_schema_bounds(child)


def document_problems(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the problem+json answers to every operation of an OpenAPI document (in place)."""
    _json_schema_bounds(schema)
    schema.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for status in _implied(path, operation):
                # FastAPI documents its 422 as application/json; the answer is problem+json
                # (beside any other type the route declares, such as a browser's HTML page).
                if status == 422 or str(status) not in responses:
                    declared = responses.get(str(status), {}).get("content", {})
                    answer = problem_response(status)
                    answer["content"] |= {
                        kind: body for kind, body in declared.items() if kind != "application/json"
                    }
                    responses[str(status)] = answer
    schemas = schema["components"]["schemas"]
    for name in ("HTTPValidationError", "ValidationError"):
        if f"#/components/schemas/{name}" not in json.dumps(schema["paths"]):
            schemas.pop(name, None)
    return schema


def install(app: FastAPI) -> None:
    """Make `app.openapi()` produce the documented error answers."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_problems(
                get_openapi(
                    title=app.title,
                    version=app.version,
                    openapi_version=app.openapi_version,
                    description=app.description,
                    routes=app.routes,
                    tags=app.openapi_tags,
                    servers=app.servers,
                )
            )
        return app.openapi_schema

    setattr(app, "openapi", openapi)  # noqa: B010  # FastAPI's documented override

"""Hot routes: a service's few hottest endpoints served ahead of FastAPI's middleware stack.

A public endpoint taking thousands of posts a second pays, on every request, for each layer
of Starlette and FastAPI middleware (error, exception, body-limit, exit-stack, routing
middleware: coroutine frames resumed at every await, `send` wrapped at every level). A hot
route skips those layers but keeps what they give it: the correlation id and the request
metrics (as `ObservabilityMiddleware` gives them), and the app's exception handlers, so an error
answers the same problem+json as on any other route. The route should also be declared on a
router as usual (with `include_in_schema` as wanted), so it stays documented in OpenAPI.
"""

from __future__ import annotations

import inspect
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request, Response
from starlette.types import Receive, Scope, Send

from shared import tracing
from shared.logs import correlation_id_var
from shared.observability import RequestMetrics, correlation_id_of

Endpoint = Callable[[Request], Awaitable[Response]]
_PARAM = re.compile(r"\{([a-zA-Z_][a-zA-Z0-9_]*)\}")


@dataclass(frozen=True)
class HotRoute:
    """`method` + `path` (a template like `/v1/forms/{form_id}/submissions`) → `endpoint`,
    which reads its path parameters from `request.path_params`."""

    method: str
    path: str
    endpoint: Endpoint
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts = _PARAM.split(self.path)
        regex = "".join(
            f"(?P<{part}>[^/]+)" if i % 2 else re.escape(part) for i, part in enumerate(parts)
        )
        object.__setattr__(self, "pattern", re.compile(regex))

    def match(self, scope: Scope) -> dict[str, str] | None:
        if scope["method"] != self.method:
            return None
        found = self.pattern.fullmatch(scope["path"])
        return found.groupdict() if found else None


class HotRoutes:
    """A service's hot routes, served for its app (see `shared.app.ServiceApp`).

    What `ObservabilityMiddleware` does for other routes is done inline here: a hot endpoint
    returns its `Response`, so the correlation id goes on its headers and its status into
    the metrics without wrapping `send`."""

    def __init__(self, app: FastAPI, routes: Sequence[HotRoute], service: str) -> None:
        self.app = app
        self.routes = tuple(routes)
        self.metrics = RequestMetrics(service)

    def find(self, scope: Scope) -> tuple[HotRoute, dict[str, str]] | None:
        if scope["type"] != "http":
            return None
        for route in self.routes:
            params = route.match(scope)
            if params is not None:
                return route, params
        return None

    async def serve(
        self, found: tuple[HotRoute, dict[str, str]], scope: Scope, receive: Receive, send: Send
    ) -> None:
        route, scope["path_params"] = found
        scope["app"] = self.app
        scope["route"] = route
        correlation_id = correlation_id_of(scope)
        token = correlation_id_var.set(correlation_id)
        started = time.perf_counter()
        status = 500
        span = tracing.start_request_span(route.method, scope["headers"])
        try:
            with tracing.use_span(span):
                request = Request(scope, receive, send)
                try:
                    response = await route.endpoint(request)
                except Exception as exc:
                    response = await self._handled(request, exc)
                status = response.status_code
                response.raw_headers.append((b"x-correlation-id", correlation_id.encode()))
                await response(scope, receive, send)
        finally:
            self.metrics.record(route.method, route.path, status, time.perf_counter() - started)
            tracing.end_request_span(span, route.method, route.path, status)
            correlation_id_var.reset(token)

    async def _handled(self, request: Request, exc: Exception) -> Response:
        """The app's own answer to `exc`: its most specific registered handler."""
        handlers = self.app.exception_handlers
        for cls in type(exc).__mro__:
            handler: Any = handlers.get(cls)
            if handler is not None:
                answer = handler(request, exc)
                if inspect.isawaitable(answer):
                    answer = await answer
                response: Response = answer
                return response
        raise exc

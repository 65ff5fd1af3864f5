"""Per-request observability: a correlation id, a trace span and Prometheus request metrics."""

from __future__ import annotations

import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import metrics, tracing
from shared.events.envelope import new_id
from shared.logs import correlation_id_var

_CORRELATION_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def correlation_id_of(scope: Scope) -> str:
    """The caller's `X-Correlation-Id` when it is a short, plain token (it travels in every
    event of the chain), else a new one."""
    for name, value in scope.get("headers") or ():
        if name == b"x-correlation-id":
            given = value.decode("latin-1")
            return given if _CORRELATION_ID.fullmatch(given) else new_id()
    return new_id()


class RequestMetrics:
    """A service's request counter and latency histogram.

    Labelled children are looked up once per (method, route, status): `labels()` validates
    and locks on every call, a cost otherwise paid per request."""

    def __init__(self, service: str) -> None:
        self.service = service
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def record(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = (
                metrics.HTTP_REQUESTS.labels(self.service, method, route, str(status)),
                metrics.HTTP_SECONDS.labels(self.service, method, route),
            )
        found[0].inc()
        found[1].observe(seconds)


class ObservabilityMiddleware:
    """Request metrics and a correlation id per request (from `X-Correlation-Id` or new)."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.metrics = RequestMetrics(service)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        correlation_id = correlation_id_of(scope)
        header = (b"x-correlation-id", correlation_id.encode())
        token = correlation_id_var.set(correlation_id)
        status = 500
        started = time.perf_counter()
        span = tracing.start_request_span(scope["method"], scope.get("headers") or ())

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message.setdefault("headers", []).append(header)
            await send(message)

        try:
            with tracing.use_span(span):
                await self.app(scope, receive, send_wrapper)
        finally:
            route: Any = scope.get("route")
            path = getattr(route, "path", "unmatched")
            self.metrics.record(scope["method"], path, status, time.perf_counter() - started)
            tracing.end_request_span(span, scope["method"], path, status)
            correlation_id_var.reset(token)

"""Steady open-loop load: leads sent on a fixed schedule, whatever the answers, half through
the leads API and half through a hosted form; every answer is recorded for reconciliation."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

import httpx


@dataclass
class Answer:
    email: str
    route: str
    sent_at: float  # time.time()
    status: int | None  # None: no HTTP answer (connection refused or reset, timeout)
    retry_after: str | None = None
    error: str | None = None


@dataclass
class Load:
    """Sends `rate` leads a second until stopped; `answers` holds every outcome."""

    client: httpx.AsyncClient
    ingest_url: str
    form_id: str
    api_headers: dict[str, str]
    run: str
    rate: float
    answers: list[Answer] = field(default_factory=list)
    _sent: int = 0
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _inflight: set[asyncio.Task[Answer]] = field(default_factory=set)

    def email(self, n: int) -> str:
        return f"lead-{self.run}-{n}@example.com"

    async def run_until_stopped(self) -> None:
        started = time.monotonic()
        while not self._stop.is_set():
            due = started + self._sent / self.rate
            delay = due - time.monotonic()
            if delay > 0:
                try:
                    await asyncio.wait_for(self._stop.wait(), delay)
                    break
                except TimeoutError:
                    pass
            else:
                # Behind schedule (a starved machine): still let the sends and the stop run,
                # or this loop would spawn requests forever without yielding.
                await asyncio.sleep(0)
            n = self._sent
            self._sent += 1
            route = "api" if n % 2 else "form"
            self._spawn(self.send(self.email(n), route))
        if self._inflight:
            await asyncio.wait(self._inflight)

    def stop(self) -> None:
        self._stop.set()

    async def abandon(self, sending: asyncio.Task[None]) -> None:
        """Ends a run that failed part-way: its sending loop and the requests still out are
        cancelled and awaited, so none of them outlives the client they send through."""
        self.stop()
        pending = {sending, *self._inflight}
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def _spawn(self, coro: Coroutine[Any, Any, Answer]) -> None:
        task = asyncio.ensure_future(coro)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def send(self, email: str, route: str, idempotency_key: str | None = None) -> Answer:
        sent_at = time.time()
        try:
            if route == "api":
                headers = dict(self.api_headers)
                if idempotency_key:
                    headers["Idempotency-Key"] = idempotency_key
                response = await self.client.post(
                    f"{self.ingest_url}/v1/leads", json={"email": email}, headers=headers
                )
            else:
                response = await self.client.post(
                    f"{self.ingest_url}/v1/forms/{self.form_id}/submissions",
                    json={"email": email},
                )
            answer = Answer(
                email, route, sent_at, response.status_code, response.headers.get("retry-after")
            )
        except httpx.HTTPError as exc:
            answer = Answer(email, route, sent_at, None, error=type(exc).__name__)
        self.answers.append(answer)
        return answer

    @property
    def accepted(self) -> set[str]:
        return {a.email for a in self.answers if a.status is not None and 200 <= a.status < 300}

    def statuses(self) -> Counter[str]:
        return Counter(str(a.status or a.error) for a in self.answers)

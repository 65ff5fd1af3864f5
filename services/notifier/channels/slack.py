"""Slack: incoming webhooks and bot tokens (`chat.postMessage`), Block Kit messages."""

from __future__ import annotations

import httpx
import orjson

from services.notifier.channels import http
from services.notifier.channels.domain import AllowList
from services.notifier.channels.job import Job
from services.notifier.delivery.domain import Outcome

# `chat.postMessage` errors worth another try; any other `ok: false` is permanent.
RETRYABLE_ERRORS = frozenset(
    {"ratelimited", "internal_error", "fatal_error", "service_unavailable"}
)


def pace_key(job: Job) -> str:
    """The Slack channel a message goes to, which Slack paces on its own."""
    target = job.recipient or job.config.get("channel") or "webhook"
    return f"{job.channel_id or job.channel_name}:{target}"


class SlackSender:
    def __init__(self, lanes: http.Lanes, api_url: str, allow: AllowList, timeout: float) -> None:
        self._lanes = lanes
        self._api_url = api_url.rstrip("/")
        self._allow = allow
        self._timeout = timeout

    async def send(self, job: Job) -> Outcome:
        body: dict[str, object] = {"text": job.message.get("text") or ""}
        if blocks := job.message.get("blocks"):
            body["blocks"] = blocks
        if url := job.secrets.get("webhook_url"):
            outcome, _ = await http.post(
                self._lanes,
                url,
                orjson.dumps(body),
                {"content-type": "application/json"},
                self._allow,
                self._timeout,
                # Slack takes no idempotency key: a post that may have arrived is not repeated.
                no_answer="unknown",
            )
            return outcome
        return await self._post_message(job, body)

    async def _post_message(self, job: Job, body: dict[str, object]) -> Outcome:
        body["channel"] = job.recipient or job.config.get("channel")
        headers = {
            "authorization": f"Bearer {job.secrets.get('bot_token', '')}",
            "content-type": "application/json; charset=utf-8",
        }
        try:
            async with self._lanes.client() as client:
                response = await client.post(
                    f"{self._api_url}/chat.postMessage",
                    content=orjson.dumps(body),
                    headers=headers,
                    timeout=self._timeout,
                    follow_redirects=False,
                )
        except httpx.TimeoutException as exc:
            return http.timed_out(exc, self._timeout, "unknown")
        except httpx.HTTPError as exc:
            return Outcome("retry", f"{type(exc).__name__}: {exc}")
        outcome = http.http_outcome(
            response.status_code, response.text, response.headers.get("retry-after")
        )
        if outcome.kind != "sent":
            return outcome
        try:
            answer = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            return Outcome("retry", f"not JSON: {response.text[:200]}", response.status_code)
        if answer.get("ok"):
            return Outcome("sent", "ok", response.status_code, provider_message_id=answer.get("ts"))
        error = str(answer.get("error"))
        if error in RETRYABLE_ERRORS:
            return Outcome("retry", f"slack: {error}", response.status_code)
        return Outcome("failed", f"slack: {error}", response.status_code)

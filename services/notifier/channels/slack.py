"""Slack: incoming webhooks and bot tokens (`chat.postMessage`), Block Kit messages."""

from __future__ import annotations

import aiohttp
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
    def __init__(self, client: http.Client, api_url: str, allow: AllowList, timeout: float) -> None:
        self._client = client
        self._api_url = api_url.rstrip("/")
        self._allow = allow
        self._timeout = timeout

    async def send(self, job: Job) -> Outcome:
        body: dict[str, object] = {"text": job.message.get("text") or ""}
        if blocks := job.message.get("blocks"):
            body["blocks"] = blocks
        if url := job.secrets.get("webhook_url"):
            outcome, _ = await http.post(
                self._client,
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
            answer = await self._client.post(
                f"{self._api_url}/chat.postMessage", orjson.dumps(body), headers, self._timeout
            )
        except http.NotSent as exc:
            return Outcome("retry", str(exc))
        except TimeoutError:
            return http.timed_out(self._timeout, "unknown")
        except aiohttp.ClientError as exc:
            return Outcome("retry", f"{type(exc).__name__}: {exc}")
        outcome = http.http_outcome(answer.status, answer.text, answer.headers.get("retry-after"))
        if outcome.kind != "sent":
            return outcome
        try:
            result = orjson.loads(answer.text)
        except orjson.JSONDecodeError:
            return Outcome("retry", f"not JSON: {answer.text[:200]}", answer.status)
        if result.get("ok"):
            return Outcome("sent", "ok", answer.status, provider_message_id=result.get("ts"))
        error = str(result.get("error"))
        if error in RETRYABLE_ERRORS:
            return Outcome("retry", f"slack: {error}", answer.status)
        return Outcome("failed", f"slack: {error}", answer.status)

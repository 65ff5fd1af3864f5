"""Outbound webhooks: a JSON event signed the Standard Webhooks way, to a checked target."""

from __future__ import annotations

import time

import orjson

from services.notifier.channels import http
from services.notifier.channels.domain import AllowList, webhook_headers
from services.notifier.channels.job import Job
from services.notifier.delivery.domain import Outcome


class WebhookSender:
    def __init__(self, client: http.Client, allow: AllowList, timeout: float) -> None:
        self._client = client
        self._allow = allow
        self._timeout = timeout

    async def send(self, job: Job) -> Outcome:
        timestamp = int(time.time())
        body = orjson.dumps(
            {
                "type": "notification",
                "timestamp": timestamp,
                "data": job.message.get("payload") or {},
            }
        )
        # The delivery id is the webhook id: the same on every retry, so receivers can dedupe.
        headers = webhook_headers(
            job.secrets.get("signing_secret", ""), job.delivery_id, timestamp, body
        )
        outcome, _ = await http.post(
            self._client, str(job.config["url"]), body, headers, self._allow, self._timeout
        )
        return outcome

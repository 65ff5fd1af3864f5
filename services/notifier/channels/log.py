"""The `log` channel: each notification printed readably in the terminal (`make run`)."""

from __future__ import annotations

import sys
from typing import TextIO

from services.notifier.channels.job import Job
from services.notifier.delivery.domain import Outcome


class LogSender:
    def __init__(self, out: TextIO | None = None) -> None:
        self._out = out

    async def send(self, job: Job) -> Outcome:
        out = self._out or sys.stdout
        message = job.message
        lines = [
            f"── notification {job.delivery_id} · {job.workspace} · {job.channel_name} "
            f"({job.purpose}) → {job.recipient or 'default'}"
        ]
        if subject := message.get("subject"):
            lines.append(f"   Subject: {subject}")
        text = message.get("text") or ""
        lines.extend(f"   {line}" for line in str(text).splitlines() or [""])
        out.write("\n".join(lines) + "\n")
        out.flush()
        return Outcome("sent", "printed")

"""E-mail over SMTP (aiosmtplib): STARTTLS or TLS, authentication, multipart HTML and text,
one-click unsubscribe headers on marketing mail, our own Message-ID, pooled connections."""

from __future__ import annotations

import asyncio
import contextlib
import html as html_lib
import re
from collections.abc import AsyncIterator
from email.message import EmailMessage
from email.utils import formataddr, formatdate
from typing import Any

import aiosmtplib
import orjson

from services.notifier.channels.job import Job
from services.notifier.delivery.domain import Outcome, smtp_outcome


def build_message(job: Job) -> EmailMessage:
    """The MIME message: text and HTML alternatives, From/Reply-To of the channel, the
    Message-ID chosen when the delivery was accepted (kept across retries)."""
    config, message = job.config, job.message
    mail = EmailMessage()
    mail["From"] = formataddr((config.get("from_name") or "", str(config["from_address"])))
    mail["To"] = job.recipient or ""
    if reply_to := config.get("reply_to"):
        mail["Reply-To"] = reply_to
    mail["Subject"] = message.get("subject") or ""
    mail["Message-ID"] = message["message_id"]
    mail["Date"] = formatdate(localtime=False, usegmt=True)
    if unsubscribe := message.get("unsubscribe_url"):
        mail["List-Unsubscribe"] = f"<{unsubscribe}>"
        mail["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    html = message.get("html")
    text = message.get("text") or (plain_text(html) if html else "")
    mail.set_content(text)
    if html:
        mail.add_alternative(html, subtype="html")
    return mail


_TAG = re.compile(r"<[^>]+>")


def plain_text(html: str) -> str:
    """A readable plain-text part for mail written only in HTML."""
    text = re.sub(r"(?i)<br\s*/?>|</p>", "\n", html)
    return html_lib.unescape(_TAG.sub("", text)).strip()


class SmtpPool:
    """Open SMTP connections per channel configuration, reused between messages."""

    def __init__(self, size: int, timeout: float) -> None:
        self._size = size
        self._timeout = timeout
        self._idle: dict[bytes, list[aiosmtplib.SMTP]] = {}
        self._slots: dict[bytes, asyncio.Semaphore] = {}

    @contextlib.asynccontextmanager
    async def connection(self, job: Job) -> AsyncIterator[aiosmtplib.SMTP]:
        key = orjson.dumps([job.channel_id, job.config, job.secrets], option=orjson.OPT_SORT_KEYS)
        slot = self._slots.setdefault(key, asyncio.Semaphore(self._size))
        async with slot:
            idle = self._idle.setdefault(key, [])
            smtp = None
            while idle and smtp is None:
                candidate = idle.pop()
                if candidate.is_connected:
                    smtp = candidate
            if smtp is None:
                smtp = self._client(job.config, job.secrets)
                await smtp.connect()
            healthy = False
            try:
                yield smtp
                healthy = True
            finally:
                if healthy and smtp.is_connected:
                    idle.append(smtp)
                else:
                    smtp.close()

    def _client(self, config: dict[str, Any], secrets: dict[str, str]) -> aiosmtplib.SMTP:
        security = config.get("security", "starttls")
        return aiosmtplib.SMTP(
            hostname=str(config["host"]),
            port=int(config.get("port", 587)),
            username=config.get("username") or None,
            password=secrets.get("password") or None,
            use_tls=security == "tls",
            start_tls=security == "starttls",
            validate_certs=bool(config.get("validate_certs", True)),
            timeout=self._timeout,
        )

    async def close(self) -> None:
        for idle in self._idle.values():
            for smtp in idle:
                with contextlib.suppress(Exception):
                    await smtp.quit()
        self._idle.clear()


class EmailSender:
    def __init__(self, pool: SmtpPool) -> None:
        self._pool = pool

    async def send(self, job: Job) -> Outcome:
        if not job.recipient:
            return Outcome("failed", "no recipient address")
        mail = build_message(job)
        try:
            async with self._pool.connection(job) as smtp:
                _, reply = await smtp.send_message(mail)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            # Only a refusal of the recipient is a bounce that suppresses the address.
            first = exc.recipients[0]
            return smtp_outcome(first.code, first.message)
        except aiosmtplib.SMTPResponseException as exc:
            # Our login, our sender or our message refused: not the recipient's fault.
            outcome = smtp_outcome(exc.code, exc.message)
            return (
                Outcome("failed", outcome.detail, exc.code)
                if outcome.kind == "bounced"
                else outcome
            )
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            return Outcome("retry", f"{type(exc).__name__}: {exc}"[:500])
        return Outcome("sent", reply[:500], 250, provider_message_id=str(mail["Message-ID"]))

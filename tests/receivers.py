"""Real servers standing in for the outside world: an HTTP receiver (Slack, webhooks) and an
SMTP server (aiosmtpd) that keep everything they receive."""

from __future__ import annotations

import asyncio
import email
import email.policy
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import uvicorn
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from tests.infra import free_port


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: bytes = b"ok"
    headers: tuple[tuple[str, str], ...] = ()
    delay_s: float = 0.0


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() on arrival


class HttpReceiver:
    """A real HTTP server on 127.0.0.1 answering each path by its plan (the last answer of a
    plan repeats; an unplanned path gets 200 `ok`)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.received: list[Received] = []
        self._plans: dict[str, list[Answer]] = {}
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def plan(self, path: str, *answers: Answer) -> None:
        self._plans[path] = list(answers)

    def at(self, path: str) -> list[Received]:
        return [r for r in self.received if r.path == path]

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.received.append(Received(scope["path"], headers, body, time.monotonic()))
        plan = self._plans.get(scope["path"])
        answer = (plan.pop(0) if len(plan) > 1 else plan[0]) if plan else Answer()
        if answer.delay_s:
            await asyncio.sleep(answer.delay_s)
        await send(
            {
                "type": "http.response.start",
                "status": answer.status,
                "headers": [(k.encode(), v.encode()) for k, v in answer.headers],
            }
        )
        await send({"type": "http.response.body", "body": answer.body})

    async def start(self) -> None:
        config = uvicorn.Config(
            self, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off"
        )
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task


@dataclass
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


@dataclass
class MailHandler:
    """Keeps every mail; answers RCPT for an address by its rules (e.g. `550 no such user`)."""

    mails: list[Mail] = field(default_factory=list)
    rules: dict[str, list[str]] = field(default_factory=dict)
    logins: list[str] = field(default_factory=list)
    # Seconds to hold the answer to DATA for a recipient: the mail is kept, its 250 comes late.
    data_delays: dict[str, float] = field(default_factory=dict)

    async def handle_RCPT(
        self, server: Any, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        rule = self.rules.get(address.lower())
        if rule:
            answer = rule.pop(0) if len(rule) > 1 else rule[0]
            if not answer.startswith("250"):
                return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content or b""
        assert isinstance(raw, bytes)
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.mails.append(Mail(str(envelope.mail_from), list(envelope.rcpt_tos), message))
        delay = max((self.data_delays.get(a.lower(), 0.0) for a in envelope.rcpt_tos), default=0)
        if delay:
            await asyncio.sleep(delay)
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[Mail]:
        return [m for m in self.mails if address in m.rcpt_tos]


class SmtpReceiver:
    """aiosmtpd on 127.0.0.1 with AUTH LOGIN/PLAIN (user `mailer`, password `s3cret-pass`)."""

    USER, PASSWORD = "mailer", "s3cret-pass"

    def __init__(self) -> None:
        self.port = free_port()
        self.handler = MailHandler()
        self._controller = Controller(
            self.handler,
            hostname="127.0.0.1",
            port=self.port,
            authenticator=self._authenticate,
            auth_require_tls=False,
        )

    def _authenticate(
        self, server: Any, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (
            data.login.decode(),
            data.password.decode(),
        ) == (self.USER, self.PASSWORD)
        if ok:
            self.handler.logins.append(self.USER)
        return AuthResult(success=ok)

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

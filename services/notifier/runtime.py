"""What one running notifier holds beyond the platform's context: the secret box, link
settings, the operator's allow-list, the senders and the delivery worker."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from services.notifier.channels.domain import AllowList
from services.notifier.channels.email import EmailSender, SmtpPool
from services.notifier.channels.http import Client
from services.notifier.channels.job import Sender
from services.notifier.channels.log import LogSender
from services.notifier.channels.secrets import SecretBox
from services.notifier.channels.slack import SlackSender
from services.notifier.channels.webhook import WebhookSender
from services.notifier.delivery.domain import RetryPolicy
from services.notifier.delivery.worker import DeliveryWorker
from services.notifier.handlers import Links
from services.notifier.requests.statement import statement_of
from services.notifier.settings import NotifierSettings, notifier_settings
from shared.app import ServiceContext


@dataclass
class Runtime:
    settings: NotifierSettings
    box: SecretBox
    links: Links
    allow: AllowList
    worker: DeliveryWorker
    http: Client
    smtp: SmtpPool
    senders: dict[str, Sender] = field(default_factory=dict)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.smtp.close()
        await self.http.aclose()


_runtimes: dict[int, tuple[ServiceContext, Runtime]] = {}
# Outbound HTTP connections (Slack, webhooks) one process keeps; sends beyond wait their turn.
HTTP_CONNECTIONS = 100


def runtime_of(ctx: ServiceContext) -> Runtime:
    """The runtime of a running service (made on first use, one per context)."""
    found = _runtimes.get(id(ctx))
    if found is not None and found[0] is ctx:
        return found[1]
    runtime = build_runtime(ctx)
    _runtimes[id(ctx)] = (ctx, runtime)
    return runtime


def forget(ctx: ServiceContext) -> None:
    _runtimes.pop(id(ctx), None)


def build_runtime(ctx: ServiceContext) -> Runtime:
    settings = notifier_settings(ctx.settings)
    secret = settings.signing_secret()
    links = Links(
        public_url=settings.notifier_public_url.rstrip("/"),
        tracking_url=settings.notifier_tracking_url.rstrip("/"),
        contact_url=settings.notifier_contact_url,
        link_secret=secret,
        log_fallback=settings.log_fallback,
    )
    allow = AllowList.parse(settings.notifier_allowed_hosts)
    timeout = settings.notifier_http_timeout_s
    client = Client(HTTP_CONNECTIONS)
    senders: dict[str, Sender] = {
        "slack": SlackSender(client, settings.notifier_slack_api_url, allow, timeout),
        "webhook": WebhookSender(client, allow, timeout),
        "log": LogSender(),
    }
    box = SecretBox(settings.encryption_keys())
    attempt_timeout = max(timeout, settings.notifier_smtp_timeout_s) + 5.0
    # A claim younger than the longest attempt may still be in flight in a live process.
    lease = max(settings.notifier_sending_lease_s, attempt_timeout + 1.0)
    # A mail waits for a pooled connection for half the lease at most, which leaves the other
    # half to its commands (each answered within the SMTP timeout): a mail still waiting is
    # never taken for a crashed send.
    smtp = SmtpPool(
        settings.notifier_smtp_pool_size, settings.notifier_smtp_timeout_s, wait_s=lease / 2
    )
    senders["email"] = EmailSender(smtp)
    worker = DeliveryWorker(
        ctx.uow,
        senders,
        box,
        links,
        RetryPolicy(
            settings.notifier_retry_base_s,
            settings.notifier_retry_max_delay_s,
            settings.notifier_retry_window_s,
        ),
        slack_interval_s=settings.notifier_slack_interval_s,
        sending_lease_s=lease,
        hold_lease_s=settings.notifier_hold_lease_s,
        batch=settings.notifier_worker_batch,
        max_in_flight=settings.notifier_max_in_flight,
        poll_interval_s=settings.notifier_poll_interval_s,
        attempt_timeout_s=attempt_timeout,
        http_concurrency=HTTP_CONNECTIONS,
        one_statement=statement_of(ctx) if ctx.engine.dialect.name == "postgresql" else None,
    )
    return Runtime(settings, box, links, allow, worker, client, smtp, senders)

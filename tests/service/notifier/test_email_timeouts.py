"""SMTP cut off at the worst moment, against a real SMTP server (aiosmtpd): a DATA whose
answer never comes in time may have been delivered and is never sent again; a mail that
cannot get one of its server's connections in time is retried later, not left to look like a
crashed send."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from services.notifier.channels.email import EmailSender, SmtpPool
from services.notifier.channels.job import Job
from services.notifier.main import SPEC
from shared.app import create_app
from tests.helpers import running
from tests.receivers import SmtpReceiver
from tests.service.notifier.conftest import Notifier, notifier_settings, random_email
from tests.service.notifier.test_email import mail_channel


class TestCutOffInData:
    async def test_a_data_answer_past_the_timeout_is_unknown_and_not_sent_again(
        self, tmp_path: Path, smtp: SmtpReceiver
    ) -> None:
        settings = notifier_settings(tmp_path, notifier_smtp_timeout_s=0.5)
        app = create_app(SPEC, settings)
        async with running(app) as client:
            notifier = Notifier(app, client, f"ws-{uuid.uuid4().hex[:8]}")
            await mail_channel(notifier, smtp)
            address = random_email("slow")
            smtp.handler.data_delays[address] = 1.5
            before = await notifier.unknown_count()
            key = await notifier.request(
                channel="mail", recipient=address, content={"subject": "Hi", "text": "Hello"}
            )
            item = await notifier.settled(key)
            assert item["status"] == "unknown", item
            assert item["attempts"] == 1
            assert "in DATA" in item["attempt_log"][0]["response"]
            assert "not sent again" in item["reason"]
            assert await notifier.unknown_count() == before + 1
            await asyncio.sleep(1.5)  # retries here come after 0.05-0.2 s: none came
            assert len(smtp.handler.to(address)) == 1
            assert (await notifier.delivery(key) or {})["attempts"] == 1

    async def test_a_refusal_before_data_is_still_retried(
        self, notifier: Notifier, smtp: SmtpReceiver
    ) -> None:
        await mail_channel(notifier, smtp)
        address = random_email("later")
        smtp.handler.rules[address] = ["421 4.3.2 busy", "250 OK"]
        key = await notifier.request(
            channel="mail", recipient=address, content={"subject": "Hi", "text": "Hello"}
        )
        item = await notifier.settled(key)
        assert item["status"] == "sent", item
        assert [a["outcome"] for a in item["attempt_log"]] == ["retry", "sent"]
        assert len(smtp.handler.to(address)) == 1


def job(address: str, port: int) -> Job:
    return Job(
        delivery_id=f"ntf_{uuid.uuid4().hex[:8]}",
        workspace="ws",
        channel_id="ch_mail",
        channel_name="mail",
        kind="email",
        purpose="transactional",
        recipient=address,
        message={"subject": "Hi", "text": "Hello", "message_id": "<m@leadwire.test>"},
        attempt=1,
        config={"host": "127.0.0.1", "port": port, "security": "none", "from_address": "a@b.c"},
    )


class TestWaitForAConnection:
    async def test_a_mail_waiting_too_long_for_a_connection_is_retried_unsent(
        self, smtp: SmtpReceiver
    ) -> None:
        pool = SmtpPool(size=1, timeout=5.0, wait_s=0.3)
        sender = EmailSender(pool)
        slow, waiting = random_email("busy"), random_email("waiting")
        smtp.handler.data_delays[slow] = 1.0
        try:
            first = asyncio.create_task(sender.send(job(slow, smtp.port)))
            await asyncio.sleep(0.1)  # the first holds the pool's one connection
            second = await sender.send(job(waiting, smtp.port))
            assert second.kind == "retry"
            assert "no SMTP connection free within 0.3 s" in second.detail
            assert (await first).kind == "sent"
            assert smtp.handler.to(waiting) == []
            assert (await sender.send(job(waiting, smtp.port))).kind == "sent"
        finally:
            await pool.close()

"""Slack delivery against a real HTTP receiver: Block Kit content, pacing, 429, 5xx, hangs."""

from __future__ import annotations

import itertools
import uuid
from pathlib import Path

import orjson

from services.notifier.main import SPEC
from shared.app import create_app
from tests.helpers import running
from tests.receivers import Answer, HttpReceiver
from tests.service.notifier.conftest import Notifier, notifier_settings


class TestSlackWebhook:
    async def test_sends_block_kit_with_the_contacts_key_fields(
        self, notifier: Notifier, slack: HttpReceiver
    ) -> None:
        await notifier.channel("sales", "slack", secrets={"webhook_url": slack.url("/hook/a")})
        template = {"name": "alert", "text": "New lead {{ contact.name }} ({{ score }})"}
        assert (await notifier.post("/v1/templates", template)).status_code == 201
        contact = await notifier.contact(first_name="Grace", company="Navy")
        key = await notifier.request(contact_id=contact.id, channel="sales", template="alert")
        item = await notifier.settled(key)
        assert item["status"] == "sent", item
        [post] = slack.at("/hook/a")
        body = orjson.loads(post.body)
        assert body["text"] == "New lead Grace Lovelace (87.5)"
        fields = " ".join(f["text"] for f in body["blocks"][1]["fields"])
        assert "Navy" in fields
        assert "87.5" in fields
        assert contact.email is not None
        assert contact.email in fields
        assert contact.id in body["blocks"][2]["elements"][0]["text"]


class TestSlackAnswers:
    async def test_429_waits_for_retry_after_then_sends(
        self, notifier: Notifier, slack: HttpReceiver
    ) -> None:
        slack.plan("/hook/busy", Answer(429, b"rate_limited", (("retry-after", "1"),)), Answer())
        await notifier.channel("busy", "slack", secrets={"webhook_url": slack.url("/hook/busy")})
        key = await notifier.request(channel="busy", content={"text": "hello"})
        item = await notifier.settled(key)
        assert item["status"] == "sent"
        assert item["attempts"] == 2
        first, second = slack.at("/hook/busy")
        assert second.at - first.at >= 0.95
        assert [a["status_code"] for a in item["attempt_log"]] == [429, 200]

    async def test_500_is_retried_with_backoff(
        self, notifier: Notifier, slack: HttpReceiver
    ) -> None:
        slack.plan("/hook/flaky", Answer(500, b"oops"), Answer(503, b"oops"), Answer())
        await notifier.channel("flaky", "slack", secrets={"webhook_url": slack.url("/hook/flaky")})
        key = await notifier.request(channel="flaky", content={"text": "hello"})
        item = await notifier.settled(key)
        assert item["status"] == "sent"
        assert [a["outcome"] for a in item["attempt_log"]] == ["retry", "retry", "sent"]
        assert len(slack.at("/hook/flaky")) == 3

    async def test_an_answer_hanging_past_the_timeout_is_unknown_and_not_sent_again(
        self, notifier: Notifier, slack: HttpReceiver
    ) -> None:
        # Slack takes no idempotency key: a post that may have arrived is never repeated.
        slack.plan("/hook/slow", Answer(200, delay_s=3.0), Answer())
        await notifier.channel("slow", "slack", secrets={"webhook_url": slack.url("/hook/slow")})
        before = await notifier.unknown_count()
        key = await notifier.request(channel="slow", content={"text": "hello"})
        item = await notifier.settled(key)
        assert item["status"] == "unknown", item
        assert item["attempts"] == 1
        assert item["attempt_log"][0]["outcome"] == "unknown"
        assert "timed out" in item["attempt_log"][0]["response"]
        assert "not sent again" in item["reason"]
        assert len(slack.at("/hook/slow")) == 1
        assert await notifier.unknown_count() == before + 1

    async def test_a_4xx_fails_without_retry(self, notifier: Notifier, slack: HttpReceiver) -> None:
        slack.plan("/hook/gone", Answer(404, b"no_service"))
        await notifier.channel("gone", "slack", secrets={"webhook_url": slack.url("/hook/gone")})
        key = await notifier.request(channel="gone", content={"text": "hello"})
        item = await notifier.settled(key)
        assert item["status"] == "failed"
        assert item["attempts"] == 1
        assert "404" in item["reason"]
        assert len(slack.at("/hook/gone")) == 1


class TestSlackPacing:
    async def test_one_channel_is_paced_without_holding_up_another(
        self, tmp_path: Path, slack: HttpReceiver
    ) -> None:
        # A pace of one post per 0.5 s: arrivals are timed by the receiver, which shares the
        # test's event loop, so a loaded machine delays some by a tenth of a second or more.
        settings = notifier_settings(tmp_path, notifier_slack_interval_s=0.5)
        app = create_app(SPEC, settings)
        async with running(app) as client:
            await self.paced(Notifier(app, client, f"ws-{uuid.uuid4().hex[:8]}"), slack)

    async def paced(self, notifier: Notifier, slack: HttpReceiver) -> None:
        await notifier.channel("busy", "slack", secrets={"webhook_url": slack.url("/hook/busy")})
        await notifier.channel("quiet", "slack", secrets={"webhook_url": slack.url("/hook/quiet")})
        # A first post opens the connection, so that the paced ones' arrivals do not carry a
        # connection's set-up.
        await notifier.settled(await notifier.request(channel="busy", content={"text": "warm"}))
        slack.received.clear()
        keys = [await notifier.request(channel="busy", content={"text": f"m{i}"}) for i in range(4)]
        quiet = await notifier.request(channel="quiet", content={"text": "q"})
        for key in [*keys, quiet]:
            await notifier.settled(key)
        busy = sorted(r.at for r in slack.at("/hook/busy"))
        gaps = [b - a for a, b in itertools.pairwise(busy)]
        assert len(busy) == 4
        # Sends start on the beat; arrivals jitter with the loop, never enough to double up.
        assert all(gap >= 0.25 for gap in gaps), gaps
        assert busy[-1] - busy[0] >= 3 * 0.5 * 0.95
        [quiet_post] = slack.at("/hook/quiet")
        assert quiet_post.at < busy[-1]  # not queued behind the busy channel


class TestSlackBot:
    async def test_posts_with_the_bot_token_to_chat_post_message(
        self, notifier: Notifier, slack: HttpReceiver
    ) -> None:
        slack.plan("/api/chat.postMessage", Answer(200, b'{"ok": true, "ts": "1700.01"}'))
        await notifier.channel(
            "bot", "slack", config={"channel": "C123"}, secrets={"bot_token": "xoxb-secret"}
        )
        key = await notifier.request(channel="bot", content={"text": "hi"}, recipient="C999")
        item = await notifier.settled(key)
        assert item["status"] == "sent", item
        assert item["provider_message_id"] == "1700.01"
        [post] = slack.at("/api/chat.postMessage")
        assert post.headers["authorization"] == "Bearer xoxb-secret"
        assert orjson.loads(post.body)["channel"] == "C999"

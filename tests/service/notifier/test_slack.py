"""Slack delivery against a real HTTP receiver: Block Kit content, pacing, 429, 5xx, hangs."""

from __future__ import annotations

import orjson

from tests.receivers import Answer, HttpReceiver
from tests.service.notifier.conftest import Notifier


class TestSlackWebhook:
    async def test_sends_block_kit_with_the_contacts_key_fields(
        self, notifier: Notifier, slack: HttpReceiver
    ) -> None:
        await notifier.channel("sales", "slack", secrets={"webhook_url": slack.url("/hook/a")})
        contact = await notifier.contact(first_name="Grace", company="Navy")
        key = await notifier.request(
            contact_id=contact.id,
            channel="sales",
            content={"text": "New lead {{ contact.name }} ({{ score }})"},
        )
        item = await notifier.settled(key)
        assert item["status"] == "sent", item
        [post] = slack.at("/hook/a")
        body = orjson.loads(post.body)
        assert body["text"] == "New lead Grace Lovelace (87.5)"
        fields = " ".join(f["text"] for f in body["blocks"][1]["fields"])
        assert "Navy" in fields and "87.5" in fields and contact.email in fields
        assert contact.id in body["blocks"][2]["elements"][0]["text"]

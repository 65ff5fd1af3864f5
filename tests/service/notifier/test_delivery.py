"""Delivery rules end to end on the in-process bus: idempotency, webhooks and their targets,
policy for marketing mail, bad requests, erasure."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

import orjson

from services.notifier.store import NotifierStore
from shared.events import topics
from shared.events.contacts import ContactDeleted
from shared.events.envelope import Envelope
from shared.events.notifications import NotificationRequested
from tests.helpers import eventually
from tests.receivers import Answer, HttpReceiver, SmtpReceiver
from tests.service.notifier.conftest import Notifier
from tests.service.notifier.test_email import mail_channel

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()


def verify_standard_webhook(headers: dict[str, str], body: bytes) -> bool:
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(b"k" * 32, signed, hashlib.sha256).digest()).decode()
    return headers["webhook-signature"] == f"v1,{expected}"


class TestIdempotency:
    async def test_a_redelivered_request_is_sent_once(
        self, notifier: Notifier, slack: HttpReceiver
    ) -> None:
        await notifier.channel("s", "slack", secrets={"webhook_url": slack.url("/hook/once")})
        key = await notifier.request(channel="s", content={"text": "one"})
        await notifier.settled(key, "sent")
        for _ in range(3):
            await notifier.request(idempotency_key=key, channel="s", content={"text": "one"})
        api = await notifier.post(
            "/v1/notifications", {"idempotency_key": key, "channel": "s", "content": {"text": "x"}}
        )
        assert api.status_code == 202
        assert api.json()["status"] == "sent"
        later = await notifier.request(channel="s", content={"text": "two"})
        await notifier.settled(later, "sent")
        assert [orjson.loads(r.body)["text"] for r in slack.at("/hook/once")] == ["one", "two"]

    async def test_a_redelivered_event_is_handled_once(
        self, notifier: Notifier, slack: HttpReceiver
    ) -> None:
        await notifier.channel("s", "slack", secrets={"webhook_url": slack.url("/hook/event")})
        payload = NotificationRequested(
            idempotency_key=f"test:{uuid.uuid4().hex}", channel="s", content={"text": "one"}
        )
        event = Envelope.of(payload, source="/leadwire/workflows", workspace=notifier.workspace)
        key = topics.contact_key(notifier.workspace, payload.idempotency_key)
        for _ in range(2):  # the inbox turns the second copy (its claim at commit) into nothing
            await notifier.ctx.bus.publish(topics.NOTIFICATION_REQUESTS, key, event)
        await notifier.settled(payload.idempotency_key, "sent")
        later = await notifier.request(channel="s", content={"text": "two"})
        await notifier.settled(later, "sent")
        assert [orjson.loads(r.body)["text"] for r in slack.at("/hook/event")] == ["one", "two"]

    async def test_the_same_key_in_two_workspaces_is_two_messages(self, notifier: Notifier) -> None:
        key = await notifier.request(channel="log", content={"text": "a"})
        await notifier.request(
            workspace="other-ws", idempotency_key=key, channel="log", content={"text": "b"}
        )
        mine = await notifier.settled(key)
        theirs = await notifier.settled(key, workspace="other-ws")
        assert mine["id"] != theirs["id"]


class TestOutcomeEvents:
    async def test_outcomes_carry_the_requests_correlation_id_and_trace(
        self, notifier: Notifier, slack: HttpReceiver
    ) -> None:
        await notifier.channel("s", "slack", secrets={"webhook_url": slack.url("/hook/traced")})
        trace_id = uuid.uuid4().hex
        keys = {"sent": f"t:{uuid.uuid4().hex}", "failed": f"t:{uuid.uuid4().hex}"}
        for outcome, key in keys.items():
            channel = "s" if outcome == "sent" else "no-such-channel"
            payload = NotificationRequested(
                idempotency_key=key, channel=channel, content={"text": "x"}
            )
            envelope = Envelope.of(
                payload,
                source="/leadwire/workflows",
                workspace=notifier.workspace,
                correlationid=f"lead-{outcome}",
                traceparent=f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01",
            )
            await notifier.ctx.bus.publish(
                topics.NOTIFICATION_REQUESTS, topics.contact_key(notifier.workspace, key), envelope
            )
        for key in keys.values():
            await notifier.settled(key)

        def outcome_of(key: str) -> Envelope | None:
            events = notifier.published(topics.NOTIFICATIONS)
            return next((e for e in events if e.data["idempotency_key"] == key), None)

        await eventually(lambda: _all_published(outcome_of, keys.values()), timeout=10)
        for outcome, key in keys.items():
            event = outcome_of(key)
            assert event is not None
            assert event.type == f"notification.{outcome}"
            assert event.correlationid == f"lead-{outcome}"
            assert event.traceparent is not None
            assert event.traceparent.split("-")[1] == trace_id


async def _all_published(outcome_of: Callable[[str], Envelope | None], keys: Iterable[str]) -> bool:
    await asyncio.sleep(0)
    return all(outcome_of(key) is not None for key in keys)


class TestWebhooks:
    async def test_signed_the_standard_webhooks_way(
        self, notifier: Notifier, slack: HttpReceiver
    ) -> None:
        await notifier.channel(
            "crm", "webhook", config={"url": slack.url("/wh")}, secrets={"signing_secret": SECRET}
        )
        contact = await notifier.contact()
        key = await notifier.request(
            contact_id=contact.id,
            channel="crm",
            content={"text": "lead {{ contact.email }}", "json": {"deal": 12}},
            variables={"source": "test"},
        )
        item = await notifier.settled(key)
        assert item["status"] == "sent", item
        [post] = slack.at("/wh")
        assert verify_standard_webhook(post.headers, post.body)
        assert post.headers["webhook-id"] == item["id"]
        data = orjson.loads(post.body)["data"]
        # Inline content is final (its sender rendered it): never run as a template again.
        assert data["content"]["text"] == "lead {{ contact.email }}"
        assert data["body"] == {"deal": 12}
        assert data["contact"]["email"] == contact.email
        assert data["variables"] == {"source": "test"}
        assert data["idempotency_key"] == key

    async def test_retries_keep_the_webhook_id_and_408_429_are_retried(
        self, notifier: Notifier, slack: HttpReceiver
    ) -> None:
        slack.plan("/wh2", Answer(408), Answer(429), Answer(200))
        await notifier.channel(
            "crm", "webhook", config={"url": slack.url("/wh2")}, secrets={"signing_secret": SECRET}
        )
        key = await notifier.request(channel="crm", content={"text": "x"})
        item = await notifier.settled(key)
        assert item["status"] == "sent"
        ids = {r.headers["webhook-id"] for r in slack.at("/wh2")}
        assert ids == {item["id"]}
        assert len(slack.at("/wh2")) == 3

    async def test_other_4xx_and_redirects_fail_at_once(
        self, notifier: Notifier, slack: HttpReceiver
    ) -> None:
        slack.plan("/wh400", Answer(400))
        slack.plan("/wh302", Answer(302, headers=(("location", "http://169.254.169.254/"),)))
        for path in ("/wh400", "/wh302"):
            await notifier.channel(
                path.strip("/"),
                "webhook",
                config={"url": slack.url(path)},
                secrets={"signing_secret": SECRET},
            )
        k400 = await notifier.request(channel="wh400", content={"text": "x"})
        k302 = await notifier.request(channel="wh302", content={"text": "x"})
        for key, code in ((k400, 400), (k302, 302)):
            item = await notifier.settled(key)
            assert (item["status"], item["attempts"]) == ("failed", 1)
            assert f"HTTP {code}" in item["reason"]
        assert len(slack.at("/wh302")) == 1  # the redirect was not followed

    async def test_a_name_resolving_to_loopback_is_refused_at_send_time(
        self, notifier: Notifier, slack: HttpReceiver
    ) -> None:
        # Valid when saved (https, not a literal private address); when sent, `localhost` and
        # the numeric forms resolve to 127.0.0.1, and `*.localhost` is loopback by RFC 6761.
        for name, host in (
            ("lh", "localhost"),
            ("decimal", "2130706433"),
            ("hex", "0x7f000001"),
            ("short", "127.1"),
            ("sub", "api.localhost"),
        ):
            await notifier.channel(
                name,
                "webhook",
                config={"url": f"https://{host}:{slack.port}/wh"},
                secrets={"signing_secret": SECRET},
            )
            key = await notifier.request(channel=name, content={"text": "x"})
            item = await notifier.settled(key)
            assert item["status"] == "failed", item
            assert item["attempts"] == 1
            assert "loopback" in item["reason"], item["reason"]
        assert slack.at("/wh") == []


class TestMarketingPolicy:
    async def test_the_daily_cap_suppresses_the_extra_marketing_mail(
        self, notifier: Notifier, smtp: SmtpReceiver
    ) -> None:
        await notifier.client.put(
            "/v1/settings", json={"marketing_daily_cap": 2}, headers=notifier.headers
        )
        await mail_channel(notifier, smtp)
        contact = await notifier.contact()
        content = {"subject": "Offer", "text": "Buy"}
        keys = [
            await notifier.request(
                contact_id=contact.id, channel="mail", content=content, purpose="marketing"
            )
            for _ in range(3)
        ]
        statuses = [(await notifier.settled(k))["status"] for k in keys]
        assert sorted(statuses) == ["sent", "sent", "suppressed"]
        receipt = await notifier.request(contact_id=contact.id, channel="mail", content=content)
        assert (await notifier.settled(receipt))["status"] == "sent"

    async def test_quiet_hours_hold_marketing_mail_until_they_end(
        self, notifier: Notifier, smtp: SmtpReceiver
    ) -> None:
        now = datetime.now(UTC)
        start = (now - timedelta(hours=1)).strftime("%H:%M")
        end = (now + timedelta(hours=2)).strftime("%H:%M")
        await notifier.client.put(
            "/v1/settings",
            json={"quiet_hours": {"start": start, "end": end, "timezone": "UTC"}},
            headers=notifier.headers,
        )
        await mail_channel(notifier, smtp)
        contact = await notifier.contact()
        content = {"subject": "Offer", "text": "Buy"}
        held = await notifier.request(
            contact_id=contact.id, channel="mail", content=content, purpose="marketing"
        )
        receipt = await notifier.request(contact_id=contact.id, channel="mail", content=content)
        assert (await notifier.settled(receipt))["status"] == "sent"
        item = await notifier.delivery(held)
        assert item is not None
        assert (item["status"], item["reason"]) == ("queued", "held for quiet hours")
        assert datetime.fromisoformat(item["next_attempt_at"]) > now + timedelta(hours=1)

    async def test_an_unsubscribed_contact_gets_no_marketing_mail(
        self, notifier: Notifier, smtp: SmtpReceiver
    ) -> None:
        await mail_channel(notifier, smtp)
        contact = await notifier.contact(subscription_status="unsubscribed")
        key = await notifier.request(
            contact_id=contact.id, channel="mail", content={"text": "x"}, purpose="marketing"
        )
        item = await notifier.settled(key)
        assert (item["status"], item["reason"]) == ("suppressed", "unsubscribed")


class TestBadRequests:
    async def test_unknown_channel_template_or_render_failure_is_a_failed_delivery(
        self, notifier: Notifier
    ) -> None:
        contact = await notifier.contact()
        custom = {"name": "custom", "text": "{{ contact.custom_fields.missing }}"}
        assert (await notifier.post("/v1/templates", custom)).status_code == 201
        cases = {
            "unknown_channel": {"channel": "nope", "content": {"text": "x"}},
            "unknown_template": {"channel": "log", "template": "missing"},
            "render_failed": {"channel": "log", "template": "custom"},
            "invalid_content": {"channel": "log", "content": {"text": 5}},
            "no_content": {"channel": "log"},
        }
        for reason, fields in cases.items():
            key = await notifier.request(contact_id=contact.id, **fields)  # type: ignore[arg-type]
            item = await notifier.settled(key)
            assert item["status"] == "failed"
            assert item["reason"].startswith(reason), item["reason"]

    async def test_a_contact_arriving_after_its_request_is_waited_for(
        self, notifier: Notifier
    ) -> None:
        from tests.service.notifier.conftest import snapshot

        early = snapshot()
        key = await notifier.request(
            contact_id=early.id, channel="log", content={"text": "Hi {{ contact.first_name }}"}
        )
        await eventually(lambda: _has(notifier, key), timeout=10)
        assert (await notifier.delivery(key) or {})["status"] == "queued"
        await notifier.contact(id=early.id)
        assert (await notifier.settled(key))["status"] == "sent"


async def _has(notifier: Notifier, key: str) -> bool:
    return await notifier.delivery(key) is not None


class TestErasure:
    async def test_contact_deleted_erases_its_projection_and_deliveries(
        self, notifier: Notifier
    ) -> None:
        contact = await notifier.contact()
        key = await notifier.request(contact_id=contact.id, channel="log", content={"text": "x"})
        await notifier.settled(key)
        deleted = ContactDeleted(contact_id=contact.id, deleted_at=datetime.now(UTC))
        envelope = Envelope.of(deleted, source="/leadwire/contacts", workspace=notifier.workspace)
        await notifier.ctx.bus.publish(
            topics.CONTACTS, topics.contact_key(notifier.workspace, contact.id), envelope
        )

        async def erased() -> bool:
            async with notifier.ctx.uow() as uow:
                found = await NotifierStore(uow.session).contacts(notifier.workspace, [contact.id])
            return not found and await notifier.delivery(key) is None

        await eventually(erased, timeout=10)
        response = await notifier.get("/v1/notifications", contact_id=contact.id)
        assert response.json()["items"] == []

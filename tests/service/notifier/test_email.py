"""E-mail against a real SMTP server (aiosmtpd) that parses every mail."""

from __future__ import annotations

from email import message_from_bytes, policy
from typing import Any
from urllib.parse import urlsplit

from services.notifier.channels.email import build_message
from services.notifier.channels.job import Job
from shared import signed_links
from shared.events import topics
from tests.helpers import SECRET, eventually, token
from tests.receivers import SmtpReceiver
from tests.service.notifier.conftest import Notifier, random_email


async def mail_channel(notifier: Notifier, smtp: SmtpReceiver, name: str = "mail") -> None:
    await notifier.channel(
        name,
        "email",
        config={
            "host": "127.0.0.1",
            "port": smtp.port,
            "security": "none",
            "username": SmtpReceiver.USER,
            "from_address": "hello@leadwire.test",
            "from_name": "Leadwire Team",
            "reply_to": "support@leadwire.test",
        },
        secrets={"password": SmtpReceiver.PASSWORD},
    )


WELCOME: dict[str, Any] = {
    "name": "welcome",
    "subject": "Welcome {{ contact.first_name }}",
    "html": "<p>Hi {{ contact.first_name }} from {{ contact.company }}, plan "
    '{{ contact.custom_fields.plan }}. <a href="https://example.com/docs?a=1&amp;b=2">Docs</a>'
    ' <a href="{{ unsubscribe_url }}">Unsubscribe</a></p>',
    "text": "Hi {{ contact.first_name }}, plan {{ contact.custom_fields.plan }}.",
}


class TestEmail:
    async def test_personalised_multipart_mail_with_our_headers(
        self, notifier: Notifier, smtp: SmtpReceiver
    ) -> None:
        await mail_channel(notifier, smtp)
        assert (await notifier.post("/v1/templates", WELCOME)).status_code == 201
        contact = await notifier.contact(first_name="Grace", company="Navy")
        key = await notifier.request(
            contact_id=contact.id, channel="mail", template="welcome", purpose="transactional"
        )
        item = await notifier.settled(key)
        assert item["status"] == "sent", item
        [mail] = smtp.handler.to(str(contact.email))
        message = mail.message
        assert message["Subject"] == "Welcome Grace"
        assert message["From"] == "Leadwire Team <hello@leadwire.test>"
        assert message["Reply-To"] == "support@leadwire.test"
        assert message["Message-ID"] == item["provider_message_id"]
        assert message["List-Unsubscribe"] is None  # transactional mail
        assert message.get_content_type() == "multipart/alternative"
        text = message.get_body(("plain",))
        html = message.get_body(("html",))
        assert text is not None
        assert html is not None
        assert text.get_content().strip() == "Hi Grace, plan pro."
        assert "Hi Grace from Navy, plan pro." in html.get_content()
        assert smtp.handler.logins == [SmtpReceiver.USER]

    async def test_marketing_mail_has_one_click_unsubscribe_that_works(
        self, notifier: Notifier, smtp: SmtpReceiver
    ) -> None:
        await mail_channel(notifier, smtp)
        await notifier.post("/v1/templates", WELCOME)
        contact = await notifier.contact()
        key = await notifier.request(
            contact_id=contact.id, channel="mail", template="welcome", purpose="marketing"
        )
        await notifier.settled(key, "sent")
        [mail] = smtp.handler.to(str(contact.email))
        header = str(mail.message["List-Unsubscribe"])
        assert mail.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        url = header.strip("<>")
        assert url.startswith("http://notifier.test/v1/unsubscribe/")
        path = urlsplit(url).path
        page = await notifier.client.get(path)
        assert page.status_code == 200
        assert "<form" in page.text
        # The GET changed nothing: another marketing mail still goes.
        again = await notifier.request(
            contact_id=contact.id, channel="mail", template="welcome", purpose="marketing"
        )
        assert (await notifier.settled(again))["status"] == "sent"
        one_click = await notifier.client.post(path, content=b"List-Unsubscribe=One-Click")
        assert one_click.status_code == 200, one_click.text

        async def told_contacts() -> bool:
            commands = notifier.published(topics.CONTACT_COMMANDS)
            return any(
                c.type == "contact.set_subscription_status"
                and c.data == {"contact_id": contact.id, "status": "unsubscribed"}
                for c in commands
            )

        await eventually(told_contacts, timeout=10)
        blocked = await notifier.request(
            contact_id=contact.id, channel="mail", template="welcome", purpose="marketing"
        )
        item = await notifier.settled(blocked)
        assert (item["status"], item["reason"]) == ("suppressed", "unsubscribed")
        transactional = await notifier.request(
            contact_id=contact.id, channel="mail", template="welcome", purpose="transactional"
        )
        assert (await notifier.settled(transactional))["status"] == "sent"

    async def test_a_forged_unsubscribe_token_is_refused(self, notifier: Notifier) -> None:
        claims = {"w": notifier.workspace, "h": "0" * 64, "c": None}
        forged = signed_links.sign(b"another secret", "unsubscribe", claims)
        assert (await notifier.client.post(f"/v1/unsubscribe/{forged}")).status_code == 404
        real = signed_links.sign(SECRET.encode(), "unsubscribe", claims)
        assert (await notifier.client.post(f"/v1/unsubscribe/{real}")).status_code == 200
        body, _, signature = real.partition(".")
        altered = signed_links.sign(SECRET.encode(), "unsubscribe", claims | {"w": "other"})
        spliced = f"{altered.partition('.')[0]}.{signature}"
        assert (await notifier.client.post(f"/v1/unsubscribe/{spliced}")).status_code == 404
        assert body

    async def test_tracked_marketing_links_and_open_pixel(
        self, notifier: Notifier, smtp: SmtpReceiver
    ) -> None:
        await mail_channel(notifier, smtp)
        await notifier.post("/v1/templates", WELCOME)
        contact = await notifier.contact()
        key = await notifier.request(
            contact_id=contact.id, channel="mail", template="welcome", purpose="marketing"
        )
        await notifier.settled(key, "sent")
        [mail] = smtp.handler.to(str(contact.email))
        html_part = mail.message.get_body(("html",))
        assert html_part is not None
        html = html_part.get_content()
        assert "https://example.com/docs" not in html
        assert 'href="http://ingest.test/v1/t/c/' in html
        assert 'src="http://ingest.test/v1/t/o/' in html
        assert 'href="http://notifier.test/v1/unsubscribe/' in html  # not rewritten
        token = html.split("/v1/t/c/")[1].split('"')[0]
        claims = signed_links.verify(SECRET.encode(), "click", token)
        assert claims is not None
        assert claims["u"] == "https://example.com/docs?a=1&b=2"
        assert claims["c"] == contact.id

    async def test_tracking_is_off_with_one_workspace_setting(
        self, notifier: Notifier, smtp: SmtpReceiver
    ) -> None:
        response = await notifier.client.put(
            "/v1/settings", json={"tracking": False}, headers=notifier.headers
        )
        assert response.status_code == 200
        await mail_channel(notifier, smtp)
        await notifier.post("/v1/templates", WELCOME)
        contact = await notifier.contact()
        key = await notifier.request(
            contact_id=contact.id, channel="mail", template="welcome", purpose="marketing"
        )
        await notifier.settled(key, "sent")
        [mail] = smtp.handler.to(str(contact.email))
        html_part = mail.message.get_body(("html",))
        assert html_part is not None
        assert "https://example.com/docs" in html_part.get_content()
        assert "/v1/t/" not in html_part.get_content()


class TestBounces:
    async def test_a_5xx_refusal_is_a_hard_bounce_that_suppresses_marketing(
        self, notifier: Notifier, smtp: SmtpReceiver
    ) -> None:
        await mail_channel(notifier, smtp)
        address = random_email("bounce")
        smtp.handler.rules[address] = ["550 5.1.1 no such user"]
        contact = await notifier.contact(email=address)
        content = {"subject": "Hi", "text": "Hello {{ contact.first_name }}"}
        key = await notifier.request(contact_id=contact.id, channel="mail", content=content)
        item = await notifier.settled(key)
        assert item["status"] == "failed"
        assert item["attempts"] == 1
        assert item["reason"].startswith("hard bounce: SMTP 550")

        async def failed_published() -> bool:
            events = notifier.published(topics.NOTIFICATIONS)
            return [e.type for e in events if e.subject == contact.id] == ["notification.failed"]

        await eventually(failed_published, timeout=10)
        marketing = await notifier.request(
            contact_id=contact.id, channel="mail", content=content, purpose="marketing"
        )
        item = await notifier.settled(marketing)
        assert (item["status"], item["reason"]) == ("suppressed", "bounced")
        assert smtp.handler.mails == []

    async def test_a_4xx_refusal_is_retried(self, notifier: Notifier, smtp: SmtpReceiver) -> None:
        await mail_channel(notifier, smtp)
        address = random_email("soft")
        smtp.handler.rules[address] = ["451 4.7.1 try later", "451 4.7.1 try later", "250 OK"]
        contact = await notifier.contact(email=address)
        key = await notifier.request(
            contact_id=contact.id, channel="mail", content={"subject": "Hi", "text": "Hello"}
        )
        item = await notifier.settled(key)
        assert item["status"] == "sent"
        assert [a["outcome"] for a in item["attempt_log"]] == ["retry", "retry", "sent"]
        assert len(smtp.handler.to(address)) == 1


class TestPersonExport:
    async def test_export_holds_the_persons_messages_attempts_and_suppression(
        self, notifier: Notifier, smtp: SmtpReceiver
    ) -> None:
        await mail_channel(notifier, smtp)
        await notifier.post("/v1/templates", WELCOME)
        contact = await notifier.contact()
        other = await notifier.contact()
        key = await notifier.request(
            contact_id=contact.id, channel="mail", template="welcome", purpose="marketing"
        )
        await notifier.request(contact_id=other.id, channel="log", content={"text": "other"})
        await notifier.settled(key, "sent")
        [mail] = smtp.handler.to(str(contact.email))
        path = urlsplit(str(mail.message["List-Unsubscribe"]).strip("<>")).path
        assert (await notifier.client.post(path)).status_code == 200
        ref = {"contact_id": contact.id, "merged_ids": [], "identity_digests": []}

        reader = await notifier.client.post(
            "/v1/exports/person", json=ref, headers=notifier.headers
        )
        assert reader.status_code == 403  # the export is read with contacts' scope
        export = await notifier.client.post(
            "/v1/exports/person", json=ref, headers=token(notifier.workspace, "contacts:read")
        )

        assert export.status_code == 200, export.text
        part = export.json()
        assert [c["id"] for c in part["contacts"]] == [contact.id]
        [message] = part["notifications"]
        assert message["idempotency_key"] == key
        assert message["recipient"] == contact.email
        assert message["message"]["subject"]
        assert [a["outcome"] for a in message["attempts"]] == ["sent"]
        assert [s["reason"] for s in part["suppressions"]] == ["unsubscribed"]
        assert other.id not in export.text


class TestMimeMessage:
    def test_non_ascii_subject_and_sender_name_are_encoded_and_long_links_kept_whole(
        self,
    ) -> None:
        unsubscribe = "https://notifier.test/v1/unsubscribe/" + "t" * 300
        job = Job(
            delivery_id="ntf_1",
            workspace="ws",
            channel_id="chn_1",
            channel_name="mail",
            kind="email",
            purpose="marketing",
            recipient="zoe@example.com",
            message={
                "subject": "Bienvenue Zoë, ça va ?",
                "text": "Salut Zoë",
                "html": "<p>Salut Zoë</p>",
                "message_id": "<m1@leadwire.test>",
                "unsubscribe_url": unsubscribe,
            },
            attempt=1,
            config={"from_address": "hi@leadwire.test", "from_name": "Équipe Leadwire"},
        )
        raw = build_message(job)
        assert raw.isascii()
        mail = message_from_bytes(raw, policy=policy.default)
        assert mail["Subject"] == "Bienvenue Zoë, ça va ?"
        assert mail["From"] == "Équipe Leadwire <hi@leadwire.test>"
        assert mail["List-Unsubscribe"] == f"<{unsubscribe}>"
        assert mail["Message-ID"] == "<m1@leadwire.test>"
        text, html = mail.get_body(("plain",)), mail.get_body(("html",))
        assert text is not None
        assert html is not None
        assert text.get_content() == "Salut Zoë"
        assert html.get_content() == "<p>Salut Zoë</p>"

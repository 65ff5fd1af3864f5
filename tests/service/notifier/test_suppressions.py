"""Suppressions over the API: a complaint (a mailbox provider's feedback-loop report), a bounce
or an unsubscribe recorded from elsewhere, looked up and lifted; against a real SMTP server."""

from __future__ import annotations

from typing import Any

from shared.events import topics
from tests.helpers import eventually, token
from tests.receivers import SmtpReceiver
from tests.service.notifier.conftest import Notifier, random_email
from tests.service.notifier.test_email import mail_channel

CONTENT = {"subject": "News", "text": "Hello {{ contact.first_name }}"}


async def send(notifier: Notifier, contact_id: str, purpose: str) -> dict[str, Any]:
    key = await notifier.request(
        contact_id=contact_id, channel="mail", content=CONTENT, purpose=purpose
    )
    return await notifier.settled(key)


class TestSuppressions:
    async def test_a_complaint_stops_marketing_mail_until_lifted(
        self, notifier: Notifier, smtp: SmtpReceiver
    ) -> None:
        await mail_channel(notifier, smtp)
        contact = await notifier.contact()
        email = str(contact.email)
        body = {"email": email.upper(), "reason": "complained", "detail": "arf:abuse 17"}
        first = await notifier.post("/v1/suppressions", body)
        assert first.status_code == 201, first.text
        assert first.json() | {"created_at": None} == {
            "email": email,
            "reason": "complained",
            "detail": "arf:abuse 17",
            "contact_id": contact.id,
            "created_at": None,
        }
        again = await notifier.post("/v1/suppressions", body)  # idempotent
        assert again.status_code == 201, again.text
        assert again.json() == first.json()

        async def told_contacts() -> bool:
            return any(
                c.type == "contact.set_subscription_status"
                and c.data == {"contact_id": contact.id, "status": "unsubscribed"}
                for c in notifier.published(topics.CONTACT_COMMANDS)
            )

        await eventually(told_contacts, timeout=10)
        listed = await notifier.get("/v1/suppressions", email=email)
        assert [s["reason"] for s in listed.json()] == ["complained"]

        marketing = await send(notifier, contact.id, "marketing")
        assert (marketing["status"], marketing["reason"]) == ("suppressed", "complained")
        assert (await send(notifier, contact.id, "transactional"))["status"] == "sent"
        assert len(smtp.handler.to(email)) == 1

        lifted = await notifier.client.delete(
            f"/v1/suppressions/{email.upper()}", headers=notifier.headers
        )
        assert lifted.status_code == 204, lifted.text
        assert (await notifier.get("/v1/suppressions", email=email)).json() == []
        assert (await send(notifier, contact.id, "marketing"))["status"] == "sent"
        assert len(smtp.handler.to(email)) == 2
        gone = await notifier.client.delete(f"/v1/suppressions/{email}", headers=notifier.headers)
        assert gone.status_code == 404
        assert gone.json()["code"] == "suppression_not_found"

    async def test_bad_email_or_reason_is_422_with_paths(self, notifier: Notifier) -> None:
        for body, field in (
            ({"email": "not-an-address", "reason": "complained"}, "email"),
            ({"email": random_email(), "reason": "angry"}, "reason"),
            ({"reason": "bounced"}, "email"),
        ):
            response = await notifier.post("/v1/suppressions", body)
            assert response.status_code == 422, response.text
            assert response.headers["content-type"].startswith("application/problem+json")
            assert field in response.text
        listed = await notifier.get("/v1/suppressions", email="nobody")
        assert listed.status_code == 422

    async def test_another_workspace_neither_sees_nor_lifts_it(self, notifier: Notifier) -> None:
        email = random_email("fbl")
        body = {"email": email, "reason": "bounced"}
        assert (await notifier.post("/v1/suppressions", body)).status_code == 201
        other = "ws-other-suppressions"
        assert (await notifier.get("/v1/suppressions", other, email=email)).json() == []
        headers = token(other, "notifications:read", "notifications:write")
        lift = await notifier.client.delete(f"/v1/suppressions/{email}", headers=headers)
        assert lift.status_code == 404
        still = await notifier.get("/v1/suppressions", email=email)
        assert [s["reason"] for s in still.json()] == ["bounced"]

    async def test_writing_and_lifting_need_the_write_scope(self, notifier: Notifier) -> None:
        email = random_email("scope")
        reader = token(notifier.workspace, "notifications:read")
        body = {"email": email, "reason": "complained"}
        post = await notifier.client.post("/v1/suppressions", json=body, headers=reader)
        assert post.status_code == 403
        lift = await notifier.client.delete(f"/v1/suppressions/{email}", headers=reader)
        assert lift.status_code == 403
        nobody = token(notifier.workspace, "contacts:read")
        listed = await notifier.client.get(
            "/v1/suppressions", params={"email": email}, headers=nobody
        )
        assert listed.status_code == 403

"""A request's first attempt starts when the transaction accepting it commits: no claim, no
poll in between; what cannot go at once (a paced Slack channel) wakes the worker's claim."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from services.notifier.delivery.worker import DeliveryWorker
from services.notifier.main import SPEC
from services.notifier.store import NotifierStore
from shared.app import create_app
from tests.helpers import running
from tests.receivers import HttpReceiver
from tests.service.notifier.conftest import Notifier, notifier_settings, snapshot


class TestFirstAttempt:
    async def test_a_request_is_sent_without_the_workers_claim(
        self, tmp_path: Path, slack: HttpReceiver, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # The worker's claim is never woken and would poll only after an hour: only the
        # accepting transaction can have started this delivery.
        monkeypatch.setattr(DeliveryWorker, "wake", lambda self: None)
        settings = notifier_settings(tmp_path, notifier_poll_interval_s=3600)
        app = create_app(SPEC, settings)
        async with running(app) as client:
            notifier = Notifier(app, client, f"ws-{uuid.uuid4().hex[:8]}")
            await notifier.channel("sales", "slack", secrets={"webhook_url": slack.url("/h/a")})
            key = await notifier.request(channel="sales", content={"text": "new lead"})
            item = await notifier.settled(key, timeout=10)
            assert item["status"] == "sent", item
            assert item["attempts"] == 1
            [attempt] = item["attempt_log"]
            assert attempt["outcome"] == "sent"
            assert len(slack.at("/h/a")) == 1

    async def test_a_paced_message_is_claimed_at_once_not_at_the_next_poll(
        self, tmp_path: Path, slack: HttpReceiver
    ) -> None:
        settings = notifier_settings(
            tmp_path, notifier_poll_interval_s=3600, notifier_slack_interval_s=0.3
        )
        app = create_app(SPEC, settings)
        async with running(app) as client:
            notifier = Notifier(app, client, f"ws-{uuid.uuid4().hex[:8]}")
            await notifier.channel("sales", "slack", secrets={"webhook_url": slack.url("/h/b")})
            keys = [
                await notifier.request(channel="sales", content={"text": f"m{i}"}) for i in range(2)
            ]
            for key in keys:
                item = await notifier.settled(key, timeout=10)
                assert item["status"] == "sent", item
            first, second = sorted(r.at for r in slack.at("/h/b"))
            assert second - first >= 0.3 * 0.8

    async def test_a_request_waiting_for_its_contact_goes_when_the_contact_arrives(
        self, tmp_path: Path, slack: HttpReceiver
    ) -> None:
        # No poll for an hour: only the contact's arrival can set the waiting request going.
        settings = notifier_settings(tmp_path, notifier_poll_interval_s=3600)
        app = create_app(SPEC, settings)
        async with running(app) as client:
            notifier = Notifier(app, client, f"ws-{uuid.uuid4().hex[:8]}")
            await notifier.channel("sales", "slack", secrets={"webhook_url": slack.url("/h/c")})
            contact = snapshot()
            key = await notifier.request(
                channel="sales", contact_id=contact.id, content={"text": "hello"}
            )
            item = await notifier.settled(key, "queued", timeout=10)
            assert item["reason"] == "waiting for the contact"
            await notifier.contact(**contact.model_dump())
            item = await notifier.settled(key, timeout=10)
            assert item["status"] == "sent", item
            assert len(slack.at("/h/c")) == 1

    async def test_a_contact_committed_beside_its_request_does_not_leave_it_waiting(
        self, tmp_path: Path, slack: HttpReceiver, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # The contact's transaction ran beside the request's: the request read no contact, the
        # contact's upsert found no waiting request to make due (its row was not committed
        # yet). Here the projection gets the contact without making anything due, as then;
        # with no poll for an hour, only the worker's own next look can send the request.
        settings = notifier_settings(tmp_path, notifier_poll_interval_s=3600)
        app = create_app(SPEC, settings)
        async with running(app) as client:
            notifier = Notifier(app, client, f"ws-{uuid.uuid4().hex[:8]}")
            await notifier.channel("sales", "slack", secrets={"webhook_url": slack.url("/h/d")})
            contact = snapshot()
            key = await notifier.request(
                channel="sales", contact_id=contact.id, content={"text": "hello"}
            )
            item = await notifier.settled(key, "queued", timeout=10)
            assert item["reason"] == "waiting for the contact"
            async with notifier.ctx.uow() as uow:
                woken = await NotifierStore(uow.session).upsert_contacts(
                    [
                        {
                            "workspace": notifier.workspace,
                            "id": contact.id,
                            "snapshot": contact.model_dump(mode="json"),
                            "updated_at": contact.updated_at,
                        }
                    ]
                )
            assert woken == 0
            item = await notifier.settled(key, timeout=10)
            assert item["status"] == "sent", item
            assert len(slack.at("/h/d")) == 1

"""The delivery worker's admission: which deliveries an accepting transaction starts itself."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from cryptography.fernet import Fernet

from services.notifier.channels.secrets import SecretBox
from services.notifier.delivery.domain import RetryPolicy
from services.notifier.delivery.worker import DeliveryWorker
from services.notifier.handlers import Links
from shared.uow import UnitOfWork


def worker(max_in_flight: int = 100) -> DeliveryWorker:
    def no_database() -> UnitOfWork:
        raise AssertionError("admission needs no database")

    return DeliveryWorker(
        no_database,
        {},
        SecretBox([Fernet.generate_key()]),
        Links("http://n.test", "http://i.test", "http://c.test/{contact_id}", b"k" * 32),
        RetryPolicy(),
        slack_interval_s=1.0,
        sending_lease_s=60.0,
        hold_lease_s=10.0,
        batch=100,
        max_in_flight=max_in_flight,
        poll_interval_s=0.5,
        attempt_timeout_s=15.0,
    )


def row(n: int, kind: str = "slack", channel: str = "sales") -> dict[str, Any]:
    return {
        "id": f"ntf_{n}",
        "workspace": "ws",
        "channel_id": None,
        "channel": channel,
        "kind": kind,
        "purpose": "transactional",
        "recipient": None,
        "message": {"text": "hi"},
        "attempts": 0,
        "status": "queued",
        "claimed_at": None,
        "first_attempt_at": None,
        "updated_at": datetime.now(UTC),
    }


class TestAdmission:
    def test_taken_rows_are_marked_started(self) -> None:
        rows = [row(1), row(2, kind="webhook")]
        taken = worker().admission()(rows, {})
        assert taken == {"ntf_1", "ntf_2"}
        for r in rows:
            assert r["status"] == "sending"
            assert r["attempts"] == 1
            assert r["first_attempt_at"] == r["claimed_at"] is not None

    def test_a_paced_slack_channel_leaves_the_next_message_to_the_claim(self) -> None:
        work = worker()
        rows = [row(1), row(2), row(3, channel="other")]
        assert work.admission()(rows, {}) == {"ntf_1", "ntf_3"}
        assert rows[1]["status"] == "queued"
        assert rows[1]["attempts"] == 0

    def test_a_rolled_back_admission_gives_its_pacing_slot_back(self) -> None:
        work = worker()
        first = work.admission()
        assert first([row(1)], {}) == {"ntf_1"}
        first.cancel()
        assert work.admission()([row(2)], {}) == {"ntf_2"}

    def test_a_launch_gives_back_the_slots_of_rows_it_did_not_record(self) -> None:
        work = worker()
        first = work.admission()
        assert first([row(1)], {}) == {"ntf_1"}
        first.launch([])  # the insert skipped it: its key was known already
        assert work.admission()([row(2)], {}) == {"ntf_2"}

    def test_no_more_than_the_room_in_flight(self) -> None:
        rows = [row(n, kind="webhook") for n in range(5)]
        assert len(worker(max_in_flight=3).admission()(rows, {})) == 3
        assert [r["status"] for r in rows].count("queued") == 2

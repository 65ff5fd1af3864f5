"""The speed-to-lead benchmark's split of each hop at Kafka (bench/speed_to_lead.py)."""

from __future__ import annotations

from bench.speed_to_lead import by_second, hop_stages

EMAIL = b"stl-0123456789ab@bench.example"


def test_each_hop_is_split_at_kafka_and_a_same_transaction_event_keeps_its_cause() -> None:
    chain = {
        "lead.captured": (100.998, 101.002),
        "contact.created": (101.010, 101.020),
        # Made in the same transaction as contact.created, before that reached Kafka: its
        # cause is the lead, not contact.created.
        "contact.owner_assigned": (101.011, 101.020),
        "notification.requested": (101.030, 101.040),
        "notification.sent": (101.050, 101.055),
    }
    stages = hop_stages({EMAIL[:16].decode(): chain}, {EMAIL: (101.000, 101.045)})
    p50 = {label: figures["p50_ms"] for label, figures in stages.items()}
    assert p50 == {
        "ingest: lead.captured: made → on Kafka": 4.0,
        "ingest: accepted → lead.captured on Kafka": 2.0,
        "contacts: contact.created: cause on Kafka → made": 8.0,
        "contacts: contact.created: made → on Kafka": 10.0,
        "contacts: contact.owner_assigned: cause on Kafka → made": 9.0,
        "contacts: contact.owner_assigned: made → on Kafka": 9.0,
        "workflows: notification.requested: cause on Kafka → made": 10.0,
        "workflows: notification.requested: made → on Kafka": 10.0,
        "notifier: notification.sent: cause on Kafka → made": 10.0,
        "notifier: notification.sent: made → on Kafka": 5.0,
        "slack receiver: request on Kafka → arrived": 5.0,
    }


def test_a_lead_whose_events_were_not_read_adds_nothing() -> None:
    assert hop_stages({}, {EMAIL: (1.0, 2.0)}) == {}


def test_the_tail_is_told_second_by_second_of_the_window() -> None:
    timed = {
        b"a": (100.0, 100.030),
        b"b": (100.5, 100.540),
        b"c": (101.2, 102.200),  # the second second's leads waited a second
        b"d": (103.9, 103.920),  # nothing accepted in the third
    }
    assert by_second(timed) == [
        {"second": 0, "alerted": 2, "p50_ms": 30.0, "p99_ms": 40.0},
        {"second": 1, "alerted": 1, "p50_ms": 1000.0, "p99_ms": 1000.0},
        {"second": 3, "alerted": 1, "p50_ms": 20.0, "p99_ms": 20.0},
    ]
    assert by_second({}) == []

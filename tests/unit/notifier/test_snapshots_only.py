"""Which batches of contact events the projection writes in one statement."""

from __future__ import annotations

from typing import Any

from services.notifier.consumers import snapshots_only
from shared.events.envelope import Envelope


def event(kind: str, data: dict[str, Any], workspace: str = "ws") -> Envelope:
    return Envelope(source="/test", type=kind, data=data, workspace=workspace, correlationid="c")


def snap(contact_id: str, email: str, at: str = "2026-03-01T12:00:00Z") -> dict[str, Any]:
    return {"contact": {"id": contact_id, "email": email, "updated_at": at}}


def test_the_newest_snapshot_of_each_contact_of_each_workspace() -> None:
    rows = snapshots_only(
        [
            event("contact.created", snap("c1", "old@x.test")),
            event("contact.owner_assigned", snap("c1", "new@x.test")),
            event("contact.created", snap("c1", "other@x.test"), workspace="ws2"),
        ]
    )
    assert rows is not None
    assert [(r["workspace"], r["id"], r["snapshot"]["email"]) for r in rows] == [
        ("ws", "c1", "new@x.test"),
        ("ws2", "c1", "other@x.test"),
    ]


def test_an_erasure_or_an_event_without_a_snapshot_leaves_the_batch_to_the_transaction() -> None:
    created = event("contact.created", snap("c1", "a@x.test"))
    assert snapshots_only([created, event("contact.deleted", {"contact_id": "c1"})]) is None
    merged = event("contact.merged", {"merged_id": "c2", **snap("c1", "a@x.test")})
    assert snapshots_only([created, merged]) is None
    assert snapshots_only([created, event("contact.updated", {"contact": {"email": "x"}})]) is None

"""A contact's snapshots polled together: the same attributes are fitted once."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from services.scoring.contacts import handlers
from services.scoring.scores import domain as scores
from services.scoring.store import SqlStore
from tests.service.scoring.conftest import Service, snapshot


class Emitted:
    def __init__(self) -> None:
        self.events: list[bytes] = []

    def emit_encoded(self, topic: str, key: str, event_id: str, payload: bytes) -> None:
        self.events.append(payload)


@pytest.fixture
def fits(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The contact ids whose fit is computed, one entry per computation."""
    seen: list[str] = []
    real = scores.apply_attributes

    def counted(score: Any, rules: Any, attributes: Any) -> None:
        seen.append(attributes["id"])
        real(score, rules, attributes)

    monkeypatch.setattr(scores, "apply_attributes", counted)
    return seen


async def apply(service: Service, *snapshots: Any) -> Emitted:
    emitted = Emitted()
    changes = [
        handlers.ContactChange(service.workspace, s, f"corr-{i}") for i, s in enumerate(snapshots)
    ]
    async with service.app.state.ctx.uow() as uow:
        await handlers.on_contact_changes(
            changes, SqlStore(uow.session), emitted, service.clock.now
        )
    return emitted


async def test_the_same_snapshot_twice_in_a_batch_is_fitted_once(
    service: Service, fits: list[str]
) -> None:
    # `contact.created` and `contact.owner_assigned` of a new lead carry the same snapshot.
    contact = str(uuid.uuid4())
    snap = snapshot(contact, service.clock.now, job_title="VP Sales")
    emitted = await apply(service, snap, snap.model_copy())
    assert fits == [contact]
    assert await service.overall(contact) == 15  # the title's points, counted once
    assert len(emitted.events) == 1  # one score change, not a second of nothing


async def test_a_changed_snapshot_in_the_same_batch_is_fitted_again(
    service: Service, fits: list[str]
) -> None:
    contact = str(uuid.uuid4())
    now = service.clock.now
    await apply(
        service,
        snapshot(contact, now, job_title="VP Sales"),
        snapshot(contact, now, job_title="VP Sales", subscription_status="unsubscribed"),
    )
    assert fits == [contact, contact]
    assert await service.overall(contact) == -5  # +15 title, -20 unsubscribed


async def test_engagement_set_aside_for_a_repeated_snapshot_is_applied_once(
    service: Service, fits: list[str]
) -> None:
    contact = str(uuid.uuid4())
    await service.engage("demo.requested", contact)  # unknown yet: set aside
    snap = snapshot(contact, service.clock.now)
    await apply(service, snap, snap.model_copy())
    assert fits == [contact]
    assert await service.overall(contact) == 30  # the request's points, once

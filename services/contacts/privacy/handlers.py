"""Use cases of privacy: a person erased (right to be forgotten) or exported (right of access)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from services.contacts.handlers import (
    ContactRecords,
    live_contact,
    publish,
    snapshot_of,
    task_snapshot,
)
from services.contacts.models import (
    Activity,
    LifecycleChangeRow,
    MergeRecord,
    Segment,
    TaskRow,
)
from services.contacts.privacy.domain import ErasureSubject
from shared import erasure
from shared.events import topics
from shared.events.contacts import ContactDeleted, SegmentExited
from shared.export import PersonRef
from shared.uow import Transaction


class PrivacyRepository(ContactRecords, Protocol):
    """The repository as erasure and export use it."""

    async def erase(self, workspace: str, contact_id: str, event_key: str) -> None: ...

    async def erasure_subject(self, contact_id: str) -> ErasureSubject: ...

    async def lifecycle_history(self, contact_id: str) -> list[LifecycleChangeRow]: ...

    async def merges_of(self, contact_id: str) -> list[MergeRecord]: ...

    async def record_erasures(self, workspace: str, digests: list[str], at: datetime) -> None: ...

    async def segment(self, workspace: str, segment_id: str) -> Segment | None: ...

    async def segments_of(self, contact_id: str) -> list[str]: ...

    async def tasks_of(self, contact_id: str) -> list[TaskRow]: ...

    async def timeline(
        self, contact_id: str, cursor: str | None, limit: int
    ) -> tuple[list[Activity], str | None]: ...


async def erase_contact(
    workspace: str, contact_id: str, tx: Transaction[PrivacyRepository], now: datetime
) -> None:
    """Erase everything held on a person (right to be forgotten) and publish a tombstone."""
    store = tx.store
    contact = await live_contact(store, workspace, contact_id)
    for segment_id in await store.segments_of(contact.id):
        segment = await store.segment(workspace, segment_id)
        if segment is not None:
            publish(
                tx,
                workspace,
                contact.id,
                SegmentExited(
                    segment_id=segment.id,
                    segment_name=segment.name,
                    contact_id=contact.id,
                    at=now,
                ),
            )
    subject = await store.erasure_subject(contact.id)
    digests = erasure.digests(workspace, subject.identities)
    await store.erase(workspace, contact.id, topics.contact_key(workspace, contact.id))
    # Only digests are kept, so a replay of the person's old leads is recognised and dropped.
    await store.record_erasures(workspace, digests, now)
    publish(
        tx,
        workspace,
        contact.id,
        ContactDeleted(
            contact_id=contact.id,
            deleted_at=now,
            merged_ids=subject.merged_ids,
            identity_digests=digests,
            submission_ids=subject.submission_ids,
        ),
    )


async def person_ref(
    workspace: str, contact_id: str, tx: Transaction[PrivacyRepository]
) -> PersonRef:
    """How other services find the person in their own rows (see shared.export)."""
    store = tx.store
    contact = await live_contact(store, workspace, contact_id)
    subject = await store.erasure_subject(contact.id)
    return PersonRef(
        contact_id=contact.id,
        merged_ids=subject.merged_ids,
        identity_digests=erasure.digests(workspace, subject.identities),
        submission_ids=subject.submission_ids,
    )


async def export_contact(
    workspace: str, contact_id: str, tx: Transaction[PrivacyRepository]
) -> dict[str, Any]:
    """Everything held on a person: record, tags, lists, timeline, lifecycle, tasks, merges."""
    store = tx.store
    contact = await live_contact(store, workspace, contact_id)
    timeline, _ = await store.timeline(contact.id, None, 100_000)
    return {
        "contact": (await snapshot_of(store, contact)).model_dump(mode="json"),
        "timeline": [
            {"id": a.id, "kind": a.kind, "occurred_at": a.occurred_at.isoformat(), "data": a.data}
            for a in timeline
        ],
        "lifecycle_history": [
            {
                "from": r.from_stage,
                "to": r.to_stage,
                "changed_at": r.changed_at.isoformat(),
                "churn_reason": r.churn_reason,
                "churn_reason_text": r.churn_reason_text,
            }
            for r in await store.lifecycle_history(contact.id)
        ],
        "tasks": [
            task_snapshot(t).model_dump(mode="json") for t in await store.tasks_of(contact.id)
        ],
        "segments": await store.segments_of(contact.id),
        "merges": [
            {
                "survivor_id": m.survivor_id,
                "merged_id": m.merged_id,
                "chosen": m.chosen,
                "merged_at": m.merged_at.isoformat(),
            }
            for m in await store.merges_of(contact.id)
        ],
    }

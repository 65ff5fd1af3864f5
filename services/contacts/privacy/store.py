"""Queries of erasure: what identifies an erased person, the erasure itself and the digests
kept so a replayed lead of theirs is recognised."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import (
    delete,
    or_,
    select,
)

from services.contacts.models import (
    Activity,
    Contact,
    ContactList,
    ContactTag,
    LifecycleChangeRow,
    MergeRecord,
    SegmentMember,
    TaskRow,
    erasures,
    outbox,
)
from services.contacts.people.store import PeopleStore
from services.contacts.privacy.domain import ErasureSubject
from shared import erasure
from shared.events.topics import contact_key


class PrivacyStore(PeopleStore):
    """Erasure of a person and the digests kept of them."""

    async def erasure_subject(self, contact_id: str) -> ErasureSubject:
        """Who is erased with this contact: the duplicates merged into it, every e-mail and
        phone the person was known by (their records and captured leads), their submissions."""
        stubs = select(Contact.id).where(Contact.merged_into == contact_id)
        ids = [contact_id, *(await self.session.execute(stubs)).scalars()]
        found: set[str] = set()
        rows = await self.session.execute(
            select(Contact.email, Contact.phone).where(Contact.id.in_(ids))
        )
        for email, phone in rows:
            found.update(erasure.identities(email, phone))
        submission_ids: set[str] = set()
        captures = await self.session.execute(
            select(Activity.data).where(
                Activity.contact_id.in_(ids), Activity.kind == "lead.captured"
            )
        )
        for (data,) in captures:
            found.update(erasure.identities(data.get("email"), data.get("phone")))
            if data.get("submission_id"):
                submission_ids.add(str(data["submission_id"]))
        return ErasureSubject(ids[1:], sorted(found), sorted(submission_ids))

    async def record_erasures(self, workspace: str, digests: list[str], at: datetime) -> None:
        await erasure.record_erasures(self.session, erasures, workspace, digests, at)

    async def erasures(self, workspace: str, digests: Iterable[str]) -> dict[str, datetime]:
        return await erasure.erased_at(self.session, erasures, workspace, digests)

    async def erase(self, workspace: str, contact_id: str, event_key: str) -> None:
        """Delete every row holding this person's data, including outbox rows about them."""
        stubs = select(Contact.id).where(Contact.merged_into == contact_id)
        merged_ids = [contact_id, *(await self.session.execute(stubs)).scalars()]
        for model in (Activity, LifecycleChangeRow, TaskRow, ContactTag, ContactList):
            await self.session.execute(delete(model).where(model.contact_id.in_(merged_ids)))
        await self.session.execute(
            delete(SegmentMember).where(SegmentMember.contact_id.in_(merged_ids))
        )
        await self.session.execute(
            delete(MergeRecord).where(
                or_(MergeRecord.survivor_id.in_(merged_ids), MergeRecord.merged_id.in_(merged_ids))
            )
        )
        await self.session.execute(delete(Contact).where(Contact.id.in_(merged_ids)))
        # Events about the person and about each duplicate merged into them (keyed by its id).
        keys = [event_key, *(contact_key(workspace, merged) for merged in merged_ids[1:])]
        await self.session.execute(delete(outbox).where(outbox.c.key.in_(keys)))

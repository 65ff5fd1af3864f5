"""Queries of duplicates and merges: what a merge moves to the survivor, and the people scanned
for duplicate candidates."""

from __future__ import annotations

from sqlalchemy import (
    delete,
    or_,
    select,
    update,
)

from services.contacts.duplicates import domain as duplicates_domain
from services.contacts.models import (
    Activity,
    Contact,
    ContactList,
    ContactTag,
    LifecycleChangeRow,
    MergeRecord,
    TaskRow,
)
from services.contacts.people.store import LIVE, PeopleStore


class DuplicatesStore(PeopleStore):
    """What a merge moves, and the people a duplicate scan compares."""

    async def redirect_stubs(self, old_survivor: str, new_survivor: str) -> None:
        await self.session.execute(
            update(Contact)
            .where(Contact.merged_into == old_survivor)
            .values(merged_into=new_survivor)
        )

    async def move_memberships(self, workspace: str, source: str, target: str) -> None:
        """Tags and lists of `source` become `target`'s (no duplicates), then leave `source`."""
        tags = (await self.tags_of([source]))[source]
        names = (await self.lists_of([source]))[source]
        await self.add_tags(workspace, [(target, t) for t in tags])
        for name in names:
            await self.add_to_list(workspace, target, name)
        await self.session.execute(delete(ContactTag).where(ContactTag.contact_id == source))
        await self.session.execute(delete(ContactList).where(ContactList.contact_id == source))

    async def move_history(self, source: str, target: str) -> None:
        """Timeline, lifecycle history and tasks of `source` now belong to `target`."""
        for model in (Activity, LifecycleChangeRow, TaskRow):
            await self.session.execute(
                update(model).where(model.contact_id == source).values(contact_id=target)
            )

    async def merges_of(self, contact_id: str) -> list[MergeRecord]:
        stmt = (
            select(MergeRecord)
            .where(or_(MergeRecord.survivor_id == contact_id, MergeRecord.merged_id == contact_id))
            .order_by(MergeRecord.merged_at)
        )
        return list((await self.session.execute(stmt)).scalars())

    async def people(self, workspace: str, limit: int) -> list[duplicates_domain.DuplicatePerson]:
        rows = await self.session.execute(
            select(
                Contact.id,
                Contact.email,
                Contact.phone,
                Contact.first_name,
                Contact.last_name,
                Contact.company,
            )
            .where(Contact.workspace == workspace, LIVE)
            .order_by(Contact.updated_at.desc())
            .limit(limit)
        )
        return [duplicates_domain.DuplicatePerson(*row) for row in rows]

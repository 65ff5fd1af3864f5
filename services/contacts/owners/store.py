"""Queries of teams, owners and tasks."""

from __future__ import annotations

from datetime import date

from sqlalchemy import delete, func, select

from services.contacts.models import (
    CaptureAssignment,
    Owner,
    TaskRow,
    Team,
)
from services.contacts.people.store import PeopleStore


class OwnersStore(PeopleStore):
    """Teams, owners and tasks."""

    async def team(self, workspace: str, team_id: str, lock: bool = False) -> Team | None:
        stmt = select(Team).where(Team.workspace == workspace, Team.id == team_id)
        if lock:
            stmt = stmt.with_for_update()
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def capture_assignment(self, workspace: str) -> CaptureAssignment | None:
        return await self.session.get(CaptureAssignment, workspace)

    async def clear_capture_assignment(self, workspace: str) -> bool:
        stmt = delete(CaptureAssignment).where(CaptureAssignment.workspace == workspace)
        result = await self.session.execute(stmt)
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def capture_team(self, workspace: str) -> Team | None:
        """The team whose rotation assigns the workspace's new contacts at capture, locked for
        this transaction (its rotation moves), or None without the rule."""
        stmt = (
            select(Team)
            .join(CaptureAssignment, CaptureAssignment.team_id == Team.id)
            .where(CaptureAssignment.workspace == workspace, Team.workspace == workspace)
            .with_for_update(of=Team)
        )
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def teams(self, workspace: str) -> list[Team]:
        stmt = select(Team).where(Team.workspace == workspace).order_by(Team.name)
        return list((await self.session.execute(stmt)).scalars())

    async def owner(self, workspace: str, owner_id: str) -> Owner | None:
        stmt = select(Owner).where(Owner.workspace == workspace, Owner.id == owner_id)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def owners(self, workspace: str, team_id: str | None = None) -> list[Owner]:
        stmt = select(Owner).where(Owner.workspace == workspace)
        if team_id is not None:
            stmt = stmt.where(Owner.team_id == team_id)
        stmt = stmt.order_by(Owner.position, Owner.id)
        return list((await self.session.execute(stmt)).scalars())

    async def next_owner_position(self, team_id: str | None) -> int:
        value = await self.session.scalar(
            select(func.max(Owner.position)).where(Owner.team_id == team_id)
        )
        return int(value or 0) + 1

    async def task(self, workspace: str, task_id: str) -> TaskRow | None:
        stmt = select(TaskRow).where(TaskRow.workspace == workspace, TaskRow.id == task_id)
        return (await self.session.execute(stmt)).scalar_one_or_none()

    async def tasks(
        self,
        workspace: str,
        today: date,
        assignee: str | None,
        contact_id: str | None,
        status: str | None,
        overdue: bool,
        limit: int,
    ) -> list[TaskRow]:
        stmt = select(TaskRow).where(TaskRow.workspace == workspace)
        if assignee is not None:
            stmt = stmt.where(TaskRow.assignee_id == assignee)
        if contact_id is not None:
            stmt = stmt.where(TaskRow.contact_id == contact_id)
        if status is not None:
            stmt = stmt.where(TaskRow.status == status)
        if overdue:
            stmt = stmt.where(TaskRow.status == "open", TaskRow.due_date < today)
        stmt = stmt.order_by(TaskRow.due_date.is_(None), TaskRow.due_date, TaskRow.id).limit(limit)
        return list((await self.session.execute(stmt)).scalars())

    async def tasks_of(self, contact_id: str) -> list[TaskRow]:
        stmt = select(TaskRow).where(TaskRow.contact_id == contact_id).order_by(TaskRow.created_at)
        return list((await self.session.execute(stmt)).scalars())

"""Queries of teams, owners and tasks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.contacts.models import (
    CaptureAssignment,
    Owner,
    TaskRow,
    Team,
)
from services.contacts.owners import domain as owners_domain
from services.contacts.owners.domain import CaptureTeam
from services.contacts.people.store import PeopleStore
from shared.db import defer_json_update

TEAMS = cast(Table, Team.__table__)
OWNERS = cast(Table, Owner.__table__)
CAPTURE_ASSIGNMENTS = cast(Table, CaptureAssignment.__table__)

# `OwnersStore.capture_rotation`'s read, built once: building and keying it on every capture
# batch cost about 0.2 ms of CPU on a lead's path.
_CAPTURE_ROTATION = (
    select(
        TEAMS.c.id,
        TEAMS.c.rule,
        TEAMS.c.last_owner_id,
        OWNERS.c.id.label("owner_id"),
        OWNERS.c.name,
        OWNERS.c.email,
        OWNERS.c.active,
        OWNERS.c.weight,
        OWNERS.c.credit,
    )
    .select_from(
        CAPTURE_ASSIGNMENTS.join(
            TEAMS,
            and_(
                TEAMS.c.id == CAPTURE_ASSIGNMENTS.c.team_id,
                TEAMS.c.workspace == CAPTURE_ASSIGNMENTS.c.workspace,
            ),
        ).outerjoin(
            OWNERS,
            and_(OWNERS.c.team_id == TEAMS.c.id, OWNERS.c.workspace == TEAMS.c.workspace),
        )
    )
    .where(CAPTURE_ASSIGNMENTS.c.workspace == bindparam("workspace"))
    .order_by(OWNERS.c.position, OWNERS.c.id)
    .with_for_update(of=TEAMS)
)


async def read_capture_rotation(session: AsyncSession, workspace: str) -> CaptureTeam | None:
    """`OwnersStore.capture_rotation` on `session`."""
    found = await session.execute(_CAPTURE_ROTATION, {"workspace": workspace})
    return capture_team_of(found.mappings().all())


def capture_team_of(rows: Sequence[Mapping[Any, Any]]) -> CaptureTeam | None:
    """The capture team of `_CAPTURE_ROTATION`'s rows (a team's, with its owners in rotation
    order, or one row without an owner), None without rows (no assignment at capture)."""
    if not rows:
        return None
    members = [
        owners_domain.RotationMember(r["owner_id"], r["active"], r["weight"], r["credit"])
        for r in rows
        if r["owner_id"] is not None
    ]
    owners = {
        r["owner_id"]: owners_domain.TeamOwner(r["owner_id"], r["name"], r["email"])
        for r in rows
        if r["owner_id"] is not None
    }
    rotation = owners_domain.Rotation(rows[0]["rule"], members, rows[0]["last_owner_id"])
    return owners_domain.CaptureTeam(rows[0]["id"], rotation, owners)


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

    async def capture_rotation(self, workspace: str) -> CaptureTeam | None:
        """The team whose rotation assigns the workspace's new contacts at capture, with its
        owners in rotation order, its row locked for this transaction (the rotation moves);
        None without the rule. One statement (the capture path's, per batch), built once."""
        return await read_capture_rotation(self.session, workspace)

    async def save_rotation(self, team_id: str, rotation: owners_domain.Rotation) -> None:
        """Where a team's rotation stands: its last owner, and weighted credits (left to the
        transaction's last statement after `defer_writes`: the row is locked already)."""
        if self._deferring:
            team = {"id": team_id, "last_owner_id": rotation.last_owner_id}
            await defer_json_update(self.session, TEAMS, [team])
            if rotation.rule == "weighted":
                credits = rotation.credits().items()
                await defer_json_update(
                    self.session, OWNERS, [{"id": o, "credit": c} for o, c in credits]
                )
            return
        await self.session.execute(
            update(TEAMS).where(TEAMS.c.id == team_id).values(last_owner_id=rotation.last_owner_id)
        )
        if rotation.rule == "weighted":
            await self.session.execute(
                update(OWNERS).where(OWNERS.c.id == bindparam("owner")),
                [{"owner": o, "credit": c} for o, c in rotation.credits().items()],
            )

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

"""Use cases of owners: teams and their rotation rules, owners, assignment and tasks."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, Protocol

from services.contacts import domain
from services.contacts.domain import RuleViolation
from services.contacts.handlers import (
    activity,
    checked,
    live_contact,
    publish,
    resolve_contact,
    snapshot,
    task_snapshot,
)
from services.contacts.models import (
    CaptureAssignment,
    Contact,
    Owner,
    TaskRow,
    Team,
)
from services.contacts.owners import domain as owners_domain
from services.contacts.segments.handlers import SegmentsRepository, refresh_segments
from shared.errors import Conflict, InvalidInput, NotFound
from shared.events.contacts import (
    ContactOwnerAssigned,
    ContactUpdated,
    FieldChange,
    TaskCompleted,
    TaskCreated,
)
from shared.ids import uuid7 as new_id
from shared.logs import correlation_id_var
from shared.uow import Transaction

log = logging.getLogger(__name__)


class RotationRepository(Protocol):
    """The repository as a team's rotation uses it."""

    async def capture_rotation(self, workspace: str) -> owners_domain.CaptureTeam | None: ...

    async def save_rotation(self, team_id: str, rotation: owners_domain.Rotation) -> None: ...

    async def owners(self, workspace: str, team_id: str | None = None) -> list[Owner]: ...


class OwnersRepository(SegmentsRepository, RotationRepository, Protocol):
    """The repository as owners, teams and tasks use it."""

    async def capture_assignment(self, workspace: str) -> CaptureAssignment | None: ...

    async def clear_capture_assignment(self, workspace: str) -> bool: ...

    async def next_owner_position(self, team_id: str | None) -> int: ...

    async def owner(self, workspace: str, owner_id: str) -> Owner | None: ...

    async def task(self, workspace: str, task_id: str) -> TaskRow | None: ...

    async def tasks(
        self,
        workspace: str,
        today: date,
        assignee: str | None,
        contact_id: str | None,
        status: str | None,
        overdue: bool,
        limit: int,
    ) -> list[TaskRow]: ...

    async def team(self, workspace: str, team_id: str, lock: bool = False) -> Team | None: ...

    async def teams(self, workspace: str) -> list[Team]: ...


@dataclass
class TeamRotation:
    """A team's rotation over its owners' rows (the team's row locked by whoever loaded it):
    picks owners, then `save` writes where the rotation stands back onto the rows."""

    team: Team
    owners: dict[str, Owner]
    rotation: owners_domain.Rotation

    @classmethod
    async def of(cls, store: RotationRepository, team: Team) -> TeamRotation:
        owners = await store.owners(team.workspace, team.id)
        members = [owners_domain.RotationMember(o.id, o.active, o.weight, o.credit) for o in owners]
        rotation = owners_domain.Rotation(team.rule, members, team.last_owner_id)
        return cls(team, {o.id: o for o in owners}, rotation)

    def pick(self) -> Owner:
        """The next owner; raises a `RuleViolation` when the team has no active owner."""
        return self.owners[self.rotation.pick()]

    def save(self) -> None:
        self.team.last_owner_id = self.rotation.last_owner_id
        if self.team.rule == "weighted":
            for owner_id, credit in self.rotation.credits().items():
                self.owners[owner_id].credit = credit


class CaptureRotation:
    """The rotation that owns a workspace's new contacts at capture (its assignment-at-capture
    rule), loaded with its team's row locked on the first new contact of a batch only, unless
    a read before gave it."""

    def __init__(self, workspace: str, store: RotationRepository) -> None:
        self.workspace, self.store = workspace, store
        self.team: owners_domain.CaptureTeam | None = None
        self.loaded = self.moved = self.locked = False

    @classmethod
    def as_read(
        cls, workspace: str, store: RotationRepository, team: owners_domain.CaptureTeam | None
    ) -> CaptureRotation:
        """The rotation as a read of this transaction already gave it, its team's row locked
        (`team` None: the workspace has no assignment at capture)."""
        rotation = cls(workspace, store)
        rotation.team, rotation.loaded, rotation.locked = team, True, team is not None
        return rotation

    async def next_owner(self) -> tuple[owners_domain.CaptureTeam, owners_domain.TeamOwner] | None:
        """The team and the owner of the next new contact; None without the rule or while the
        team has no active owner (the lead is captured unassigned, never refused)."""
        if not self.loaded:
            self.loaded = True
            self.team = await self.store.capture_rotation(self.workspace)
            self.locked = self.team is not None  # its row, to the commit (even without owners)
        if self.team is None:
            return None
        try:
            owner = self.team.pick()
        except RuleViolation:
            log.warning(
                "assignment at capture skipped: the team has no active owner",
                extra={"workspace": self.workspace, "team_id": self.team.team_id},
            )
            await self.save()
            self.team = None
            return None
        self.moved = True
        return self.team, owner

    async def save(self) -> None:
        """Where the rotation stands, onto the team's and owners' rows."""
        if self.team is not None and self.moved:
            await self.store.save_rotation(self.team.team_id, self.team.rotation)


async def create_team(
    workspace: str, name: str, rule: str, tx: Transaction[OwnersRepository]
) -> Team:
    """A team of owners with its assignment rule (`round_robin` or `weighted`)."""
    if rule not in domain.ROTATION_RULES:
        raise InvalidInput(
            "unknown rule",
            errors=[{"field": "rule", "code": "invalid_rule", "message": "round_robin|weighted"}],
        )
    store = tx.store
    team = Team(id=new_id(), workspace=workspace, name=name, rule=rule, last_owner_id=None)
    store.add(team)
    await store.flush(on_conflict=Conflict(f"a team named {name!r} exists"))
    return team


async def save_owner(
    workspace: str, owner_id: str | None, data: Mapping[str, Any], tx: Transaction[OwnersRepository]
) -> Owner:
    """Create or change an owner (a sales person): team, weight, active flag."""
    store = tx.store
    if owner_id is None:
        owner = Owner(
            id=new_id(), workspace=workspace, name=data["name"], active=True, weight=1, credit=0
        )
        store.add(owner)
    else:
        found = await store.owner(workspace, owner_id)
        if found is None:
            raise NotFound(f"owner {owner_id} not found")
        owner = found
    team_id = data.get("team_id", owner.team_id if owner_id else None)
    if team_id is not None and await store.team(workspace, team_id) is None:
        raise InvalidInput(
            "unknown team",
            errors=[{"field": "team_id", "code": "unknown_team", "message": "no such team"}],
        )
    if owner_id is None or team_id != owner.team_id:
        owner.position = await store.next_owner_position(team_id)
    owner.team_id = team_id
    for name in ("name", "email", "active", "weight"):
        if data.get(name) is not None:
            setattr(owner, name, data[name])
    if owner.weight < 0:
        raise InvalidInput(
            "weight must be positive",
            errors=[{"field": "weight", "code": "too_small", "message": "at least 0"}],
        )
    await store.flush()
    return owner


@dataclass(frozen=True)
class Assignment:
    """One owner assignment asked for: an explicit owner, or a team whose rotation picks one;
    `correlationid` is carried onto the events it causes (a command's chain)."""

    contact_id: str
    owner_id: str | None = None
    team_id: str | None = None
    correlationid: str | None = None


async def assign_owner(
    workspace: str,
    contact_id: str,
    owner_id: str | None,
    team_id: str | None,
    tx: Transaction[OwnersRepository],
    now: datetime,
    follow_merges: bool = False,
) -> Contact:
    """Give a contact an owner: explicitly, or by the team's round-robin or weighted rotation
    (skipping inactive owners); publishes `contact.owner_assigned`."""
    [contact] = await assign_owners(
        workspace, [Assignment(contact_id, owner_id, team_id)], tx, now, follow_merges
    )
    return contact


async def assign_owners(
    workspace: str,
    assignments: Sequence[Assignment],
    tx: Transaction[OwnersRepository],
    now: datetime,
    follow_merges: bool = False,
) -> list[Contact]:
    """`assign_owner` for many contacts, in their order, set-based: the contacts, their tags
    and lists are read (and locked) in one statement each, a team is locked and its owners
    read once, and the timeline rows and segment refresh are written once."""
    store = tx.store
    contacts = await _contacts_to_assign(
        store, workspace, [a.contact_id for a in assignments], follow_merges
    )
    ids = sorted({c.id for c in contacts.values()})
    tags, lists = await store.tags_of(ids), await store.lists_of(ids)
    rotations: dict[str, TeamRotation] = {}
    activities: list[dict[str, Any]] = []
    assigned: list[Contact] = []
    for item in assignments:
        contact = contacts[item.contact_id]
        if item.owner_id is not None:
            owner = await store.owner(workspace, item.owner_id)
            if owner is None or not owner.active:
                raise InvalidInput(
                    "unknown or inactive owner",
                    errors=[
                        {"field": "owner_id", "code": "unknown_owner", "message": "no such owner"}
                    ],
                )
            rule = "explicit"
        elif item.team_id is not None:
            rotation = rotations.get(item.team_id)
            if rotation is None:
                team = await store.team(workspace, item.team_id, lock=True)
                if team is None:
                    raise NotFound(f"team {item.team_id} not found")
                rotation = rotations[item.team_id] = await TeamRotation.of(store, team)
            with checked():
                owner = rotation.pick()
            rule = rotation.team.rule
        else:
            raise InvalidInput(
                "give an owner or a team",
                errors=[
                    {"field": "owner_id", "code": "required", "message": "owner_id or team_id"}
                ],
            )
        previous = contact.owner_id
        contact.owner_id, contact.updated_at = owner.id, now
        assigned.append(contact)
        activities.append(
            activity(
                workspace,
                contact.id,
                ContactOwnerAssigned.event_type,
                now,
                {"owner_id": owner.id, "previous_owner_id": previous, "rule": rule},
            )
        )
        snap = snapshot(contact, tags[contact.id], lists[contact.id])
        token = correlation_id_var.set(item.correlationid or correlation_id_var.get())
        try:
            publish(
                tx,
                workspace,
                contact.id,
                ContactOwnerAssigned(
                    contact_id=contact.id,
                    owner_id=owner.id,
                    previous_owner_id=previous,
                    team_id=item.team_id,
                    rule=rule,
                    owner_name=owner.name,
                    owner_email=owner.email,
                    contact=snap,
                ),
            )
            if previous != owner.id:
                publish(
                    tx,
                    workspace,
                    contact.id,
                    ContactUpdated(
                        contact_id=contact.id,
                        changes={"owner_id": FieldChange(before=previous, after=owner.id)},
                        contact=snap,
                        cause="assignment",
                    ),
                )
        finally:
            correlation_id_var.reset(token)
    for rotation in rotations.values():
        rotation.save()
    await store.flush()
    await store.add_activities(activities)
    await refresh_segments(set(ids), workspace, tx, now)
    return assigned


async def _contacts_to_assign(
    store: OwnersRepository, workspace: str, ids: Sequence[str], follow_merges: bool
) -> dict[str, Contact]:
    """Each asked-for id → the live contact it names (locked), or through merge redirects to
    its survivor with `follow_merges`; NotFound for an unknown (or merged-away) one."""
    found = {c.id: c for c in await store.contacts_by_ids(workspace, set(ids), lock=True)}
    contacts: dict[str, Contact] = {}
    for contact_id in ids:
        contact = found.get(contact_id)
        if contact is not None and contact.merged_into is None:
            contacts[contact_id] = contact
        elif follow_merges:
            contacts[contact_id] = await resolve_contact(store, workspace, contact_id)
        else:  # NotFound, saying where a merged-away contact went
            contacts[contact_id] = await live_contact(store, workspace, contact_id)
    return contacts


async def create_task(
    workspace: str,
    contact_id: str,
    title: str,
    description: str | None,
    due_date: date | None,
    assignee_id: str | None,
    tx: Transaction[OwnersRepository],
    now: datetime,
    follow_merges: bool = False,
) -> TaskRow:
    """A task on a contact, on its timeline; publishes `task.created`."""
    store = tx.store
    contact = await (
        resolve_contact(store, workspace, contact_id)
        if follow_merges
        else live_contact(store, workspace, contact_id)
    )
    if not title.strip():
        raise InvalidInput(
            "a task needs a title",
            errors=[{"field": "title", "code": "required", "message": "empty title"}],
        )
    if assignee_id is not None:
        await _check_assignee(store, workspace, assignee_id)
    task = TaskRow(
        id=new_id(),
        workspace=workspace,
        contact_id=contact.id,
        title=title.strip(),
        description=description,
        due_date=due_date,
        assignee_id=assignee_id or contact.owner_id,
        status="open",
        created_at=now,
        completed_at=None,
    )
    store.add(task)
    await store.flush()
    snap = task_snapshot(task)
    await store.add_activities(
        [activity(workspace, contact.id, TaskCreated.event_type, now, snap.model_dump(mode="json"))]
    )
    publish(tx, workspace, contact.id, TaskCreated(task=snap))
    return task


async def _check_assignee(store: OwnersRepository, workspace: str, assignee_id: str) -> None:
    """An assignee is an owner of the same workspace (another's answers as unknown)."""
    if await store.owner(workspace, assignee_id) is None:
        raise InvalidInput(
            "unknown assignee",
            errors=[{"field": "assignee_id", "code": "unknown_owner", "message": "no such owner"}],
        )


async def update_task(
    workspace: str,
    task_id: str,
    data: Mapping[str, Any],
    tx: Transaction[OwnersRepository],
    now: datetime,
) -> TaskRow:
    """Change a task; marking it `done` completes it and publishes `task.completed`."""
    store = tx.store
    task = await store.task(workspace, task_id)
    if task is None:
        raise NotFound(f"task {task_id} not found")
    if data.get("assignee_id") is not None:
        await _check_assignee(store, workspace, data["assignee_id"])
    for name in ("title", "description", "due_date", "assignee_id"):
        if name in data:
            setattr(task, name, data[name])
    status = data.get("status")
    if status is not None and status not in ("open", "done"):
        raise InvalidInput(
            "unknown status",
            errors=[{"field": "status", "code": "invalid_status", "message": "open|done"}],
        )
    if status == "done" and task.status != "done":
        task.status, task.completed_at = "done", now
        snap = task_snapshot(task)
        await store.add_activities(
            [
                activity(
                    workspace,
                    task.contact_id,
                    TaskCompleted.event_type,
                    now,
                    snap.model_dump(mode="json"),
                )
            ]
        )
        publish(tx, workspace, task.contact_id, TaskCompleted(task=snap))
    elif status == "open":
        task.status, task.completed_at = "open", None
    await store.flush()
    return task


async def list_tasks(
    workspace: str,
    assignee: str | None,
    contact_id: str | None,
    status: str | None,
    overdue: bool,
    tx: Transaction[OwnersRepository],
    now: datetime,
    limit: int = 500,
) -> list[TaskRow]:
    """Tasks by assignee, contact or status; `overdue`: open and due before today."""
    store = tx.store
    return await store.tasks(workspace, now.date(), assignee, contact_id, status, overdue, limit)


async def list_teams(workspace: str, tx: Transaction[OwnersRepository]) -> list[Team]:
    return await tx.store.teams(workspace)


async def list_owners(
    workspace: str, team_id: str | None, tx: Transaction[OwnersRepository]
) -> list[Owner]:
    return await tx.store.owners(workspace, team_id)


async def set_capture_assignment(
    workspace: str, team_id: str, tx: Transaction[OwnersRepository], now: datetime
) -> tuple[CaptureAssignment, Team]:
    """From now on, every contact a capture creates gets its owner from `team_id`'s rotation
    (the rotation `assign_owner` moves too), in the capture's transaction."""
    store = tx.store
    team = await store.team(workspace, team_id)
    if team is None:
        raise InvalidInput(
            "unknown team",
            errors=[{"field": "team_id", "code": "unknown_team", "message": "no such team"}],
        )
    rule = await store.capture_assignment(workspace)
    if rule is None:
        rule = CaptureAssignment(workspace=workspace, team_id=team.id, updated_at=now)
        store.add(rule)
    rule.team_id, rule.updated_at = team.id, now
    await store.flush()
    return rule, team


async def capture_assignment(
    workspace: str, tx: Transaction[OwnersRepository]
) -> tuple[CaptureAssignment, Team]:
    """The workspace's assignment-at-capture rule and its team; 404 without one."""
    store = tx.store
    rule = await store.capture_assignment(workspace)
    team = None if rule is None else await store.team(workspace, rule.team_id)
    if rule is None or team is None:
        raise NotFound("no assignment at capture is set")
    return rule, team


async def clear_capture_assignment(workspace: str, tx: Transaction[OwnersRepository]) -> None:
    """New contacts are captured without an owner again (a workflow may assign one)."""
    if not await tx.store.clear_capture_assignment(workspace):
        raise NotFound("no assignment at capture is set")

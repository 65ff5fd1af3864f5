"""The owners routes: assignment, teams, owners and tasks."""

from __future__ import annotations

from fastapi import APIRouter, Response

from services.contacts import handlers as shared_handlers
from services.contacts.api import Limit, Reader, Writer, contact_read
from services.contacts.models import CaptureAssignment, Owner, TaskRow, Team
from services.contacts.owners import handlers
from services.contacts.schemas import (
    AssignIn,
    CaptureAssignmentIn,
    CaptureAssignmentRead,
    ContactRead,
    OwnerIn,
    OwnerRead,
    OwnerUpdate,
    TaskIn,
    TaskRead,
    TaskUpdate,
    TeamIn,
    TeamRead,
)
from services.contacts.store import transaction
from shared.app import Context
from shared.clock import Clock
from shared.openapi import problems


def owner_read(owner: Owner) -> OwnerRead:
    return OwnerRead(
        id=owner.id,
        name=owner.name,
        email=owner.email,
        team_id=owner.team_id,
        weight=owner.weight,
        active=owner.active,
    )


def team_read(team: Team) -> TeamRead:
    return TeamRead(id=team.id, name=team.name, rule=team.rule)


def capture_assignment_read(rule: CaptureAssignment, team: Team) -> CaptureAssignmentRead:
    return CaptureAssignmentRead(
        team_id=team.id, team_name=team.name, rule=team.rule, updated_at=rule.updated_at
    )


def task_read(task: TaskRow) -> TaskRead:
    return TaskRead.model_validate(shared_handlers.task_snapshot(task).model_dump())


def router(clock: Clock) -> APIRouter:
    """The owners routes, reading the time from `clock` (injected, so tests can move it)."""
    api = APIRouter(prefix="/v1", tags=["contacts"])

    @api.post("/contacts/{contact_id}/owner", responses=problems(409))
    async def assign_owner(
        contact_id: str, body: AssignIn, ctx: Context, who: Writer
    ) -> ContactRead:
        """Assign an owner explicitly (`owner_id`) or by a team's rotation (`team_id`)."""
        async with transaction(ctx.uow()) as tx:
            contact = await handlers.assign_owner(
                who.workspace, contact_id, body.owner_id, body.team_id, tx, clock()
            )
            return await contact_read(contact, tx)

    @api.post("/teams", status_code=201, responses=problems(409))
    async def create_team(body: TeamIn, ctx: Context, who: Writer) -> TeamRead:
        """A team of owners with its assignment rule."""
        async with transaction(ctx.uow()) as tx:
            return team_read(await handlers.create_team(who.workspace, body.name, body.rule, tx))

    @api.get("/teams")
    async def list_teams(ctx: Context, who: Reader) -> list[TeamRead]:
        """The workspace's teams."""
        async with transaction(ctx.uow()) as tx:
            return [team_read(t) for t in await handlers.list_teams(who.workspace, tx)]

    @api.put("/capture-assignment", responses=problems(422))
    async def set_capture_assignment(
        body: CaptureAssignmentIn, ctx: Context, who: Writer
    ) -> CaptureAssignmentRead:
        """Assign every new contact an owner at capture, by the team's rotation (the one
        `POST /contacts/{id}/owner` with `team_id` uses): `contact.created` carries the owner."""
        async with transaction(ctx.uow()) as tx:
            rule, team = await handlers.set_capture_assignment(
                who.workspace, body.team_id, tx, clock()
            )
            return capture_assignment_read(rule, team)

    @api.get("/capture-assignment", responses=problems(404))
    async def get_capture_assignment(ctx: Context, who: Reader) -> CaptureAssignmentRead:
        """The team whose rotation assigns new contacts at capture."""
        async with transaction(ctx.uow()) as tx:
            return capture_assignment_read(*await handlers.capture_assignment(who.workspace, tx))

    @api.delete("/capture-assignment", status_code=204, responses=problems(404))
    async def clear_capture_assignment(ctx: Context, who: Writer) -> Response:
        """Capture new contacts without an owner again."""
        async with transaction(ctx.uow()) as tx:
            await handlers.clear_capture_assignment(who.workspace, tx)
        return Response(status_code=204)

    @api.post("/owners", status_code=201, responses=problems(404, 409))
    async def create_owner(body: OwnerIn, ctx: Context, who: Writer) -> OwnerRead:
        """A sales person who can own contacts, optionally in a team's rotation."""
        async with transaction(ctx.uow()) as tx:
            owner = await handlers.save_owner(who.workspace, None, body.model_dump(), tx)
            return owner_read(owner)

    @api.patch("/owners/{owner_id}")
    async def update_owner(
        owner_id: str, body: OwnerUpdate, ctx: Context, who: Writer
    ) -> OwnerRead:
        """Change an owner: deactivate to skip them in rotations, change weight or team."""
        async with transaction(ctx.uow()) as tx:
            owner = await handlers.save_owner(
                who.workspace, owner_id, body.model_dump(exclude_unset=True), tx
            )
            return owner_read(owner)

    @api.get("/owners")
    async def list_owners(ctx: Context, who: Reader, team_id: str | None = None) -> list[OwnerRead]:
        """Owners of the workspace (or of one team)."""
        async with transaction(ctx.uow()) as tx:
            owners = await handlers.list_owners(who.workspace, team_id, tx)
        return [owner_read(o) for o in owners]

    @api.post("/tasks", status_code=201, responses=problems(404))
    async def create_task(body: TaskIn, ctx: Context, who: Writer) -> TaskRead:
        """A task on a contact (assignee defaults to the contact's owner)."""
        async with transaction(ctx.uow()) as tx:
            task = await handlers.create_task(
                who.workspace,
                body.contact_id,
                body.title,
                body.description,
                body.due_date,
                body.assignee_id,
                tx,
                clock(),
            )
            return task_read(task)

    @api.patch("/tasks/{task_id}", responses=problems(409))
    async def update_task(task_id: str, body: TaskUpdate, ctx: Context, who: Writer) -> TaskRead:
        """Change a task; `status: done` completes it."""
        async with transaction(ctx.uow()) as tx:
            task = await handlers.update_task(
                who.workspace, task_id, body.model_dump(exclude_unset=True), tx, clock()
            )
            return task_read(task)

    @api.get("/tasks")
    async def list_tasks(
        ctx: Context,
        who: Reader,
        assignee: str | None = None,
        contact_id: str | None = None,
        status: str | None = None,
        overdue: bool = False,
        limit: Limit = 200,
    ) -> list[TaskRead]:
        """Tasks by assignee, contact or status; `overdue=true`: open and past due."""
        async with transaction(ctx.uow()) as tx:
            tasks = await handlers.list_tasks(
                who.workspace, assignee, contact_id, status, overdue, tx, clock(), limit
            )
        return [task_read(t) for t in tasks]

    return api

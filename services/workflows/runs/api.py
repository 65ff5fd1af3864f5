"""The runs API: manual enrollment, run history, retry, exit and per-workflow counts."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from services.workflows.definitions.handlers import get_workflow
from services.workflows.doors import Doors
from services.workflows.runs import handlers
from services.workflows.runs.schemas import (
    EnrollIn,
    EnrollmentPage,
    EnrollmentRead,
    EnrollOut,
    StepRead,
    WorkflowStats,
)
from shared.app import Context
from shared.auth import Principal, require_scope
from shared.openapi import problems

Reader = Annotated[Principal, Depends(require_scope("workflows:read"))]
Writer = Annotated[Principal, Depends(require_scope("workflows:write"))]
Limit = Annotated[int, Query(ge=1, le=500)]


def run_read(row: dict[str, Any], steps: list[dict[str, Any]] | None = None) -> EnrollmentRead:
    return EnrollmentRead(
        id=row["id"],
        workflow_id=row["workflow_id"],
        version=row["version"],
        contact_id=row["contact_id"],
        status=row["status"],
        trigger=row["trigger"],
        step=row["step"],
        wait_event=row["wait_event"],
        wait_until=row["wait_until"],
        error=row["error"],
        enrolled_at=row["enrolled_at"],
        updated_at=row["updated_at"],
        ended_at=row["ended_at"],
        steps=None
        if steps is None
        else [
            StepRead(
                step=s["step"],
                type=s["step_type"],
                outcome=s["outcome"],
                at=s["at"],
                detail=s["detail"] or {},
                error=s["error"],
            )
            for s in steps
        ],
    )


def router(doors: Doors) -> APIRouter:
    api = APIRouter(tags=["runs"])

    @api.post("/v1/workflows/{workflow_id}/enrollments", status_code=201, responses=problems(409))
    async def enroll(ctx: Context, who: Writer, workflow_id: str, body: EnrollIn) -> EnrollOut:
        """Enroll one contact or every member of a segment; 409 says why a contact cannot."""
        async with doors.work(ctx) as (book, store, _):
            enrolled, skipped = await handlers.enroll(
                who.workspace, workflow_id, body.contact_id, body.segment_id, book, store
            )
        return EnrollOut(enrolled=enrolled, skipped=skipped)

    @api.get("/v1/workflows/{workflow_id}/enrollments")
    async def list_enrollments(
        ctx: Context,
        who: Reader,
        workflow_id: str,
        status: str | None = None,
        cursor: str | None = None,
        limit: Limit = 100,
    ) -> EnrollmentPage:
        """A workflow's runs, newest first."""
        async with doors.work(ctx) as (_, store, _):
            await get_workflow(who.workspace, workflow_id, store)
            rows = await store.run_page(who.workspace, workflow_id, status, cursor, limit)
        return EnrollmentPage(
            items=[run_read(r) for r in rows],
            next_cursor=rows[-1]["id"] if len(rows) == limit else None,
        )

    @api.get("/v1/enrollments/{enrollment_id}")
    async def get_enrollment(ctx: Context, who: Reader, enrollment_id: str) -> EnrollmentRead:
        """A run with every step: its time, outcome and error."""
        async with doors.work(ctx) as (_, store, _):
            row = await handlers.get_run(who.workspace, enrollment_id, store)
            steps = await store.steps(enrollment_id)
        return run_read(row, steps)

    @api.post("/v1/enrollments/{enrollment_id}/retry")
    async def retry_enrollment(ctx: Context, who: Writer, enrollment_id: str) -> EnrollmentRead:
        """Run a failed run again from the step that failed."""
        async with doors.work(ctx) as (book, store, _):
            row = await handlers.retry_run(who.workspace, enrollment_id, book, store)
        return run_read(row)

    @api.post("/v1/enrollments/{enrollment_id}/exit")
    async def exit_enrollment(ctx: Context, who: Writer, enrollment_id: str) -> EnrollmentRead:
        """Take the contact out of the run."""
        async with doors.work(ctx) as (book, store, _):
            row = await handlers.exit_run(who.workspace, enrollment_id, book, store)
        return run_read(row)

    @api.get("/v1/workflows/{workflow_id}/stats")
    async def workflow_stats(ctx: Context, who: Reader, workflow_id: str) -> WorkflowStats:
        """Runs of the workflow: enrolled, active, completed, goal met, exited, failed."""
        async with doors.work(ctx) as (_, store, _):
            await get_workflow(who.workspace, workflow_id, store)
            counts = (await store.counts(who.workspace, workflow_id)).get(workflow_id, {})
        return WorkflowStats.model_validate(handlers.stats_of(workflow_id, counts))

    return api

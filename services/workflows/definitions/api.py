"""The definitions API: workflows as versioned JSON (or YAML) documents."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
import yaml
from fastapi import APIRouter, Depends, Request

from services.workflows.definitions import handlers
from services.workflows.definitions.domain import WorkflowDocument
from services.workflows.definitions.schemas import (
    DryRunIn,
    DryRunOut,
    VersionList,
    VersionRead,
    WorkflowList,
    WorkflowRead,
    WorkflowSummary,
)
from services.workflows.doors import Doors, limits_of
from services.workflows.models import Workflow
from services.workflows.store import WorkflowsStore
from shared.app import Context
from shared.auth import Principal, require_scope
from shared.errors import InvalidInput, PayloadTooLarge
from shared.openapi import inline_schema, problems

Reader = Annotated[Principal, Depends(require_scope("workflows:read"))]
Writer = Annotated[Principal, Depends(require_scope("workflows:write"))]
MAX_DOCUMENT_BYTES = 1_000_000
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")


async def document_body(request: Request) -> Any:
    """The request's document: JSON, or YAML when the content type says so."""
    body = await request.body()
    if len(body) > MAX_DOCUMENT_BYTES:
        raise PayloadTooLarge(f"a workflow document is at most {MAX_DOCUMENT_BYTES} bytes")
    kind = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    try:
        if kind in YAML_TYPES:
            return yaml.safe_load(body)
        return orjson.loads(body)
    except (yaml.YAMLError, orjson.JSONDecodeError) as exc:
        raise InvalidInput(
            "The body is not a JSON or YAML document.",
            errors=[{"field": "body", "code": "unparsable", "message": str(exc)[:300]}],
        ) from exc


Document = Annotated[Any, Depends(document_body)]
_DOCUMENT_SCHEMA = inline_schema(WorkflowDocument.model_json_schema())
# The body is read by hand (size-limited), so its schema is given here. YAML is read too
# (`Content-Type: application/yaml`, the same schema) but documented once, as JSON: every
# constraint listed twice doubled the conformance run for no new finding.
DOCUMENT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The workflow document, as JSON or (with application/yaml) as YAML.",
        "content": {"application/json": {"schema": _DOCUMENT_SCHEMA}},
    }
}


def read(row: Workflow, document: dict[str, Any]) -> WorkflowRead:
    return WorkflowRead(
        id=row.id,
        name=row.name,
        enabled=row.enabled,
        version=row.version,
        trigger=row.trigger_type,
        created_at=row.created_at,
        updated_at=row.updated_at,
        document=document,
    )


def router(doors: Doors) -> APIRouter:
    """The definition routes, reading the time from the doors' clock."""
    api = APIRouter(prefix="/v1/workflows", tags=["workflows"])

    @api.post("", status_code=201, responses=problems(413), openapi_extra=DOCUMENT_BODY)
    async def create_workflow(
        ctx: Context, who: Writer, document: Document, enabled: bool = False
    ) -> WorkflowRead:
        """Save a new workflow (version 1); 422 lists the path of every error."""
        async with doors.work(ctx) as (book, store, _):
            row = await handlers.create_workflow(who.workspace, document, enabled, store, book.now)
            if enabled:
                row = await handlers.set_enabled(who.workspace, row.id, True, book, store)
            saved = await handlers.document_of(who.workspace, row.id, row.version, store)
        return read(row, saved)

    @api.get("")
    async def list_workflows(ctx: Context, who: Reader) -> WorkflowList:
        """The workspace's workflows."""
        async with doors.work(ctx) as (_, store, _):
            rows = await store.workflows(who.workspace)
        return WorkflowList(
            items=[
                WorkflowSummary(
                    id=r.id,
                    name=r.name,
                    enabled=r.enabled,
                    version=r.version,
                    trigger=r.trigger_type,
                    updated_at=r.updated_at,
                )
                for r in rows
            ]
        )

    @api.get("/{workflow_id}")
    async def get_workflow(ctx: Context, who: Reader, workflow_id: str) -> WorkflowRead:
        """A workflow with its current document."""
        async with doors.work(ctx) as (_, store, _):
            row = await handlers.get_workflow(who.workspace, workflow_id, store)
            document = await handlers.document_of(who.workspace, workflow_id, row.version, store)
        return read(row, document)

    @api.put("/{workflow_id}", responses=problems(413), openapi_extra=DOCUMENT_BODY)
    async def update_workflow(
        ctx: Context, who: Writer, workflow_id: str, document: Document
    ) -> WorkflowRead:
        """Save a new version; runs in flight finish on the version they started on."""
        async with doors.work(ctx) as (book, store, _):
            row = await handlers.update_workflow(
                who.workspace, workflow_id, document, store, book.now
            )
            saved = await handlers.document_of(who.workspace, workflow_id, row.version, store)
        return read(row, saved)

    @api.get("/{workflow_id}/versions")
    async def list_versions(ctx: Context, who: Reader, workflow_id: str) -> VersionList:
        """Every saved version of a workflow."""
        async with doors.work(ctx) as (_, store, _):
            await handlers.get_workflow(who.workspace, workflow_id, store)
            rows = await store.versions(who.workspace, workflow_id)
        return VersionList(
            items=[
                VersionRead(version=v.version, created_at=v.created_at, document=v.document)
                for v in rows
            ]
        )

    @api.post("/{workflow_id}/enable")
    async def enable_workflow(ctx: Context, who: Writer, workflow_id: str) -> WorkflowRead:
        """Start enrolling contacts by the trigger."""
        return await _set_enabled(ctx, who, workflow_id, True)

    @api.post("/{workflow_id}/disable")
    async def disable_workflow(ctx: Context, who: Writer, workflow_id: str) -> WorkflowRead:
        """Stop enrolling; runs in flight carry on."""
        return await _set_enabled(ctx, who, workflow_id, False)

    async def _set_enabled(
        ctx: Context, who: Principal, workflow_id: str, enabled: bool
    ) -> WorkflowRead:
        async with doors.work(ctx) as (book, store, _):
            row = await handlers.set_enabled(who.workspace, workflow_id, enabled, book, store)
            document = await handlers.document_of(who.workspace, workflow_id, row.version, store)
        return read(row, document)

    @api.post("/{workflow_id}/test")
    async def test_workflow(
        ctx: Context, who: Reader, workflow_id: str, body: DryRunIn
    ) -> DryRunOut:
        """Dry run: the path a contact would take and what each action would do; does nothing."""
        async with ctx.sessions() as session:
            result = await handlers.dry_run(
                who.workspace,
                workflow_id,
                body.version,
                body.contact_id,
                body.contact,
                body.events,
                WorkflowsStore(session),
                limits_of(ctx.settings),
                doors.clock(),
            )
        return DryRunOut.model_validate(result)

    return api

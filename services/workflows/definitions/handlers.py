"""Use cases of workflow definitions: save (validated, versioned), enable, disable, dry-run."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Protocol

from services.workflows.definitions import domain, validation
from services.workflows.engine import domain as engine
from services.workflows.engine.handlers import Limits, RunBook
from services.workflows.models import Workflow, WorkflowVersion
from services.workflows.triggers.handlers import TIME_TRIGGERS, reschedule_time_triggers
from shared.errors import InvalidInput, NotFound

PAGE = 500


class DefinitionsStore(Protocol):
    async def workflow(
        self, workspace: str, workflow_id: str, lock: bool = False
    ) -> Workflow | None: ...
    async def workflow_ids(self, workspace: str) -> set[str]: ...
    def add(self, row: Workflow | WorkflowVersion) -> None: ...
    async def flush(self) -> None: ...
    async def documents(self, keys: Any) -> dict[tuple[str, str, int], dict[str, Any]]: ...
    async def contacts(self, workspace: str, ids: Any) -> dict[str, dict[str, Any]]: ...
    async def contact_ids(
        self, workspace: str, after: str | None, limit: int
    ) -> list[tuple[str, dict[str, Any]]]: ...


def validated(raw: Any, known: set[str], self_id: str | None = None) -> domain.WorkflowDocument:
    """The document, or a 422 naming the path of every error."""
    try:
        return validation.parse_document(raw, known, self_id)
    except validation.InvalidDocument as exc:
        raise InvalidInput("The workflow is invalid.", errors=exc.errors) from exc


def new_workflow_id() -> str:
    return f"wf_{uuid.uuid4().hex[:20]}"


async def create_workflow(
    workspace: str, raw: Any, enabled: bool, store: DefinitionsStore, now: datetime
) -> Workflow:
    """Save a new workflow as version 1 (disabled unless asked)."""
    workflow_id = new_workflow_id()
    document = validated(raw, await store.workflow_ids(workspace), workflow_id)
    row = Workflow(
        workspace=workspace,
        id=workflow_id,
        name=document.name,
        enabled=False,
        version=1,
        trigger_type=document.trigger.type,
        created_at=now,
        updated_at=now,
    )
    store.add(row)
    store.add(_version(workspace, workflow_id, 1, document, now))
    await store.flush()
    return row


async def update_workflow(
    workspace: str, workflow_id: str, raw: Any, store: DefinitionsStore, now: datetime
) -> Workflow:
    """Save a new version; runs in flight finish on the version they started with."""
    row = await get_workflow(workspace, workflow_id, store, lock=True)
    document = validated(raw, await store.workflow_ids(workspace), workflow_id)
    row.version += 1
    row.name = document.name
    row.trigger_type = document.trigger.type
    row.updated_at = now
    store.add(_version(workspace, workflow_id, row.version, document, now))
    await store.flush()
    return row


def _version(
    workspace: str, workflow_id: str, version: int, document: domain.WorkflowDocument, now: datetime
) -> WorkflowVersion:
    return WorkflowVersion(
        workspace=workspace,
        workflow_id=workflow_id,
        version=version,
        document=document.model_dump(mode="json", by_alias=True, exclude_none=True),
        created_at=now,
    )


async def get_workflow(
    workspace: str, workflow_id: str, store: DefinitionsStore, lock: bool = False
) -> Workflow:
    row = await store.workflow(workspace, workflow_id, lock=lock)
    if row is None:
        raise NotFound(f"no workflow {workflow_id}")
    return row


async def document_of(
    workspace: str, workflow_id: str, version: int, store: DefinitionsStore
) -> dict[str, Any]:
    documents = await store.documents([(workspace, workflow_id, version)])
    if (workspace, workflow_id, version) not in documents:
        raise NotFound(f"no version {version} of workflow {workflow_id}")
    return documents[(workspace, workflow_id, version)]


async def set_enabled(
    workspace: str, workflow_id: str, enabled: bool, book: RunBook, store: DefinitionsStore
) -> Workflow:
    """Enable or disable. Enabling a date-relative or inactivity workflow schedules a timer for
    each known contact once; from then on contact events keep them up to date."""
    row = await get_workflow(workspace, workflow_id, store, lock=True)
    was = row.enabled
    row.enabled = enabled
    row.updated_at = book.now
    await store.flush()
    if enabled and not was and row.trigger_type in TIME_TRIGGERS:
        after: str | None = None
        while True:
            page = await store.contact_ids(workspace, after, PAGE)
            if not page:
                break
            book.forget_enabled(workspace)
            await reschedule_time_triggers(book, workspace, dict(page))
            await book.flush()
            after = page[-1][0]
    return row


async def dry_run(
    workspace: str,
    workflow_id: str,
    version: int | None,
    contact_id: str | None,
    contact: Mapping[str, Any] | None,
    events: list[str],
    store: DefinitionsStore,
    limits: Limits,
    now: datetime,
) -> dict[str, Any]:
    """The path a run would take and what each action would do; nothing is written or sent."""
    row = await get_workflow(workspace, workflow_id, store)
    version = version or row.version
    document = domain.WorkflowDocument.model_validate(
        await document_of(workspace, workflow_id, version, store)
    )
    if contact_id is not None:
        found = (await store.contacts(workspace, [contact_id])).get(contact_id)
        if found is None:
            raise NotFound(f"no contact {contact_id}")
        person: Mapping[str, Any] = found
    elif contact is not None:
        person = {"id": "dry-run", "lifecycle_stage": "lead", **contact}
    else:
        raise InvalidInput(
            "give a contact_id or a contact",
            errors=[{"field": "contact_id", "code": "missing", "message": "a contact is required"}],
        )
    enabled = frozenset(await store.workflow_ids(workspace))
    ctx = engine.Context(person, now, limits.timezone, enabled, 1, limits.retry_base_s)
    result = engine.dry_run(document, person, ctx, workflow_id, version, frozenset(events))
    return {"workflow_id": workflow_id, "version": version, **result}

"""The command-line door to definitions: apply a workflow document from a JSON or YAML file."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from services.workflows.definitions import handlers
from services.workflows.doors import limits_of
from services.workflows.engine.handlers import RunBook
from services.workflows.main import SPEC
from services.workflows.store import WorkflowsStore
from shared import db
from shared.auth import validate_workspace
from shared.errors import InvalidInput
from shared.migrations import upgrade
from shared.settings import Settings
from shared.uow import UnitOfWork
from shared.yaml_files import invalid_document, read_yaml


class WorkflowFileError(Exception):
    """A file that cannot be applied; the message names the file and where it fails."""


async def apply(settings: Settings, workspace: str, path: Path, enable: bool, check: bool) -> str:
    """Save the file as a new workflow, or as the next version of the workflow of that name."""
    raw = read_yaml(path, WorkflowFileError)  # YAML or JSON, syntax errors with line and column
    validate_workspace(workspace)
    engine = db.create_engine(
        settings.database_url_for(SPEC.name), schema=settings.schema_for(SPEC.name)
    )
    try:
        if settings.should_migrate_on_start:  # the embedded mode's file may be new
            await upgrade(engine, SPEC.migrations, settings.schema_for(SPEC.name))
        async with UnitOfWork(db.sessionmaker(engine), SPEC.outbox, SPEC.inbox) as uow:
            store = WorkflowsStore(uow.session)
            now = datetime.now(UTC)
            name = raw.get("name") if isinstance(raw, dict) else None
            existing = [w for w in await store.workflows(workspace) if w.name == name]
            try:
                if check:
                    handlers.validated(raw, await store.workflow_ids(workspace))
                    return f"{path}: valid"
                if existing:
                    row = await handlers.update_workflow(workspace, existing[0].id, raw, store, now)
                else:
                    row = await handlers.create_workflow(workspace, raw, False, store, now)
            except InvalidInput as exc:
                raise WorkflowFileError(invalid_document(path, "workflow", exc)) from None
            if enable and not row.enabled:
                book = RunBook(store, uow, now, limits_of(settings))
                await handlers.set_enabled(workspace, row.id, True, book, store)
                await book.flush()
            state = "enabled" if row.enabled else "disabled"
            return f"{row.id} version {row.version} ({state}) for {workspace}"
    finally:
        await engine.dispose()


def run(settings: Settings, workspace: str, path: Path, enable: bool, check: bool) -> str:
    """`python -m services workflows-apply`."""
    return asyncio.run(apply(settings, workspace, path, enable, check))

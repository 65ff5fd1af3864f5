"""The command-line door to rule sets: load a workspace's rules from a YAML file."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.scoring import handlers
from services.scoring.main import SPEC
from services.scoring.store import SqlStore
from shared import db
from shared.auth import validate_workspace
from shared.errors import InvalidInput
from shared.migrations import upgrade
from shared.settings import Settings
from shared.uow import UnitOfWork
from shared.yaml_files import invalid_document, read_yaml


class RulesFileError(Exception):
    """A rules file that cannot be loaded; the message names the file and where it fails."""


def check_rules(path: Path) -> Any:
    """The file's rule set if valid, else RulesFileError listing every error with its path."""
    raw = read_yaml(path, RulesFileError)
    try:
        handlers.validated(raw)
    except InvalidInput as exc:
        raise RulesFileError(invalid_document(path, "rule set", exc)) from None
    return raw


async def load_rules(settings: Settings, workspace: str, path: Path) -> str:
    """Save the file as the workspace's next rule-set version (a running service rescores)."""
    raw = check_rules(path)
    validate_workspace(workspace)
    engine = db.create_engine(
        settings.database_url_for(SPEC.name), schema=settings.schema_for(SPEC.name)
    )
    try:
        if settings.should_migrate_on_start:  # the embedded mode's file may be new
            await upgrade(engine, SPEC.migrations, settings.schema_for(SPEC.name))
        async with UnitOfWork(db.sessionmaker(engine), SPEC.outbox, SPEC.inbox) as uow:
            job = await handlers.save_rule_set(
                workspace, raw, SqlStore(uow.session), datetime.now(UTC)
            )
    finally:
        await engine.dispose()
    return f"saved rule set version {job.version} for {workspace}; rescore {job.id}"


def run(settings: Settings, workspace: str, path: Path, check_only: bool = False) -> str:
    """`python -m services scoring-rules`: check the file, then (unless `check_only`) save it."""
    if check_only:
        check_rules(path)
        return f"{path}: valid"
    return asyncio.run(load_rules(settings, workspace, path))

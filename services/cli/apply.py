"""`leadwire apply -f FILE`: documents of any kind, each saved through its service's own use
cases. A document is YAML (or JSON):

    kind: Workflow          # Form, ScoringRules, Workflow
    workspace: acme         # or --workspace
    spec: {...}             # exactly what the service's API accepts for it

A file may hold several documents separated by `---`. A new kind is one entry in APPLIERS.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from shared.auth import validate_workspace
from shared.errors import DomainError
from shared.settings import Settings
from shared.yaml_files import read_yaml


class ApplyError(Exception):
    """A document that cannot be applied; the message says which one and why."""


@dataclass(frozen=True)
class Document:
    kind: str
    workspace: str
    spec: Any
    where: str  # "file.yaml#2" for messages


Applier = Callable[[Settings, Document, bool], str]


def _via_spec_file(document: Document, save: Callable[[Path], str]) -> str:
    """Hand the spec to a service's own file-based door (its command line), which checks and
    saves it exactly as for its own command."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as spec_file:
        yaml.safe_dump(document.spec, spec_file)
        spec_file.flush()
        try:
            return save(Path(spec_file.name))
        except Exception as exc:  # the door's own error type names the temporary file
            raise ApplyError(str(exc).replace(spec_file.name, document.where)) from None


def apply_scoring_rules(settings: Settings, document: Document, check: bool) -> str:
    from services.scoring import cli

    return _via_spec_file(
        document, lambda path: cli.run(settings, document.workspace, path, check_only=check)
    )


def apply_workflow(settings: Settings, document: Document, check: bool) -> str:
    from services.workflows import cli

    return _via_spec_file(
        document, lambda path: cli.run(settings, document.workspace, path, False, check)
    )


def apply_form(settings: Settings, document: Document, check: bool) -> str:
    """Create the form, or update the workspace's form of the same name."""
    from services.ingest.forms import handlers
    from services.ingest.main import SPEC
    from services.ingest.schemas import FormCreate, FormUpdate
    from services.ingest.store import transaction
    from shared import db
    from shared.migrations import upgrade
    from shared.uow import UnitOfWork

    try:
        form = FormCreate.model_validate(document.spec)
    except ValidationError as exc:
        problems = [f"  {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise ApplyError("\n".join([f"{document.where}: the form is invalid", *problems])) from None
    if check:
        return f"{document.where}: valid"

    async def save() -> str:
        engine = db.create_engine(
            settings.database_url_for(SPEC.name), schema=settings.schema_for(SPEC.name)
        )
        try:
            if settings.should_migrate_on_start:
                await upgrade(engine, SPEC.migrations, settings.schema_for(SPEC.name))
            async with transaction(
                UnitOfWork(db.sessionmaker(engine), SPEC.outbox, SPEC.inbox)
            ) as tx:
                existing = [
                    f
                    for f in await handlers.list_forms(document.workspace, 1000, None, tx)
                    if f.name == form.name
                ]
                if existing:
                    changes = FormUpdate.model_validate(document.spec)
                    row = await handlers.update_form(
                        existing[0].id, changes, document.workspace, tx
                    )
                    return f"form {row.id} updated for {document.workspace}"
                row = await handlers.create_form(form, document.workspace, tx)
                return f"form {row.id} created for {document.workspace}"
        finally:
            await engine.dispose()

    return asyncio.run(save())


APPLIERS: dict[str, Applier] = {
    "Form": apply_form,
    "ScoringRules": apply_scoring_rules,
    "Workflow": apply_workflow,
}


def read_documents(path: Path, workspace: str | None) -> list[Document]:
    """Every document of the file, checked for shape before anything is saved."""
    raw = read_yaml(path, ApplyError, every_document=True)
    documents = []
    for index, item in enumerate(raw, start=1):
        where = f"{path}#{index}"
        if not isinstance(item, dict) or "kind" not in item or "spec" not in item:
            raise ApplyError(f"{where}: a document needs `kind` and `spec`")
        if item["kind"] not in APPLIERS:
            kinds = ", ".join(sorted(APPLIERS))
            raise ApplyError(f"{where}: unknown kind {item['kind']!r} (one of {kinds})")
        unknown = set(item) - {"kind", "workspace", "spec"}
        if unknown:
            raise ApplyError(f"{where}: unknown fields {', '.join(sorted(unknown))}")
        ws = item.get("workspace") or workspace
        if not ws:
            raise ApplyError(f"{where}: no workspace (set `workspace:` or --workspace)")
        try:
            validate_workspace(str(ws))
        except DomainError as exc:
            raise ApplyError(f"{where}: {exc.message}") from None
        documents.append(Document(item["kind"], str(ws), item["spec"], where))
    if not documents:
        raise ApplyError(f"{path}: no document")
    return documents


def run(settings: Settings, path: Path, workspace: str | None, check: bool) -> list[str]:
    """Apply (or with `check`, only validate) every document of the file, in order."""
    return [
        APPLIERS[document.kind](settings, document, check)
        for document in read_documents(path, workspace)
    ]

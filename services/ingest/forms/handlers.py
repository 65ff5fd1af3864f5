"""Use cases of forms: definitions created, changed and retired, and posts to a form's public
endpoint judged and captured (one at a time, or a group committed together)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError

from services.ingest.forms import domain as forms_domain
from services.ingest.handlers import (
    Capture,
    IngestRepository,
    Outcome,
    Raw,
    Signature,
    verify_signed,
)
from services.ingest.models import Form
from services.ingest.schemas import (
    RULE_KEYS,
    FormCreate,
    FormSettings,
    FormUpdate,
)
from shared.errors import InvalidInput, NotFound
from shared.ids import prefixed
from shared.uow import Transaction


@dataclass(frozen=True)
class FormSnapshot:
    """What the public endpoints need of a form, cacheable between requests."""

    id: str
    workspace: str
    version: int
    settings: FormSettings
    rules: forms_domain.FormRules
    signing_secret: str | None


def snapshot(form: Form) -> FormSnapshot:
    settings = FormSettings.model_validate(form.definition)
    rules = forms_domain.FormRules.model_validate(settings.model_dump(include=RULE_KEYS))
    return FormSnapshot(form.id, form.workspace, form.version, settings, rules, form.signing_secret)


def invalid_from(exc: ValidationError) -> InvalidInput:
    """A form definition pydantic refused, as a 422 naming each field."""
    errors = [
        {
            "field": ".".join(str(p) for p in e["loc"]) or "body",
            "code": e["type"],
            "message": e["msg"],
        }
        for e in exc.errors()
    ]
    return InvalidInput("The form definition is invalid.", errors=errors)


async def create_form(cmd: FormCreate, workspace: str, tx: Transaction[IngestRepository]) -> Form:
    """A new form in the workspace."""
    now = datetime.now(UTC)
    form = Form(
        id=prefixed("frm"),
        workspace=workspace,
        name=cmd.name,
        definition=FormSettings.model_validate(cmd.model_dump()).model_dump(mode="json"),
        signing_secret=cmd.signing_secret,
        version=1,
        created_at=now,
        updated_at=now,
    )
    await tx.store.add_form(form)
    return form


async def get_form(form_id: str, workspace: str, tx: Transaction[IngestRepository]) -> Form:
    form = await tx.store.form(form_id, workspace)
    if form is None:
        raise NotFound(f"no form {form_id}")
    return form


async def load_form(form_id: str, tx: Transaction[IngestRepository]) -> FormSnapshot | None:
    """A live form by id, for the public endpoints (which know no workspace)."""
    form = await tx.store.form(form_id)
    return snapshot(form) if form is not None else None


async def update_form(
    form_id: str, cmd: FormUpdate, workspace: str, tx: Transaction[IngestRepository]
) -> Form:
    """Change a form; submissions are checked against the new definition from now on."""
    form = await get_form(form_id, workspace, tx)
    changes = cmd.model_dump(exclude_unset=True)
    if "name" in changes:
        if changes["name"] is None:
            raise InvalidInput(
                "name cannot be cleared",
                errors=[{"field": "name", "code": "required", "message": "name is required"}],
            )
        form.name = changes.pop("name")
    if "signing_secret" in changes:
        form.signing_secret = changes.pop("signing_secret")
    merged = {**form.definition, **cmd.model_dump(mode="json", include=set(changes))}
    try:
        form.definition = FormSettings.model_validate(merged).model_dump(mode="json")
    except ValidationError as exc:
        raise invalid_from(exc) from exc
    form.version += 1
    form.updated_at = datetime.now(UTC)
    return form


async def delete_form(form_id: str, workspace: str, tx: Transaction[IngestRepository]) -> None:
    """Retire a form: its page and endpoint answer 404; its submissions are kept."""
    form = await get_form(form_id, workspace, tx)
    form.deleted_at = datetime.now(UTC)


async def list_forms(
    workspace: str, limit: int, after: str | None, tx: Transaction[IngestRepository]
) -> Sequence[Form]:
    return await tx.store.forms(workspace, limit, after)


@dataclass(frozen=True)
class FormPost:
    """A post to a form's public endpoint, already parsed into multi-valued text."""

    form: FormSnapshot
    values: dict[str, list[str]]
    raw: Raw
    signed: Signature | None = None
    correlation_id: str | None = None
    # The request's trace: posts are judged and written by a writer task, outside the request.
    traceparent: str | None = None


async def capture_form_submission(cmd: FormPost, tx: Transaction[IngestRepository]) -> Outcome:
    """Check a form post against its form: accepted, rejected (quarantined) or spam."""
    if cmd.signed is not None and cmd.form.signing_secret:
        await verify_signed(cmd.form.signing_secret, cmd.form.id, cmd.signed, cmd.raw.body, tx)
    [outcome] = await capture_form_submissions([cmd], tx)
    return outcome


def judge_form_submissions(cmds: Sequence[FormPost]) -> tuple[list[Outcome], Capture]:
    """Each form post judged on its own (no I/O): the outcomes, and what to write."""
    capture = Capture()
    outcomes = [
        capture.record(
            cmd.form.workspace,
            "form",
            cmd.form.id,
            cmd.raw,
            cmd.values,
            forms_domain.check_form_submission(cmd.form.rules, cmd.values),
            correlation_id=cmd.correlation_id,
            traceparent=cmd.traceparent,
            region=cmd.form.rules.default_region,
        )
        for cmd in cmds
    ]
    return outcomes, capture


async def capture_form_submissions(
    cmds: Sequence[FormPost], tx: Transaction[IngestRepository]
) -> list[Outcome]:
    """Several form posts in one transaction (group commit); each is judged on its own."""
    outcomes, capture = judge_form_submissions(cmds)
    await capture.flush(tx)
    return outcomes

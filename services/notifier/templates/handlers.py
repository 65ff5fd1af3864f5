"""Template use cases: save (checked in the sandbox), read, preview."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from services.notifier.handlers import (
    Links,
    TemplateNotFound,
    new_id,
    owner_of,
)
from services.notifier.models import Template
from services.notifier.schemas import TemplateIn
from services.notifier.store import Store
from services.notifier.templates.domain import (
    RenderFailed,
    TemplateSource,
    render,
    sample_variables,
    validate,
    variables_for,
)
from shared.errors import InvalidInput

# ---------------------------------------------------------------------------------------------
# Templates


def template_source(data: TemplateIn | Template | Mapping[str, Any]) -> TemplateSource:
    if isinstance(data, Mapping):
        blocks = data.get("blocks")
        return TemplateSource(
            subject=data.get("subject"),
            html=data.get("html"),
            text=data.get("text"),
            blocks=list(blocks) if isinstance(blocks, list) else None,
        )
    return TemplateSource(data.subject, data.html, data.text, data.blocks)


def check_template(source: TemplateSource) -> None:
    """422 with every syntax error, unknown variable and sandbox violation."""
    if not any(True for _ in source.parts()):
        raise InvalidInput(
            "A template needs a subject, html, text or blocks.",
            errors=[{"field": "text", "code": "required", "message": "no content"}],
        )
    if problems := validate(source):
        raise InvalidInput(
            "The template does not render; see `errors`.",
            errors=[{"field": p.field, "code": p.code, "message": p.message} for p in problems],
        )


async def create_template(
    workspace: str, data: TemplateIn, store: Store, now: datetime
) -> Template:
    """A new template, refused (422) unless it renders against sample data."""
    check_template(template_source(data))
    if await store.template(workspace, data.name) is not None:
        raise InvalidInput(
            f"a template named {data.name!r} exists",
            errors=[{"field": "name", "code": "taken", "message": "name taken"}],
        )
    template = Template(
        id=new_id("tpl"),
        workspace=workspace,
        name=data.name,
        subject=data.subject,
        html=data.html,
        text=data.text,
        blocks=data.blocks,
        created_at=now,
        updated_at=now,
    )
    store.add(template)
    await store.flush()
    return template


async def replace_template(
    workspace: str, template_id: str, data: TemplateIn, store: Store, now: datetime
) -> Template:
    template = await get_template(workspace, template_id, store)
    check_template(template_source(data))
    named = await store.template(workspace, data.name)
    if named is not None and named.id != template.id:
        raise InvalidInput(
            f"a template named {data.name!r} exists",
            errors=[{"field": "name", "code": "taken", "message": "name taken"}],
        )
    template.name = data.name
    template.subject, template.html, template.text = data.subject, data.html, data.text
    template.blocks = data.blocks
    template.updated_at = now
    await store.flush()
    return template


async def get_template(workspace: str, template_id: str, store: Store) -> Template:
    template = await store.template(workspace, template_id)
    if template is None:
        raise TemplateNotFound(f"template {template_id} not found")
    return template


async def delete_template(workspace: str, template_id: str, store: Store) -> None:
    await store.remove(await get_template(workspace, template_id, store))


async def preview_template(
    workspace: str,
    template_id: str,
    contact_id: str | None,
    variables: Mapping[str, Any],
    store: Store,
    links: Links,
) -> dict[str, Any]:
    """The template rendered against a contact of the projection, or sample data."""
    template = await get_template(workspace, template_id, store)
    if contact_id is None:
        values = sample_variables()
        values["vars"] = dict(variables) or values["vars"]
    else:
        contact = (await store.contacts(workspace, [contact_id])).get(contact_id)
        if contact is None:
            # The template exists; the body names a contact notifier does not know: bad input.
            raise InvalidInput(
                f"contact {contact_id} is not known to notifier",
                errors=[
                    {"field": "contact_id", "code": "unknown_contact", "message": "no such contact"}
                ],
            )
        settings = await store.workspace_settings(workspace)
        values = variables_for(
            contact,
            owner_of(settings, contact),
            variables,
            workspace=workspace,
            contact_url=links.contact_url.format(contact_id=contact_id),
        )
    try:
        return render(template_source(template), values).as_dict()
    except RenderFailed as exc:
        raise InvalidInput(
            "The template does not render with this data.",
            errors=[
                {
                    "field": exc.problem.field,
                    "code": exc.problem.code,
                    "message": exc.problem.message,
                }
            ],
        ) from exc

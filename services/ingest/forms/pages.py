"""The hosted form's HTML pages and embed script, rendered from the templates."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader

from services.ingest import domain
from services.ingest.forms.handlers import FormSnapshot
from services.ingest.page_headers import new_nonce, page_headers

TEMPLATES = Path(__file__).parent.parent / "templates"


def environment() -> Environment:
    """The page templates, autoescaped."""
    return Environment(
        loader=FileSystemLoader(TEMPLATES), autoescape=True, trim_blocks=True, lstrip_blocks=True
    )


INPUT_TYPES = {"email": "email", "phone": "tel", "number": "number", "date": "date"}


AUTOCOMPLETE = {
    "email": "email",
    "phone": "tel",
    "first_name": "given-name",
    "last_name": "family-name",
    "company": "organization",
    "job_title": "organization-title",
    "country": "country-name",
}


def render_form(
    templates: Environment,
    form: FormSnapshot,
    values: Mapping[str, list[str]],
    errors: Mapping[str, str],
    status_code: int = 200,
) -> HTMLResponse:
    settings = form.settings
    nonce = new_nonce()
    html = templates.get_template("form.html").render(
        nonce=nonce,
        title=settings.title or "Contact us",
        description=settings.description,
        action=f"/v1/forms/{form.id}/submissions",
        fields=settings.fields,
        consent=settings.consent,
        honeypot=settings.honeypot_field,
        tracking=domain.TRACKING_FIELDS,
        submit_label=settings.submit_label,
        values=values,
        errors=errors,
        input_types=INPUT_TYPES,
        autocomplete=AUTOCOMPLETE,
    )
    headers = page_headers(nonce, settings.allowed_origins, settings.redirect_url)
    return HTMLResponse(
        html, status_code=status_code, headers=headers | {"Cache-Control": "no-store"}
    )

"""The forms routes: definitions (authenticated), and each form's public side: the hosted page,
the embed script, the thank-you page and submissions (the hot path)."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.security import HTTPBearer

from services.ingest import domain
from services.ingest import handlers as shared
from services.ingest.bodies import header_dict, parse_form_body, read_limited, wants_html
from services.ingest.cors import CORS_ALLOWED_HEADERS, cors_headers
from services.ingest.forms import handlers
from services.ingest.forms.pages import INPUT_TYPES, render_form
from services.ingest.handlers import OriginNotAllowed, Raw
from services.ingest.models import Form
from services.ingest.page_headers import new_nonce, page_headers
from services.ingest.runtime import Runtime_, runtime_of
from services.ingest.schemas import (
    FormCreate,
    FormPage,
    FormRead,
    FormSettings,
    FormUpdate,
    SubmissionAccepted,
)
from services.ingest.store import transaction
from shared import tracing
from shared.app import Context
from shared.auth import Principal, require_scope
from shared.logs import correlation_id_var
from shared.openapi import problems

router = APIRouter(tags=["ingest"])
public = APIRouter(tags=["public"])
_bearer = HTTPBearer(auto_error=False)
_read_forms = require_scope("forms:read")


# ---------------------------------------------------------------------------------------------
# A form as the API shows it


def form_read(form: Form, request: Request) -> FormRead:
    base = str(request.base_url).rstrip("/")
    return FormRead(
        **FormSettings.model_validate(form.definition).model_dump(),
        id=form.id,
        name=form.name,
        version=form.version,
        has_signing_secret=form.signing_secret is not None,
        hosted_url=f"{base}/v1/forms/{form.id}",
        embed_url=f"{base}/v1/forms/{form.id}/embed.js",
        submit_url=f"{base}/v1/forms/{form.id}/submissions",
        created_at=form.created_at,
        updated_at=form.updated_at,
    )


# ---------------------------------------------------------------------------------------------
# Forms (authenticated)


@router.post("/v1/forms", status_code=201)
async def create_form(
    body: FormCreate,
    request: Request,
    ctx: Context,
    principal: Annotated[Principal, Depends(require_scope("forms:write"))],
) -> FormRead:
    """Create a form."""
    async with transaction(ctx.uow()) as tx:
        form = await handlers.create_form(body, principal.workspace, tx)
    return form_read(form, request)


@router.get("/v1/forms")
async def list_forms(
    request: Request,
    ctx: Context,
    principal: Annotated[Principal, Depends(require_scope("forms:read"))],
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> FormPage:
    """List the workspace's forms."""
    async with transaction(ctx.uow()) as tx:
        forms = await handlers.list_forms(principal.workspace, limit, cursor, tx)
    items = [form_read(f, request) for f in forms]
    return FormPage(items=items, next_cursor=forms[-1].id if len(forms) == limit else None)


@router.patch("/v1/forms/{form_id}")
async def update_form(
    form_id: str,
    body: FormUpdate,
    request: Request,
    ctx: Context,
    rt: Runtime_,
    principal: Annotated[Principal, Depends(require_scope("forms:write"))],
) -> FormRead:
    """Change a form; later submissions and releases use the new definition."""
    async with transaction(ctx.uow()) as tx:
        form = await handlers.update_form(form_id, body, principal.workspace, tx)
    rt.forget_form(form_id)
    return form_read(form, request)


@router.delete("/v1/forms/{form_id}", status_code=204)
async def delete_form(
    form_id: str,
    ctx: Context,
    rt: Runtime_,
    principal: Annotated[Principal, Depends(require_scope("forms:write"))],
) -> Response:
    """Retire a form; its submissions are kept."""
    async with transaction(ctx.uow()) as tx:
        await handlers.delete_form(form_id, principal.workspace, tx)
    rt.forget_form(form_id)
    return Response(status_code=204)


# ---------------------------------------------------------------------------------------------
# Forms (public): hosted page, embed script, submissions


@public.get(
    "/v1/forms/{form_id}",
    response_class=HTMLResponse,
    responses={200: {"content": {"application/json": {}, "text/html": {}}}},
)
async def form_page(form_id: str, request: Request, ctx: Context, rt: Runtime_) -> Response:
    """The hosted form as accessible HTML; with a bearer token (forms:read), its definition."""
    credentials = await _bearer(request)
    if credentials is not None:
        principal = await _read_forms(request, credentials)
        async with transaction(ctx.uow()) as tx:
            form = await handlers.get_form(form_id, principal.workspace, tx)
        return JSONResponse(form_read(form, request).model_dump(mode="json"))
    snapshot = await rt.form(ctx, form_id)
    values = {k: [v] for k, v in request.query_params.items() if k in domain.UTM_FIELDS}
    if referrer := request.headers.get("referer"):
        values["referrer"] = [referrer]
    values["page_url"] = [str(request.url)]
    return render_form(rt.templates, snapshot, values, {})


@public.get("/v1/forms/{form_id}/embed.js", response_class=Response)
async def form_embed(form_id: str, request: Request, ctx: Context, rt: Runtime_) -> Response:
    """A script that renders the form into any page and submits it as JSON."""
    form = await rt.form(ctx, form_id)
    settings = form.settings
    base = str(request.base_url).rstrip("/")
    config = {
        "id": form.id,
        "title": settings.title,
        "fields": [f.model_dump(mode="json") for f in settings.fields],
        "consent": settings.consent.model_dump() if settings.consent else None,
        "honeypot": settings.honeypot_field,
        "submit_label": settings.submit_label,
        "success_message": settings.success_message,
        "redirect_url": settings.redirect_url,
        "submit_url": f"{base}/v1/forms/{form.id}/submissions",
        "input_types": INPUT_TYPES,
    }
    script = rt.templates.get_template("embed.js").render(config=config)
    return Response(
        script,
        media_type="application/javascript",
        headers={"Cache-Control": "public, max-age=60", "X-Content-Type-Options": "nosniff"},
    )


@public.get("/v1/forms/{form_id}/thanks", response_class=HTMLResponse)
async def form_thanks(form_id: str, ctx: Context, rt: Runtime_) -> HTMLResponse:
    """The built-in thank-you page, for forms without a redirect URL."""
    form = await rt.form(ctx, form_id)
    nonce = new_nonce()
    html = rt.templates.get_template("thanks.html").render(
        nonce=nonce,
        title=form.settings.title or "Contact us",
        message=form.settings.success_message,
    )
    return HTMLResponse(html, headers=page_headers(nonce, form.settings.allowed_origins))


@public.options("/v1/forms/{form_id}/submissions", status_code=204, responses=problems(403))
async def submission_preflight(
    form_id: str, request: Request, ctx: Context, rt: Runtime_
) -> Response:
    """CORS preflight: allowed origins get the go-ahead, any other origin 403."""
    form = await rt.form(ctx, form_id)
    if request.headers.get("origin") is None:
        raise OriginNotAllowed("A preflight request carries an Origin.")
    headers = cors_headers(form, request) | {
        "Access-Control-Allow-Methods": "POST, OPTIONS",
        "Access-Control-Allow-Headers": CORS_ALLOWED_HEADERS,
        "Access-Control-Max-Age": "600",
    }
    return Response(status_code=204, headers=headers)


async def submit_form_hot(request: Request) -> Response:
    """`submit_form` as a hot route (see `main.SPEC`): no dependency solving on the hot path."""
    ctx = request.app.state.ctx
    return await submit_form(request.path_params["form_id"], request, ctx, runtime_of(ctx))


async def submit_form(form_id: str, request: Request, ctx: Context, rt: Runtime_) -> Response:
    """Submit a form: a browser post answers 303 to the redirect URL, JSON answers 202."""
    form = await rt.form(ctx, form_id)
    received = header_dict(request)
    signed = None
    peer = request.client.host if request.client else None
    if form.signing_secret and "webhook-signature" in received:
        signed = shared.Signature(
            received.get("webhook-id"),
            received.get("webhook-timestamp"),
            received.get("webhook-signature"),
        )
        headers: dict[str, str] = {}
    else:
        headers = cors_headers(form, request, received)
        rt.limit_client(form, peer or "unknown", headers)
    rt.admit_workspace(form.workspace, headers)
    body = await read_limited(request, rt.settings.ingest_max_body_bytes, headers, received)
    values = await parse_form_body(request, body, received)
    raw = Raw(received.get("content-type", ""), body, peer, received.get("origin"))
    post = handlers.FormPost(
        form, values, raw, signed, correlation_id_var.get(), tracing.current_traceparent()
    )
    if signed is None:
        outcome = await rt.writer.submit(post)
    else:
        async with transaction(ctx.uow()) as tx:
            outcome = await handlers.capture_form_submission(post, tx)
    browser = wants_html(request, received)
    if outcome.status == "rejected":
        if browser:
            errors: dict[str, str] = {}
            for problem in outcome.problems:
                errors.setdefault(problem.field, problem.message)
            return render_form(rt.templates, form, values, errors, status_code=422)
        raise shared.invalid(outcome.problems, submission_id=outcome.submission_id, headers=headers)
    # Spam looks accepted: a bot learns nothing from the answer.
    if browser:
        location = form.settings.redirect_url or f"/v1/forms/{form.id}/thanks"
        return RedirectResponse(location, status_code=303, headers=headers)
    # SubmissionAccepted, serialised by hand: the same bytes as JSONResponse, less work.
    accepted = orjson.dumps({"submission_id": outcome.submission_id, "status": "accepted"})
    return Response(accepted, status_code=202, headers=headers, media_type="application/json")


public.add_api_route(
    "/v1/forms/{form_id}/submissions",
    submit_form,
    methods=["POST"],
    status_code=202,
    response_model=SubmissionAccepted,
    responses={
        303: {"description": "browser post: see the redirect URL"},
        # A browser post that fails its rules gets the form again, with each field's error.
        422: {"content": {"text/html": {"schema": {"type": "string"}}}},
        **problems(403, 409, 413, 415, 429),
    },
    # Read by hand (the hot path); which fields it takes is the form's own definition.
    openapi_extra={
        "requestBody": {
            "required": True,
            "description": "The form's fields by name (see the form's `fields`).",
            "content": {
                kind: {"schema": {"type": "object"}}
                for kind in (
                    "application/x-www-form-urlencoded",
                    "multipart/form-data",
                    "application/json",
                )
            },
        }
    },
)

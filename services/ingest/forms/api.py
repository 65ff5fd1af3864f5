"""ingest's HTTP door: forms, public submissions, hosted page, webhooks, leads, events."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import contextvars
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.security import HTTPBearer
from jinja2 import Environment, FileSystemLoader
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.types import Message

from services.ingest import domain, erasure, handlers
from services.ingest.forms import domain as forms_domain
from services.ingest.handlers import (
    FormSnapshot,
    OriginNotAllowed,
    Raw,
    UnsupportedMediaType,
)
from services.ingest.models import Form, Submission, WebhookSource
from services.ingest.page_headers import new_nonce, page_headers
from services.ingest.schemas import (
    EngagementAccepted,
    EngagementBatch,
    FormCreate,
    FormPage,
    FormRead,
    FormSettings,
    FormUpdate,
    LeadBatch,
    LeadIn,
    LeadsAccepted,
    QuarantineItem,
    QuarantinePage,
    ReleaseResult,
    SubmissionAccepted,
    WebhookSourceCreate,
    WebhookSourceCreated,
    WebhookSourceRead,
    WebhookSourceUpdate,
)
from services.ingest.settings import IngestSettings, ingest_settings
from services.ingest.store import KeyTaken
from shared import tracing
from shared.app import Context, ServiceContext
from shared.auth import Principal, require_scope
from shared.db import append_rows
from shared.errors import InvalidInput, NotFound, PayloadTooLarge, TooManyRequests
from shared.export import EXPORT_PATH, PersonRef
from shared.logs import correlation_id_var
from shared.openapi import problems

API_MAX_BODY = 8 * 1024 * 1024  # a batch of 500 leads
EVENTS_MAX_BODY = 8 * 1024 * 1024  # a batch of 1,000 events
TEMPLATES = Path(__file__).parent / "templates"
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
BROWSER_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
CORS_ALLOWED_HEADERS = "content-type, accept, accept-language, x-correlation-id"

router = APIRouter(tags=["ingest"])
public = APIRouter(tags=["public"])
_bearer = HTTPBearer(auto_error=False)
_read_forms = require_scope("forms:read")


# ---------------------------------------------------------------------------------------------
# Per-process state of the public endpoints: caches, buckets, templates


@dataclass
class Runtime:
    """What the public endpoints keep between requests, made on first use per app."""

    settings: IngestSettings
    templates: Environment
    writer: SubmissionWriter
    forms: dict[str, tuple[float, FormSnapshot | None]] = field(default_factory=dict)
    per_client: domain.TokenBuckets = field(init=False)
    per_workspace: domain.TokenBuckets = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.per_client = domain.TokenBuckets(s.ingest_form_rate_per_s, s.ingest_form_burst)
        self.per_workspace = domain.TokenBuckets(1.0, 1.0)

    async def form(self, ctx: ServiceContext, form_id: str) -> FormSnapshot:
        """A live form, cached briefly: the public endpoint is the hot path."""
        now = time.monotonic()
        cached = self.forms.get(form_id)
        if cached is None or cached[0] < now:
            async with ctx.uow() as uow:
                found = await handlers.load_form(form_id, uow)
            if len(self.forms) > 10_000:
                self.forms.clear()
            cached = self.forms[form_id] = (now + self.settings.ingest_form_cache_ttl_s, found)
        if cached[1] is None:
            raise NotFound(f"no form {form_id}")
        return cached[1]

    def forget_form(self, form_id: str) -> None:
        self.forms.pop(form_id, None)

    def limit_client(self, form: FormSnapshot, client: str, headers: Mapping[str, str]) -> None:
        wait = self.per_client.take(f"{form.id}|{client}", time.monotonic())
        if wait:
            raise TooManyRequests(
                "Too many submissions from this address; try again later.",
                headers={**headers, "Retry-After": str(domain.retry_after(wait))},
            )

    def admit_workspace(self, workspace: str, headers: Mapping[str, str] | None = None) -> None:
        """The workspace's quota (per minute) over every way in; 0 means unlimited."""
        s = self.settings
        quota = s.ingest_workspace_quotas.get(workspace, s.ingest_workspace_quota_per_minute)
        if quota <= 0:
            return
        wait = self.per_workspace.take(
            workspace, time.monotonic(), rate=quota / 60.0, burst=float(quota)
        )
        if wait:
            raise TooManyRequests(
                "This workspace's ingest quota is spent; try again later.",
                headers={**(headers or {}), "Retry-After": str(domain.retry_after(wait))},
                quota_per_minute=quota,
            )


async def runtime(request: Request) -> Runtime:
    """Async on purpose: a sync dependency costs a thread-pool hop on every request."""
    state = request.app.state
    found: Runtime | None = getattr(state, "ingest_runtime", None)
    if found is None:
        ctx: ServiceContext = state.ctx
        settings = ingest_settings(ctx.settings)
        templates = Environment(
            loader=FileSystemLoader(TEMPLATES),
            autoescape=True,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        found = state.ingest_runtime = Runtime(settings, templates, SubmissionWriter(ctx))
    return found


Runtime_ = Annotated[Runtime, Depends(runtime)]


class SubmissionWriter:
    """Group commit for the public form endpoint: posts arriving together share a transaction.

    Each request still waits for the commit holding its submission row and its outbox event
    before it is answered, so nothing is acknowledged before it is durable. A failed batch is
    retried one post at a time, so one bad row cannot fail its neighbours.

    One writer gathers at a time; when only a few posts are waiting it lingers `linger_s` for
    more. Below saturation that keeps transactions from carrying one post each, whose fixed
    cost (session, BEGIN, two inserts, COMMIT) otherwise dominates the process's CPU.
    """

    def __init__(
        self,
        ctx: ServiceContext,
        writers: int = 4,
        max_batch: int = 200,
        linger_s: float = 0.004,
        enough: int = 16,
    ) -> None:
        self.ctx = ctx
        self.writers = writers
        self.max_batch = max_batch
        self.linger_s = linger_s
        self.enough = enough
        self.gathering = asyncio.Lock()
        self.queue: asyncio.Queue[tuple[handlers.FormPost, asyncio.Future[handlers.Outcome]]]
        self.queue = asyncio.Queue()
        self.started = False

    async def capture(self, post: handlers.FormPost) -> handlers.Outcome:
        if not self.started:
            # Registered as the service's tasks, so the platform cancels them at shutdown. Their
            # own empty context: a copy of this request's would leave its trace (and correlation
            # id) current in the writers for good.
            self.ctx.tasks.extend(
                asyncio.create_task(
                    self._run(), name="ingest:submission-writer", context=contextvars.Context()
                )
                for _ in range(self.writers)
            )
            self.started = True
        done: asyncio.Future[handlers.Outcome] = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((post, done))
        return await done

    async def _run(self) -> None:
        # Each writer keeps one connection between batches, so a transaction costs no pool
        # checkout (and no pre-ping round trip). A failed batch gives the connection up, as it
        # may be broken; its posts are retried one at a time through the pool (pre-pinged).
        conn: AsyncConnection | None = None
        try:
            while True:
                batch = await self._gather()
                try:
                    if conn is None:
                        conn = await self.ctx.engine.connect()
                    await self._write_on(conn, batch)
                except Exception:
                    if conn is not None:
                        await _discard(conn)
                        conn = None
                    for item in batch:
                        await self._write([item])
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await conn.close()

    async def _gather(
        self,
    ) -> list[tuple[handlers.FormPost, asyncio.Future[handlers.Outcome]]]:
        async with self.gathering:
            batch = [await self.queue.get()]
            if self.linger_s and self.queue.qsize() < self.enough:
                await asyncio.sleep(self.linger_s)
            while len(batch) < self.max_batch and not self.queue.empty():
                batch.append(self.queue.get_nowait())
        return batch

    async def _write_on(
        self,
        conn: AsyncConnection,
        batch: list[tuple[handlers.FormPost, asyncio.Future[handlers.Outcome]]],
    ) -> None:
        """The batch in one transaction on the writer's own connection; raises on failure.

        Only inserts (submissions and their outbox rows), so it goes through `append_rows`
        rather than a unit of work: the ORM session's cost per transaction was a third of a
        submission's CPU time at 1,000 posts/s, when batches are small."""
        outcomes, capture = handlers.judge_form_submissions([p for p, _ in batch])
        # One transaction for many requests' leads: a span of its own, linked to each request.
        with tracing.tracer().start_as_current_span(
            "outbox write", links=tracing.links([p.traceparent for p, _ in batch])
        ):
            await append_rows(conn, capture.writes(self.ctx.spec.outbox))
        if capture.events:
            self.ctx.relay.notify()
        for (_, done), outcome in zip(batch, outcomes, strict=True):
            if not done.done():
                done.set_result(outcome)

    async def _write(
        self, batch: list[tuple[handlers.FormPost, asyncio.Future[handlers.Outcome]]]
    ) -> None:
        try:
            async with self.ctx.uow() as uow:
                outcomes = await handlers.capture_form_submissions([p for p, _ in batch], uow)
        except Exception as exc:
            if len(batch) > 1:
                for item in batch:
                    await self._write([item])
                return
            if not batch[0][1].done():
                batch[0][1].set_exception(exc)
            return
        for (_, done), outcome in zip(batch, outcomes, strict=True):
            if not done.done():
                done.set_result(outcome)


async def _discard(conn: AsyncConnection) -> None:
    with contextlib.suppress(Exception):
        await conn.invalidate()
    with contextlib.suppress(Exception):
        await conn.close()


# ---------------------------------------------------------------------------------------------
# Reading bodies: size limit enforced while reading; urlencoded, multipart and JSON


async def read_limited(
    request: Request,
    limit: int,
    headers: Mapping[str, str] | None = None,
    received: Mapping[str, str] | None = None,
) -> bytes:
    """The body, refused with 413 as soon as it passes `limit` (whatever Content-Length says).

    `headers` go on the 413 answer; `received` are the request's headers, when already read
    (see `header_dict`)."""

    def too_large() -> PayloadTooLarge:
        return PayloadTooLarge(f"The body exceeds {limit} bytes.", headers=dict(headers or {}))

    declared = (request.headers if received is None else received).get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large()
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def header_dict(request: Request) -> dict[str, str]:
    """The request's headers as a plain dict (first value of a repeated name, as
    `request.headers.get` gives): one pass, then cheap look-ups on the hot path."""
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in reversed(request.scope["headers"])}


def media_type(request: Request, received: Mapping[str, str] | None = None) -> str:
    found = (request.headers if received is None else received).get("content-type", "")
    return found.split(";")[0].strip().lower()


async def parse_form_body(
    request: Request, body: bytes, received: Mapping[str, str] | None = None
) -> dict[str, list[str]]:
    """Multi-valued text fields from a urlencoded, multipart or JSON form post."""
    kind = media_type(request, received)
    if kind == "application/x-www-form-urlencoded":
        values: dict[str, list[str]] = {}
        for key, value in parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
            values.setdefault(key, []).append(value)
        return values
    if kind == "multipart/form-data":
        return await _parse_multipart(request, body)
    if kind == "application/json" or kind.endswith("+json"):
        payload = handlers.parse_json(body)
        if not isinstance(payload, dict):
            raise InvalidInput(
                "A JSON form post is an object of field names to values.",
                errors=[{"field": "body", "code": "not_an_object", "message": "expected object"}],
            )
        return forms_domain.form_values(payload)
    raise UnsupportedMediaType(
        "Post the form as application/x-www-form-urlencoded, multipart/form-data or JSON."
    )


async def _parse_multipart(request: Request, body: bytes) -> dict[str, list[str]]:
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if delivered:
            return {"type": "http.disconnect"}
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=10, max_fields=500)
    except MultiPartException as exc:
        raise InvalidInput(
            "The multipart body is malformed.",
            errors=[{"field": "body", "code": "malformed", "message": exc.message}],
        ) from exc
    values: dict[str, list[str]] = {}
    try:
        for key, value in form.multi_items():
            # Files are not lead data: only their names are kept, in the raw body anyway.
            text = value.filename or "" if isinstance(value, UploadFile) else value
            values.setdefault(key, []).append(text)
    finally:
        await form.close()
    return values


def wants_html(request: Request, received: Mapping[str, str] | None = None) -> bool:
    """A browser post: urlencoded or multipart, and `Accept` not preferring JSON."""
    if media_type(request, received) not in BROWSER_TYPES:
        return False
    html = json = 0.0
    accept = (request.headers if received is None else received).get("accept", "*/*")
    for part in accept.split(","):
        kind, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        if kind in ("text/html", "application/xhtml+xml"):
            html = max(html, q)
        elif kind in ("application/json", "application/problem+json"):
            json = max(json, q)
    return html >= json


# ---------------------------------------------------------------------------------------------
# CORS for the public endpoint


def own_origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.headers.get('host', request.url.netloc)}".lower()


def cors_headers(
    form: FormSnapshot, request: Request, received: Mapping[str, str] | None = None
) -> dict[str, str]:
    """CORS headers for an allowed `Origin` (none without one); 403 for any other origin."""
    origin = (request.headers if received is None else received).get("origin")
    if origin is None:
        return {}
    allowed = form.settings.allowed_origins
    if (
        origin.lower() != own_origin(request)
        and "*" not in allowed
        and origin.lower() not in allowed
    ):
        raise OriginNotAllowed(f"Origin {origin} may not post to this form.")
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}


# ---------------------------------------------------------------------------------------------
# Rendering


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


def render_form(
    rt: Runtime,
    form: FormSnapshot,
    values: Mapping[str, list[str]],
    errors: Mapping[str, str],
    status_code: int = 200,
) -> HTMLResponse:
    settings = form.settings
    nonce = new_nonce()
    html = rt.templates.get_template("form.html").render(
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


def webhook_read(source: WebhookSource, request: Request) -> dict[str, Any]:
    return {
        "id": source.id,
        "name": source.name,
        "mapping": source.mapping,
        "default_region": source.default_region,
        "url": f"{str(request.base_url).rstrip('/')}/v1/webhooks/{source.id}",
        "created_at": source.created_at,
        "updated_at": source.updated_at,
    }


def quarantine_item(row: Submission) -> QuarantineItem:
    return QuarantineItem(
        id=row.id,
        source=row.source,
        source_id=row.source_id,
        status=row.status,
        reason=row.reason,
        errors=row.errors or [],
        content_type=row.content_type,
        data=row.data,
        client_address=row.client_address,
        origin=row.origin,
        created_at=row.created_at,
    )


def _cursor(at: datetime, last_id: str) -> str:
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{last_id}".encode()).decode()


def _uncursor(cursor: str) -> tuple[datetime, str]:
    try:
        at, last_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        return datetime.fromisoformat(at), last_id
    except ValueError as exc:
        raise InvalidInput(
            "The cursor is not one this API gave out.",
            errors=[{"field": "cursor", "code": "invalid_cursor", "message": "bad cursor"}],
        ) from exc


def _invalid_body(exc: ValidationError, prefix: str = "") -> InvalidInput:
    errors = [
        {
            "field": prefix + ".".join(str(p) for p in e["loc"]) or "body",
            "code": e["type"],
            "message": e["msg"],
        }
        for e in exc.errors()
    ]
    return InvalidInput("The request is invalid.", errors=errors)


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
    async with ctx.uow() as uow:
        form = await handlers.create_form(body, principal.workspace, uow)
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
    async with ctx.uow() as uow:
        forms = await handlers.list_forms(principal.workspace, limit, cursor, uow)
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
    async with ctx.uow() as uow:
        form = await handlers.update_form(form_id, body, principal.workspace, uow)
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
    async with ctx.uow() as uow:
        await handlers.delete_form(form_id, principal.workspace, uow)
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
        async with ctx.uow() as uow:
            form = await handlers.get_form(form_id, principal.workspace, uow)
        return JSONResponse(form_read(form, request).model_dump(mode="json"))
    snapshot = await rt.form(ctx, form_id)
    values = {k: [v] for k, v in request.query_params.items() if k in domain.UTM_FIELDS}
    if referrer := request.headers.get("referer"):
        values["referrer"] = [referrer]
    values["page_url"] = [str(request.url)]
    return render_form(rt, snapshot, values, {})


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
    state = request.app.state
    found: Runtime | None = getattr(state, "ingest_runtime", None)
    rt = found if found is not None else await runtime(request)
    return await submit_form(request.path_params["form_id"], request, state.ctx, rt)


async def submit_form(form_id: str, request: Request, ctx: Context, rt: Runtime_) -> Response:
    """Submit a form: a browser post answers 303 to the redirect URL, JSON answers 202."""
    form = await rt.form(ctx, form_id)
    received = header_dict(request)
    signed = None
    peer = request.client.host if request.client else None
    if form.signing_secret and "webhook-signature" in received:
        signed = handlers.Signature(
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
        outcome = await rt.writer.capture(post)
    else:
        async with ctx.uow() as uow:
            outcome = await handlers.capture_form_submission(post, uow)
    browser = wants_html(request, received)
    if outcome.status == "rejected":
        if browser:
            errors: dict[str, str] = {}
            for problem in outcome.problems:
                errors.setdefault(problem.field, problem.message)
            return render_form(rt, form, values, errors, status_code=422)
        raise handlers.invalid(
            outcome.problems, submission_id=outcome.submission_id, headers=headers
        )
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
        **problems(403, 409, 413, 415, 429),
    },
)


# ---------------------------------------------------------------------------------------------
# Webhooks


@router.post("/v1/webhook-sources", status_code=201)
async def create_webhook_source(
    body: WebhookSourceCreate,
    request: Request,
    ctx: Context,
    principal: Annotated[Principal, Depends(require_scope("webhooks:write"))],
) -> WebhookSourceCreated:
    """Register a webhook sender; the answer shows its signing secret, once."""
    async with ctx.uow() as uow:
        source = await handlers.create_webhook_source(body, principal.workspace, uow)
    return WebhookSourceCreated(**webhook_read(source, request), secret=source.secret)


@router.get("/v1/webhook-sources")
async def list_webhook_sources(
    request: Request,
    ctx: Context,
    principal: Annotated[Principal, Depends(require_scope("webhooks:read"))],
) -> list[WebhookSourceRead]:
    """List the workspace's webhook senders."""
    async with ctx.uow() as uow:
        sources = await handlers.list_webhook_sources(principal.workspace, uow)
    return [WebhookSourceRead(**webhook_read(s, request)) for s in sources]


@router.get("/v1/webhook-sources/{source_id}")
async def get_webhook_source(
    source_id: str,
    request: Request,
    ctx: Context,
    principal: Annotated[Principal, Depends(require_scope("webhooks:read"))],
) -> WebhookSourceRead:
    """One webhook sender and its field mapping."""
    async with ctx.uow() as uow:
        source = await handlers.get_webhook_source(source_id, principal.workspace, uow)
    return WebhookSourceRead(**webhook_read(source, request))


@router.patch("/v1/webhook-sources/{source_id}")
async def update_webhook_source(
    source_id: str,
    body: WebhookSourceUpdate,
    request: Request,
    ctx: Context,
    principal: Annotated[Principal, Depends(require_scope("webhooks:write"))],
) -> WebhookSourceRead:
    """Change a webhook sender's name, mapping or default phone region."""
    async with ctx.uow() as uow:
        source = await handlers.update_webhook_source(source_id, body, principal.workspace, uow)
    return WebhookSourceRead(**webhook_read(source, request))


@router.delete("/v1/webhook-sources/{source_id}", status_code=204)
async def delete_webhook_source(
    source_id: str,
    ctx: Context,
    principal: Annotated[Principal, Depends(require_scope("webhooks:write"))],
) -> Response:
    """Retire a webhook sender; its posts answer 404 from now on."""
    async with ctx.uow() as uow:
        await handlers.delete_webhook_source(source_id, principal.workspace, uow)
    return Response(status_code=204)


@public.post(
    "/v1/webhooks/{source_id}",
    status_code=202,
    response_model=SubmissionAccepted,
    responses=problems(403, 409, 413, 415, 429),
)
async def receive_webhook(
    source_id: str,
    request: Request,
    ctx: Context,
    rt: Runtime_,
    webhook_id: Annotated[str | None, Header()] = None,
    webhook_timestamp: Annotated[str | None, Header()] = None,
    webhook_signature: Annotated[str | None, Header()] = None,
) -> Response:
    """A signed server-to-server post (Standard Webhooks), mapped onto a lead."""
    body = await read_limited(request, rt.settings.ingest_max_body_bytes)
    raw = Raw(
        request.headers.get("content-type", "application/json"),
        body,
        request.client.host if request.client else None,
        request.headers.get("origin"),
    )
    signed = handlers.Signature(webhook_id, webhook_timestamp, webhook_signature)
    async with ctx.uow() as uow:
        outcome = await handlers.capture_webhook(
            handlers.WebhookPost(source_id, signed, raw, rt.admit_workspace), uow
        )
    if outcome.status == "rejected":
        raise handlers.invalid(outcome.problems, submission_id=outcome.submission_id)
    return JSONResponse(SubmissionAccepted(submission_id=outcome.submission_id).model_dump(), 202)


# ---------------------------------------------------------------------------------------------
# Leads and engagement over the API


def inline_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON Schema with its `$defs` references inlined (our request models do not recurse)."""
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return resolve(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {k: resolve(v) for k, v in node.items()}
        if isinstance(node, list):
            return [resolve(v) for v in node]
        return node

    resolved: dict[str, Any] = resolve(schema)
    return resolved


# The body is read by hand (size limit, one lead or a batch), so its schema is given here.
LEADS_BODY_SCHEMA = inline_schema(TypeAdapter(LeadIn | LeadBatch).json_schema())


@router.post(
    "/v1/leads",
    status_code=202,
    response_model=LeadsAccepted | SubmissionAccepted,
    responses=problems(409, 413, 429),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": LEADS_BODY_SCHEMA}},
        }
    },
)
async def post_leads(
    request: Request,
    ctx: Context,
    rt: Runtime_,
    principal: Annotated[Principal, Depends(require_scope("leads:write"))],
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> Response:
    """Push one lead, or `{"leads": [...]}` (up to 500, all or nothing); Idempotency-Key 24 h."""
    rt.admit_workspace(principal.workspace)
    body = await read_limited(request, API_MAX_BODY)
    payload = handlers.parse_json(body)
    batch = isinstance(payload, dict) and "leads" in payload
    try:
        leads = (
            LeadBatch.model_validate(payload).leads if batch else [LeadIn.model_validate(payload)]
        )
    except ValidationError as exc:
        raise _invalid_body(exc) from exc
    raw = Raw("application/json", body, request.client.host if request.client else None)
    cmd = handlers.LeadsPost(principal.workspace, leads, batch, raw, idempotency_key)
    try:
        async with ctx.uow() as uow:
            answer = await handlers.capture_leads(cmd, uow)
    except KeyTaken:
        async with ctx.uow() as uow:
            replay = await handlers.replay_idempotent(
                principal.workspace, idempotency_key or "", body, uow
            )
        if replay is None:
            raise
        answer = replay
    headers = {"Idempotent-Replayed": "true"} if answer.replayed else {}
    if answer.status_code == 422:
        raise InvalidInput(
            answer.body["detail"],
            errors=answer.body["errors"],
            submission_ids=answer.body["submission_ids"],
            headers=headers,
        )
    return JSONResponse(answer.body, status_code=answer.status_code, headers=headers)


@router.post(
    "/v1/events",
    status_code=202,
    max_body_size=EVENTS_MAX_BODY,
    responses=problems(413, 429),
)
async def post_events(
    body: EngagementBatch,
    ctx: Context,
    rt: Runtime_,
    principal: Annotated[Principal, Depends(require_scope("events:write"))],
) -> EngagementAccepted:
    """Publish engagement events (up to 1,000) on `leadwire.engagement.v1`, all or nothing."""
    rt.admit_workspace(principal.workspace)
    async with ctx.uow() as uow:
        ids = await handlers.publish_engagement(principal.workspace, body.events, uow)
    return EngagementAccepted(accepted=len(ids), engagement_ids=ids)


# ---------------------------------------------------------------------------------------------
# Quarantine


@router.get("/v1/quarantine")
async def list_quarantine(
    ctx: Context,
    principal: Annotated[Principal, Depends(require_scope("quarantine:read"))],
    reason: str | None = None,
    source: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> QuarantinePage:
    """Rejected and spam submissions awaiting a decision, newest first."""
    before = _uncursor(cursor) if cursor else None
    async with ctx.uow() as uow:
        rows = await handlers.list_quarantine(
            principal.workspace, limit, uow, reason=reason, source=source, before=before
        )
    next_cursor = _cursor(rows[-1].created_at, rows[-1].id) if len(rows) == limit else None
    return QuarantinePage(items=[quarantine_item(r) for r in rows], next_cursor=next_cursor)


@router.post("/v1/quarantine/{submission_id}/release")
async def release_submission(
    submission_id: str,
    ctx: Context,
    principal: Annotated[Principal, Depends(require_scope("quarantine:write"))],
) -> ReleaseResult:
    """Re-run a quarantined submission against today's definition; publish it when valid."""
    async with ctx.uow() as uow:
        result = await handlers.release_submission(principal.workspace, submission_id, uow)
    if isinstance(result, domain.Rejected):
        raise handlers.invalid(result.problems, submission_id=submission_id)
    return ReleaseResult(
        submission_id=result.submission_id, status="released", dedupe_key=result.dedupe_key
    )


# ---------------------------------------------------------------------------------------------
# A person's data, for contacts' export (see shared.export)


@router.post(EXPORT_PATH)
async def export_person(
    ref: PersonRef,
    ctx: Context,
    principal: Annotated[Principal, Depends(require_scope("contacts:read"))],
) -> dict[str, Any]:
    """Everything ingest holds on a person: submissions, idempotency records, pending events."""
    async with ctx.uow() as uow:
        return await erasure.export_person(principal.workspace, ref, uow)

"""E-mail engagement links that notifier puts in marketing mail: the open pixel and the click
redirect. Public, and signed by notifier (shared.signed_links), so a link cannot be forged or
changed to name another contact or another target. Each hit is published on
`leadwire.engagement.v1` as `email.opened` or `email.clicked`."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from shared import signed_links
from shared.app import Context, ServiceContext
from shared.errors import DomainError
from shared.events import topics
from shared.events.envelope import Envelope, source_of
from shared.events.ingest import EmailClicked, EmailOpened, Engagement

SOURCE = source_of("ingest")
PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_STORE = {"cache-control": "no-store, private", "referrer-policy": "no-referrer"}

router = APIRouter(prefix="/v1/t", tags=["public"])


class InvalidLink(DomainError):
    status_code = 404
    code = "invalid_link"


def _claims(request: Request, purpose: signed_links.Purpose, token: str) -> dict[str, Any]:
    secret: str = request.app.state.auth_secret
    claims = signed_links.verify(secret.encode(), purpose, token)
    if claims is None or not isinstance(claims.get("w"), str) or not claims.get("c"):
        raise InvalidLink("this link is not valid")
    return claims


def _engagement_id(*parts: str) -> str:
    """The same hit twice (a mail client loading the pixel again) has the same id."""
    return "eng_" + hashlib.sha256(":".join(parts).encode()).hexdigest()[:24]


async def _publish(ctx: ServiceContext, workspace: str, payload: Engagement) -> None:
    key = topics.contact_key(workspace, str(payload.contact_id))
    envelope = Envelope.of(
        payload, source=SOURCE, workspace=workspace, subject=payload.engagement_id
    )
    async with ctx.uow() as uow:
        uow.emit(topics.ENGAGEMENT, key, envelope)


@router.get("/o/{token}")
async def email_opened(token: str, request: Request, ctx: Context) -> Response:
    """The open pixel: records `email.opened`, answers a 1x1 transparent GIF."""
    claims = _claims(request, "open", token)
    delivery = str(claims.get("d") or "")
    payload = EmailOpened(
        engagement_id=_engagement_id("open", delivery),
        contact_id=str(claims["c"]),
        occurred_at=datetime.now(UTC),
        properties={"notification_id": delivery},
    )
    await _publish(ctx, claims["w"], payload)
    return Response(PIXEL, media_type="image/gif", headers=NO_STORE)


@router.get("/c/{token}")
async def email_clicked(token: str, request: Request, ctx: Context) -> RedirectResponse:
    """A tracked link: records `email.clicked`, then redirects to the original address."""
    claims = _claims(request, "click", token)
    url = claims.get("u")
    if not isinstance(url, str) or not url.startswith(("https://", "http://")):
        raise InvalidLink("this link is not valid")
    delivery = str(claims.get("d") or "")
    payload = EmailClicked(
        engagement_id=_engagement_id("click", delivery, url),
        contact_id=str(claims["c"]),
        occurred_at=datetime.now(UTC),
        url=url,
        properties={"notification_id": delivery},
    )
    await _publish(ctx, claims["w"], payload)
    return RedirectResponse(url, status_code=302, headers=NO_STORE)

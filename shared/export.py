"""A person's data across services, for `GET /v1/contacts/{id}/export` (data subject access).

Each service owns its tables and answers for them: every service that holds personal data
serves `POST /v1/exports/person` (scope `contacts:read`), taking a `PersonRef` (the same
reference an erasure's `contact.deleted` carries: contact and merged ids, identity digests,
submission ids) and answering a JSON object of everything it holds on that person. contacts
builds the reference and gathers the parts into one document.

Why synchronous HTTP here, when services otherwise talk only through events: an export is a
rare, operator-initiated read, not the hot path, and the answer is wanted now, as one document.
Gathering it through events would need a request topic, a reply topic, a store of partial
answers and a polling API, for no gain: a service that is down cannot answer by event either.
So contacts asks each service directly, with the caller's own token (no service credentials),
and answers 503 with Retry-After when one cannot answer, rather than a document that looks
complete but is not. A service that serves no such endpoint (404) is listed under
`not_exported`: every service holding personal data should serve it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
from pydantic import BaseModel, Field

from shared.errors import RETRY_AFTER_S, DomainError

EXPORT_PATH = "/v1/exports/person"
# Where contacts finds the other services when LEADWIRE_SERVICE_URLS does not say: their
# default ports on this host (the embedded mode and `make stack`).
LOCAL_PORTS = {"ingest": 8001, "workflows": 8003, "notifier": 8004, "scoring": 8005}


def service_urls(configured: Mapping[str, str], host: str) -> dict[str, str]:
    """The other services' base URLs: as configured, else on this host's default ports."""
    if configured:
        return dict(configured)
    local = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return {name: f"http://{local}:{port}" for name, port in LOCAL_PORTS.items()}


class PersonRef(BaseModel):
    """Who to export: a contact, the duplicates merged into it, the digests of every e-mail and
    phone it was known by (`shared.erasure`), and the submissions that became it."""

    contact_id: str
    merged_ids: list[str] = Field(default_factory=list)
    identity_digests: list[str] = Field(default_factory=list)
    submission_ids: list[str] = Field(default_factory=list)


class ExportUnavailable(DomainError):
    status_code = 503
    code = "dependency_unavailable"
    permanent = False


async def gather(
    ref: PersonRef,
    services: Mapping[str, str],
    authorization: str,
    transport: httpx.AsyncBaseTransport | None = None,
    timeout_s: float = 30.0,
) -> tuple[dict[str, Any], list[str]]:
    """Each service's part (by name) and the services that hold nothing, asked in turn."""
    parts: dict[str, Any] = {}
    absent: list[str] = []
    async with httpx.AsyncClient(transport=transport, timeout=timeout_s) as client:
        for name, base in services.items():
            try:
                answer = await client.post(
                    base.rstrip("/") + EXPORT_PATH,
                    json=ref.model_dump(),
                    headers={"Authorization": authorization},
                )
            except httpx.HTTPError as exc:
                raise unavailable(name, str(exc) or type(exc).__name__) from exc
            if answer.status_code == 404:  # no such route: the service holds no one's data
                absent.append(name)
            elif answer.status_code == 200:
                parts[name] = answer.json()
            else:
                raise unavailable(name, f"answered {answer.status_code}")
    return parts, absent


def unavailable(service: str, why: str) -> ExportUnavailable:
    return ExportUnavailable(
        f"the export needs {service}, which cannot answer now ({why}); retry later",
        service=service,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )

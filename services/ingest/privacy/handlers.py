"""ingest's part of a person's rights: erasure and export.

`contact.deleted` removes every submission, quarantine entry, stored idempotent answer and
outbox row about the person, and keeps only erasure markers so that none of it can be replayed
into a new contact (see `shared.erasure`); an export lists the same rows (see `shared.export`).
"""

from __future__ import annotations

from collections.abc import Set
from typing import Any

import orjson

from services.ingest.handlers import IngestRepository
from shared.erasure import identity_digest
from shared.events.contacts import ContactDeleted
from shared.export import PersonRef
from shared.uow import Transaction


async def erase_person(
    workspace: str, tombstone: ContactDeleted, tx: Transaction[IngestRepository]
) -> None:
    """Delete what ingest holds on an erased contact, wherever it came in (form, browser post,
    API, webhook, quarantine, engagement), and remember the erasure by digest."""
    store = tx.store
    named = set(tombstone.identity_digests)
    await store.record_erasures(workspace, sorted(named), tombstone.deleted_at)
    removed = await store.delete_person_submissions(
        workspace, sorted(named), tombstone.submission_ids
    )
    submissions = {*removed, *tombstone.submission_ids}
    answers = await store.idempotency_records(workspace)
    await store.delete_idempotency_records(
        workspace,
        [a.key for a in answers if mentions(workspace, a.response, submissions, named)],
    )
    await store.delete_outbox_rows(await _outbox_rows(store, workspace, tombstone))


async def _outbox_rows(
    store: IngestRepository, workspace: str, ref: ContactDeleted | PersonRef
) -> list[int]:
    """The outbox rows about the person, unsent or kept for re-publishing."""
    named = set(ref.identity_digests)
    people = {f"{workspace}:{cid}" for cid in (ref.contact_id, *ref.merged_ids)}
    prefix = f"{workspace}:"
    return [
        row_id
        for row_id, key in await store.outbox_keys(workspace)
        # Leads are keyed by their identity (`email:…`), engagement by e-mail or contact id.
        if key in people or identity_digest(workspace, key.removeprefix(prefix)) in named
    ]


async def export_person(
    workspace: str, ref: PersonRef, tx: Transaction[IngestRepository]
) -> dict[str, Any]:
    """Everything ingest holds on the person: submissions as they came in (raw and parsed,
    quarantined ones too), stored idempotent answers, and events about them not yet dropped."""
    store = tx.store
    named = set(ref.identity_digests)
    submissions = await store.person_submissions(workspace, sorted(named), ref.submission_ids)
    ids = {s.id for s in submissions} | set(ref.submission_ids)
    answers = [
        a
        for a in await store.idempotency_records(workspace)
        if mentions(workspace, a.response, ids, named)
    ]
    events = await store.outbox_events(await _outbox_rows(store, workspace, ref))
    return {
        "submissions": [
            {
                "id": s.id,
                "source": s.source,
                "source_id": s.source_id,
                "status": s.status,
                "reason": s.reason,
                "errors": s.errors,
                "content_type": s.content_type,
                "raw": s.raw.decode("utf-8", "replace"),
                "data": s.data,
                "client_address": s.client_address,
                "origin": s.origin,
                "dedupe_key": s.dedupe_key,
                "created_at": s.created_at.isoformat(),
                "released_at": s.released_at.isoformat() if s.released_at else None,
            }
            for s in submissions
        ],
        "idempotency_records": [
            {
                "key": a.key,
                "status_code": a.status_code,
                "response": a.response,
                "created_at": a.created_at.isoformat(),
            }
            for a in answers
        ],
        "events": [
            {"topic": topic, "published": published, "event": orjson.loads(payload)}
            for topic, payload, published in events
        ],
    }


def mentions(workspace: str, answer: Any, submissions: Set[str], named: Set[str]) -> bool:
    """Whether a stored answer names one of these submissions or identities (dedupe keys)."""
    stack = [answer]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str) and (
            node in submissions or identity_digest(workspace, node) in named
        ):
            return True
    return False

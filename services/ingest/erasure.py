"""ingest's part of erasing a person: `contact.deleted` removes every submission, quarantine
entry, stored idempotent answer and outbox row about them, and keeps only erasure markers so
that none of it can be replayed into a new contact (see `shared.erasure`)."""

from __future__ import annotations

from collections.abc import Set
from typing import Any

from services.ingest.store import store_of
from shared.erasure import identity_digest
from shared.events.contacts import ContactDeleted
from shared.uow import UnitOfWork


async def erase_person(workspace: str, tombstone: ContactDeleted, uow: UnitOfWork) -> None:
    """Delete what ingest holds on an erased contact, wherever it came in (form, browser post,
    API, webhook, quarantine, engagement), and remember the erasure by digest."""
    store = store_of(uow)
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
    people = {f"{workspace}:{cid}" for cid in (tombstone.contact_id, *tombstone.merged_ids)}
    prefix = f"{workspace}:"
    await store.delete_outbox_rows(
        [
            row_id
            for row_id, key in await store.outbox_keys(workspace)
            # Leads are keyed by their identity (`email:…`), engagement by e-mail or contact id.
            if key in people or identity_digest(workspace, key.removeprefix(prefix)) in named
        ]
    )


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

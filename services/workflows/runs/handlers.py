"""Use cases of runs over the API: enroll by hand, read history, retry, exit, count."""

from __future__ import annotations

from collections import Counter
from typing import Any, Protocol

from services.workflows.engine.handlers import RunBook, Store
from services.workflows.store import OPEN
from services.workflows.triggers import domain as triggers
from shared.errors import Conflict, NotFound

PAGE = 500


class RunsStore(Store, Protocol):
    async def workflow(self, workspace: str, workflow_id: str, lock: bool = False) -> Any: ...
    async def contact_ids(
        self, workspace: str, after: str | None, limit: int
    ) -> list[tuple[str, dict[str, Any]]]: ...
    async def steps(self, enrollment_id: str) -> list[dict[str, Any]]: ...
    async def counts(
        self, workspace: str, workflow_id: str | None = None
    ) -> dict[str, dict[str, int]]: ...


async def enroll(
    workspace: str,
    workflow_id: str,
    contact_id: str | None,
    segment_id: str | None,
    book: RunBook,
    store: RunsStore,
) -> tuple[list[str], dict[str, int]]:
    """Enroll one contact or a segment's members (as the projection knows them) into an enabled
    workflow, under its conditions, exclusion and re-enrollment policy."""
    workflow = await store.workflow(workspace, workflow_id)
    if workflow is None:
        raise NotFound(f"no workflow {workflow_id}")
    if not workflow.enabled:
        raise Conflict(f"workflow {workflow_id} is disabled", reason="workflow_disabled")
    document = await book.document(workspace, workflow_id, workflow.version)
    await book.enabled(workspace)
    if contact_id is not None:
        found = await store.contacts(workspace, [contact_id])
        if contact_id not in found:
            raise NotFound(f"no contact {contact_id}")
        batches = [list(found.items())]
    else:
        batches = []
        after: str | None = None
        while page := await store.contact_ids(workspace, after, PAGE):
            batches.append([(cid, c) for cid, c in page if segment_id in (c.get("segments") or [])])
            after = page[-1][0]
    enrolled: list[str] = []
    skipped: Counter[str] = Counter()
    for batch in batches:
        last = await store.last_runs(workspace, [(workflow_id, cid) for cid, _ in batch])
        for cid, contact in batch:
            past = last.get((workflow_id, cid))
            previous = triggers.PastEnrollment(past[0], past[1]) if past else None
            reason = triggers.may_enroll(document, contact, previous, book.now)
            if reason is not None:
                skipped[reason] += 1
                continue
            row = await book.start(workspace, workflow_id, workflow.version, cid, contact, "manual")
            enrolled.append(row["id"])
        await book.flush()
    if contact_id is not None and not enrolled:
        reason = next(iter(skipped))
        raise Conflict(f"the contact cannot enter: {reason}", reason=reason)
    return enrolled, dict(skipped)


async def get_run(
    workspace: str, enrollment_id: str, store: RunsStore, lock: bool = False
) -> dict[str, Any]:
    row = (await store.runs(workspace, [enrollment_id], lock=lock)).get(enrollment_id)
    if row is None:
        raise NotFound(f"no enrollment {enrollment_id}")
    return row


async def retry_run(
    workspace: str, enrollment_id: str, book: RunBook, store: RunsStore
) -> dict[str, Any]:
    """Run a failed run again from the step that failed."""
    row = await get_run(workspace, enrollment_id, store, lock=True)
    if row["status"] != "failed":
        raise Conflict(
            f"enrollment {enrollment_id} is {row['status']}, not failed", reason="not_failed"
        )
    contact = (await store.contacts(workspace, [row["contact_id"]])).get(row["contact_id"])
    await book.retry(row, contact)
    return row


async def exit_run(
    workspace: str, enrollment_id: str, book: RunBook, store: RunsStore
) -> dict[str, Any]:
    """Take a contact out of a run by hand."""
    row = await get_run(workspace, enrollment_id, store, lock=True)
    if row["status"] not in OPEN:
        raise Conflict(f"enrollment {enrollment_id} already ended", reason="ended")
    book.end(row, "exited", "manual")
    return row


def stats_of(workflow_id: str, counts: dict[str, int]) -> dict[str, int | str]:
    return {
        "workflow_id": workflow_id,
        "enrolled": sum(counts.values()),
        "active": counts.get("active", 0) + counts.get("waiting", 0),
        "waiting": counts.get("waiting", 0),
        "completed": counts.get("completed", 0),
        "goal_met": counts.get("goal_met", 0),
        "exited": counts.get("exited", 0),
        "failed": counts.get("failed", 0),
    }

"""Use case of the export: everything workflows holds on a person (`shared.export`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol


class ExportStore(Protocol):
    async def person_rows(
        self, workspace: str, contact_ids: Sequence[str], submission_ids: Sequence[str]
    ) -> dict[str, list[dict[str, Any]]]: ...


async def export_person(
    workspace: str,
    contact_ids: Sequence[str],
    submission_ids: Sequence[str],
    store: ExportStore,
) -> dict[str, Any]:
    """The person's projection rows, runs with their step history, the commands and requests
    the runs sent, pending timers and form submissions seen, for the contact and every
    duplicate merged into it."""
    ids = list(dict.fromkeys(contact_ids))
    rows = await store.person_rows(workspace, ids, list(dict.fromkeys(submission_ids)))
    steps: dict[str, list[dict[str, Any]]] = {}
    for step in rows["steps"]:
        steps.setdefault(step["enrollment_id"], []).append(
            {k: step[k] for k in ("step", "step_type", "outcome", "seq", "detail", "error", "at")}
        )
    return {
        "contacts": [
            {k: c[k] for k in ("id", "email", "data", "merged_into", "updated_at")}
            for c in rows["contacts"]
        ],
        "enrollments": [
            {k: v for k, v in run.items() if k != "workspace"} | {"steps": steps.get(run["id"], [])}
            for run in rows["enrollments"]
        ],
        "sent_effects": [{k: v for k, v in e.items() if k != "workspace"} for e in rows["effects"]],
        "timers": [{k: v for k, v in t.items() if k != "workspace"} for t in rows["timers"]],
        "submissions": [
            {k: v for k, v in s.items() if k != "workspace"} for s in rows["submissions"]
        ],
    }

"""Use cases of the engine: start runs, move them on (timers, events), end them, and write
everything one transaction did in bulk. Typed against the store and outbox protocols."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from services.workflows.definitions.domain import WorkflowDocument
from services.workflows.engine import domain
from services.workflows.store import OPEN, DueTimer, RunWrites
from shared.events import topics
from shared.events.envelope import encode_envelope, new_id, source_of
from shared.events.workflows import ContactEnrolled, RunEnded, RunWaiting, StepCompleted
from shared.tracing import traceparent_for

log = logging.getLogger(__name__)
SOURCE = source_of("workflows")
MAX_NESTED_ENROLLMENTS = 5


class Store(Protocol):
    """What the engine needs from persistence (see store.WorkflowsStore)."""

    async def documents(
        self, keys: Iterable[tuple[str, str, int]]
    ) -> dict[tuple[str, str, int], dict[str, Any]]: ...
    async def enabled(self, workspace: str) -> list[tuple[str, int]]: ...
    async def contacts(self, workspace: str, ids: Iterable[str]) -> dict[str, dict[str, Any]]: ...
    async def runs(
        self, workspace: str | None, ids: Iterable[str], lock: bool = False
    ) -> dict[str, dict[str, Any]]: ...
    async def open_runs(
        self, workspace: str, contact_ids: Iterable[str], lock: bool = False
    ) -> list[dict[str, Any]]: ...
    async def last_runs(
        self, workspace: str, pairs: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], tuple[datetime, bool]]: ...
    async def runs_of_facts(
        self, workspace: str, contact_ids: Iterable[str], pairs: Iterable[tuple[str, str]]
    ) -> tuple[dict[tuple[str, str], tuple[datetime, bool]], list[dict[str, Any]]]: ...
    async def write_runs(self, writes: RunWrites) -> None: ...


class Outbox(Protocol):
    def emit_encoded(self, topic: str, key: str, event_id: str, payload: bytes) -> None: ...
    def take_pending(self) -> list[dict[str, object]]: ...
    def take_claim(self) -> tuple[str, list[str]] | None: ...


@dataclass(frozen=True)
class Limits:
    """Engine knobs from the settings."""

    timezone: str = "UTC"
    max_attempts: int = 3
    retry_base_s: float = 1.0


# Saved versions never change, so a parsed document is kept for the process's life.
_PARSED: dict[tuple[str, str, int], WorkflowDocument] = {}
_PARSED_MAX = 4096


def _parse(key: tuple[str, str, int], raw: Mapping[str, Any]) -> WorkflowDocument:
    document = _PARSED.get(key)
    if document is None:
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        document = _PARSED[key] = WorkflowDocument.model_validate(raw)
    return document


def run_timer_id(enrollment_id: str) -> str:
    return f"run:{enrollment_id}"


def trigger_timer_id(workflow_id: str, contact_id: str) -> str:
    return f"trigger:{workflow_id}:{contact_id}"


def new_enrollment_id() -> str:
    return f"enr_{uuid.uuid4().hex}"


@dataclass
class RunBook:
    """The runs one transaction touches: it moves them and writes the result in bulk."""

    store: Store
    outbox: Outbox
    now: datetime
    limits: Limits = field(default_factory=Limits)
    correlation: str | None = None
    _docs: dict[tuple[str, str, int], WorkflowDocument] = field(default_factory=dict)
    _new: dict[str, dict[str, Any]] = field(default_factory=dict)
    _saved: dict[str, dict[str, Any]] = field(default_factory=dict)
    _steps: list[dict[str, Any]] = field(default_factory=list)
    _timers: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    _effects: list[dict[str, Any]] = field(default_factory=list)
    _contacts: dict[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)
    _enabled: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    _enabled_ids: dict[str, frozenset[str]] = field(default_factory=dict)
    _traceparents: dict[str, str | None] = field(default_factory=dict)
    _claimed: set[str] = field(default_factory=set)
    started: int = 0

    # --- documents ----------------------------------------------------------------------------

    async def documents(
        self, keys: Iterable[tuple[str, str, int]]
    ) -> dict[tuple[str, str, int], WorkflowDocument]:
        wanted = set(keys)
        for key in wanted:
            if key not in self._docs and key in _PARSED:
                self._docs[key] = _PARSED[key]
        missing = [k for k in wanted if k not in self._docs]
        if missing:
            for key, raw in (await self.store.documents(missing)).items():
                self._docs[key] = _parse(key, raw)
        return {k: self._docs[k] for k in wanted if k in self._docs}

    async def document(self, workspace: str, workflow_id: str, version: int) -> WorkflowDocument:
        return (await self.documents([(workspace, workflow_id, version)]))[
            (workspace, workflow_id, version)
        ]

    async def enabled(self, workspace: str) -> list[tuple[str, int, WorkflowDocument]]:
        """The workspace's enabled workflows with their current documents."""
        if workspace not in self._enabled:
            self._enabled[workspace] = await self.store.enabled(workspace)
        pairs = self._enabled[workspace]
        docs = await self.documents((workspace, wf, v) for wf, v in pairs)
        return [(wf, v, docs[(workspace, wf, v)]) for wf, v in pairs if (workspace, wf, v) in docs]

    def know_enabled(self, workspace: str, pairs: list[tuple[str, int]]) -> None:
        """The workspace's enabled workflows as read by this transaction already (see
        `WorkflowsStore.batch_view`), unless it holds them from an earlier read."""
        self._enabled.setdefault(workspace, pairs)

    def forget_enabled(self, workspace: str) -> None:
        """Read the enabled workflows again (one was just enabled or disabled)."""
        self._enabled.pop(workspace, None)
        self._enabled_ids.pop(workspace, None)

    def context(self, workspace: str, contact: Mapping[str, Any] | None) -> domain.Context:
        enabled = self._enabled_ids.get(workspace)
        if enabled is None:
            enabled = frozenset(wf for wf, _ in self._enabled.get(workspace, []))
            self._enabled_ids[workspace] = enabled
        return domain.Context(
            contact,
            self.now,
            self.limits.timezone,
            enabled,
            self.limits.max_attempts,
            self.limits.retry_base_s,
        )

    # --- moving runs --------------------------------------------------------------------------

    async def start(
        self,
        workspace: str,
        workflow_id: str,
        version: int,
        contact_id: str,
        contact: Mapping[str, Any] | None,
        trigger: str,
        depth: int = 0,
    ) -> dict[str, Any]:
        """Enroll a contact and run its first steps, up to the first wait."""
        document = await self.document(workspace, workflow_id, version)
        row: dict[str, Any] = {
            "id": new_enrollment_id(),
            "workspace": workspace,
            "workflow_id": workflow_id,
            "version": version,
            "contact_id": contact_id,
            "status": "active",
            "trigger": trigger,
            "step": document.first_step,
            "outcomes": {},
            "seq": 0,
            "attempt": 0,
            "wait_event": None,
            "wait_until": None,
            "error": None,
            "enrolled_at": self.now,
            "updated_at": self.now,
            "ended_at": None,
        }
        self._new[row["id"]] = row
        self.started += 1
        self._emit(row, ContactEnrolled.event_type, trigger=trigger)
        await self.move(row, domain.Start(), contact, depth)
        return row

    async def move(
        self,
        row: dict[str, Any],
        trigger: domain.Trigger,
        contact: Mapping[str, Any] | None,
        depth: int = 0,
    ) -> None:
        """Advance a run by the interpreter and record what it did."""
        workspace = row["workspace"]
        if workspace not in self._enabled:
            self._enabled[workspace] = await self.store.enabled(workspace)
        document = await self.document(workspace, row["workflow_id"], row["version"])
        run = domain.Run(
            row["id"],
            row["workflow_id"],
            row["version"],
            row["contact_id"],
            row["step"],
            dict(row["outcomes"] or {}),
            row["seq"],
            row["attempt"],
        )
        result = domain.advance(document, run, trigger, self.context(workspace, contact))
        row.update(step=run.step, outcomes=run.outcomes, seq=run.seq, attempt=run.attempt)
        self._record(row, result.records)
        for effect in result.effects:
            await self._effect(row, effect, contact, depth)
        row.update(
            status=result.status,
            wait_event=result.wait_event,
            wait_until=result.wait_until,
            error=result.error,
        )
        row["updated_at"] = self.now
        timer = run_timer_id(row["id"])
        if result.status in OPEN:
            if result.wait_until is not None:
                self._put_timer(row, timer, result.wait_until)
            else:
                self._timers[timer] = None
            if result.status == "waiting" and not result.retrying:
                self._emit(
                    row,
                    RunWaiting.event_type,
                    step_id=row["step"],
                    until=result.wait_until.isoformat() if result.wait_until else None,
                    for_event=result.wait_event,
                )
        else:
            self._finish(row, result.status, result.error)
        self._save(row)

    def end(
        self, row: dict[str, Any], status: str, reason: str | None, step: str | None = None
    ) -> None:
        """End an open run from outside the interpreter: goal met, excluded, refused, erased."""
        if step is not None:
            row["seq"] += 1
            self._steps.append(
                self._step_row(row, step, "action", "failed", {}, reason, row["seq"])
            )
            row["step"] = step
        row.update(status=status, wait_event=None, wait_until=None, updated_at=self.now)
        if status == "failed":
            row["error"] = reason
        self._finish(row, status, reason)
        self._save(row)

    async def retry(self, row: dict[str, Any], contact: Mapping[str, Any] | None) -> None:
        """Run a failed run again from the step that failed."""
        row.update(status="active", attempt=0, error=None, ended_at=None)
        await self.move(row, domain.Start(), contact)

    def announce_end(self, row: dict[str, Any], status: str, reason: str | None) -> None:
        """Publish that a run ended whose rows are gone (its contact was erased)."""
        self._emit(row, RunEnded.event_type, status=status, reason=reason)

    def _finish(self, row: dict[str, Any], status: str, reason: str | None) -> None:
        row["ended_at"] = self.now
        self._timers[run_timer_id(row["id"])] = None
        self._emit(row, RunEnded.event_type, status=status, reason=reason)

    async def _effect(
        self,
        row: dict[str, Any],
        effect: domain.Effect,
        contact: Mapping[str, Any] | None,
        depth: int,
    ) -> None:
        workspace, contact_id = row["workspace"], row["contact_id"]
        action = effect.action
        if isinstance(action, domain.Enroll):
            if depth >= MAX_NESTED_ENROLLMENTS:
                log.warning("enrollment chain too deep", extra={"workflow": action.workflow_id})
                return
            target = dict(self._enabled.get(workspace, [])).get(action.workflow_id)
            if target is not None:
                await self.start(
                    workspace,
                    action.workflow_id,
                    target,
                    contact_id,
                    contact,
                    f"workflow:{row['workflow_id']}",
                    depth + 1,
                )
            return
        if isinstance(action, domain.Command):
            topic, event_type, data = topics.CONTACT_COMMANDS, action.event_type, action.payload
        else:
            topic, event_type, data = (
                topics.NOTIFICATION_REQUESTS,
                "notification.requested",
                action.payload,
            )
        event_id = effect.event_id
        self._publish(topic, event_type, data, row, event_id)
        if topic == topics.NOTIFICATION_REQUESTS:
            # Its outcome carries the idempotency key, which names the run and the step: a
            # notification needs no row to find them (a command's refusal names its id only).
            return
        self._effects.append(
            {
                "id": event_id,
                "workspace": workspace,
                "enrollment_id": row["id"],
                "contact_id": contact_id,
                "step": effect.step,
                "key": effect.key,
                "kind": event_type,
                "created_at": self.now,
            }
        )

    def _record(self, row: dict[str, Any], records: Sequence[domain.StepRecord]) -> None:
        for record in records:
            self._steps.append(
                self._step_row(
                    row,
                    record.step,
                    record.step_type,
                    record.outcome,
                    record.detail,
                    record.error,
                    record.seq,
                )
            )
            if record.outcome not in ("waiting", "error"):
                self._emit(
                    row,
                    StepCompleted.event_type,
                    step_id=record.step,
                    step_type=record.step_type,
                    outcome=record.outcome,
                    detail=record.detail,
                )

    def _step_row(
        self,
        row: dict[str, Any],
        step: str,
        step_type: str,
        outcome: str,
        detail: dict[str, Any],
        error: str | None,
        seq: int,
    ) -> dict[str, Any]:
        return {
            "workspace": row["workspace"],
            "enrollment_id": row["id"],
            "contact_id": row["contact_id"],
            "step": step,
            "step_type": step_type,
            "outcome": outcome,
            "seq": seq,
            "detail": detail,
            "error": error,
            "at": self.now,
        }

    def _put_timer(self, row: dict[str, Any], timer_id: str, due: datetime) -> None:
        self._timers[timer_id] = {
            "id": timer_id,
            "workspace": row["workspace"],
            "kind": "run",
            "due_at": due,
            "contact_id": row["contact_id"],
            "enrollment_id": row["id"],
            "workflow_id": row["workflow_id"],
            "step": row["step"],
            "failures": 0,
        }

    def schedule_trigger(
        self, workspace: str, workflow_id: str, contact_id: str, due: datetime | None
    ) -> None:
        """Put (or, with `due` None, remove) a contact's date-relative or inactivity timer."""
        timer_id = trigger_timer_id(workflow_id, contact_id)
        if due is None:
            self._timers[timer_id] = None
            return
        self._timers[timer_id] = {
            "id": timer_id,
            "workspace": workspace,
            "kind": "trigger",
            "due_at": due,
            "contact_id": contact_id,
            "enrollment_id": None,
            "workflow_id": workflow_id,
            "step": None,
            "failures": 0,
        }

    def save_contacts(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Projection rows to upsert at the flush (the last of a contact wins); what this
        transaction reads of them meanwhile, the caller holds in memory."""
        for row in rows:
            self._contacts[(row["workspace"], row["id"])] = row

    def fired(self, timer_ids: Iterable[str]) -> None:
        """These timers were claimed (deleted) already: no need to delete them again."""
        self._claimed.update(timer_ids)

    def _save(self, row: dict[str, Any]) -> None:
        if row["id"] not in self._new:
            self._saved[row["id"]] = row

    def _emit(self, row: dict[str, Any], event_type: str, **fields: Any) -> None:
        """A run event (shared.events.workflows), built as its JSON document directly: a run
        emits three or four per step, and validating each through its model cost more than the
        step itself. The service tests parse every one back through its model."""
        data = _ids(row) | {name: value for name, value in fields.items() if value is not None}
        self._publish(topics.WORKFLOW_RUNS, event_type, data, row, new_id())

    def _publish(
        self, topic: str, event_type: str, data: dict[str, Any], row: dict[str, Any], event_id: str
    ) -> None:
        """Queue one event of a run, encoded straight to its envelope's bytes."""
        workspace, contact_id = row["workspace"], row["contact_id"]
        correlation = self.correlation or row["id"]
        if correlation not in self._traceparents:
            self._traceparents[correlation] = traceparent_for(correlation)
        payload = encode_envelope(
            event_type,
            data,
            event_id=event_id,
            source=SOURCE,
            workspace=workspace,
            subject=contact_id,
            correlationid=correlation,
            time=self.now,
            traceparent=self._traceparents[correlation],
        )
        self.outbox.emit_encoded(
            topic, topics.contact_key(workspace, contact_id), event_id, payload
        )

    async def flush(self) -> None:
        """Write everything this transaction did, the events queued so far in the outbox and
        a consumer's inbox claim included (one statement on PostgreSQL); raises
        `AlreadyHandled` if the claim finds an event handled before (a redelivery)."""
        deleted = [k for k, v in self._timers.items() if v is None and k not in self._claimed]
        put = [v for v in self._timers.values() if v is not None]
        await self.store.write_runs(
            RunWrites(
                new_runs=list(self._new.values()),
                saved_runs=list(self._saved.values()),
                steps=self._steps,
                gone_timers=deleted,
                timers=put,
                effects=self._effects,
                contacts=list(self._contacts.values()),
                events=self.outbox.take_pending(),
                claim=self.outbox.take_claim(),
            )
        )
        self._claimed.difference_update(v["id"] for v in put)  # they exist again
        self._new, self._saved, self._steps, self._timers, self._effects = {}, {}, [], {}, []
        self._contacts = {}


def _ids(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "enrollment_id": row["id"],
        "workflow_id": row["workflow_id"],
        "workflow_version": row["version"],
        "contact_id": row["contact_id"],
    }


# --- timers ---------------------------------------------------------------------------------


class TimerStore(Store, Protocol):
    async def claim_due(self, now: datetime, limit: int) -> list[DueTimer]: ...


async def fire_due_timers(
    book: RunBook, store: TimerStore, limit: int, claimed: list[str] | None = None
) -> list[DueTimer]:
    """Claim the timers due now and act on each: move a waiting run on, retry a step, or fire
    a date-relative or inactivity trigger. Returns the timers fired."""
    from services.workflows.triggers import handlers as trigger_handlers

    due = await store.claim_due(book.now, limit)
    if claimed is not None:
        claimed.extend(t.id for t in due)
    if not due:
        return []
    book.fired(t.id for t in due)
    run_timers = [t for t in due if t.kind == "run" and t.enrollment_id]
    runs = await store.runs(
        None, [t.enrollment_id for t in run_timers if t.enrollment_id], lock=True
    )
    by_workspace: dict[str, set[str]] = {}
    for row in runs.values():
        by_workspace.setdefault(row["workspace"], set()).add(row["contact_id"])
    for t in due:
        if t.kind == "trigger":
            by_workspace.setdefault(t.workspace, set()).add(t.contact_id)
    contacts = {ws: await store.contacts(ws, ids) for ws, ids in by_workspace.items()}
    await book.documents((r["workspace"], r["workflow_id"], r["version"]) for r in runs.values())
    for timer in due:
        if timer.kind == "trigger":
            contact = contacts.get(timer.workspace, {}).get(timer.contact_id)
            await trigger_handlers.fire_trigger_timer(book, store, timer, contact)
            continue
        found = runs.get(timer.enrollment_id or "")
        if found is None or found["status"] not in OPEN or found["step"] != timer.step:
            continue  # the run ended or moved on since the timer was set
        row = found
        contact = contacts.get(row["workspace"], {}).get(row["contact_id"])
        book.correlation = row["id"]
        trigger: domain.Trigger = (
            domain.Start() if row["status"] == "active" else domain.TimerFired(timer.step or "")
        )
        await book.move(row, trigger, contact)
    await book.flush()
    return due

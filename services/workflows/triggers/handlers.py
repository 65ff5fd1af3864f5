"""Use cases of the consumed events: keep the contact projection, start the workflows whose
trigger an event matches, move runs waiting for that event, end runs whose goal is met or
whose contact entered the exclusion segment, and keep time-based triggers scheduled."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from services.workflows.conditions.domain import to_datetime
from services.workflows.engine import domain as engine
from services.workflows.engine.handlers import RunBook, Store
from services.workflows.store import OPEN, BatchView, DueTimer, SubmissionHalf
from services.workflows.triggers import domain
from services.workflows.triggers.domain import Fact
from shared.identity import replayed_after_erasure

log = logging.getLogger(__name__)

# A date-relative due time further back than this is history, not something to act on now.
PAST_GRACE = timedelta(minutes=1)
TIME_TRIGGERS = ("date_relative", "inactivity")


class ProjectionStore(Store, Protocol):
    async def save_contacts(self, rows: Sequence[Mapping[str, Any]]) -> None: ...
    async def contacts_by_email(self, workspace: str, emails: Iterable[str]) -> dict[str, str]: ...
    async def survivors(self, workspace: str, ids: Iterable[str]) -> dict[str, str]: ...
    async def repoint(self, workspace: str, merged_id: str, survivor_id: str) -> None: ...
    async def erase(self, workspace: str, contact_id: str) -> list[dict[str, Any]]: ...
    async def record_erasures(
        self, workspace: str, digests: Sequence[str], at: datetime
    ) -> None: ...
    async def erasures(self, workspace: str, digests: Iterable[str]) -> dict[str, datetime]: ...
    async def batch_view(
        self, workspace: str, contact_ids: Iterable[str], digests: Iterable[str]
    ) -> BatchView: ...
    async def effect(self, workspace: str, effect_id: str) -> dict[str, Any] | None: ...
    async def pair_submissions(
        self, workspace: str, halves: Sequence[SubmissionHalf], now: datetime
    ) -> dict[str, tuple[str, str]]: ...


@dataclass(frozen=True)
class Incoming:
    """One consumed event, reduced to what the handlers read."""

    type: str
    data: Mapping[str, Any]
    correlation: str
    at: datetime | None = None  # when the event was produced (its envelope's time)


def _projection_row(
    workspace: str, contact: dict[str, Any], now: datetime, merged_into: str | None = None
) -> dict[str, Any]:
    return {
        "workspace": workspace,
        "id": contact["id"],
        "email": contact.get("email"),
        "data": contact,
        "merged_into": merged_into,
        "updated_at": now,
    }


async def on_contact_events(
    book: RunBook, store: ProjectionStore, workspace: str, events: Sequence[Incoming]
) -> None:
    """A polled batch of `leadwire.contacts.v1` events of one workspace, in order."""
    part: list[Incoming] = []
    for event in events:
        if event.type in ("contact.merged", "contact.deleted"):
            await _apply_contact_part(book, store, workspace, part)
            part = []
            await book.flush()
            if event.type == "contact.deleted":
                await _erase(book, store, workspace, event)
            elif await _not_replayed(store, workspace, [event]):
                await _merge(book, store, workspace, event)
            continue
        part.append(event)
    await _apply_contact_part(book, store, workspace, part)


async def _not_replayed(
    store: ProjectionStore, workspace: str, events: Sequence[Incoming]
) -> list[Incoming]:
    """The events that do not bring an erased contact back: one produced before its contact
    was erased (a replayed dead letter, a topic re-read) is dropped; later ones are new."""
    ids, digests = _named(workspace, events)
    erased = await store.erasures(workspace, digests.values()) if digests else {}
    return _drop_replayed(events, ids, digests, erased)


def _named(
    workspace: str, events: Sequence[Incoming]
) -> tuple[dict[int, list[str]], dict[str, str]]:
    """The contacts each event names (by the event's `id()`), and each one's digest."""
    ids = {id(e): domain.contact_ids_of(e.type, e.data) for e in events}
    digests = {c: domain.contact_digest(workspace, c) for found in ids.values() for c in found}
    return ids, digests


def _drop_replayed(
    events: Sequence[Incoming],
    ids: Mapping[int, list[str]],
    digests: Mapping[str, str],
    erased: dict[str, datetime],
) -> list[Incoming]:
    if not erased:
        return list(events)
    kept = []
    for event in events:
        found = [digests[c] for c in ids[id(event)]]
        if event.at is not None and replayed_after_erasure(event.at, found, erased):
            log.info("dropping an event of an erased contact", extra={"type": event.type})
            continue
        kept.append(event)
    return kept


OWNER_NAMING_EVENTS = frozenset({"contact.owner_assigned", "contact.created"})


async def _apply_contact_part(
    book: RunBook, store: ProjectionStore, workspace: str, events: Sequence[Incoming]
) -> None:
    if not events:
        return
    # One read for the part: the projection's rows of every contact named, the erasures
    # among them and the enabled workflows (the trigger index's, below).
    ids, digests = _named(workspace, events)
    view = await store.batch_view(workspace, digests.keys(), digests.values())
    book.know_enabled(workspace, view.enabled)
    events = _drop_replayed(events, ids, digests, view.erased)
    if not events:
        return
    halves: list[SubmissionHalf] = []
    if await pairs_submissions(book, workspace):
        for event in events:
            submission = event.data.get("submission_id")
            snapshot = event.data.get("contact")
            if (
                event.type != "contact.command_rejected"
                and submission
                and isinstance(snapshot, dict)
            ):
                halves.append((str(submission), None, snapshot["id"]))
    paired = await store.pair_submissions(workspace, halves, book.now) if halves else {}
    facts: list[tuple[Fact, str]] = []
    for event in events:
        if event.type == "contact.command_rejected":
            await _command_rejected(book, store, workspace, event)
            continue
        facts += [
            (f, event.correlation) for f in domain.facts_of_contact_event(event.type, event.data)
        ]
        submission = str(event.data.get("submission_id") or "")
        if submission in paired:
            form, paired_id = paired.pop(submission)  # the first event of it states the fact
            facts.append((domain.form_submitted(paired_id, form, submission), event.correlation))
    contacts = dict(view.contacts)
    unread = {f.contact_id for f, _ in facts} - digests.keys()  # a form paired earlier
    if unread:
        contacts.update(await store.contacts(workspace, unread))
    changed: dict[str, dict[str, Any]] = {}
    for event in events:
        snapshot = event.data.get("contact")
        contact_id = (
            snapshot.get("id") if isinstance(snapshot, dict) else event.data.get("contact_id")
        )
        if isinstance(snapshot, dict) and contact_id:
            previous = changed.get(contact_id) or contacts.get(contact_id) or {}
            current = {**snapshot, "segments": list(previous.get("segments") or [])}
            # Snapshots carry the owner's id only; `contact.owner_assigned` names the owner,
            # and so does `contact.created` of a contact assigned at capture.
            if event.data.get("owner_name") and event.type in OWNER_NAMING_EVENTS:
                current["owner_name"] = event.data["owner_name"]
            elif previous.get("owner_name") and previous.get("owner_id") == current.get("owner_id"):
                current["owner_name"] = previous["owner_name"]
            changed[contact_id] = current
            contacts[contact_id] = changed[contact_id]
        if event.type in ("segment.entered", "segment.exited") and contact_id in contacts:
            current = dict(changed.get(contact_id) or contacts[contact_id])
            segments = set(current.get("segments") or [])
            segment = event.data["segment_id"]
            segments = (
                segments | {segment} if event.type == "segment.entered" else segments - {segment}
            )
            current["segments"] = sorted(segments)
            changed[contact_id] = contacts[contact_id] = current
    book.save_contacts([_projection_row(workspace, c, book.now) for c in changed.values()])
    await reschedule_time_triggers(book, workspace, changed)
    await handle_facts(book, store, workspace, facts, contacts)


# The last index built per workspace: rebuilt when its enabled workflows or versions change.
_INDEXES: dict[str, domain.TriggerIndex] = {}
_INDEXES_MAX = 1024


async def trigger_index(book: RunBook, workspace: str) -> domain.TriggerIndex:
    """The workspace's enabled workflows, indexed by what triggers them."""
    enabled = await book.enabled(workspace)
    index = _INDEXES.get(workspace)
    if index is None or [(wf, v, id(d)) for wf, v, d in index.enabled] != [
        (wf, v, id(d)) for wf, v, d in enabled
    ]:
        if len(_INDEXES) >= _INDEXES_MAX:
            _INDEXES.clear()
        index = _INDEXES[workspace] = domain.TriggerIndex(enabled)
    return index


def known_to_pair(workspace: str) -> bool:
    """Whether the workspace's last trigger index built here pairs form submissions (see
    `pairs_submissions`): its contact events then write before their batch's last statement."""
    index = _INDEXES.get(workspace)
    return index is not None and bool(index.of_kind(("form_submitted",)))


async def pairs_submissions(book: RunBook, workspace: str) -> bool:
    """Whether the workspace pairs the two sides of its form submissions: only while one of
    its enabled workflows starts from a form submitted. Otherwise nothing reads the pairs,
    and a lead's two halves would cost an insert and an update for nothing; a submission
    whose first half came before such a workflow was enabled does not start it."""
    return bool((await trigger_index(book, workspace)).of_kind(("form_submitted",)))


async def handle_facts(
    book: RunBook,
    store: Store,
    workspace: str,
    facts: Sequence[tuple[Fact, str]],
    contacts: Mapping[str, Mapping[str, Any]],
) -> None:
    """Start what the facts trigger; move, end or leave alone the contacts' open runs."""
    if not facts:
        return
    index = await trigger_index(book, workspace)
    triggered = [
        (fact, corr, wf, version, doc)
        for fact, corr in facts
        for wf, version, doc in index.matching(fact, contacts.get(fact.contact_id), book.now)
    ]
    last, found = await store.runs_of_facts(
        workspace,
        {f.contact_id for f, _ in facts},
        {(wf, f.contact_id) for f, _, wf, _, _ in triggered},
    )
    open_runs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in found:
        open_runs[row["contact_id"]].append(row)
    await book.documents(
        (workspace, r["workflow_id"], r["version"]) for rows in open_runs.values() for r in rows
    )
    starts = defaultdict(list)
    for item in triggered:
        starts[id(item[0])].append(item)
    for fact, corr in facts:
        contact = contacts.get(fact.contact_id)
        book.correlation = corr
        for _, _, wf, version, doc in starts.get(id(fact), []):
            past = last.get((wf, fact.contact_id))
            previous = domain.PastEnrollment(past[0], past[1]) if past else None
            if domain.may_enroll(doc, contact, previous, book.now) is None:
                row = await book.start(
                    workspace, wf, version, fact.contact_id, contact, doc.trigger.type
                )
                last[(wf, fact.contact_id)] = (book.now, row["status"] not in OPEN)
                if row["status"] in OPEN:
                    open_runs[fact.contact_id].append(row)
        await _touch_open_runs(book, workspace, fact, contact, open_runs[fact.contact_id])


async def _touch_open_runs(
    book: RunBook,
    workspace: str,
    fact: Fact,
    contact: Mapping[str, Any] | None,
    rows: list[dict[str, Any]],
) -> None:
    for row in rows:
        if row["status"] not in OPEN:
            continue
        doc = await book.document(workspace, row["workflow_id"], row["version"])
        if (
            fact.kind == "segment_entered"
            and doc.exclusion_segment is not None
            and fact.data.get("segment_id") == doc.exclusion_segment
        ):
            book.end(row, "exited", "excluded")
            continue
        if engine.goal_met(doc, contact, book.now):
            book.end(row, "goal_met", None)
            continue
        awaited = fact.event_type
        if row["status"] == "waiting" and awaited and row["wait_event"] == awaited:
            key = str(fact.data.get("idempotency_key", ""))
            if awaited.startswith("notification.") and engine.enrollment_of_key(key) != row["id"]:
                continue  # a notification outcome moves only the run that asked for it
            step = doc.step(row["step"])
            if domain.event_awaited(step, awaited, fact.data, book.now):
                await book.move(
                    row, engine.EventArrived(step.id, awaited, dict(fact.data)), contact
                )


async def reschedule_time_triggers(
    book: RunBook, workspace: str, contacts: Mapping[str, Mapping[str, Any]]
) -> None:
    """Date-relative and inactivity timers follow the contact's date fields and interactions."""
    if not contacts:
        return
    timed = (await trigger_index(book, workspace)).of_kind(TIME_TRIGGERS)
    for wf, _, doc in timed:
        zone = doc.timezone or book.limits.timezone
        for contact_id, contact in contacts.items():
            due = domain.trigger_due(doc.trigger, contact, zone)
            if due is not None and due < book.now - PAST_GRACE:
                due = None
            book.schedule_trigger(workspace, wf, contact_id, due)


async def fire_trigger_timer(
    book: RunBook, store: Store, timer: DueTimer, contact: Mapping[str, Any] | None
) -> None:
    """A date-relative or inactivity trigger came due: enroll the contact if it may enter."""
    if contact is None or timer.workflow_id is None:
        return
    enabled = {wf: (v, doc) for wf, v, doc in await book.enabled(timer.workspace)}
    if timer.workflow_id not in enabled:
        return
    version, doc = enabled[timer.workflow_id]
    past = (await store.last_runs(timer.workspace, [(timer.workflow_id, timer.contact_id)])).get(
        (timer.workflow_id, timer.contact_id)
    )
    previous = domain.PastEnrollment(past[0], past[1]) if past else None
    if domain.may_enroll(doc, contact, previous, book.now) is None:
        book.correlation = timer.id
        await book.start(
            timer.workspace, timer.workflow_id, version, timer.contact_id, contact, doc.trigger.type
        )


# --- other topics ---------------------------------------------------------------------------
# Each handles a polled batch of one workspace's events in order: lookups in one query per
# kind, then every fact in one `handle_facts` (which keeps the runs it moves in memory, so a
# later event of the batch sees what an earlier one did).


async def resolve_contacts(
    store: ProjectionStore, workspace: str, events: Sequence[Incoming], by_email: bool
) -> list[tuple[Incoming, str]]:
    """Each event with the projection's contact it names by id (perhaps merged away since) or,
    with `by_email`, by email; events naming no known contact are left out."""
    ids = {str(e.data["contact_id"]) for e in events if e.data.get("contact_id")}
    emails = {
        str(e.data["email"]).strip().lower()
        for e in events
        if by_email and not e.data.get("contact_id") and e.data.get("email")
    }
    survivors = await store.survivors(workspace, ids)
    found = await store.contacts_by_email(workspace, emails)
    resolved = []
    for event in events:
        contact_id, email = event.data.get("contact_id"), event.data.get("email")
        if contact_id:
            resolved.append((event, survivors.get(str(contact_id), str(contact_id))))
        elif by_email and email and (known := found.get(str(email).strip().lower())):
            resolved.append((event, known))
    return resolved


async def on_engagement(
    book: RunBook, store: ProjectionStore, workspace: str, events: Sequence[Incoming]
) -> None:
    """Engagement events: the contact's last interaction moves (inactivity timers with it),
    engagement triggers fire and runs waiting for them move on."""
    resolved = await resolve_contacts(store, workspace, events, by_email=True)
    contacts = await store.contacts(workspace, {c for _, c in resolved})
    changed: dict[str, dict[str, Any]] = {}
    facts: list[tuple[Fact, str]] = []
    for event, contact_id in resolved:
        contact = contacts.get(contact_id)
        if contact is None:
            continue
        occurred = to_datetime(event.data.get("occurred_at"))
        seen = to_datetime(contact.get("last_interaction_at"))
        if occurred is not None and (seen is None or occurred > seen):
            contact = {**contact, "last_interaction_at": occurred.isoformat()}
            contacts[contact_id] = changed[contact_id] = contact
        data = {**event.data, "type": event.type}
        facts.append((Fact("engagement", contact_id, data, event.type), event.correlation))
    book.save_contacts([_projection_row(workspace, c, book.now) for c in changed.values()])
    await reschedule_time_triggers(book, workspace, changed)
    await handle_facts(book, store, workspace, facts, contacts)


async def on_score_event(
    book: RunBook, store: ProjectionStore, workspace: str, events: Sequence[Incoming]
) -> None:
    resolved = await resolve_contacts(store, workspace, events, by_email=False)
    contacts = await store.contacts(workspace, {c for _, c in resolved})
    changed: dict[str, dict[str, Any]] = {}
    facts: list[tuple[Fact, str]] = []
    for event, contact_id in resolved:
        data = event.data
        contact = contacts.get(contact_id)
        if contact is None:
            continue
        if event.type == "score.changed" and data.get("group", "overall") == "overall":
            contact = {**contact, "score": data.get("after")}
            contacts[contact_id] = changed[contact_id] = contact
        stated = domain.facts_of_score_event(event.type, {**data, "contact_id": contact_id})
        stated.append(Fact("score_event", contact_id, data, event.type))
        facts += [(f, event.correlation) for f in stated]
    book.save_contacts([_projection_row(workspace, c, book.now) for c in changed.values()])
    await handle_facts(book, store, workspace, facts, contacts)


async def on_notification_outcome(
    book: RunBook, store: ProjectionStore, workspace: str, events: Sequence[Incoming]
) -> None:
    """A failed notification fails the step that asked for it; any outcome may end a wait."""
    part: list[tuple[Incoming, str]] = []
    for event in events:
        key = str(event.data.get("idempotency_key", ""))
        enrollment_id = engine.enrollment_of_key(key)
        if enrollment_id is None:
            continue
        if event.type != "notification.failed":
            part.append((event, enrollment_id))
            continue
        # A failure reads its run from the database: what came before it is written first.
        await _notification_outcomes(book, store, workspace, part)
        part = []
        await book.flush()
        # The key names the step that asked (notification requests leave no effect row).
        reason = str(event.data.get("reason", "failed"))
        await _fail_step(book, store, workspace, enrollment_id, engine.step_of_key(key), reason)
        await book.flush()
    await _notification_outcomes(book, store, workspace, part)


async def _notification_outcomes(
    book: RunBook, store: ProjectionStore, workspace: str, events: Sequence[tuple[Incoming, str]]
) -> None:
    if not events:
        return
    runs = await store.runs(workspace, {enrollment_id for _, enrollment_id in events})
    # An outcome moves only the run that asked for it, and no trigger starts from one: the
    # outcome of a run that has ended since (a new lead's alert, its last step) does nothing,
    # and its contact and runs are not read.
    facts = [
        (Fact("notification", runs[e]["contact_id"], event.data, event.type), event.correlation)
        for event, e in events
        if e in runs and runs[e]["status"] in OPEN
    ]
    if not facts:
        return
    contacts = await store.contacts(workspace, {f.contact_id for f, _ in facts})
    await handle_facts(book, store, workspace, facts, contacts)


async def _command_rejected(
    book: RunBook, store: ProjectionStore, workspace: str, event: Incoming
) -> None:
    command_id = str(event.data.get("command_id", ""))
    effect = await store.effect(workspace, command_id)
    if effect is None:
        return  # a command some other service sent
    reason = f"{event.data.get('code', 'rejected')}: {event.data.get('reason', '')}".strip()
    await _fail_step(book, store, workspace, effect["enrollment_id"], effect["step"], reason)


async def _fail_step(
    book: RunBook,
    store: Store,
    workspace: str,
    enrollment_id: str,
    step: str | None,
    reason: str,
) -> None:
    row = (await store.runs(workspace, [enrollment_id], lock=True)).get(enrollment_id)
    if row is None or row["status"] in ("exited",):
        return
    book.end(row, "failed", reason, step or row["step"] or "?")


async def _merge(book: RunBook, store: ProjectionStore, workspace: str, event: Incoming) -> None:
    """Runs of the merged contact now run for the survivor; a workflow both were in keeps the
    older run."""
    survivor, merged = event.data["survivor_id"], event.data["merged_id"]
    existing = await store.contacts(workspace, [survivor, merged])
    segments = sorted(
        set(existing.get(survivor, {}).get("segments") or [])
        | set(existing.get(merged, {}).get("segments") or [])
    )
    snapshot = {**event.data["contact"], "segments": segments}
    gone = {**existing.get(merged, {"id": merged}), "id": merged, "email": None}
    await store.save_contacts(
        [
            _projection_row(workspace, snapshot, book.now),
            {**_projection_row(workspace, gone, book.now), "merged_into": survivor},
        ]
    )
    await store.repoint(workspace, merged, survivor)
    rows = sorted(
        await store.open_runs(workspace, [survivor], lock=True),
        key=lambda r: (r["enrolled_at"], r["id"]),
    )
    kept: set[str] = set()
    for row in rows:
        if row["workflow_id"] in kept:
            book.end(row, "exited", "merged_duplicate")
        kept.add(row["workflow_id"])
    await reschedule_time_triggers(book, workspace, {survivor: snapshot})
    await book.flush()


async def _erase(book: RunBook, store: ProjectionStore, workspace: str, event: Incoming) -> None:
    """A deleted contact (and the duplicates once merged into it): its runs stop, and its
    projection, runs, history, timers and submissions are erased."""
    ids = list(dict.fromkeys([event.data["contact_id"], *(event.data.get("merged_ids") or [])]))
    for contact_id in ids:
        for row in await store.erase(workspace, contact_id):
            if row["status"] in OPEN:
                book.announce_end(row, "exited", "contact_deleted")
    at = to_datetime(event.data.get("deleted_at")) or event.at or book.now
    await store.record_erasures(workspace, [domain.contact_digest(workspace, c) for c in ids], at)


async def on_lead(
    book: RunBook, store: ProjectionStore, workspace: str, events: Sequence[Incoming]
) -> None:
    """Leads captured from forms: with the contact event of the same submission (whichever
    comes second), each fires form-submitted triggers."""
    if not await pairs_submissions(book, workspace):
        return
    halves: list[SubmissionHalf] = []
    correlation: dict[str, str] = {}
    for event in events:
        data = event.data
        if data.get("source") != "form" or not data.get("source_id"):
            continue
        submission = str(data["submission_id"])
        halves.append((submission, str(data["source_id"]), None))
        correlation.setdefault(submission, event.correlation)
    paired = await store.pair_submissions(workspace, halves, book.now) if halves else {}
    if not paired:
        return
    survivors = await store.survivors(workspace, {c for _, c in paired.values()})
    facts = []
    for submission, corr in correlation.items():  # in the order of the events
        if submission in paired:
            form, contact_id = paired[submission]
            fact = domain.form_submitted(survivors.get(contact_id, contact_id), form, submission)
            facts.append((fact, corr))
    contacts = await store.contacts(workspace, {f.contact_id for f, _ in facts})
    await handle_facts(book, store, workspace, facts, contacts)

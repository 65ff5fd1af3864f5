"""scoring's use cases: rule sets, engagement scoring, contact changes, timers, rescores,
simulation and explain. Typed against the `Store` protocol; handlers never commit."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from services.scoring.rfm import domain as rfm
from services.scoring.rules.domain import InvalidRuleSet, RuleSet, default_rule_set, parse_rule_set
from services.scoring.scores import domain as scores
from services.scoring.scores.domain import ContactScore, Crossing, LedgerEntry
from services.scoring.store import Contact, Identity, Rescore, SetAside, Timer
from shared.errors import InvalidInput, NotFound
from shared.events import topics
from shared.events.contacts import (
    ContactDeleted,
    ContactMerged,
    ContactSnapshot,
)
from shared.events.envelope import Envelope, EventPayload, PreparedEnvelope
from shared.events.scores import ChurnRiskChanged, ScoreChanged, ScoreThresholdCrossed

SOURCE = "/leadwire/scoring"
RFM_KINDS = {"purchase.completed": "purchase", "product.login": "login"}
BREAKPOINTS_MAX_AGE = timedelta(seconds=60)
SMALL_WORKSPACE = 1000  # customers up to which every new one recomputes the breakpoints


class Store(Protocol):
    """What the handlers need from persistence (implemented by `store.SqlStore`)."""

    async def latest_rule_set(self, workspace: str) -> tuple[int, dict[str, Any]] | None: ...
    async def rule_set(self, workspace: str, version: int) -> dict[str, Any] | None: ...
    async def add_rule_set(
        self, workspace: str, version: int, body: dict[str, Any], now: datetime
    ) -> None: ...
    async def contacts(self, workspace: str, ids: Iterable[str]) -> dict[str, Contact]: ...
    async def identities(self, workspace: str, ids: Iterable[str]) -> dict[str, Identity]: ...
    async def contact_ids_by_email(
        self, workspace: str, emails: Iterable[str]
    ) -> dict[str, str]: ...
    async def lock_identities(self, workspace: str, keys: Iterable[str]) -> None: ...
    async def save_contact(self, workspace: str, contact: Contact) -> None: ...
    async def count_contacts(self, workspace: str) -> int: ...
    async def contacts_after(self, workspace: str, cursor: str, limit: int) -> list[Contact]: ...
    async def lock_scores(
        self, workspace: str, ids: Iterable[str]
    ) -> dict[str, dict[str, Any]]: ...
    async def try_lock_scores(
        self, workspace: str, ids: Iterable[str]
    ) -> dict[str, dict[str, Any]]: ...
    async def save_scores(self, workspace: str, states: Mapping[str, tuple[int, Any]]) -> None: ...
    async def erase_contact(self, workspace: str, contact_id: str) -> None: ...
    async def erase_set_aside_of(self, workspace: str, identity_digests: Iterable[str]) -> None: ...
    async def set_aside_of(
        self, workspace: str, contact_ids: Sequence[str], identity_digests: Iterable[str]
    ) -> list[dict[str, Any]]: ...
    async def append_ledger(self, rows: Sequence[Mapping[str, Any]]) -> None: ...
    async def ledger_of(
        self, workspace: str, ids: Iterable[str]
    ) -> dict[str, list[LedgerEntry]]: ...
    async def ledger_since(
        self, workspace: str, since: datetime
    ) -> dict[str, list[LedgerEntry]]: ...
    async def move_ledger(self, workspace: str, source: str, target: str) -> None: ...
    async def set_aside(self, rows: Sequence[Mapping[str, Any]]) -> None: ...
    async def take_set_aside(
        self, workspace: str, contact_id: str, email: str | None
    ) -> list[SetAside]: ...
    async def set_timers(self, timers: Sequence[Timer]) -> None: ...
    async def clear_timers(self, keys: Sequence[tuple[str, str, str, str]]) -> None: ...
    async def claim_due_timers(self, now: datetime, limit: int) -> list[Timer]: ...
    async def add_rescore(self, job: Rescore) -> None: ...
    async def rescore(self, workspace: str, job_id: str) -> Rescore | None: ...
    async def claim_rescore(self) -> Rescore | None: ...
    async def update_rescore(self, job_id: str, **values: Any) -> None: ...
    async def rfm_rows(self, workspace: str, ids: Iterable[str]) -> dict[str, dict[str, Any]]: ...
    async def save_rfm(self, rows: Sequence[Mapping[str, Any]]) -> None: ...
    async def rfm_stats(self, workspace: str) -> list[tuple[float, int, float]]: ...
    async def breakpoints(self, workspace: str) -> Any: ...
    async def save_breakpoints(self, row: Mapping[str, Any]) -> None: ...
    async def rfm_summary(self, workspace: str) -> tuple[dict[str, int], dict[str, int]]: ...


class Outbox(Protocol):
    """Where events go: written in the same transaction as the change (the unit of work)."""

    def emit(self, topic: str, key: str, envelope: Envelope) -> None: ...


class ContactNotFound(NotFound):
    code = "contact_not_found"


class RescoreNotFound(NotFound):
    code = "rescore_not_found"


def _random_ids(chunk: int = 256) -> Iterator[str]:
    """Random (version 4) event ids, drawing the randomness once per `chunk` ids instead of a
    system call per id (uuid4's cost showed on the engagement hot path)."""
    while True:
        pool = os.urandom(16 * chunk)
        for start in range(0, 16 * chunk, 16):
            yield str(uuid.UUID(bytes=pool[start : start + 16], version=4))


_ids = _random_ids()


def publish(
    outbox: Outbox,
    workspace: str,
    contact_id: str,
    payload: EventPayload,
    correlationid: str | None = None,
) -> None:
    envelope = Envelope.of(
        payload, source=SOURCE, workspace=workspace, subject=contact_id, correlationid=correlationid
    )
    outbox.emit(topics.SCORES, topics.contact_key(workspace, contact_id), envelope)


def publish_score_changed(
    outbox: Outbox,
    workspace: str,
    contact_id: str,
    change: scores.Change,
    cause: str,
    version: int,
    correlationid: str | None,
) -> None:
    """`score.changed` on the hot path: its data written in the shape `ScoreChanged` gives it
    (a test holds the two to the same JSON), without a model validation per event."""
    data = {
        "contact_id": contact_id,
        "group": change.group,
        "before": float(change.before),
        "after": float(change.after),
        "cause": cause,
        "rule_set_version": version,
    }
    envelope = PreparedEnvelope.prepare(
        ScoreChanged.event_type,
        data,
        source=SOURCE,
        workspace=workspace,
        subject=contact_id,
        correlationid=correlationid,
        event_id=next(_ids),
    )
    outbox.emit(topics.SCORES, topics.contact_key(workspace, contact_id), envelope)


def ts(value: datetime) -> float:
    return value.timestamp()


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


# --- rule sets --------------------------------------------------------------------------------

_parsed: dict[tuple[str, int], RuleSet] = {}


def rules_of(workspace: str, version: int, body: Mapping[str, Any]) -> RuleSet:
    """A saved rule set, parsed once per process (saved versions never change)."""
    key = (workspace, version)
    rules = _parsed.get(key)
    if rules is None:
        if len(_parsed) > 10_000:
            _parsed.clear()
        rules = _parsed[key] = RuleSet(version, parse_rule_set(body))
    return rules


async def current_rules(store: Store, workspace: str) -> RuleSet:
    """The workspace's latest rule set, or the default one (version 0) before it saves one."""
    latest = await store.latest_rule_set(workspace)
    if latest is None:
        return default_rule_set()
    return rules_of(workspace, latest[0], latest[1])


def validated(raw: Any) -> dict[str, Any]:
    """The rule set's normalised body, or a 422 naming the path of every error."""
    try:
        body = parse_rule_set(raw)
    except InvalidRuleSet as exc:
        raise InvalidInput(
            "The rule set is invalid.", errors=[p.as_dict() for p in exc.problems]
        ) from None
    return body.model_dump(mode="json")


async def save_rule_set(workspace: str, raw: Any, store: Store, now: datetime) -> Rescore:
    """Save a new rule-set version and start rescoring every contact of the workspace under it."""
    body = validated(raw)
    latest = await store.latest_rule_set(workspace)
    version = (latest[0] if latest else 0) + 1
    await store.add_rule_set(workspace, version, body, now)
    job = Rescore(
        str(uuid.uuid4()),
        workspace,
        version,
        "pending",
        await store.count_contacts(workspace),
        0,
        0,
        "",
        now,
        None,
    )
    await store.add_rescore(job)
    return job


async def read_rescore(workspace: str, job_id: str, store: Store) -> Rescore:
    job = await store.rescore(workspace, job_id)
    if job is None:
        raise RescoreNotFound(f"no rescore {job_id}")
    return job


# --- scoring one contact's change -------------------------------------------------------------


@dataclass
class Scored:
    """Contacts whose scores a transaction changes: states to save, timers to set or clear."""

    workspace: str
    rules: RuleSet
    states: dict[str, ContactScore] = field(default_factory=dict)
    touched: set[str] = field(default_factory=set)

    def state(self, contact_id: str) -> ContactScore:
        return self.states.setdefault(contact_id, ContactScore(self.rules.version))

    async def load(self, store: Store, ids: Iterable[str]) -> None:
        wanted = [i for i in ids if i not in self.states]
        if wanted:
            for cid, raw in (await store.lock_scores(self.workspace, wanted)).items():
                self.states[cid] = ContactScore.from_json(raw)

    async def save(self, store: Store) -> None:
        await store.save_scores(
            self.workspace,
            {cid: (self.states[cid].version, self.states[cid].to_json()) for cid in self.touched},
        )
        timers, cleared = [], []
        for cid in sorted(self.touched):
            for group in self.rules.groups:
                due = scores.next_decay_timer(self.states[cid], self.rules, group)
                if due is None:
                    cleared.append((self.workspace, cid, "decay", group))
                else:
                    timers.append(Timer(self.workspace, cid, "decay", group, at(due)))
        await store.clear_timers(cleared)
        await store.set_timers(timers)


def publish_crossing(
    outbox: Outbox,
    workspace: str,
    contact_id: str,
    crossing: Crossing,
    correlationid: str | None,
) -> None:
    """`score.threshold_crossed`, written like `publish_score_changed` (10,000 crossings due at
    once must all be out within seconds)."""
    data = {
        "contact_id": contact_id,
        "group": crossing.group,
        "threshold": crossing.threshold,
        "value": float(crossing.level),
        "score": float(crossing.score),
        "direction": crossing.direction,
        "crossed_at": at(crossing.at),
    }
    envelope = PreparedEnvelope.prepare(
        ScoreThresholdCrossed.event_type,
        data,
        source=SOURCE,
        workspace=workspace,
        subject=contact_id,
        correlationid=correlationid,
        event_id=next(_ids),
    )
    outbox.emit(topics.SCORES, topics.contact_key(workspace, contact_id), envelope)


def report(
    outbox: Outbox,
    workspace: str,
    contact_id: str,
    changes: Sequence[scores.Change],
    crossings: Sequence[Crossing],
    cause: str,
    version: int,
    correlationid: str | None = None,
) -> None:
    """Publish the visible score changes and threshold crossings of one contact."""
    for change in changes:
        publish_score_changed(outbox, workspace, contact_id, change, cause, version, correlationid)
    for crossing in crossings:
        publish_crossing(outbox, workspace, contact_id, crossing, correlationid)


# --- engagement -------------------------------------------------------------------------------


@dataclass(frozen=True)
class EngagementIn:
    """An engagement event as consumed: its type and validated data."""

    workspace: str
    type: str
    contact_id: str | None
    email: str | None
    occurred_at: datetime
    data: dict[str, Any]
    correlationid: str | None = None


async def score_engagement(
    events: Sequence[EngagementIn], store: Store, outbox: Outbox, now: datetime
) -> None:
    """Record each event in its contact's ledger, award the matching rules' points (within
    their frequency limits), publish score changes and crossings, move decay timers, update
    RFM from purchases and logins. Events of contacts scoring does not know are set aside."""
    by_workspace: dict[str, list[EngagementIn]] = {}
    for event in events:
        by_workspace.setdefault(event.workspace, []).append(event)
    for workspace, batch in by_workspace.items():
        await _score_in_workspace(workspace, batch, store, outbox, now)


async def _resolve(
    workspace: str, batch: Sequence[EngagementIn], store: Store
) -> tuple[list[tuple[str, EngagementIn]], list[tuple[EngagementIn, str]]]:
    """Each event's live contact id, or the reason it is set aside."""
    emails = {e.email.lower() for e in batch if e.contact_id is None and e.email}
    by_email = await store.contact_ids_by_email(workspace, emails) if emails else {}
    wanted = {e.contact_id or by_email.get((e.email or "").lower(), "") for e in batch} - {""}
    known = await store.identities(workspace, wanted)
    merged = {c.merged_into for c in known.values() if c.merged_into} - set(known)
    if merged:
        known |= await store.identities(workspace, merged)
    resolved, aside = [], []
    for event in batch:
        cid = event.contact_id or by_email.get((event.email or "").lower())
        contact = known.get(cid) if cid else None
        if contact is not None and contact.merged_into:
            contact = known.get(contact.merged_into)
        if contact is None:
            aside.append((event, "unknown_contact"))
        elif contact.erased:
            aside.append((event, "erased_contact"))
        else:
            resolved.append((contact.id, event))
    return resolved, aside


def _identities(events: Iterable[EngagementIn]) -> set[str]:
    return {
        key for e in events for key in (e.contact_id, e.email.lower() if e.email else None) if key
    }


async def _score_in_workspace(
    workspace: str, batch: Sequence[EngagementIn], store: Store, outbox: Outbox, now: datetime
) -> None:
    resolved, aside = await _resolve(workspace, batch, store)
    if aside:
        # Look again under the identities' locks: the contact may have arrived meanwhile.
        await store.lock_identities(workspace, _identities(e for e, _ in aside))
        late, aside = await _resolve(workspace, [e for e, _ in aside], store)
        resolved += late
    if aside:
        await store.set_aside(
            [
                {
                    "workspace": workspace,
                    "contact_id": e.contact_id,
                    # Of an erased person only the fact is kept: nothing that says who or what.
                    "email": e.email.lower() if e.email and reason != "erased_contact" else None,
                    "reason": reason,
                    "type": e.type,
                    "occurred_at": e.occurred_at,
                    "data": e.data if reason != "erased_contact" else {},
                    "received_at": now,
                    "note": None,
                }
                for e, reason in aside
            ]
        )
    if not resolved:
        return
    scored = Scored(workspace, await current_rules(store, workspace))
    await scored.load(store, sorted({cid for cid, _ in resolved}))
    await store.append_ledger(
        [
            {
                "workspace": workspace,
                "contact_id": cid,
                "type": e.type,
                "occurred_at": e.occurred_at,
                "data": e.data,
            }
            for cid, e in resolved
        ]
    )
    for cid, event in resolved:
        apply_engagement(
            scored, cid, event.type, event.data, event.occurred_at, outbox, now, event.correlationid
        )
    await scored.save(store)
    purchases = [(cid, e) for cid, e in resolved if e.type in RFM_KINDS]
    if purchases:
        await record_customer_activity(workspace, purchases, store, outbox, now)


def apply_engagement(
    scored: Scored,
    contact_id: str,
    event_type: str,
    data: Mapping[str, Any],
    occurred_at: datetime,
    outbox: Outbox,
    now: datetime,
    correlationid: str | None = None,
) -> None:
    rules = scored.rules
    matched = rules.matching_engagement(event_type, data)
    if not matched:
        return
    state = scored.state(contact_id)
    seconds = ts(now)
    before = scores.scores_at(state, rules, seconds)
    if not scores.award(state, rules, matched, ts(occurred_at), seconds):
        return
    state.version = rules.version
    scored.touched.add(contact_id)
    after = scores.scores_at(state, rules, seconds)
    crossings = scores.check_thresholds(state, rules, seconds)
    report(
        outbox,
        scored.workspace,
        contact_id,
        scores.changes_between(before, after),
        crossings,
        event_type,
        rules.version,
        correlationid,
    )


# --- contacts ---------------------------------------------------------------------------------


def attributes_of(snapshot: ContactSnapshot) -> dict[str, Any]:
    return snapshot.model_dump(mode="json", exclude={"score"})


async def on_contact_snapshot(
    workspace: str, snapshot: ContactSnapshot, store: Store, outbox: Outbox, now: datetime
) -> None:
    """Keep the contact's attributes; rescore its fit and negative rules when they change; apply
    engagement set aside while the contact was unknown."""
    known = (await store.contacts(workspace, [snapshot.id])).get(snapshot.id)
    if known is not None and known.erased:
        return  # a late snapshot of an erased contact must not bring it back
    attributes = attributes_of(snapshot)
    email = snapshot.email.lower() if snapshot.email else None
    await store.lock_identities(workspace, {snapshot.id, email} - {None})  # type: ignore[arg-type]
    await store.save_contact(workspace, Contact(snapshot.id, email, attributes, False))
    scored = Scored(workspace, await current_rules(store, workspace))
    await scored.load(store, [snapshot.id])
    waiting = await store.take_set_aside(workspace, snapshot.id, email)
    if waiting:
        await store.append_ledger(
            [
                {
                    "workspace": workspace,
                    "contact_id": snapshot.id,
                    "type": w.type,
                    "occurred_at": w.occurred_at,
                    "data": w.data,
                }
                for w in waiting
            ]
        )
        for w in sorted(waiting, key=lambda w: w.occurred_at):
            apply_engagement(scored, snapshot.id, w.type, w.data, w.occurred_at, outbox, now)
    rescore_fit(scored, snapshot.id, attributes, outbox, now)
    await scored.save(store)
    activity = [(snapshot.id, _as_engagement(workspace, w)) for w in waiting if w.type in RFM_KINDS]
    if activity:
        await record_customer_activity(workspace, activity, store, outbox, now)


def _as_engagement(workspace: str, w: SetAside) -> EngagementIn:
    return EngagementIn(workspace, w.type, w.contact_id, w.email, w.occurred_at, w.data)


def rescore_fit(
    scored: Scored,
    contact_id: str,
    attributes: Mapping[str, Any],
    outbox: Outbox,
    now: datetime,
) -> None:
    rules, state, seconds = scored.rules, scored.state(contact_id), ts(now)
    before = scores.scores_at(state, rules, seconds)
    fits = {name: g.fit for name, g in state.groups.items()}
    scores.apply_attributes(state, rules, attributes)
    after = scores.scores_at(state, rules, seconds)
    crossings = scores.check_thresholds(state, rules, seconds)
    changes = scores.changes_between(before, after)
    if changes or crossings or fits != {name: g.fit for name, g in state.groups.items()}:
        scored.touched.add(contact_id)
    report(outbox, scored.workspace, contact_id, changes, crossings, "fit", rules.version)


async def on_contact_merged(
    workspace: str, event: ContactMerged, store: Store, outbox: Outbox, now: datetime
) -> None:
    """Fold the merged contact's ledger into the survivor's and rescore the survivor from it."""
    survivor, merged = event.survivor_id, event.merged_id
    await store.move_ledger(workspace, merged, survivor)
    merged_rfm = (await store.rfm_rows(workspace, [merged])).get(merged)
    await store.erase_contact(workspace, merged)
    # A stub that redirects late engagement to the survivor (erased: never scored itself).
    await store.save_contact(workspace, Contact(merged, None, {"merged_into": survivor}, True))
    attributes = attributes_of(event.contact)
    email = event.contact.email.lower() if event.contact.email else None
    await store.save_contact(workspace, Contact(survivor, email, attributes, False))
    rules = await current_rules(store, workspace)
    scored = Scored(workspace, rules)
    await scored.load(store, [survivor])
    ledger = (await store.ledger_of(workspace, [survivor])).get(survivor, [])
    rebuild(scored, survivor, ledger, attributes, outbox, now, "merge")
    await scored.save(store)
    if merged_rfm is not None:
        await merge_customer(workspace, survivor, merged_rfm, store, outbox, now)


def rebuild(
    scored: Scored,
    contact_id: str,
    entries: Sequence[LedgerEntry],
    attributes: Mapping[str, Any],
    outbox: Outbox,
    now: datetime,
    cause: str,
    correlationid: str | None = None,
) -> bool:
    """Replace a contact's score by its replay from the ledger; True when it changed visibly."""
    rules, seconds = scored.rules, ts(now)
    previous = scored.states.get(contact_id)
    before = scores.scores_at(previous, rules, seconds) if previous else {}
    fresh = scores.replay(rules, entries, attributes, seconds, previous)
    scored.states[contact_id] = fresh
    scored.touched.add(contact_id)
    after = scores.scores_at(fresh, rules, seconds)
    crossings = scores.check_thresholds(fresh, rules, seconds)
    changes = scores.changes_between(before, after)
    report(
        outbox,
        scored.workspace,
        contact_id,
        changes,
        crossings,
        cause,
        rules.version,
        correlationid,
    )
    return bool(changes)


async def on_contact_deleted(workspace: str, event: ContactDeleted, store: Store) -> None:
    """Erase everything held on the person (its merged ids and engagement set aside under its
    addresses included) and keep tombstones (late engagement is set aside, never scored)."""
    for contact_id in dict.fromkeys([event.contact_id, *event.merged_ids]):
        await store.erase_contact(workspace, contact_id)
        await store.save_contact(workspace, Contact(contact_id, None, {}, True))
    await store.erase_set_aside_of(workspace, event.identity_digests)


# --- timers -----------------------------------------------------------------------------------


async def fire_due_timers(store: Store, outbox: Outbox, now: datetime, limit: int = 1000) -> int:
    """Fire the timers due by `now`: decay crossings (published with the exact instant they
    happened) and RFM reassessments. Returns how many fired."""
    due = await store.claim_due_timers(now, limit)
    by_workspace: dict[str, list[Timer]] = {}
    for timer in due:
        by_workspace.setdefault(timer.workspace, []).append(timer)
    fired = 0
    for workspace, timers in by_workspace.items():
        decay = [t for t in timers if t.kind == "decay"]
        if decay:
            fired += await _fire_decay(workspace, decay, store, outbox)
        reassess = [t.contact_id for t in timers if t.kind == "rfm"]
        if reassess:
            fired += await reassess_customers(workspace, reassess, store, outbox, now)
    return fired


async def _fire_decay(workspace: str, timers: Sequence[Timer], store: Store, outbox: Outbox) -> int:
    rules = await current_rules(store, workspace)
    # Skip contacts another transaction is scoring right now: it moves their timers itself.
    raw = await store.try_lock_scores(workspace, {t.contact_id for t in timers})
    scored = Scored(workspace, rules)
    scored.states = {cid: ContactScore.from_json(state) for cid, state in raw.items()}
    stale = []
    for timer in sorted(timers, key=lambda t: t.due_at):
        state = scored.states.get(timer.contact_id)
        if state is None:
            continue
        if timer.group not in rules.groups:
            stale.append((workspace, timer.contact_id, "decay", timer.group))
            continue
        crossings = scores.check_thresholds(state, rules, ts(timer.due_at), only=timer.group)
        scored.touched.add(timer.contact_id)
        # Nothing but time started a decay crossing: it opens a chain of its own.
        report(
            outbox, workspace, timer.contact_id, [], crossings, "decay", rules.version, next(_ids)
        )
    await store.clear_timers(stale)
    await scored.save(store)
    return len(scored.touched)


# --- rescoring --------------------------------------------------------------------------------


async def rescore_next_chunk(store: Store, outbox: Outbox, now: datetime, size: int = 2000) -> bool:
    """Rescore the next chunk of contacts of the oldest unfinished rescore from their ledgers;
    False when there is nothing to do."""
    job = await store.claim_rescore()
    if job is None:
        return False
    body = await store.rule_set(job.workspace, job.version)
    if body is None:
        await store.update_rescore(job.id, status="failed", finished_at=now)
        return True
    scored = Scored(job.workspace, rules_of(job.workspace, job.version, body))
    contacts = await store.contacts_after(job.workspace, job.cursor, size)
    if not contacts:
        await store.update_rescore(job.id, status="done", finished_at=now, total=job.done)
        return True
    ids = [c.id for c in contacts]
    await scored.load(store, ids)
    ledgers = await store.ledger_of(job.workspace, ids)
    changed = sum(
        # Every event of a rescore carries its id as correlation id.
        rebuild(scored, c.id, ledgers.get(c.id, []), c.attributes, outbox, now, "rescore", job.id)
        for c in contacts
    )
    await scored.save(store)
    await store.update_rescore(
        job.id,
        status="running",
        cursor=ids[-1],
        done=job.done + len(ids),
        changed=job.changed + changed,
        total=max(job.total, job.done + len(ids)),
    )
    return True


# --- simulate and explain ---------------------------------------------------------------------


async def simulate(
    workspace: str,
    raw_rules: Any,
    contact_id: str | None,
    days: float | None,
    sample: int,
    store: Store,
    now: datetime,
) -> dict[str, Any]:
    """Score one contact, or every contact engaged in the last `days`, under proposed rules and
    under the current ones; nothing is saved or published."""
    proposed = RuleSet(-1, parse_rule_set(validated(raw_rules)))
    current = await current_rules(store, workspace)
    seconds = ts(now)
    if contact_id is not None:
        contact = (await store.contacts(workspace, [contact_id])).get(contact_id)
        if contact is None or contact.erased or contact.merged_into:
            raise ContactNotFound(f"no contact {contact_id}")
        ledgers = await store.ledger_of(workspace, [contact_id])
        contacts = {contact_id: contact}
    else:
        since = now - timedelta(days=days or 30)
        ledgers = await store.ledger_since(workspace, since)
        contacts = await store.contacts(workspace, ledgers)
    results = []
    for cid, contact in sorted(contacts.items()):
        if contact.erased:
            continue
        entries = ledgers.get(cid, [])
        was = scores.replay(current, entries, contact.attributes, seconds)
        will = scores.replay(proposed, entries, contact.attributes, seconds)
        results.append(
            (
                cid,
                scores.scores_at(was, current, seconds),
                scores.scores_at(will, proposed, seconds),
                will,
            )
        )
    changed = [r for r in results if scores.changes_between(r[1], r[2]) or set(r[1]) != set(r[2])]
    body: dict[str, Any] = {
        "contacts": len(results),
        "changed": len(changed),
        "sample": [
            {
                "contact_id": cid,
                "before": {g: round(v, 2) for g, v in before.items()},
                "after": {g: round(v, 2) for g, v in after.items()},
            }
            for cid, before, after, _ in changed[:sample]
        ],
        "thresholds": _threshold_counts(current, proposed, results, seconds),
    }
    if contact_id is not None and results:
        body["explain"] = scores.explain(results[0][3], proposed, seconds)
    return body


def _threshold_counts(
    current: RuleSet,
    proposed: RuleSet,
    results: Sequence[tuple[str, dict[str, float], dict[str, float], ContactScore]],
    seconds: float,
) -> list[dict[str, Any]]:
    """How many of the simulated contacts would be at or above each threshold, before and after."""
    counts = []
    for rules, label in ((current, "before"), (proposed, "after")):
        for t in rules.body.thresholds:
            key = "after" if label == "after" else "before"
            n = sum(
                1 for r in results if (r[2] if key == "after" else r[1]).get(t.group, 0) >= t.at
            )
            counts.append({"rules": label, "group": t.group, "threshold": t.name, "at_or_above": n})
    return counts


async def explain_contact(
    workspace: str, contact_id: str, store: Store, now: datetime
) -> dict[str, Any]:
    """Each group's score now with its contributing rules and their decay, and the RFM view."""
    contact = (await store.contacts(workspace, [contact_id])).get(contact_id)
    if contact is None or contact.erased:
        raise ContactNotFound(f"no contact {contact_id}")
    if contact.merged_into:
        raise ContactNotFound(f"contact {contact_id} was merged into {contact.merged_into}")
    rules = await current_rules(store, workspace)
    raw = (await store.lock_scores(workspace, [contact_id])).get(contact_id)
    state = ContactScore.from_json(raw) if raw else ContactScore(rules.version)
    if raw is None:
        scores.apply_attributes(state, rules, contact.attributes)
    customer = (await store.rfm_rows(workspace, [contact_id])).get(contact_id)
    return {
        "contact_id": contact_id,
        "rule_set_version": rules.version,
        "scored_with_version": state.version,
        "at": now,
        "groups": scores.explain(state, rules, ts(now)),
        "rfm": _rfm_view(customer, now) if customer else None,
    }


# --- RFM --------------------------------------------------------------------------------------


def _activity(row: Mapping[str, Any]) -> rfm.Activity:
    return rfm.Activity(
        row["first_at"],
        row["last_at"],
        row["count"],
        row["purchases"],
        row["monetary"],
        row["recent_interval_s"],
    )


def _rfm_view(row: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    return {
        "recency_days": round(rfm.days_since(_activity(row), ts(now)), 2),
        "frequency": row["count"],
        "purchases": row["purchases"],
        "monetary": row["monetary"],
        "r": row["r"],
        "f": row["f"],
        "m": row["m"],
        "segment": row["segment"],
        "churn_risk": row["risk"],
        "band": row["band"],
    }


async def _breakpoints(
    workspace: str, store: Store, now: datetime, new_customers: bool
) -> rfm.Breakpoints:
    """The workspace's quintile breakpoints, recomputed once a minute as events arrive, and at
    once when new customers join a small workspace (where each one moves the quintiles)."""
    row = await store.breakpoints(workspace)
    fresh = row is not None and now - row.computed_at < BREAKPOINTS_MAX_AGE
    if row is not None and fresh and not (new_customers and row.customers < SMALL_WORKSPACE):
        return rfm.Breakpoints(row.recency_days, row.frequency, row.monetary)
    stats = await store.rfm_stats(workspace)
    customers = [rfm.Activity(last, last, count, 0, money) for last, count, money in stats]
    points = rfm.workspace_breakpoints(customers, ts(now))
    await store.save_breakpoints(
        {
            "workspace": workspace,
            "recency_days": points.recency_days,
            "frequency": points.frequency,
            "monetary": points.monetary,
            "customers": len(customers),
            "computed_at": now,
        }
    )
    return points


async def record_customer_activity(
    workspace: str,
    activity: Sequence[tuple[str, EngagementIn]],
    store: Store,
    outbox: Outbox,
    now: datetime,
) -> None:
    """Fold purchases and logins into customers' RFM stats, then reassess them."""
    rows = await store.rfm_rows(workspace, {cid for cid, _ in activity})
    stats = {cid: _activity(row) for cid, row in rows.items()}
    for cid, event in activity:
        kind = RFM_KINDS[event.type]
        amount = float(event.data.get("amount") or 0) if kind == "purchase" else 0.0
        stats[cid] = rfm.record_activity(
            stats.get(cid),
            ts(event.occurred_at),
            "purchase" if kind == "purchase" else "login",
            amount,
        )
    new = set(stats) - set(rows)
    # Stats first (so the breakpoints see them), then the assessment.
    await store.save_rfm([_rfm_row(workspace, cid, s, rows.get(cid)) for cid, s in stats.items()])
    points = await _breakpoints(workspace, store, now, new_customers=bool(new))
    await _assess(workspace, stats, rows, points, store, outbox, now)


async def reassess_customers(
    workspace: str, ids: Sequence[str], store: Store, outbox: Outbox, now: datetime
) -> int:
    """Reassess customers whose timer fired: time alone moves recency and churn risk."""
    rows = await store.rfm_rows(workspace, ids)
    stats = {cid: _activity(row) for cid, row in rows.items()}
    points = await _breakpoints(workspace, store, now, new_customers=False)
    await _assess(workspace, stats, rows, points, store, outbox, now)
    stale = [(workspace, cid, "rfm", "") for cid in ids if cid not in rows]
    await store.clear_timers(stale)
    return len(ids)


async def merge_customer(
    workspace: str,
    survivor: str,
    merged: Mapping[str, Any],
    store: Store,
    outbox: Outbox,
    now: datetime,
) -> None:
    rows = await store.rfm_rows(workspace, [survivor])
    theirs = _activity(merged)
    mine = _activity(rows[survivor]) if survivor in rows else None
    combined = (
        theirs
        if mine is None
        else rfm.Activity(
            min(mine.first_at, theirs.first_at),
            max(mine.last_at, theirs.last_at),
            mine.count + theirs.count,
            mine.purchases + theirs.purchases,
            mine.monetary + theirs.monetary,
            mine.recent_interval_s or theirs.recent_interval_s,
        )
    )
    stats = {survivor: combined}
    await store.save_rfm([_rfm_row(workspace, survivor, combined, rows.get(survivor))])
    points = await _breakpoints(workspace, store, now, new_customers=True)
    await _assess(workspace, stats, rows, points, store, outbox, now)


def _rfm_row(
    workspace: str, cid: str, stats: rfm.Activity, previous: Mapping[str, Any] | None
) -> dict[str, Any]:
    return {
        "workspace": workspace,
        "contact_id": cid,
        "first_at": stats.first_at,
        "last_at": stats.last_at,
        "count": stats.count,
        "purchases": stats.purchases,
        "monetary": stats.monetary,
        "recent_interval_s": stats.recent_interval_s,
        "r": previous["r"] if previous else 0,
        "f": previous["f"] if previous else 0,
        "m": previous["m"] if previous else 0,
        "segment": previous["segment"] if previous else "",
        "risk": previous["risk"] if previous else 0,
        "band": previous["band"] if previous else "",
    }


async def _assess(
    workspace: str,
    stats: Mapping[str, rfm.Activity],
    previous: Mapping[str, Mapping[str, Any]],
    points: rfm.Breakpoints,
    store: Store,
    outbox: Outbox,
    now: datetime,
) -> None:
    seconds = ts(now)
    rows, timers, cleared = [], [], []
    for cid, activity in sorted(stats.items()):
        result = rfm.assess(activity, points, seconds)
        before = previous.get(cid)
        row = _rfm_row(workspace, cid, activity, None) | {
            "r": result.r,
            "f": result.f,
            "m": result.m,
            "segment": result.segment,
            "risk": result.risk,
            "band": result.band,
        }
        rows.append(row)
        was_band = before["band"] if before and before["band"] else None
        was_segment = before["segment"] if before and before["segment"] else None
        if (was_band, was_segment) != (result.band, result.segment):
            publish(
                outbox,
                workspace,
                cid,
                ChurnRiskChanged(
                    contact_id=cid,
                    risk=result.risk,
                    band=result.band,
                    segment=result.segment,
                    previous_band=was_band,
                    previous_segment=was_segment,
                ),
            )
        due = rfm.next_change_at(activity, points, seconds)
        if due is None:
            cleared.append((workspace, cid, "rfm", ""))
        else:
            timers.append(Timer(workspace, cid, "rfm", "", at(due)))
    await store.save_rfm(rows)
    await store.clear_timers(cleared)
    await store.set_timers(timers)


async def rfm_summary(workspace: str, store: Store) -> dict[str, Any]:
    """How many customers in each RFM segment and churn-risk band."""
    segments, bands = await store.rfm_summary(workspace)
    return {
        "customers": sum(segments.values()),
        "segments": {name: segments.get(name, 0) for name in rfm.SEGMENTS},
        "bands": {name: bands.get(name, 0) for name, _ in reversed(rfm.BANDS)},
    }


# --- a person's data (contacts' export) --------------------------------------------------------


async def export_person(
    workspace: str, contact_ids: Sequence[str], identity_digests: Sequence[str], store: Store
) -> dict[str, Any]:
    """Everything scoring holds on a person: per contact id its attributes as scoring saw
    them, score state, ledger and RFM stats; and engagement set aside for them."""
    ids = list(dict.fromkeys(contact_ids))
    known = await store.contacts(workspace, ids)
    states = await store.lock_scores(workspace, [i for i in ids if i in known])
    ledgers = await store.ledger_of(workspace, ids)
    customers = await store.rfm_rows(workspace, ids)
    contacts = {
        cid: {
            "attributes": contact.attributes,
            "erased": contact.erased,
            "score_state": states.get(cid) or None,
            "ledger": [
                {"type": e.type, "occurred_at": at(e.occurred_at), "data": e.data}
                for e in sorted(ledgers.get(cid, []), key=lambda e: e.occurred_at)
            ],
            "rfm": customers.get(cid),
        }
        for cid, contact in known.items()
    }
    aside = await store.set_aside_of(workspace, ids, identity_digests)
    return {"contacts": contacts, "set_aside": aside}

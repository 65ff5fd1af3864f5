"""scoring's use cases: rule sets, engagement scoring, timers and rescores (contact changes in
`contacts/handlers.py`, simulate, explain and export in `scores/handlers.py`, RFM's in
`rfm/handlers.py`). Typed against the `Store` protocol (store.py, composed from the areas'
stores); handlers never commit."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.scoring.publish import at, event_ids, report, ts
from services.scoring.rfm import handlers as customers
from services.scoring.rules.domain import InvalidRuleSet, RuleSet, default_rule_set, parse_rule_set
from services.scoring.scores import domain as scores
from services.scoring.scores.domain import ContactScore, Crossing
from services.scoring.store import Outbox, Rescore, Store, Timer
from shared.errors import InvalidInput, NotFound


class ContactNotFound(NotFound):
    code = "contact_not_found"


class RescoreNotFound(NotFound):
    code = "rescore_not_found"


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
    # The decay timers each loaded state implies, when it was saved under these same rules (so
    # they are the timers stored with it): a save rewrites only the timers that moved.
    saved_timers: dict[str, dict[str, float | None]] = field(default_factory=dict)

    def state(self, contact_id: str) -> ContactScore:
        return self.states.setdefault(contact_id, ContactScore(self.rules.version))

    async def load(self, store: Store, ids: Iterable[str]) -> None:
        wanted = [i for i in ids if i not in self.states]
        if wanted:
            for cid, raw in (await store.lock_scores(self.workspace, wanted)).items():
                state = self.states[cid] = ContactScore.from_json(raw)
                if state.version == self.rules.version:
                    self.saved_timers[cid] = self._timers(state)

    def _timers(self, state: ContactScore) -> dict[str, float | None]:
        return {g: scores.next_decay_timer(state, self.rules, g) for g in self.rules.groups}

    async def save(self, store: Store) -> None:
        await store.save_scores(
            self.workspace,
            {cid: (self.states[cid].version, self.states[cid].to_json()) for cid in self.touched},
        )
        timers, cleared = [], []
        for cid in sorted(self.touched):
            saved = self.saved_timers.get(cid)
            for group, due in self._timers(self.states[cid]).items():
                if saved is not None and group in saved and saved[group] == due:
                    continue  # the stored timer (or its absence) still holds
                if due is None:
                    cleared.append((self.workspace, cid, "decay", group))
                else:
                    timers.append(Timer(self.workspace, cid, "decay", group, at(due)))
        await store.clear_timers(cleared)
        await store.set_timers(timers)


def rebuild(
    scored: Scored,
    contact_id: str,
    fresh: ContactScore,
    outbox: Outbox,
    now: datetime,
    cause: str,
    correlationid: str | None = None,
) -> bool:
    """Replace a contact's score by `fresh`, its replay from the ledger; True when it changed
    visibly."""
    seconds = ts(now)
    previous = scored.states.get(contact_id)
    before = scores.scores_at(previous, scored.rules, seconds) if previous else {}
    scored.states[contact_id] = fresh
    scored.touched.add(contact_id)
    changes, _ = report_since(scored, contact_id, before, seconds, cause, outbox, correlationid)
    return bool(changes)


def report_since(
    scored: Scored,
    contact_id: str,
    before: Mapping[str, float],
    seconds: float,
    cause: str,
    outbox: Outbox,
    correlationid: str | None,
) -> tuple[list[scores.Change], list[Crossing]]:
    """Report how a contact's score moved from `before` (its scores before `cause`) to its
    state now: the changes and the threshold crossings, both also returned."""
    rules, state = scored.rules, scored.state(contact_id)
    after = scores.scores_at(state, rules, seconds)
    crossings = scores.check_thresholds(state, rules, seconds)
    changes = scores.changes_between(before, after)
    version = rules.version
    report(outbox, scored.workspace, contact_id, changes, crossings, cause, version, correlationid)
    return changes, crossings


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
    purchases = [
        (cid, e.type, e.occurred_at, e.data) for cid, e in resolved if e.type in customers.RFM_KINDS
    ]
    if purchases:
        await customers.record_customer_activity(workspace, purchases, store, outbox, now)


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
    report_since(scored, contact_id, before, seconds, event_type, outbox, correlationid)


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
            fired += await customers.reassess_customers(workspace, reassess, store, outbox, now)
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
            outbox,
            workspace,
            timer.contact_id,
            [],
            crossings,
            "decay",
            rules.version,
            next(event_ids),
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
    rules, seconds = scored.rules, ts(now)
    rates = sorted(set(scores.decay_rates(rules).values()))
    totals = await store.ledger_totals(
        job.workspace, ids, seconds, rates, scores.timed_types(rules)
    )
    changed = 0
    for c in contacts:
        previous = scored.states.get(c.id)
        fresh = scores.replay_totals(rules, totals.get(c.id, []), c.attributes, seconds, previous)
        # Every event of a rescore carries its id as correlation id.
        changed += rebuild(scored, c.id, fresh, outbox, now, "rescore", job.id)
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

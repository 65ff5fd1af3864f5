"""scoring's handling of contact changes: a contact's new snapshot (its attributes kept, its
fit rescored, engagement set aside while it was unknown applied), a merge (the ledger folded
into the survivor's) and a delete (everything held erased, tombstones kept). Typed against the
`Store` protocol; handlers never commit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.scoring.handlers import (
    Scored,
    apply_engagement,
    current_rules,
    rebuild,
    report_since,
)
from services.scoring.publish import ts
from services.scoring.rfm import handlers as customers
from services.scoring.scores import domain as scores
from services.scoring.store import Contact, Outbox, SetAside, Store
from shared.events.contacts import ContactDeleted, ContactMerged, ContactSnapshot


def attributes_of(snapshot: ContactSnapshot) -> dict[str, Any]:
    return snapshot.model_dump(mode="json", exclude={"score"})


@dataclass(frozen=True)
class ContactChange:
    """A change on `leadwire.contacts.v1` as consumed: a contact's new snapshot, a merge or a
    delete, with the correlation id the events it causes carry on."""

    workspace: str
    change: ContactSnapshot | ContactMerged | ContactDeleted
    correlationid: str | None = None


async def on_contact_changes(
    changes: Sequence[ContactChange], store: Store, outbox: Outbox, now: datetime
) -> None:
    """Apply a polled batch of contact changes in order: each run of snapshots between merges
    and deletes together (a few statements for the whole run), merges and deletes one by one."""
    run: list[ContactChange] = []
    for item in changes:
        if isinstance(item.change, ContactSnapshot):
            run.append(item)
            continue
        await _snapshot_run(run, store, outbox, now)
        run = []
        if isinstance(item.change, ContactMerged):
            await on_contact_merged(
                item.workspace, item.change, store, outbox, now, item.correlationid
            )
        else:
            await on_contact_deleted(item.workspace, item.change, store)
    await _snapshot_run(run, store, outbox, now)


async def _snapshot_run(
    run: Sequence[ContactChange], store: Store, outbox: Outbox, now: datetime
) -> None:
    by_workspace: dict[str, list[tuple[ContactSnapshot, str | None]]] = {}
    for item in run:
        assert isinstance(item.change, ContactSnapshot)
        by_workspace.setdefault(item.workspace, []).append((item.change, item.correlationid))
    for workspace, snapshots in by_workspace.items():
        await on_contact_snapshots(workspace, snapshots, store, outbox, now)


async def on_contact_snapshots(
    workspace: str,
    snapshots: Sequence[tuple[ContactSnapshot, str | None]],
    store: Store,
    outbox: Outbox,
    now: datetime,
) -> None:
    """Keep the contacts' attributes; rescore their fit and negative rules when they change;
    apply engagement set aside while a contact was unknown. Snapshots (with the correlation id
    of the event that carried each) are applied in order, as if one by one."""
    ids = {s.id for s, _ in snapshots}
    emails = {s.email.lower() for s, _ in snapshots if s.email}
    # Under the identities' locks: engagement set aside meanwhile is seen here, or sees these.
    await store.lock_identities(workspace, ids | emails)
    known = await store.identities(workspace, ids)
    # A late snapshot of an erased contact must not bring it back.
    live = [
        Contact(s.id, s.email.lower() if s.email else None, attributes_of(s), False)
        for s, _ in snapshots
        if not (s.id in known and known[s.id].erased)
    ]
    if not live:
        return
    correlations = [c for s, c in snapshots if not (s.id in known and known[s.id].erased)]
    latest = {c.id: c for c in live}
    await store.save_contacts(workspace, list(latest.values()))
    scored = Scored(workspace, await current_rules(store, workspace))
    await scored.load(store, sorted(latest))
    waiting = await store.take_set_aside_of(
        workspace, sorted(latest), sorted({c.email for c in live if c.email})
    )
    by_key: dict[str, list[int]] = {}
    for i, w in enumerate(waiting):
        for key in {w.contact_id, w.email} - {None}:
            by_key.setdefault(key, []).append(i)  # type: ignore[arg-type]
    taken: set[int] = set()
    applied: list[tuple[str, SetAside]] = []
    # The attributes each contact's fit was last rescored from in this batch. A contact's
    # `contact.created` and `contact.owner_assigned` carry the same snapshot and come
    # together: rescoring the second gives the same fit and reports nothing. (The same
    # attributes name the same id and address, so what was set aside for them was taken by
    # the first: none is applied in between.)
    fitted: dict[str, Mapping[str, Any]] = {}
    for contact, correlationid in zip(live, correlations, strict=True):
        # What was set aside for this contact (by id or address) and not taken by an earlier
        # snapshot of the batch.
        mine = {i for key in (contact.id, contact.email) if key for i in by_key.get(key, ())}
        mine -= taken
        taken |= mine
        for w in sorted((waiting[i] for i in mine), key=lambda w: w.occurred_at):
            applied.append((contact.id, w))
            apply_engagement(
                scored, contact.id, w.type, w.data, w.occurred_at, outbox, now, correlationid
            )
        if fitted.get(contact.id) == contact.attributes:
            continue
        rescore_fit(scored, contact.id, contact.attributes, outbox, now, correlationid)
        fitted[contact.id] = contact.attributes
    if applied:
        await store.append_ledger(
            [
                {
                    "workspace": workspace,
                    "contact_id": cid,
                    "type": w.type,
                    "occurred_at": w.occurred_at,
                    "data": w.data,
                }
                for cid, w in applied
            ]
        )
    await scored.save(store)
    activity = [
        (cid, w.type, w.occurred_at, w.data)
        for cid, w in sorted(applied, key=lambda a: a[1].occurred_at)
        if w.type in customers.RFM_KINDS
    ]
    if activity:
        await customers.record_customer_activity(workspace, activity, store, outbox, now)


def rescore_fit(
    scored: Scored,
    contact_id: str,
    attributes: Mapping[str, Any],
    outbox: Outbox,
    now: datetime,
    correlationid: str | None = None,
) -> None:
    rules, state, seconds = scored.rules, scored.state(contact_id), ts(now)
    before = scores.scores_at(state, rules, seconds)
    fits = {name: g.fit for name, g in state.groups.items()}
    scores.apply_attributes(state, rules, attributes)
    changes, crossings = report_since(
        scored, contact_id, before, seconds, "fit", outbox, correlationid
    )
    if changes or crossings or fits != {name: g.fit for name, g in state.groups.items()}:
        scored.touched.add(contact_id)


async def on_contact_merged(
    workspace: str,
    event: ContactMerged,
    store: Store,
    outbox: Outbox,
    now: datetime,
    correlationid: str | None = None,
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
    fresh = scores.replay(rules, ledger, attributes, ts(now), scored.states.get(survivor))
    rebuild(scored, survivor, fresh, outbox, now, "merge", correlationid)
    await scored.save(store)
    if merged_rfm is not None:
        await customers.merge_customer(workspace, survivor, merged_rfm, store, outbox, now)


async def on_contact_deleted(workspace: str, event: ContactDeleted, store: Store) -> None:
    """Erase everything held on the person (its merged ids and engagement set aside under its
    addresses included) and keep tombstones (late engagement is set aside, never scored)."""
    for contact_id in dict.fromkeys([event.contact_id, *event.merged_ids]):
        await store.erase_contact(workspace, contact_id)
        await store.save_contact(workspace, Contact(contact_id, None, {}, True))
    await store.erase_set_aside_of(workspace, event.identity_digests)

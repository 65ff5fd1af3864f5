"""Reading scores: simulate a proposed rule set (nothing saved or published), explain a
contact's scores, and export everything scoring holds on a person. Typed against the `Store`
protocol."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from services.scoring.handlers import ContactNotFound, current_rules, validated
from services.scoring.publish import at, ts
from services.scoring.rfm import handlers as customers
from services.scoring.rules.domain import RuleSet, parse_rule_set
from services.scoring.scores import domain as scores
from services.scoring.scores.domain import ContactScore
from services.scoring.store import Store


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
    raw = (await store.read_scores(workspace, [contact_id])).get(contact_id)
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
        "rfm": customers.view(customer, now) if customer else None,
    }


# --- a person's data (contacts' export) --------------------------------------------------------


async def export_person(
    workspace: str, contact_ids: Sequence[str], identity_digests: Sequence[str], store: Store
) -> dict[str, Any]:
    """Everything scoring holds on a person: per contact id its attributes as scoring saw
    them, score state, ledger and RFM stats; and engagement set aside for them."""
    ids = list(dict.fromkeys(contact_ids))
    known = await store.contacts(workspace, ids)
    states = await store.read_scores(workspace, [i for i in ids if i in known])
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

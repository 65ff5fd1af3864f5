"""RFM and churn-risk use cases: purchases and logins folded into customers' stats, quintile
breakpoints per workspace, assessments with `churn_risk.changed`, and each customer's timer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from services.scoring.publish import at, publish_churn_risk_changed, ts
from services.scoring.rfm import domain as rfm
from services.scoring.store import Outbox, Store, Timer

RFM_KINDS = {"purchase.completed": "purchase", "product.login": "login"}
BREAKPOINTS_MAX_AGE = timedelta(seconds=60)
SMALL_WORKSPACE = 1000  # customers up to which every new one recomputes the breakpoints
# (contact id, event type, when it occurred, its data): a purchase or a login.
CustomerEvent = tuple[str, str, datetime, Mapping[str, Any]]


def _activity(row: Mapping[str, Any]) -> rfm.Activity:
    return rfm.Activity(
        row["first_at"],
        row["last_at"],
        row["count"],
        row["purchases"],
        row["monetary"],
        row["recent_interval_s"],
    )


def view(row: Mapping[str, Any], now: datetime) -> dict[str, Any]:
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
    workspace: str,
    store: Store,
    now: datetime,
    new_customers: bool,
    pending: Sequence[Mapping[str, Any]] = (),
) -> rfm.Breakpoints:
    """The workspace's quintile breakpoints, recomputed once a minute as events arrive, and at
    once when new customers join a small workspace (where each one moves the quintiles). The
    `pending` stats rows are saved first when they are recomputed, so that they count."""
    row = await store.breakpoints(workspace)
    fresh = row is not None and now - row.computed_at < BREAKPOINTS_MAX_AGE
    if row is not None and fresh and not (new_customers and row.customers < SMALL_WORKSPACE):
        return rfm.Breakpoints(row.recency_days, row.frequency, row.monetary)
    await store.save_rfm(pending)
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
    activity: Sequence[CustomerEvent],
    store: Store,
    outbox: Outbox,
    now: datetime,
) -> None:
    """Fold purchases and logins into customers' RFM stats, then reassess them."""
    rows = await store.rfm_rows(workspace, {cid for cid, *_ in activity})
    stats = {cid: _activity(row) for cid, row in rows.items()}
    for cid, event_type, occurred_at, data in activity:
        kind = RFM_KINDS[event_type]
        amount = float(data.get("amount") or 0) if kind == "purchase" else 0.0
        stats[cid] = rfm.record_activity(
            stats.get(cid),
            ts(occurred_at),
            "purchase" if kind == "purchase" else "login",
            amount,
        )
    new = set(stats) - set(rows)
    # The assessment saves the rows; breakpoints recomputed first must see the new stats.
    pending = [_rfm_row(workspace, cid, s, rows.get(cid)) for cid, s in stats.items()]
    points = await _breakpoints(workspace, store, now, bool(new), pending)
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
    pending = [_rfm_row(workspace, survivor, combined, rows.get(survivor))]
    points = await _breakpoints(workspace, store, now, True, pending)
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
            publish_churn_risk_changed(
                outbox,
                workspace,
                cid,
                result.risk,
                result.band,
                result.segment,
                was_band,
                was_segment,
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

"""What every part of notifier's store shares: column types and array helpers for PostgreSQL,
the intake's one read, and the session with its dialect's insert (see `store.py`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import orjson
from sqlalchemy import Table, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from services.notifier.models import (
    Attempt,
    Channel,
    ContactView,
    Delivery,
)

# Column types for the array updates on PostgreSQL (`_update_from_arrays`, delivery/store.py).
PG_TYPES = {
    "id": "varchar",
    "delivery_id": "varchar",
    "number": "integer",
    "status": "varchar",
    "reason": "text",
    "attempts": "integer",
    "next_attempt_at": "timestamptz",
    "finished_at": "timestamptz",
    "updated_at": "timestamptz",
    "provider_message_id": "varchar",
    "channel_id": "varchar",
    "kind": "varchar",
    "recipient": "varchar",
    "prepared": "boolean",
    "message": "jsonb",
    "outcome": "varchar",
    "status_code": "integer",
    "response": "text",
    "held_by": "varchar",
    "held_until": "timestamptz",
}


@dataclass(frozen=True)
class IntakeReads:
    """What preparing a batch of requests reads: the workspace's settings, the contacts'
    snapshots by id, and the channels each reference (an id or a name) names."""

    settings: dict[str, Any]
    contacts: dict[str, dict[str, Any]]
    channels: dict[str, Channel]


# The three reads of `IntakeReads` in one round trip on PostgreSQL (plain SQL: nothing to
# compile per batch). `to_jsonb` of a channel row gives its columns by name.
INTAKE_READS = text(
    "SELECT"
    ' (SELECT "values" FROM workspace_settings WHERE workspace = :w) AS settings,'
    " (SELECT coalesce(jsonb_object_agg(id, snapshot), '{}') FROM contacts"
    "   WHERE workspace = :w AND id = ANY(CAST(:contacts AS varchar[]))) AS contacts,"
    " (SELECT coalesce(jsonb_agg(to_jsonb(c)), '[]') FROM channels AS c"
    "   WHERE workspace = :w AND (id = ANY(CAST(:refs AS varchar[]))"
    "   OR name = ANY(CAST(:refs AS varchar[])))) AS channels"
)
deliveries = cast(Table, Delivery.__table__)
attempts = cast(Table, Attempt.__table__)
contacts = cast(Table, ContactView.__table__)
WAITING = ("queued", "retrying")
# What completing an attempt row writes.
ATTEMPT_OUTCOME = ("finished_at", "outcome", "status_code", "response")
DELIVERY_TYPES = PG_TYPES | {
    "workspace": "varchar",
    "idempotency_key": "varchar",
    "contact_id": "varchar",
    "channel": "varchar",
    "purpose": "varchar",
    "correlation_id": "text",
    "traceparent": "varchar",
    "requested_by": "varchar",
    "created_at": "timestamptz",
    "claimed_at": "timestamptz",
    "first_attempt_at": "timestamptz",
}


def waiting_for(workspace: str, contact_ids: Sequence[str]) -> list[ColumnElement[bool]]:
    """Deliveries accepted before their contact was known, still waiting for it."""
    return [
        deliveries.c.workspace == workspace,
        deliveries.c.contact_id.in_(contact_ids),
        deliveries.c.status == "queued",
        deliveries.c.prepared.is_(False),
    ]


def bind_column(kind: str, values: list[Any], spread: bool = True) -> tuple[str, Any, bool]:
    """A column's values as one bind parameter on PostgreSQL: the SQL type to cast it to, the
    parameter, and whether it is an array. JSON goes as text. With `spread`, a column with one
    value for every row is that value rather than an array: the driver checks every array
    element it encodes, and most of a batch's columns are the same in every row."""
    if kind == "jsonb":
        values = [None if v is None else orjson.dumps(v).decode() for v in values]
        kind = "text"
    if spread and values.count(values[0]) == len(values):
        return kind, values[0], False
    return kind, values, True


def array_update(
    table: Table,
    keys: Sequence[str],
    names: Sequence[str],
    rows: Sequence[Mapping[str, Any]],
    tag: str,
) -> tuple[str, dict[str, Any]]:
    """`UPDATE … FROM unnest(arrays)` of many rows' changes (PostgreSQL), its parameters
    named `<tag><n>`: the SQL and the parameters (see `bind_column`)."""
    params: dict[str, Any] = {}
    casts, alias, sets = [], [], []
    for i, name in enumerate([*keys, *names]):
        key = i < len(keys)
        kind, params[f"{tag}{i}"], array = bind_column(
            PG_TYPES[name], [row[name] for row in rows], spread=not key
        )
        jsonb = "::jsonb" if PG_TYPES[name] == "jsonb" else ""
        if not array:
            sets.append(f"{name} = CAST(:{tag}{i} AS {kind}){jsonb}")
            continue
        casts.append(f"CAST(:{tag}{i} AS {kind}[])")
        alias.append(f"c{i}")
        if not key:
            sets.append(f"{name} = v.c{i}{jsonb}")
    match = " AND ".join(f"t.{key} = v.c{i}" for i, key in enumerate(keys))
    sql = (
        f"UPDATE {table.name} AS t SET {', '.join(sets)} FROM unnest({', '.join(casts)})"
        f" AS v({', '.join(alias)}) WHERE {match}"
    )
    return sql, params


def json_value(value: Any) -> Any:
    """A JSON column as the driver gives it through plain SQL (text), decoded."""
    return orjson.loads(value) if isinstance(value, str | bytes) else value


class StoreBase:
    """The unit of work's session and its dialect's insert."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def _insert(self, table: Any) -> Any:
        dialect = self.session.get_bind().dialect.name
        return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)

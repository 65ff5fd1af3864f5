"""Queries of captures: what a batch of captured leads reads before its work, in one statement."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Boolean, String, TextualSelect, column, text

from services.contacts.domain import FieldDefinition
from services.contacts.models import Segment
from services.contacts.owners.domain import CaptureTeam
from services.contacts.owners.store import capture_team_of, read_capture_rotation
from services.contacts.people.store import CONTACTS, definitions_over_defaults
from services.contacts.privacy.store import PrivacyStore
from services.contacts.segments.store import SegmentsStore
from shared.db import Json, UtcDateTime, probe_each


@dataclass(frozen=True)
class CaptureView:
    """What a capture batch of one workspace reads first: the erasures of its digests, the
    workspace's field definitions and segments, and the contacts holding its emails or phones
    (locked for the transaction) with their tags and lists."""

    erased: dict[str, datetime]
    definitions: dict[str, FieldDefinition]
    contacts: list[dict[str, Any]]
    tags: dict[str, list[str]]  # every found contact present
    lists: dict[str, list[str]]  # every found contact present
    segments: list[Segment]
    # Read when asked and its team's row was free (`rotation_read`): the team whose rotation
    # gives new contacts their owners, its row locked for the transaction; None without
    # assignment at capture.
    rotation: CaptureTeam | None = None
    rotation_read: bool = False


# The generic columns of `_capture_view`'s rows (a row per item tagged with its kind); a
# contact's row fills the contacts' own columns instead.
_GENERIC = (
    ("_kind", "varchar", String()),
    ("_key", "varchar", String()),
    ("_name", "text", String()),
    ("_value", "jsonb", Json),
    ("_at", "timestamptz", UtcDateTime()),
    ("_flag", "boolean", Boolean()),
)


# The capture rotation's rows (`OwnersStore.capture_rotation`) in `_capture_view`: the team's
# row locked after the contacts', the order the rotation's own read keeps. A row locked by
# another transaction is skipped, not waited for: a batch whose leads all match contacts
# never waited for the team (the rotation's read comes only with a new contact), so holding
# its contacts' locks it must not start to (an assignment holding the team and waiting for
# one of those contacts would deadlock with it). The rotation is then read as before.
_ROTATION = (
    "rot AS MATERIALIZED (SELECT t.id, t.rule, t.last_owner_id, o.id AS owner_id, o.name,"
    " o.email, o.active, o.weight, o.credit, o.position FROM capture_assignments AS a"
    " JOIN teams AS t ON t.id = a.team_id AND t.workspace = a.workspace"
    " LEFT JOIN owners AS o ON o.team_id = t.id AND o.workspace = t.workspace"
    " WHERE a.workspace = :workspace FOR UPDATE OF t SKIP LOCKED)"
)


@cache
def _capture_view(rotation: bool = False) -> TextualSelect:
    """The reads of `CaptureView` as one statement. The contacts holding the emails or phones
    are locked in id order (one lock order, so two batches never deadlock); their tags and
    lists, and the erasures, are read by one index probe per key (`probe_each`). With
    `rotation`, the capture rotation too, its team's row locked (`CaptureView.rotation`).

    The contacts are matched with `= ANY(keys)`, not probed key by key: under statistics taken
    while the table was young (or none yet), the planner takes any index led by `workspace`
    (five of them) for a probe and filters the workspace's every contact, once per key (50 ms
    a batch at 5,000 contacts); `= ANY` walks it at most once a batch, and uses the two unique
    indexes (a BitmapOr) as soon as the statistics are current."""
    contact_columns = [c.name for c in CONTACTS.c]

    def branch(kind: str, generic: Iterable[str], source: str, contact: bool = False) -> str:
        values = [f"'{kind}'", *generic]
        values += [f'found."{name}"' if contact else "NULL" for name in contact_columns]
        return f"SELECT {', '.join(values)} FROM {source}"

    def labels(table: str, label: str) -> str:
        row = f"SELECT {label} FROM {table} WHERE contact_id = f.id OFFSET 0"
        return f"found AS f CROSS JOIN LATERAL ({row}) AS x"

    erased = "SELECT digest, erased_at FROM erasures WHERE workspace = :workspace AND digest = k.id"
    head = [f"CAST(NULL AS {sql}) AS {name}" for name, sql, _ in _GENERIC[1:]]
    first = branch("c", head, "found", contact=True).replace("'c'", "CAST('c' AS varchar) AS _kind")
    sql = (
        "WITH found AS MATERIALIZED (SELECT * FROM contacts"
        " WHERE workspace = :workspace AND (email = ANY(CAST(:emails AS varchar[]))"
        " OR phone = ANY(CAST(:phones AS varchar[]))) ORDER BY id FOR UPDATE) "
        + " UNION ALL ".join(
            [
                first,
                branch(
                    "t",
                    ["f.id", "x.tag", "NULL", "NULL", "NULL"],
                    labels("contact_tags", "tag"),
                ),
                branch(
                    "l",
                    ["f.id", "x.list", "NULL", "NULL", "NULL"],
                    labels("contact_lists", "list"),
                ),
                branch(
                    "e",
                    ["e.digest", "NULL", "NULL", "e.erased_at", "NULL"],
                    probe_each("CAST(:digests AS varchar[])", erased, "e"),
                ),
                branch(
                    "f",
                    ["d.name", "NULL", "to_jsonb(d)", "NULL", "NULL"],
                    "field_definitions AS d WHERE d.workspace = :workspace",
                ),
                branch(
                    "s",
                    ["s.id", "s.name", "s.filter", "s.created_at", "s.time_based"],
                    "segments AS s WHERE s.workspace = :workspace",
                ),
                *(
                    [
                        branch("r", ["r.id", "NULL", "to_jsonb(r)", "NULL", "NULL"], "rot AS r"),
                        branch(
                            "a",
                            ["a.team_id", "NULL", "NULL", "NULL", "NULL"],
                            "capture_assignments AS a WHERE a.workspace = :workspace",
                        ),
                    ]
                    if rotation
                    else []
                ),
            ]
        )
    )
    if rotation:
        sql = sql.replace("WITH found AS", f"WITH {_ROTATION}, found AS", 1)
    typed = [column(name, kind) for name, _, kind in _GENERIC]
    typed += [column(c.name, c.type) for c in CONTACTS.c]
    return text(sql).columns(*typed)


class CapturesStore(SegmentsStore, PrivacyStore):
    """The reads of a capture batch."""

    async def capture_view(
        self,
        workspace: str,
        digests: Iterable[str],
        emails: Iterable[str],
        phones: Iterable[str],
        rotation: bool = False,
    ) -> CaptureView:
        """Everything a capture batch reads before its work: one statement on PostgreSQL,
        which with `rotation` also reads (and locks) the capture rotation."""
        wanted, emails, phones = sorted(set(digests)), sorted(set(emails)), sorted(set(phones))
        if self.dialect != "postgresql":
            contacts = await self.contact_states_by_identities(workspace, emails, phones)
            ids = [c["id"] for c in contacts]
            return CaptureView(
                await self.erasures(workspace, wanted),
                await self.field_definitions(workspace),
                contacts,
                await self.tags_of(ids),
                await self.lists_of(ids),
                await self.segments(workspace),
                await read_capture_rotation(self.session, workspace) if rotation else None,
                rotation,
            )
        params = {"workspace": workspace, "digests": wanted, "emails": emails, "phones": phones}
        rows = (await self.session.execute(_capture_view(rotation), params)).mappings()
        view = CaptureView({}, {}, [], {}, {}, [])
        definitions: list[dict[str, Any]] = []
        team: list[dict[str, Any]] = []
        assigned = False  # the workspace has an assignment at capture
        names = [c.name for c in CONTACTS.c]
        for row in rows:
            kind = row["_kind"]
            if kind == "c":
                view.contacts.append({name: row[name] for name in names})
                view.tags.setdefault(row["id"], [])
                view.lists.setdefault(row["id"], [])
            elif kind == "t":
                view.tags.setdefault(row["_key"], []).append(row["_name"])
            elif kind == "l":
                view.lists.setdefault(row["_key"], []).append(row["_name"])
            elif kind == "e":
                view.erased[row["_key"]] = row["_at"]
            elif kind == "f":
                definitions.append(row["_value"])
            elif kind == "r":
                team.append(row["_value"])
            elif kind == "a":
                assigned = True
            else:
                view.segments.append(
                    Segment(
                        id=row["_key"],
                        workspace=workspace,
                        name=row["_name"],
                        filter=row["_value"],
                        time_based=row["_flag"],
                        created_at=row["_at"],
                    )
                )
        view.definitions.update(definitions_over_defaults(definitions))
        view.segments.sort(key=lambda s: (s.created_at, s.id))
        for labels in (*view.tags.values(), *view.lists.values()):
            labels.sort()
        if not rotation or (assigned and not team):  # not asked, or its team's row was busy
            return view
        team.sort(key=lambda r: (r["position"] is None, r["position"] or 0, r["owner_id"] or ""))
        return replace(view, rotation=capture_team_of(team), rotation_read=True)

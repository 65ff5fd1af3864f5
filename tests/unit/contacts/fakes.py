"""An in-memory contacts repository and transaction: the use cases' repository Protocols
(captures, duplicates, owners and the segments they all refresh) over plain dicts, so those
use cases run in a unit test without a database.

The fake holds no segments: segment filters compile to SQL, which the service and integration
tiers test on SQLite and PostgreSQL. Its filter queries fail loudly if a use case reaches them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from services.contacts import domain
from services.contacts.captures.store import CaptureView
from services.contacts.domain import FieldDefinition
from services.contacts.duplicates.domain import DuplicatePerson
from services.contacts.models import (
    CaptureAssignment,
    Contact,
    MergeRecord,
    Owner,
    Segment,
    TaskRow,
    Team,
)
from services.contacts.owners import domain as owners_domain
from services.contacts.segments.domain import Filter, Page
from shared.events.envelope import Envelope

COLUMNS = tuple(c.name for c in Contact.__table__.columns)


class UniqueViolation(Exception):
    """What the database's unique constraints would refuse."""


@dataclass
class FakeContacts:
    """The contacts repository as dicts; what a use case wrote is read back from its fields."""

    contacts: dict[str, Contact] = field(default_factory=dict)
    tag_sets: dict[str, set[str]] = field(default_factory=dict)
    list_sets: dict[str, set[str]] = field(default_factory=dict)
    activities: list[dict[str, Any]] = field(default_factory=list)
    lifecycle: list[dict[str, Any]] = field(default_factory=list)
    teams_by_id: dict[str, Team] = field(default_factory=dict)
    owners_by_id: dict[str, Owner] = field(default_factory=dict)
    tasks_by_id: dict[str, TaskRow] = field(default_factory=dict)
    merges: list[MergeRecord] = field(default_factory=list)
    erased: dict[str, datetime] = field(default_factory=dict)  # identity digest → when
    capture_rules: dict[str, CaptureAssignment] = field(default_factory=dict)

    # contacts -----------------------------------------------------------------------------

    async def contact(self, workspace: str, contact_id: str, lock: bool = False) -> Contact | None:
        found = self.contacts.get(contact_id)
        return found if found is not None and found.workspace == workspace else None

    async def contacts_by_ids(
        self, workspace: str, ids: Iterable[str], lock: bool = False
    ) -> list[Contact]:
        wanted = set(ids)
        return sorted(
            (c for c in self.contacts.values() if c.workspace == workspace and c.id in wanted),
            key=lambda c: c.id,
        )

    async def contact_by_identity(
        self, workspace: str, email: str | None = None, phone: str | None = None
    ) -> Contact | None:
        for name, value in (("email", email), ("phone", phone)):
            for c in self.contacts.values():
                if value and c.workspace == workspace and getattr(c, name) == value:
                    return c
        return None

    async def contact_states_by_identities(
        self, workspace: str, emails: Iterable[str], phones: Iterable[str]
    ) -> list[dict[str, Any]]:
        emails, phones = set(emails), set(phones)
        return [
            {name: getattr(c, name) for name in COLUMNS}
            for c in sorted(self.contacts.values(), key=lambda c: c.id)
            if c.workspace == workspace and (c.email in emails or c.phone in phones)
        ]

    async def capture_view(
        self,
        workspace: str,
        digests: Iterable[str],
        emails: Iterable[str],
        phones: Iterable[str],
        rotation: bool = False,
    ) -> CaptureView:
        contacts = await self.contact_states_by_identities(workspace, emails, phones)
        ids = [c["id"] for c in contacts]
        return CaptureView(
            await self.erasures(workspace, digests),
            await self.field_definitions(workspace),
            contacts,
            await self.tags_of(ids),
            await self.lists_of(ids),
            await self.segments(workspace),
            await self.capture_rotation(workspace) if rotation else None,
            rotation,
        )

    def defer_writes(self) -> None:
        """Nothing to defer: a dict is written at once."""

    async def insert_contacts(self, rows: Sequence[dict[str, Any]]) -> None:
        for row in rows:
            self.contacts[row["id"]] = Contact(**row)
        self._check_unique()

    async def update_contacts(self, rows: Sequence[dict[str, Any]]) -> None:
        for row in rows:
            contact = self.contacts[row["id"]]
            for name, value in row.items():
                setattr(contact, name, value)
        self._check_unique()

    def add(self, row: Any) -> None:
        match row:
            case Contact():
                self.contacts[row.id] = row
            case Team():
                self.teams_by_id[row.id] = row
            case CaptureAssignment():
                self.capture_rules[row.workspace] = row
            case Owner():
                self.owners_by_id[row.id] = row
            case TaskRow():
                self.tasks_by_id[row.id] = row
            case MergeRecord():
                self.merges.append(row)
            case _:
                raise AssertionError(f"the fake keeps no {type(row).__name__}")

    async def flush(self, on_conflict: Exception | None = None) -> None:
        try:
            self._check_unique()
        except UniqueViolation as exc:
            if on_conflict is None:
                raise
            raise on_conflict from exc

    def _check_unique(self) -> None:
        for name in ("email", "phone"):
            seen: set[tuple[str, str]] = set()
            for c in self.contacts.values():
                value = getattr(c, name)
                if value is None:
                    continue
                if (c.workspace, value) in seen:
                    raise UniqueViolation(f"two contacts of {c.workspace} have {name} {value}")
                seen.add((c.workspace, value))

    async def redirect_stubs(self, old_survivor: str, new_survivor: str) -> None:
        for c in self.contacts.values():
            if c.merged_into == old_survivor:
                c.merged_into = new_survivor

    async def erasures(self, workspace: str, digests: Iterable[str]) -> dict[str, datetime]:
        return {d: self.erased[d] for d in digests if d in self.erased}

    async def people(self, workspace: str, limit: int) -> list[DuplicatePerson]:
        return [
            DuplicatePerson(c.id, c.email, c.phone, c.first_name, c.last_name, c.company)
            for c in self.contacts.values()
            if c.workspace == workspace and c.merged_into is None
        ][:limit]

    async def field_definitions(self, workspace: str) -> dict[str, FieldDefinition]:
        return dict(domain.DEFAULT_FIELDS)

    # tags, lists, history ------------------------------------------------------------------

    async def tags_of(self, ids: Iterable[str]) -> dict[str, list[str]]:
        return {i: sorted(self.tag_sets.get(i, ())) for i in ids}

    async def lists_of(self, ids: Iterable[str]) -> dict[str, list[str]]:
        return {i: sorted(self.list_sets.get(i, ())) for i in ids}

    async def add_tags(self, workspace: str, pairs: Iterable[tuple[str, str]]) -> None:
        for contact_id, tag in pairs:
            self.tag_sets.setdefault(contact_id, set()).add(tag)

    async def move_memberships(self, workspace: str, source: str, target: str) -> None:
        self.tag_sets.setdefault(target, set()).update(self.tag_sets.pop(source, set()))
        self.list_sets.setdefault(target, set()).update(self.list_sets.pop(source, set()))

    async def add_activities(self, rows: Sequence[dict[str, Any]]) -> None:
        self.activities.extend(rows)

    async def add_lifecycle_changes(self, rows: Sequence[dict[str, Any]]) -> None:
        self.lifecycle.extend(rows)

    async def move_history(self, source: str, target: str) -> None:
        for row in (*self.activities, *self.lifecycle):
            if row["contact_id"] == source:
                row["contact_id"] = target
        for task in self.tasks_by_id.values():
            if task.contact_id == source:
                task.contact_id = target

    # owners, teams, tasks ------------------------------------------------------------------

    async def team(self, workspace: str, team_id: str, lock: bool = False) -> Team | None:
        found = self.teams_by_id.get(team_id)
        return found if found is not None and found.workspace == workspace else None

    async def capture_assignment(self, workspace: str) -> CaptureAssignment | None:
        return self.capture_rules.get(workspace)

    async def capture_rotation(self, workspace: str) -> owners_domain.CaptureTeam | None:
        rule = self.capture_rules.get(workspace)
        team = None if rule is None else await self.team(workspace, rule.team_id)
        if team is None:
            return None
        owners = await self.owners(workspace, team.id)
        members = [owners_domain.RotationMember(o.id, o.active, o.weight, o.credit) for o in owners]
        return owners_domain.CaptureTeam(
            team.id,
            owners_domain.Rotation(team.rule, members, team.last_owner_id),
            {o.id: owners_domain.TeamOwner(o.id, o.name, o.email) for o in owners},
        )

    async def save_rotation(self, team_id: str, rotation: owners_domain.Rotation) -> None:
        self.teams_by_id[team_id].last_owner_id = rotation.last_owner_id
        if rotation.rule == "weighted":
            for owner_id, credit in rotation.credits().items():
                self.owners_by_id[owner_id].credit = credit

    async def clear_capture_assignment(self, workspace: str) -> bool:
        return self.capture_rules.pop(workspace, None) is not None

    async def teams(self, workspace: str) -> list[Team]:
        return [t for t in self.teams_by_id.values() if t.workspace == workspace]

    async def owner(self, workspace: str, owner_id: str) -> Owner | None:
        found = self.owners_by_id.get(owner_id)
        return found if found is not None and found.workspace == workspace else None

    async def owners(self, workspace: str, team_id: str | None = None) -> list[Owner]:
        return sorted(
            (
                o
                for o in self.owners_by_id.values()
                if o.workspace == workspace and (team_id is None or o.team_id == team_id)
            ),
            key=lambda o: (o.position, o.id),
        )

    async def next_owner_position(self, team_id: str | None) -> int:
        positions = [o.position for o in self.owners_by_id.values() if o.team_id == team_id]
        return max(positions, default=0) + 1

    async def task(self, workspace: str, task_id: str) -> TaskRow | None:
        found = self.tasks_by_id.get(task_id)
        return found if found is not None and found.workspace == workspace else None

    async def tasks(
        self,
        workspace: str,
        today: date,
        assignee: str | None,
        contact_id: str | None,
        status: str | None,
        overdue: bool,
        limit: int,
    ) -> list[TaskRow]:
        return [
            t
            for t in self.tasks_by_id.values()
            if t.workspace == workspace
            and (assignee is None or t.assignee_id == assignee)
            and (contact_id is None or t.contact_id == contact_id)
            and (status is None or t.status == status)
            and (
                not overdue
                or (t.status == "open" and t.due_date is not None and t.due_date < today)
            )
        ][:limit]

    # segments: none in the fake ------------------------------------------------------------

    async def segments(self, workspace: str | None = None) -> list[Segment]:
        return []

    async def segment(self, workspace: str, segment_id: str) -> Segment | None:
        return None

    async def segments_of(self, contact_id: str) -> list[str]:
        return []

    async def members_among(self, segment_id: str, ids: Iterable[str]) -> set[str]:
        return set()

    async def add_members(
        self, workspace: str, segment_id: str, ids: Iterable[str], now: datetime
    ) -> None:
        raise AssertionError("the fake holds no segments")

    async def remove_members(self, segment_id: str, ids: Iterable[str]) -> None:
        raise AssertionError("the fake holds no segments")

    async def delete_segment(self, segment_id: str) -> None:
        raise AssertionError("the fake holds no segments")

    async def matching_ids(
        self, workspace: str, node: Filter, now: datetime, among: Iterable[str]
    ) -> set[str]:
        raise AssertionError("segment filters compile to SQL: not in the fake")

    async def entering(self, segment: Segment, node: Filter, now: datetime) -> list[str]:
        raise AssertionError("segment filters compile to SQL: not in the fake")

    async def leaving(self, segment: Segment, node: Filter, now: datetime) -> list[str]:
        raise AssertionError("segment filters compile to SQL: not in the fake")

    async def page(
        self,
        workspace: str,
        node: Filter | None,
        now: datetime,
        sort: str,
        cursor: str | None,
        limit: int,
    ) -> Page[Contact]:
        raise AssertionError("segment filters compile to SQL: not in the fake")

    async def count(self, workspace: str, node: Filter | None, now: datetime) -> int:
        raise AssertionError("segment filters compile to SQL: not in the fake")


@dataclass
class FakeTransaction:
    """A transaction over the fake repository; `emitted` is what would reach the outbox."""

    store: FakeContacts = field(default_factory=FakeContacts)
    emitted: list[tuple[str, str, Envelope]] = field(default_factory=list)

    def emit(self, topic: str, key: str, envelope: Envelope) -> None:
        self.emitted.append((topic, key, envelope))

    def types(self) -> list[str]:
        """The types of the events emitted, in order."""
        return [envelope.type for _, _, envelope in self.emitted]

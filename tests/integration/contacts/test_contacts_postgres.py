"""Contacts on real PostgreSQL (migrated, not create_all) and, where events flow, real Kafka.

The segment language runs on SQLite and PostgreSQL with one table of expectations; concurrent
captures of one person end as one contact; commands reach the DLQ over Kafka.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from services.contacts import domain
from services.contacts.captures import handlers as captures
from services.contacts.captures.store import CaptureView
from services.contacts.domain import FieldDefinition
from services.contacts.main import SPEC, build_spec
from services.contacts.models import Activity, Contact, ContactList, ContactTag, Segment, erasures
from services.contacts.owners import handlers as owners
from services.contacts.people.store import CONTACTS
from services.contacts.segments import domain as segments_domain
from services.contacts.segments import handlers as segments
from services.contacts.store import ContactsStore, transaction
from shared import db
from shared.app import create_app
from shared.erasure import record_erasures
from shared.events import topics
from shared.events.contact_commands import AddTag, SetLifecycle
from shared.events.contacts import ContactCreated, ContactUpdated, parse_contact_event
from shared.events.envelope import Envelope
from shared.events.ingest import LeadCaptured
from shared.uow import UnitOfWork
from tests.conftest import unique
from tests.helpers import (
    BOTH_DATABASES,
    distributed_settings,
    eventually,
    migrated_engine,
    running,
    token,
)
from tests.integration.contacts.test_contact_events_on_kafka import read_all

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@dataclass
class Database:
    engine: db.AsyncEngine

    def uow(self) -> UnitOfWork:
        return UnitOfWork(db.sessionmaker(self.engine), SPEC.outbox, SPEC.inbox)


@pytest.fixture(params=BOTH_DATABASES, scope="class")
async def database(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Database]:
    folder = tmp_path_factory.mktemp("seg")
    async with migrated_engine(request, SPEC.migrations, folder, "cseg") as engine:
        yield Database(engine)


async def capture_team(
    database: Database, workspace: str, rule: str, weights: dict[str, int]
) -> str:
    """A team of these owners (name: weight) that gives the workspace's new contacts their
    owners at capture; its id."""
    async with transaction(database.uow()) as tx:
        team = await owners.create_team(workspace, "Sales", rule, tx)
        for name, weight in weights.items():
            data = {"name": name, "email": f"{name}@x.example", "team_id": team.id}
            await owners.save_owner(workspace, None, data | {"weight": weight}, tx)
        await owners.set_capture_assignment(workspace, team.id, tx, NOW)
    return team.id


PEOPLE: dict[str, dict[str, Any]] = {
    "ada": {
        "lifecycle_stage": "lead",
        "score": 80.0,
        "company": "Acme",
        "country": "DE",
        "last_interaction_at": NOW - timedelta(days=40),
        "custom_fields": {
            "industry": "Fintech",
            "product_requests": ["api", "sso"],
            "subscription_end_date": (NOW + timedelta(days=10)).date().isoformat(),
            "company_size": "11-50",
        },
        "tags": ["webinar"],
        "lists": ["newsletter"],
    },
    "bob": {
        "lifecycle_stage": "customer",
        "score": 20.0,
        "company": "Beta 100%_off",
        "last_interaction_at": NOW - timedelta(days=2),
        "custom_fields": {
            "product_requests": ["sso"],
            "subscription_end_date": (NOW + timedelta(days=60)).date().isoformat(),
        },
        "tags": ["pricing"],
        "lists": [],
    },
    "cy": {
        "lifecycle_stage": "mql",
        "score": None,
        "company": None,
        "email": None,
        "last_interaction_at": None,
        "custom_fields": {},
        "tags": [],
        "lists": [],
    },
}

CASES: list[tuple[dict[str, Any], set[str]]] = [
    ({"field": "lifecycle_stage", "op": "eq", "value": "lead"}, {"ada"}),
    ({"field": "lifecycle_stage", "op": "neq", "value": "lead"}, {"bob", "cy"}),
    ({"field": "lifecycle_stage", "op": "in", "value": ["mql", "customer"]}, {"bob", "cy"}),
    (
        {
            "and": [
                {"field": "score", "op": "gte", "value": 50},
                {"field": "tags", "op": "contains", "value": "webinar"},
            ]
        },
        {"ada"},
    ),
    (
        {
            "or": [
                {"field": "lifecycle_stage", "op": "eq", "value": "customer"},
                {"field": "company", "op": "starts_with", "value": "ac"},
            ]
        },
        {"ada", "bob"},
    ),
    ({"not": {"field": "tags", "op": "contains", "value": "webinar"}}, {"bob", "cy"}),
    ({"field": "tags", "op": "is_empty"}, {"cy"}),
    ({"field": "lists", "op": "contains", "value": "newsletter"}, {"ada"}),
    ({"field": "lists", "op": "not_contains", "value": "newsletter"}, {"bob", "cy"}),
    ({"field": "last_interaction_at", "op": "older_than_days", "value": 30}, {"ada"}),
    ({"field": "last_interaction_at", "op": "within_last_days", "value": 7}, {"bob"}),
    ({"field": "last_interaction_at", "op": "is_empty"}, {"cy"}),
    ({"field": "subscription_end_date", "op": "within_next_days", "value": 30}, {"ada"}),
    ({"field": "subscription_end_date", "op": "after", "value": "2026-04-01"}, {"bob"}),
    ({"field": "product_requests", "op": "contains", "value": "sso"}, {"ada", "bob"}),
    ({"field": "product_requests", "op": "not_contains", "value": "api"}, {"bob", "cy"}),
    ({"field": "custom_fields.product_requests", "op": "is_empty"}, {"cy"}),
    ({"field": "industry", "op": "eq", "value": "Fintech"}, {"ada"}),
    ({"field": "company_size", "op": "in", "value": ["11-50", "51-200"]}, {"ada"}),
    ({"field": "company", "op": "contains", "value": "100%_"}, {"bob"}),
    ({"field": "company", "op": "is_empty"}, {"cy"}),
    ({"field": "email", "op": "is_empty"}, {"cy"}),
    ({"field": "score", "op": "lt", "value": 50}, {"bob"}),
    ({"field": "country", "op": "eq", "value": "DE"}, {"ada"}),
    (
        {
            "and": [
                {
                    "or": [
                        {"field": "score", "op": "gt", "value": 10},
                        {"field": "score", "op": "is_empty"},
                    ]
                },
                {"not": {"field": "lifecycle_stage", "op": "eq", "value": "customer"}},
            ]
        },
        {"ada", "cy"},
    ),
]


@pytest.fixture(scope="class")
async def people(database: Database) -> tuple[str, dict[str, str]]:
    workspace = unique("ws-")
    ids: dict[str, str] = {}
    async with database.uow() as uow:
        store = ContactsStore(uow.session)
        for name, person in PEOPLE.items():
            contact_id = str(uuid.uuid4())
            ids[contact_id] = name
            values = {k: v for k, v in person.items() if k not in ("tags", "lists")}
            store.add(
                Contact(
                    id=contact_id,
                    workspace=workspace,
                    email=values.pop("email", f"{name}@example.com"),
                    subscription_status="subscribed",
                    created_at=NOW - timedelta(days=100),
                    updated_at=NOW,
                    **values,
                )
            )
            await store.flush()
            await store.add_tags(workspace, [(contact_id, t) for t in person["tags"]])
            for name_of_list in person["lists"]:
                await store.add_to_list(workspace, contact_id, name_of_list)
        # another workspace's look-alike must never match
        store.add(
            Contact(
                id=str(uuid.uuid4()),
                workspace="elsewhere",
                email="ada@example.com",
                lifecycle_stage="lead",
                subscription_status="subscribed",
                company="Acme",
                custom_fields={},
                created_at=NOW,
                updated_at=NOW,
            )
        )
    return workspace, ids


class TestSegmentLanguage:
    """The same filters mean the same contacts on SQLite and PostgreSQL."""

    @pytest.mark.parametrize(("raw", "expected"), CASES)
    async def test_the_filter_selects_the_expected_contacts(
        self,
        database: Database,
        people: tuple[str, dict[str, str]],
        raw: dict[str, Any],
        expected: set[str],
    ) -> None:
        workspace, ids = people
        node = segments_domain.parse_filter(raw, domain.DEFAULT_FIELDS)
        async with database.uow() as uow:
            store = ContactsStore(uow.session)
            page = await store.page(workspace, node, NOW, "created_at", None, 100)
            count = await store.count(workspace, node, NOW)
        assert {ids[c.id] for c in page.items} == expected
        assert count == len(expected)


def contact_row(workspace: str, **values: Any) -> dict[str, Any]:
    """A whole `contacts` row (every column), as the capture path inserts them."""
    row: dict[str, Any] = {column.name: None for column in CONTACTS.c}
    row |= {"id": str(uuid.uuid4()), "workspace": workspace, "lifecycle_stage": "lead"}
    row |= {"subscription_status": "subscribed", "custom_fields": {}}
    row |= {"created_at": NOW, "updated_at": NOW}
    return row | values


class TestBulkWrites:
    """The bulk insert of the capture path stores every value as the ORM would read it back."""

    async def test_awkward_values_round_trip(self, database: Database) -> None:
        workspace = unique("ws-")
        tricky = {
            "quote": 'say "hi" \\ back\\slash',
            "nothing": None,
            "nested": {"list": [1, 2.5, None, "x"], "empty": {}},
            "looks_like_json": '{"a": 1}',
            "unicode": "Zoë ✓ 日本",
        }
        rows = [
            contact_row(
                workspace,
                email=f"{uuid.uuid4().hex[:8]}@example.com",
                first_name='O\'Brien \\ "Q"',
                score=0.1,
                custom_fields=tricky,
                # naive means UTC, as `UtcDateTime` stores it
                last_interaction_at=datetime(2026, 2, 1, 9, 30, 15, 123456, tzinfo=UTC).replace(
                    tzinfo=None
                ),
                updated_at=datetime(2026, 2, 1, 10, 0, tzinfo=timezone(timedelta(hours=2))),
            ),
            contact_row(workspace, phone="+4930901829", company="Ünïcødé GmbH"),
        ]
        activities = [
            {
                "id": str(uuid.uuid4()),
                "workspace": workspace,
                "contact_id": rows[0]["id"],
                "kind": "lead.captured",
                "occurred_at": NOW,
                "data": {"utm": {}, "page_url": None, "tags": ["a"], "text": "line\nbreak"},
            }
        ]
        async with database.uow() as uow:
            store = ContactsStore(uow.session)
            await store.insert_contacts(rows)
            await store.add_activities(activities)
        async with database.uow() as uow:
            found = {
                c.id: c
                for c in (
                    await uow.session.execute(select(Contact).where(Contact.workspace == workspace))
                ).scalars()
            }
            activity = (
                await uow.session.execute(
                    select(Activity).where(Activity.contact_id == rows[0]["id"])
                )
            ).scalar_one()
        first, second = found[rows[0]["id"]], found[rows[1]["id"]]
        assert first.first_name == rows[0]["first_name"]
        assert first.score == 0.1
        assert first.custom_fields == tricky
        assert first.last_interaction_at == datetime(2026, 2, 1, 9, 30, 15, 123456, tzinfo=UTC)
        assert first.updated_at == datetime(2026, 2, 1, 8, 0, tzinfo=UTC)
        assert first.phone is None
        assert second.company == "Ünïcødé GmbH"
        assert second.custom_fields == {}
        assert second.email is None
        assert second.last_interaction_at is None
        assert activity.data == activities[0]["data"]

    async def test_a_bulk_insert_of_an_email_already_taken_fails_on_the_unique_constraint(
        self, database: Database
    ) -> None:
        """What makes a capture racing another one for the same person retry its batch."""
        workspace = unique("ws-")
        email = f"{uuid.uuid4().hex[:8]}@example.com"
        async with database.uow() as uow:
            await ContactsStore(uow.session).insert_contacts([contact_row(workspace, email=email)])
        with pytest.raises(IntegrityError):
            async with database.uow() as uow:
                rows = [contact_row(workspace, email=f"{uuid.uuid4().hex[:8]}@example.com")]
                rows.append(contact_row(workspace, email=email))
                await ContactsStore(uow.session).insert_contacts(rows)

    async def test_tags_given_twice_in_a_batch_or_already_held_are_kept_once(
        self, database: Database
    ) -> None:
        workspace = unique("ws-")
        row = contact_row(workspace, email=f"{uuid.uuid4().hex[:8]}@example.com")
        async with database.uow() as uow:
            store = ContactsStore(uow.session)
            await store.insert_contacts([row])
            await store.add_tags(workspace, [(row["id"], "vip")])
        async with database.uow() as uow:
            store = ContactsStore(uow.session)
            await store.add_tags(workspace, [(row["id"], t) for t in ("vip", "new", "new")])
            tags = await store.tags_of([row["id"]])
        assert tags == {row["id"]: ["new", "vip"]}

    async def test_a_bulk_update_sets_only_its_columns_of_each_row(
        self, database: Database
    ) -> None:
        workspace = unique("ws-")
        rows = [
            contact_row(workspace, email=f"{i}-{uuid.uuid4().hex[:8]}@example.com", company="Old")
            for i in range(3)
        ]
        async with database.uow() as uow:
            await ContactsStore(uow.session).insert_contacts(rows)
        later = NOW + timedelta(hours=1)
        async with database.uow() as uow:
            await ContactsStore(uow.session).update_contacts(
                [
                    {
                        "id": r["id"],
                        "first_name": f"N{i}",
                        "custom_fields": {"k": i},
                        "updated_at": later,
                    }
                    for i, r in enumerate(rows[:2])
                ]
            )
        async with database.uow() as uow:
            found = {
                c.id: c
                for c in (
                    await uow.session.execute(select(Contact).where(Contact.workspace == workspace))
                ).scalars()
            }
        for i, row in enumerate(rows[:2]):
            assert found[row["id"]].first_name == f"N{i}"
            assert found[row["id"]].custom_fields == {"k": i}
            assert found[row["id"]].updated_at == later
            assert found[row["id"]].company == "Old"
        untouched = found[rows[2]["id"]]
        assert untouched.first_name is None
        assert untouched.updated_at == NOW


def captured(email: str | None, phone: str | None = None, **fields: Any) -> LeadCaptured:
    return LeadCaptured(
        submission_id=uuid.uuid4().hex,
        source="form",
        dedupe_key=f"email:{email}" if email else f"phone:{phone}",
        email=email,
        phone=phone,
        captured_at=NOW,
        **fields,
    )


async def capture_with_retries(database: Database, workspace: str, lead: LeadCaptured) -> int:
    """What the bus does with a failing batch: retry it; returns how many attempts it took."""
    for attempt in range(1, 20):
        try:
            async with transaction(database.uow()) as tx:
                await captures.capture_leads([captures.CapturedLead(workspace, lead)], tx, NOW)
            return attempt
        except (IntegrityError, DBAPIError):
            await asyncio.sleep(0.01 * attempt)
    raise AssertionError("capture never succeeded")


class TestCaptureView:
    async def test_one_statement_reads_what_the_separate_queries_read(
        self, database: Database
    ) -> None:
        """`capture_view` (one statement on PostgreSQL) against the store's own queries."""
        workspace, other = unique("ws-"), unique("ws-")
        email = f"{uuid.uuid4().hex[:8]}@example.com"
        phone = f"+4930{uuid.uuid4().int % 10**7:07d}"
        by_email = contact_row(workspace, email=email, score=0.5, custom_fields={"n": [1]})
        by_phone = contact_row(workspace, phone=phone, last_interaction_at=NOW)
        elsewhere = contact_row(other, email=email)
        # Found by its email and by its phone: read (and its labels) once.
        both = contact_row(workspace, email=f"b{email}", phone=f"{phone}9")
        async with database.uow() as uow:
            store = ContactsStore(uow.session)
            await store.insert_contacts([by_email, by_phone, elsewhere, both])
            await store.add_tags(workspace, [(by_email["id"], "vip"), (by_email["id"], "new")])
            await store.add_tags(workspace, [(both["id"], "x")])
            await store.add_to_list(workspace, both["id"], "y")
            await store.add_to_list(workspace, by_email["id"], "customers")
            await store.save_field_definition(
                workspace, FieldDefinition("seats", "number", "Seats", True, (), 1.0, 500.0)
            )
            await store.save_field_definition(
                workspace, FieldDefinition("plan", "select", None, False, ("a", "b"))
            )
            store.add(
                Segment(
                    id=str(uuid.uuid4()),
                    workspace=workspace,
                    name="Hot",
                    filter={"field": "score", "op": "gte", "value": 50},
                    time_based=False,
                    created_at=NOW,
                )
            )
            await record_erasures(uow.session, erasures, workspace, ["d1", "d2"], NOW)
            await record_erasures(uow.session, erasures, other, ["d3"], NOW)
        asked = (
            ["d1", "d3", "d4"],
            [email, "nobody@example.com", f"b{email}"],
            [phone, f"{phone}9"],
        )
        async with database.uow() as uow:
            view = await ContactsStore(uow.session).capture_view(workspace, *asked)
        async with database.uow() as uow:
            store = ContactsStore(uow.session)
            contacts = await store.contact_states_by_identities(workspace, *asked[1:])
            ids = [c["id"] for c in contacts]
            expected = CaptureView(
                await store.erasures(workspace, asked[0]),
                await store.field_definitions(workspace),
                contacts,
                await store.tags_of(ids),
                await store.lists_of(ids),
                await store.segments(workspace),
            )

        def by_id(row: dict[str, Any]) -> str:
            return str(row["id"])

        def segments(view: CaptureView) -> list[tuple[Any, ...]]:
            return [(s.id, s.name, s.filter, s.time_based, s.created_at) for s in view.segments]

        assert view.erased == expected.erased
        assert list(view.erased) == ["d1"]
        assert view.definitions == expected.definitions
        assert view.definitions["seats"].min == 1.0
        assert sorted(view.contacts, key=by_id) == sorted(expected.contacts, key=by_id)
        assert sorted(c["id"] for c in view.contacts) == sorted(
            [by_email["id"], by_phone["id"], both["id"]]
        )
        assert view.tags == expected.tags
        assert view.tags[by_email["id"]] == ["new", "vip"]
        assert (view.tags[both["id"]], view.lists[both["id"]]) == (["x"], ["y"])
        assert view.lists == expected.lists
        assert segments(view) == segments(expected)
        assert len(view.segments) == 1
        assert (view.rotation, view.rotation_read) == (None, False)

    async def test_the_rotation_it_reads_is_the_rotations_own_read(
        self, database: Database
    ) -> None:
        workspace = unique("ws-")
        async with database.uow() as uow:
            view = await ContactsStore(uow.session).capture_view(workspace, [], [], [], True)
        assert (view.rotation, view.rotation_read) == (None, True)  # no assignment at capture
        await capture_team(database, workspace, "weighted", {"cy": 3, "ann": 2, "bob": 1})
        async with transaction(database.uow()) as tx:  # the rotation moved: credits, last owner
            items = [captures.CapturedLead(workspace, captured("x@example.com"))]
            await captures.capture_leads(items, tx, NOW)
        async with database.uow() as uow:
            view = await ContactsStore(uow.session).capture_view(workspace, [], [], [], True)
        async with database.uow() as uow:
            expected = await ContactsStore(uow.session).capture_rotation(workspace)
        assert view.rotation_read
        assert expected is not None
        assert view.rotation == expected
        assert [m.owner_id for m in expected.rotation.members] == [
            o.id for o in await self.owners_in_order(database, workspace)
        ]

    async def test_a_team_row_another_transaction_holds_is_left_to_the_rotations_own_read(
        self, database: Database
    ) -> None:
        # Holding its contacts' locks, the view must not wait for the team: an assignment that
        # holds the team and waits for one of those contacts would deadlock with it.
        if database.engine.dialect.name != "postgresql":
            pytest.skip("SQLite has no row locks")
        workspace = unique("ws-")
        team_id = await capture_team(database, workspace, "round_robin", {"ann": 1})
        async with database.uow() as holder:
            await holder.session.execute(
                text("SELECT id FROM teams WHERE id = :id FOR UPDATE"), {"id": team_id}
            )
            async with database.uow() as uow, asyncio.timeout(10):
                store = ContactsStore(uow.session)
                view = await store.capture_view(workspace, [], ["x@example.com"], [], True)
        assert (view.rotation, view.rotation_read) == (None, False)

    async def owners_in_order(self, database: Database, workspace: str) -> list[Any]:
        async with transaction(database.uow()) as tx:
            return sorted(await tx.store.owners(workspace), key=lambda o: (o.position, o.id))


class TestCapturesOfSeveralWorkspaces:
    async def test_a_segment_of_one_workspace_sees_the_batchs_new_contacts(
        self, database: Database
    ) -> None:
        """A batch's writes wait for its last statement only when no segment of any of its
        workspaces reads them back: a workspace without segments captured in the same batch
        (first) does not hide the other's new and updated contacts from its segment."""
        plain, segmented = sorted([unique("ws-"), unique("ws-")])
        known = f"{uuid.uuid4().hex[:8]}@example.com"
        async with transaction(database.uow()) as tx:
            await captures.capture_leads(
                [captures.CapturedLead(segmented, captured(known))], tx, NOW
            )
            segment, members = await segments.create_segment(
                segmented, "Acme", {"field": "company", "op": "eq", "value": "Acme"}, tx, NOW
            )
        assert members == 0
        new = f"{uuid.uuid4().hex[:8]}@example.com"
        leads = [
            captures.CapturedLead(plain, captured(f"{uuid.uuid4().hex[:8]}@example.com")),
            captures.CapturedLead(segmented, captured(new, company="Acme")),
            captures.CapturedLead(segmented, captured(known, company="Acme")),
        ]
        async with transaction(database.uow()) as tx:
            await captures.capture_leads(leads, tx, NOW)
            tx.uow.claim_at_commit("contacts.leads", ["e1", "e2", "e3"])
        async with transaction(database.uow()) as tx:
            found = list(
                await tx.store.session.scalars(
                    select(Contact).where(Contact.workspace == segmented)
                )
            )
            ids = {c.email: c.id for c in found}
            entered = await tx.store.members_among(segment.id, ids.values())
        assert entered == {ids[new], ids[known]}


class TestConcurrentCaptures:
    async def test_concurrent_captures_of_one_person_create_one_contact(
        self, database: Database
    ) -> None:
        workspace = unique("ws-")
        email = f"{uuid.uuid4().hex[:8]}@example.com"
        leads = [
            captured(email, "+4930901820" if i % 2 else None, first_name=f"N{i}") for i in range(12)
        ]
        attempts = await asyncio.gather(
            *(capture_with_retries(database, workspace, lead) for lead in leads)
        )
        async with database.uow() as uow:
            session = uow.session
            contacts = (
                (await session.execute(select(Contact).where(Contact.workspace == workspace)))
                .scalars()
                .all()
            )
            activities = await session.scalar(
                select(func.count())
                .select_from(Activity)
                .where(Activity.workspace == workspace, Activity.kind == "lead.captured")
            )
        assert len(contacts) == 1
        assert contacts[0].phone == "+4930901820"
        assert activities == len(leads), "every capture is on the timeline exactly once"
        assert max(attempts) >= 1

    async def test_concurrent_captures_by_email_and_by_phone_alone_end_as_one_contact(
        self, database: Database
    ) -> None:
        workspace = unique("ws-")
        email = f"{uuid.uuid4().hex[:8]}@example.com"
        first = captured(email, "+4930901823")
        await capture_with_retries(database, workspace, first)
        racing = [captured(email, company="A"), captured(None, "+4930901823", company="B")] * 5
        await asyncio.gather(*(capture_with_retries(database, workspace, le) for le in racing))
        async with database.uow() as uow:
            count = await uow.session.scalar(
                select(func.count()).select_from(Contact).where(Contact.workspace == workspace)
            )
        assert count == 1


class TestAssignmentAtCapture:
    async def test_concurrent_captures_share_one_fair_weighted_rotation(
        self, database: Database
    ) -> None:
        workspace = unique("ws-")
        team_id = await capture_team(database, workspace, "weighted", {"ann": 2, "bob": 1, "cy": 0})
        batches = [
            [captured(f"{uuid.uuid4().hex[:8]}@example.com") for _ in range(3)] for _ in range(4)
        ]

        async def capture(batch: list[LeadCaptured]) -> None:
            for attempt in range(1, 20):
                try:
                    async with transaction(database.uow()) as tx:
                        items = [captures.CapturedLead(workspace, lead) for lead in batch]
                        await captures.capture_leads(items, tx, NOW)
                    return
                except (IntegrityError, DBAPIError):
                    await asyncio.sleep(0.01 * attempt)
            raise AssertionError("capture never succeeded")

        await asyncio.gather(*(capture(batch) for batch in batches))
        async with transaction(database.uow()) as tx:
            found = await tx.store.owners(workspace, team_id)
            by_id = {o.id: o.name for o in found}
            contacts = list(
                await tx.store.session.scalars(
                    select(Contact).where(Contact.workspace == workspace)
                )
            )
            credits = {o.name: o.credit for o in found}
            last = (await tx.store.team(workspace, team_id)).last_owner_id  # type: ignore[union-attr]
        chosen = [by_id[c.owner_id] for c in contacts if c.owner_id]
        assert len(chosen) == 12, "every new contact got an owner"
        # 12 turns of a 2:1 rotation: exactly its shares, and the rotation back at its start.
        assert (chosen.count("ann"), chosen.count("bob"), chosen.count("cy")) == (8, 4, 0)
        assert credits == {"ann": 0, "bob": 0, "cy": 0}
        assert by_id[last or ""] in ("ann", "bob")

    async def test_a_small_batch_reads_its_rotation_in_the_capture_view(
        self, database: Database
    ) -> None:
        """A lead or two: the view reads (and locks) the rotation, a round trip fewer on a
        lead's path; a bigger batch reads it once its leads are matched, as before."""
        if database.engine.dialect.name != "postgresql":
            pytest.skip("SQLite reads the capture view query by query")
        workspace = unique("ws-")
        team_id = await capture_team(database, workspace, "round_robin", {"ann": 1, "bob": 1})
        statements: list[str] = []

        def count(_: Any, __: Any, statement: str, *___: Any) -> None:
            if "capture_assignments" in statement:
                statements.append(statement)

        async def capture(size: int) -> list[str | None]:
            statements.clear()
            batch = [captured(f"{uuid.uuid4().hex[:8]}@example.com") for _ in range(size)]
            async with transaction(database.uow()) as tx:
                items = [captures.CapturedLead(workspace, lead) for lead in batch]
                await captures.capture_leads(items, tx, NOW)
            async with transaction(database.uow()) as tx:  # written at the commit
                found = await tx.store.session.scalars(
                    select(Contact.owner_id).where(
                        Contact.workspace == workspace,
                        Contact.email.in_([lead.email for lead in batch]),
                    )
                )
                return list(found)

        sync_engine = database.engine.sync_engine
        event.listen(sync_engine, "before_cursor_execute", count)
        try:
            one = await capture(1)
            one_reads = ["found AS" in statement for statement in statements]
            two = await capture(2)
            two_reads = ["found AS" in statement for statement in statements]
            big = await capture(3)
        finally:
            event.remove(sync_engine, "before_cursor_execute", count)
        assert one_reads == two_reads == [True], "the view read the rotation, nothing else"
        assert ["found AS" in statement for statement in statements] == [False], "a read of its own"
        small = one + two
        by_id = {o.id: o.name for o in await self.owners_of(database, workspace, team_id)}
        # One fair rotation across both ways of reading it: ann, bob, ann, bob, ann, bob.
        assert sorted(by_id[o] for o in [*small, *big] if o) == ["ann"] * 3 + ["bob"] * 3

    async def owners_of(self, database: Database, workspace: str, team_id: str) -> list[Any]:
        async with transaction(database.uow()) as tx:
            return list(await tx.store.owners(workspace, team_id))


@dataclass
class Distributed:
    app: Any
    client: Any
    workspace: str
    headers: dict[str, str]
    kafka_bootstrap: str
    prefix: str


@pytest.fixture
async def distributed(kafka_bootstrap: str, postgres_url: str) -> AsyncIterator[Distributed]:
    prefix = unique("ct") + "."
    settings = distributed_settings(kafka_bootstrap, postgres_url, prefix)
    app = create_app(build_spec(sweep_interval_s=3600), settings)
    workspace = unique("ws-")
    async with running(app) as client:
        await app.state.ctx.bus.wait_connected(60)
        yield Distributed(
            app,
            client,
            workspace,
            token(workspace, "contacts:read", "contacts:write"),
            kafka_bootstrap,
            prefix,
        )


@pytest.mark.kafka
@pytest.mark.postgres
class TestOnKafkaAndPostgres:
    async def test_leads_become_contacts_and_contact_events_reach_kafka(
        self, distributed: Distributed
    ) -> None:
        bus = distributed.app.state.ctx.bus
        email = f"{uuid.uuid4().hex[:8]}@example.com"
        for company in ("A", "B"):
            lead = captured(email, company=company)
            envelope = Envelope.of(lead, source="/leadwire/ingest", workspace=distributed.workspace)
            await bus.publish(
                topics.LEADS, topics.contact_key(distributed.workspace, lead.dedupe_key), envelope
            )

        async def updated() -> bool:
            response = await distributed.client.get(
                "/v1/contacts/lookup", params={"email": email}, headers=distributed.headers
            )
            return bool(response.status_code == 200 and response.json()["company"] == "B")

        await eventually(updated, timeout=60)
        contact = (
            await distributed.client.get(
                "/v1/contacts/lookup", params={"email": email}, headers=distributed.headers
            )
        ).json()

        # The contact's events, as a downstream team reads them: from the Kafka topic.
        key = topics.contact_key(distributed.workspace, contact["id"])
        events = [
            Envelope.from_bytes(value)
            for _, record_key, value in await read_all(
                distributed.kafka_bootstrap, distributed.prefix + topics.CONTACTS, 2
            )
            if record_key == key
        ]
        assert [e.type for e in events] == ["contact.created", "contact.updated"]
        created, updated_event = (parse_contact_event(e) for e in events)
        assert isinstance(created, ContactCreated)
        assert isinstance(updated_event, ContactUpdated)
        assert (created.contact.email, created.contact.company) == (email, "A")
        assert updated_event.contact.company == "B"
        assert {e.workspace for e in events} == {distributed.workspace}

    async def test_an_invalid_command_lands_on_the_kafka_dlq_and_a_valid_one_applies(
        self, distributed: Distributed
    ) -> None:
        created = await distributed.client.post(
            "/v1/contacts",
            json={"email": f"{uuid.uuid4().hex[:8]}@example.com"},
            headers=distributed.headers,
        )
        contact_id = created.json()["id"]
        bus = distributed.app.state.ctx.bus
        bad = Envelope.of(
            SetLifecycle(contact_id=contact_id, stage="churned"),
            source="/leadwire/workflows",
            workspace=distributed.workspace,
        )
        good = Envelope.of(
            AddTag(contact_id=contact_id, tag="hot"),
            source="/leadwire/workflows",
            workspace=distributed.workspace,
        )
        key = topics.contact_key(distributed.workspace, contact_id)
        await bus.publish(topics.CONTACT_COMMANDS, key, bad)
        await bus.publish(topics.CONTACT_COMMANDS, key, good)

        async def tagged() -> bool:
            response = await distributed.client.get(
                f"/v1/contacts/{contact_id}", headers=distributed.headers
            )
            return bool(response.json()["tags"] == ["hot"])

        await eventually(tagged, timeout=60)

        async def dead_lettered() -> bool:
            return len(await bus.dead_letters(topics.CONTACT_COMMANDS)) == 1

        await eventually(dead_lettered, timeout=60)
        record = (await bus.dead_letters(topics.CONTACT_COMMANDS))[0]
        assert Envelope.from_bytes(record.value).id == bad.id
        assert "churn_reason" in record.headers["leadwire-error"]

    async def test_erase_leaves_no_personal_data_in_the_postgres_schema(
        self, distributed: Distributed
    ) -> None:
        email = f"erase-{uuid.uuid4().hex[:8]}@example.com"
        created = await distributed.client.post(
            "/v1/contacts",
            json={"email": email, "first_name": "Forgetme", "tags": ["t"], "lists": ["l"]},
            headers=distributed.headers,
        )
        contact_id = created.json()["id"]
        await distributed.client.post(
            f"/v1/contacts/{contact_id}/notes",
            json={"text": "private"},
            headers=distributed.headers,
        )
        deleted = await distributed.client.delete(
            f"/v1/contacts/{contact_id}", headers=distributed.headers
        )
        assert deleted.status_code == 204
        engine = distributed.app.state.ctx.engine
        async with engine.connect() as conn:
            tables = (
                (
                    await conn.execute(
                        text(
                            "SELECT table_name FROM information_schema.tables"
                            " WHERE table_schema = current_schema()"
                        )
                    )
                )
                .scalars()
                .all()
            )
            for table in tables:
                dump = repr((await conn.execute(text(f'SELECT * FROM "{table}"'))).all())
                for secret in (email, "Forgetme", "private"):
                    assert secret not in dump, (table, secret)
            tags = await conn.scalar(
                select(func.count())
                .select_from(ContactTag)
                .where(ContactTag.contact_id == contact_id)
            )
            lists = await conn.scalar(
                select(func.count())
                .select_from(ContactList)
                .where(ContactList.contact_id == contact_id)
            )
        assert (tags, lists) == (0, 0)

"""Contacts' capture, merge and owner-rotation use cases, run against the in-memory repository
of `fakes.py` (no database): what they write and what they emit."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from services.contacts.captures.handlers import CapturedLead, capture_leads
from services.contacts.commands.handlers import (
    CommandsRepository,
    PolledCommand,
    handle_commands,
)
from services.contacts.duplicates.handlers import merge_contacts
from services.contacts.models import Contact, Owner, Team
from services.contacts.owners.handlers import (
    assign_owner,
    clear_capture_assignment,
    set_capture_assignment,
)
from shared.errors import Conflict, InvalidInput, NotFound
from shared.events import topics
from shared.events.contact_commands import AddTag, AssignOwner
from shared.events.contacts import contact_snapshot_data
from shared.events.ingest import LeadCaptured
from shared.identity import digests, identities
from shared.uow import Transaction
from tests.unit.contacts.fakes import COLUMNS as CONTACT_COLUMNS
from tests.unit.contacts.fakes import FakeTransaction

WS = "ws-unit"
NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def random_email() -> str:
    return f"lead-{uuid.uuid4().hex[:10]}@example.com"


def lead(email: str | None, phone: str | None = None, **fields: Any) -> LeadCaptured:
    return LeadCaptured(
        submission_id=f"sub_{uuid.uuid4().hex}",
        source="form",
        dedupe_key=f"email:{email}" if email else f"phone:{phone}",
        email=email,
        phone=phone,
        captured_at=fields.pop("captured_at", NOW),
        **fields,
    )


async def capture(
    tx: FakeTransaction, *leads: LeadCaptured, now: datetime = NOW
) -> dict[str, bool]:
    return await capture_leads([CapturedLead(WS, item, "corr-1") for item in leads], tx, now)


def contact(email: str | None, phone: str | None = None, **values: Any) -> Contact:
    at = values.pop("updated_at", NOW - timedelta(days=1))
    return Contact(
        id=values.pop("id", uuid.uuid4().hex),
        workspace=WS,
        email=email,
        phone=phone,
        lifecycle_stage=values.pop("lifecycle_stage", "lead"),
        subscription_status="subscribed",
        custom_fields=values.pop("custom_fields", {}),
        created_at=at,
        updated_at=at,
        merged_into=None,
        **values,
    )


class TestCaptureLeads:
    async def test_a_new_person_becomes_a_contact_with_tags_and_a_created_event(self) -> None:
        tx, email = FakeTransaction(), random_email()
        await capture(tx, lead(email, first_name="Ada", tags=["webinar"]))
        [created] = tx.store.contacts.values()
        assert (created.email, created.first_name, created.lifecycle_stage) == (
            email,
            "Ada",
            "lead",
        )
        assert tx.store.tag_sets[created.id] == {"webinar"}
        assert [r["to_stage"] for r in tx.store.lifecycle] == ["lead"]
        [(topic, key, event)] = tx.emitted
        assert (topic, key, event.type) == (
            topics.CONTACTS,
            topics.contact_key(WS, created.id),
            "contact.created",
        )
        assert event.correlationid == "corr-1"
        assert event.data["contact"]["tags"] == ["webinar"]

    async def test_a_known_email_updates_that_contact_and_empty_values_change_nothing(
        self,
    ) -> None:
        tx, email = FakeTransaction(), random_email()
        await capture(tx, lead(email, first_name="Ada"))
        later = NOW + timedelta(hours=1)
        await capture(
            tx, lead(email, first_name=None, company="Acme", captured_at=later), now=later
        )
        [same] = tx.store.contacts.values()
        assert (same.first_name, same.company, same.last_interaction_at) == ("Ada", "Acme", later)
        assert tx.types() == ["contact.created", "contact.updated"]
        changes = tx.emitted[1][2].data["changes"]
        assert changes["company"]["after"] == "Acme"
        assert "first_name" not in changes
        assert [a["data"]["matched_by"] for a in tx.store.activities] == ["new", "email"]

    async def test_a_known_phone_matches_when_the_email_is_new(self) -> None:
        tx = FakeTransaction()
        await capture(tx, lead(None, phone="+4930901820"))
        await capture(tx, lead(random_email(), phone="+4930901820"))
        [same] = tx.store.contacts.values()
        assert same.email is not None  # the phone's contact took the new email
        assert [a["data"]["matched_by"] for a in tx.store.activities] == ["new", "phone"]

    async def test_a_lead_captured_before_its_person_was_erased_is_dropped(self) -> None:
        tx, email = FakeTransaction(), random_email()
        old = lead(email, captured_at=NOW - timedelta(days=2))
        for digest in digests(WS, [old.dedupe_key, *identities(email, None)]):
            tx.store.erased[digest] = NOW - timedelta(days=1)
        await capture(tx, old)
        assert tx.store.contacts == {}
        assert tx.emitted == []
        await capture(tx, lead(email))  # captured after the erasure: a new, consented capture
        assert len(tx.store.contacts) == 1


class TestMergeContacts:
    async def test_moves_tags_and_history_to_the_survivor_and_redirects_the_merged_id(
        self,
    ) -> None:
        tx = FakeTransaction()
        survivor, merged = contact(random_email()), contact(random_email(), first_name="Bo")
        for c in (survivor, merged):
            tx.store.add(c)
        await tx.store.add_tags(WS, [(survivor.id, "a"), (merged.id, "b")])
        await tx.store.add_activities([{"contact_id": merged.id, "kind": "note"}])
        result = await merge_contacts(WS, survivor.id, merged.id, {}, tx, NOW)
        assert result is survivor
        assert merged.merged_into == survivor.id
        assert (merged.email, merged.first_name) == (None, None)
        assert survivor.first_name == "Bo"  # the only non-empty value wins
        assert tx.store.tag_sets[survivor.id] == {"a", "b"}
        assert merged.id not in tx.store.tag_sets
        assert {a["contact_id"] for a in tx.store.activities} == {survivor.id}
        [record] = tx.store.merges
        assert (record.survivor_id, record.merged_id) == (survivor.id, merged.id)
        assert tx.types() == ["contact.merged"]
        assert tx.emitted[0][2].data["contact"]["tags"] == ["a", "b"]

    async def test_the_survivor_may_take_the_merged_contacts_email(self) -> None:
        tx = FakeTransaction()
        keep, take = random_email(), random_email()
        survivor, merged = contact(keep), contact(take)
        for c in (survivor, merged):
            tx.store.add(c)
        await merge_contacts(WS, survivor.id, merged.id, {"email": "merged"}, tx, NOW)
        assert (survivor.email, merged.email) == (take, None)

    async def test_a_contact_is_not_merged_into_itself(self) -> None:
        tx = FakeTransaction()
        one = contact(random_email())
        tx.store.add(one)
        with pytest.raises(InvalidInput):
            await merge_contacts(WS, one.id, one.id, {}, tx, NOW)
        assert tx.emitted == []

    async def test_a_contact_merged_away_cannot_be_merged_again(self) -> None:
        tx = FakeTransaction()
        a, b, c = (contact(random_email()) for _ in range(3))
        for x in (a, b, c):
            tx.store.add(x)
        await merge_contacts(WS, a.id, b.id, {}, tx, NOW)
        with pytest.raises(Conflict):
            await merge_contacts(WS, c.id, b.id, {}, tx, NOW)


def team_of(tx: FakeTransaction, rule: str, *owners: tuple[str, bool, int]) -> Team:
    team = Team(id=f"team-{uuid.uuid4().hex[:6]}", workspace=WS, name="Sales", rule=rule)
    team.last_owner_id = None
    tx.store.add(team)
    for position, (name, active, weight) in enumerate(owners, 1):
        tx.store.add(
            Owner(
                id=name,
                workspace=WS,
                name=name.title(),
                email=f"{name}@example.com",
                active=active,
                team_id=team.id,
                weight=weight,
                credit=0,
                position=position,
            )
        )
    return team


async def assign_many(tx: FakeTransaction, team: Team, count: int) -> list[str | None]:
    chosen = []
    for _ in range(count):
        c = contact(random_email())
        tx.store.add(c)
        chosen.append((await assign_owner(WS, c.id, None, team.id, tx, NOW)).owner_id)
    return chosen


class TestOwnerRotation:
    async def test_round_robin_takes_turns_and_skips_inactive_owners(self) -> None:
        tx = FakeTransaction()
        team = team_of(tx, "round_robin", ("ann", True, 1), ("bob", False, 1), ("cy", True, 1))
        assert await assign_many(tx, team, 4) == ["ann", "cy", "ann", "cy"]
        assert team.last_owner_id == "cy"

    async def test_weighted_rotation_gives_each_owner_its_share(self) -> None:
        tx = FakeTransaction()
        team = team_of(tx, "weighted", ("ann", True, 2), ("bob", True, 1))
        chosen = await assign_many(tx, team, 6)
        assert (chosen.count("ann"), chosen.count("bob")) == (4, 2)
        assert chosen[:3] == ["ann", "bob", "ann"]  # smooth: never three in a row

    async def test_an_assignment_publishes_owner_assigned_then_the_update(self) -> None:
        tx = FakeTransaction()
        team = team_of(tx, "round_robin", ("ann", True, 1))
        c = contact(random_email())
        tx.store.add(c)
        await assign_owner(WS, c.id, None, team.id, tx, NOW)
        assert tx.types() == ["contact.owner_assigned", "contact.updated"]
        assigned = tx.emitted[0][2].data
        assert (assigned["owner_id"], assigned["rule"], assigned["owner_email"]) == (
            "ann",
            "round_robin",
            "ann@example.com",
        )
        assert [a["kind"] for a in tx.store.activities] == ["contact.owner_assigned"]

    async def test_a_team_without_an_active_owner_is_refused(self) -> None:
        tx = FakeTransaction()
        team = team_of(tx, "round_robin", ("ann", False, 1))
        c = contact(random_email())
        tx.store.add(c)
        with pytest.raises(InvalidInput):
            await assign_owner(WS, c.id, None, team.id, tx, NOW)
        assert c.owner_id is None
        assert tx.emitted == []


class TestAssignmentAtCapture:
    """A workspace's assignment-at-capture rule: new contacts get their owner from the team's
    rotation inside the capture, and `contact.created` already names it."""

    async def test_new_contacts_take_the_teams_turns_and_the_events_name_the_owner(
        self,
    ) -> None:
        tx = FakeTransaction()
        team = team_of(tx, "round_robin", ("ann", True, 1), ("bob", False, 1), ("cy", True, 1))
        await set_capture_assignment(WS, team.id, tx, NOW)
        emails = [random_email() for _ in range(3)]
        await capture(tx, *(lead(e) for e in emails))
        owners = [tx.store.contacts[by_email(tx, e)].owner_id for e in emails]
        assert owners == ["ann", "cy", "ann"]
        assert team.last_owner_id == "ann"
        assert tx.types() == ["contact.created", "contact.owner_assigned"] * 3
        created, assigned = (tx.emitted[i][2].data for i in (0, 1))
        assert created["contact"]["owner_id"] == "ann"
        assert (created["owner_name"], created["owner_email"]) == ("Ann", "ann@example.com")
        assert assigned["contact_id"] == created["contact"]["id"]
        assert (assigned["owner_id"], assigned["team_id"], assigned["rule"]) == (
            "ann",
            team.id,
            "round_robin",
        )
        assert "previous_owner_id" not in assigned
        kinds = [a["kind"] for a in tx.store.activities]
        assert kinds.count("contact.owner_assigned") == 3

    @pytest.mark.parametrize("rule", [True, False])
    async def test_a_person_new_and_captured_again_in_one_batch_keeps_its_event_order(
        self, rule: bool
    ) -> None:
        """Owners are given once the batch is matched: a new contact's events still come as
        created, owner_assigned, then the update of its second capture, whose snapshot names
        the owner too (and, without the rule, no owner at all)."""
        tx = FakeTransaction()
        team = team_of(tx, "round_robin", ("ann", True, 1), ("bob", True, 1))
        if rule:
            await set_capture_assignment(WS, team.id, tx, NOW)
        known, new = random_email(), random_email()
        await capture(tx, lead(known))
        tx.emitted.clear()
        await capture(tx, lead(new), lead(known, first_name="Ada"), lead(new, tags=["vip"]))
        new_id = by_email(tx, new)
        by_contact = [(e[2].subject, e[2].type) for e in tx.emitted]
        expected = ["contact.created", "contact.owner_assigned", "contact.updated"]
        if not rule:
            expected.remove("contact.owner_assigned")
        assert [kind for subject, kind in by_contact if subject == new_id] == expected
        assert [kind for subject, kind in by_contact if subject != new_id] == ["contact.updated"]
        stored = tx.store.contacts[new_id]
        assert stored.owner_id == ("bob" if rule else None)  # ann had the known person
        state = {name: getattr(stored, name) for name in CONTACT_COLUMNS}
        snapshot = contact_snapshot_data(state, ["vip"], [])
        updated = next(
            e[2].data for e in tx.emitted if e[2].subject == new_id and "changes" in e[2].data
        )
        # The very snapshot a capture without waiting would have published, in its key order.
        assert list(updated["contact"].items()) == list(snapshot.items())
        created = next(e[2].data for e in tx.emitted if e[2].type == "contact.created")
        assert ("owner_id" in created["contact"]) is rule
        assert ("owner_name" in created) is rule

    async def test_capture_and_commands_share_one_weighted_rotation(self) -> None:
        tx = FakeTransaction()
        team = team_of(tx, "weighted", ("ann", True, 2), ("bob", True, 1))
        await set_capture_assignment(WS, team.id, tx, NOW)
        first = random_email()
        await capture(tx, lead(first))
        by_command = await assign_many(tx, team, 2)
        second = random_email()
        await capture(tx, lead(second), lead(random_email()))
        chosen = [tx.store.contacts[by_email(tx, first)].owner_id, *by_command]
        chosen += [tx.store.contacts[by_email(tx, second)].owner_id]
        # One smooth weighted sequence (ann, bob, ann, ann, bob) across captures and commands.
        assert chosen == ["ann", "bob", "ann", "ann"]
        assert (team.last_owner_id, {o.id: o.credit for o in await tx.store.owners(WS)}) == (
            "bob",
            {"ann": 1, "bob": -1},
        )

    async def test_a_known_person_keeps_their_owner_and_makes_no_assignment(self) -> None:
        tx = FakeTransaction()
        team = team_of(tx, "round_robin", ("ann", True, 1), ("bob", True, 1))
        email = random_email()
        await capture(tx, lead(email))  # before the rule: captured unassigned
        await set_capture_assignment(WS, team.id, tx, NOW)
        await capture(tx, lead(email, first_name="Ada"))
        assert tx.store.contacts[by_email(tx, email)].owner_id is None
        assert "contact.owner_assigned" not in tx.types()
        assert team.last_owner_id is None

    async def test_a_team_without_an_active_owner_captures_the_lead_unassigned(self) -> None:
        tx = FakeTransaction()
        team = team_of(tx, "round_robin", ("ann", False, 1))
        await set_capture_assignment(WS, team.id, tx, NOW)
        email = random_email()
        await capture(tx, lead(email))
        assert tx.store.contacts[by_email(tx, email)].owner_id is None
        assert tx.types() == ["contact.created"]
        assert "owner_name" not in tx.emitted[0][2].data

    async def test_a_capture_tells_where_a_rotation_gave_the_new_contacts_owners(self) -> None:
        """What the leads consumer keeps such a workspace in one lane by: its team's row stays
        locked to the commit, a team without an active owner's too."""
        tx = FakeTransaction()
        team = team_of(tx, "round_robin", ("ann", True, 1))
        known = random_email()
        assert await capture(tx, lead(known)) == {WS: False}  # a new contact, no rule
        await set_capture_assignment(WS, team.id, tx, NOW)
        assert await capture(tx, lead(random_email())) == {WS: True}
        assert await capture(tx, lead(known, first_name="Ada")) == {}  # no new contact
        for owner in await tx.store.owners(WS):
            owner.active = False
        assert await capture(tx, lead(random_email())) == {WS: True}
        await clear_capture_assignment(WS, tx)
        assert await capture(tx, lead(random_email())) == {WS: False}

    async def test_an_unknown_team_is_refused_naming_the_field(self) -> None:
        tx = FakeTransaction()
        with pytest.raises(InvalidInput) as refused:
            await set_capture_assignment(WS, "no-such-team", tx, NOW)
        assert refused.value.extra["errors"][0]["field"] == "team_id"
        assert await tx.store.capture_assignment(WS) is None

    async def test_cleared_rule_captures_unassigned_again(self) -> None:
        tx = FakeTransaction()
        team = team_of(tx, "round_robin", ("ann", True, 1))
        await set_capture_assignment(WS, team.id, tx, NOW)
        await clear_capture_assignment(WS, tx)
        email = random_email()
        await capture(tx, lead(email))
        assert tx.store.contacts[by_email(tx, email)].owner_id is None


def by_email(tx: FakeTransaction, email: str) -> str:
    return next(c.id for c in tx.store.contacts.values() if c.email == email)


def as_commands_tx(tx: FakeTransaction) -> Transaction[CommandsRepository]:
    """The fake keeps what these commands touch, not every query of people (timeline, lists)."""
    return cast(Transaction[CommandsRepository], tx)


class TestCommandPolls:
    async def test_a_poll_keeps_its_order_and_each_commands_correlation(self) -> None:
        tx = FakeTransaction()
        team = team_of(tx, "round_robin", ("ann", True, 1), ("bob", True, 1))
        a, b = contact(random_email()), contact(random_email())
        for c in (a, b):
            tx.store.add(c)
        poll = [
            PolledCommand(WS, AssignOwner(contact_id=a.id, team_id=team.id), "corr-a"),
            PolledCommand(WS, AddTag(contact_id=a.id, tag="hot"), "corr-t"),
            PolledCommand(WS, AssignOwner(contact_id=b.id, team_id=team.id), "corr-b"),
            PolledCommand(WS, AssignOwner(contact_id=a.id, owner_id="bob"), "corr-c"),
        ]
        await handle_commands(poll, as_commands_tx(tx), NOW)
        assert (a.owner_id, b.owner_id, team.last_owner_id) == ("bob", "bob", "bob")
        emitted = [(e.type, e.correlationid) for _, _, e in tx.emitted]
        assert emitted == [
            ("contact.owner_assigned", "corr-a"),
            ("contact.updated", "corr-a"),
            ("contact.updated", "corr-t"),
            ("contact.owner_assigned", "corr-b"),
            ("contact.updated", "corr-b"),
            ("contact.owner_assigned", "corr-c"),
            ("contact.updated", "corr-c"),
        ]
        tagged = tx.emitted[2][2].data["contact"]
        assert (tagged["tags"], tagged["owner_id"]) == (["hot"], "ann")
        assert tx.emitted[5][2].data["contact"]["tags"] == ["hot"]

    async def test_an_unknown_contact_fails_the_whole_poll(self) -> None:
        tx = FakeTransaction()
        team = team_of(tx, "round_robin", ("ann", True, 1))
        poll = [PolledCommand(WS, AssignOwner(contact_id="nobody", team_id=team.id))]
        with pytest.raises(NotFound):
            await handle_commands(poll, as_commands_tx(tx), NOW)

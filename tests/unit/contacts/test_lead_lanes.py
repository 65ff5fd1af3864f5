"""A poll's captured leads are split into lanes by key, except a workspace that rotates owners
at capture, which goes whole to one lane (its transactions would queue on the team's lock)."""

from __future__ import annotations

from services.contacts.consumers import lane_for, lane_of
from shared.events import topics
from shared.events.envelope import Envelope


def lead(workspace: str, n: int) -> Envelope:
    event = Envelope(
        source="/leadwire/ingest",
        type="lead.captured",
        workspace=workspace,
        correlationid=f"corr-{n}",
        data={},
    )
    return event.delivered_under(topics.contact_key(workspace, f"email:lead-{n}@example.com"))


def test_leads_go_to_lanes_by_key() -> None:
    events = [lead("acme", n) for n in range(60)]
    chosen = [lane_for(e, 3, rotating=set()) for e in events]
    assert chosen == [lane_of(e, 3) for e in events]
    assert set(chosen) == {0, 1, 2}  # sixty keys spread over every lane


def test_a_workspace_that_rotates_owners_at_capture_goes_whole_to_one_lane() -> None:
    rotating = [lead("acme", n) for n in range(60)]
    others = [lead("globex", n) for n in range(60)]
    assert len({lane_for(e, 3, rotating={"acme"}) for e in rotating}) == 1
    assert [lane_for(e, 3, rotating={"acme"}) for e in others] == [lane_of(e, 3) for e in others]

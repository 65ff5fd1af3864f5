"""The scores lock probes each contact's primary key (`shared.db.probe_each`): that stays one
index probe per key only while no other index of `scores` starts with `workspace`."""

from __future__ import annotations

from sqlalchemy import Table

from services.scoring.models import ScoreRow


def test_scores_has_no_index_but_its_primary_key() -> None:
    table = ScoreRow.__table__
    assert isinstance(table, Table)
    assert [c.name for c in table.primary_key.columns] == ["workspace", "contact_id"]
    assert not table.indexes

"""The statistics keeper's rules: analyse a table once it holds at least twice the rows its
statistics were taken at, and at least `min_rows` more; gather the columns its indexes name,
or every column when one is on an expression (shared.db.statistics)."""

from __future__ import annotations

import pytest

from shared.db.statistics import Indexed, TableStats, columns_to_analyze, needs_analyze

MIN_ROWS = 500


def table(rows_at_analyze: float, live_rows: int) -> TableStats:
    return TableStats("t", rows_at_analyze, live_rows, analyses=0)


class TestNeedsAnalyze:
    @pytest.mark.parametrize(
        ("at_analyze", "live", "expected"),
        [
            (20, 20_020, True),  # analysed at a few rows, grown to thousands
            (1_000, 2_000, True),  # exactly doubled
            (1_000, 1_999, False),  # not quite
            (10_000, 15_000, False),  # grew by half: autovacuum's 10% rule is enough
            (1_000_000, 1_900_000, False),  # a big table waits for its next doubling
            (1_000_000, 2_000_000, True),
        ],
    )
    def test_a_table_is_analysed_once_it_doubled(
        self, at_analyze: float, live: int, expected: bool
    ) -> None:
        assert needs_analyze(table(at_analyze, live), MIN_ROWS) is expected

    @pytest.mark.parametrize(
        ("at_analyze", "live", "expected"),
        [
            (0, 499, False),
            (0, 500, True),
            (10, 300, False),  # 30 times its size, but only 290 rows more
            (10, 510, True),
            (400, 899, False),
            (400, 900, True),
        ],
    )
    def test_a_small_table_must_also_grow_by_min_rows(
        self, at_analyze: float, live: int, expected: bool
    ) -> None:
        assert needs_analyze(table(at_analyze, live), MIN_ROWS) is expected

    def test_a_table_never_analysed_counts_as_analysed_empty(self) -> None:
        # reltuples is -1 until the first ANALYZE or VACUUM.
        assert not needs_analyze(table(-1, MIN_ROWS - 1), MIN_ROWS)
        assert needs_analyze(table(-1, MIN_ROWS), MIN_ROWS)

    def test_a_table_that_shrank_or_kept_its_size_is_left_alone(self) -> None:
        # A queue (the outbox) churns many times its size without growing.
        assert not needs_analyze(table(3_000, 3_000), MIN_ROWS)
        assert not needs_analyze(table(3_000, 40), MIN_ROWS)


def test_the_columns_gathered_are_those_the_indexes_name() -> None:
    assert columns_to_analyze(Indexed(("contact_id", "id"))) == ("contact_id", "id")


def test_an_index_on_an_expression_gathers_every_column() -> None:
    # An empty list: the whole table, the only ANALYZE that gathers an expression's statistics.
    assert columns_to_analyze(Indexed(("id",), expression=True)) == ()


def test_a_table_without_an_index_gathers_every_column() -> None:
    assert columns_to_analyze(Indexed()) == ()

"""How often an idle outbox relay polls: only timed polls move its backoff."""

from __future__ import annotations

from shared.outbox import polls_without_rows


class TestPollsWithoutRows:
    def test_a_timed_poll_that_finds_nothing_spaces_the_next_one_out(self) -> None:
        assert polls_without_rows(3, sent=0, woken=False) == 4

    def test_a_timed_poll_that_finds_rows_brings_polling_back_to_its_shortest_interval(
        self,
    ) -> None:
        # Rows no commit here announced: another process left them, more may follow.
        assert polls_without_rows(5, sent=2, woken=False) == 0

    def test_a_round_a_commit_woke_leaves_the_backoff_as_it_was(self) -> None:
        # A lone lead's own rows say nothing of other processes' rows.
        assert polls_without_rows(5, sent=3, woken=True) == 5
        assert polls_without_rows(5, sent=0, woken=True) == 5

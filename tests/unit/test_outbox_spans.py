"""Which ids an outbox relay reads next (`ReadSpans`): the tail above the last id read, and the
spans below it that a transaction still running may yet commit."""

from __future__ import annotations

from shared.outbox_spans import MAX_ID, MIN_ID, ReadSpans


def ranges(spans: ReadSpans) -> list[tuple[int, int]]:
    lows, highs = spans.bounds()
    return list(zip(lows, highs, strict=True))


class TestReadSpans:
    def test_a_relay_that_starts_reads_from_the_head(self) -> None:
        assert ranges(ReadSpans()) == [(MIN_ID, MAX_ID)]

    def test_ids_passed_over_stay_to_read_until_every_transaction_then_running_has_ended(
        self,
    ) -> None:
        spans = ReadSpans(settle_min_s=0)
        spans.advance([10, 11, 14], full=False, xmin=100, xmax=105, now=0)
        assert ranges(spans) == [(MIN_ID, 9), (12, 13), (15, MAX_ID)]
        # Transaction 104 (below the horizon 105) may still be running: nothing settles.
        spans.advance([], full=False, xmin=104, xmax=108, now=1)
        assert ranges(spans) == [(MIN_ID, 9), (12, 13), (15, MAX_ID)]
        # Every transaction running at the first read has ended; what they did not commit
        # never will be.
        spans.advance([], full=False, xmin=105, xmax=108, now=2)
        assert ranges(spans) == [(15, MAX_ID)]

    def test_a_straggler_found_in_its_span_is_read_and_leaves_only_what_is_still_missing(
        self,
    ) -> None:
        spans = ReadSpans(settle_min_s=0)
        spans.advance([10, 14], full=False, xmin=100, xmax=105, now=0)
        spans.advance([12, 20], full=False, xmin=101, xmax=110, now=1)
        assert ranges(spans) == [(MIN_ID, 9), (11, 11), (13, 13), (15, 19), (21, MAX_ID)]

    def test_a_full_read_leaves_what_lies_above_its_last_row_unread(self) -> None:
        spans = ReadSpans(settle_min_s=0)
        spans.advance([5], full=False, xmin=100, xmax=101, now=0)
        spans.advance([3, 7], full=True, xmin=101, xmax=102, now=1)
        # Below 5, read at a snapshot where transaction 100 had ended: settled; 6 was passed
        # over by this read, so it waits for transaction 101.
        assert ranges(spans) == [(6, 6), (8, MAX_ID)]
        spans = ReadSpans(settle_min_s=0)
        spans.advance([5, 9], full=False, xmin=100, xmax=101, now=0)
        spans.advance([2], full=True, xmin=101, xmax=102, now=1)
        # A full read that ended at 2: ids above it were not read, so not settled.
        assert ranges(spans) == [(3, 4), (6, 8), (10, MAX_ID)]

    def test_spans_are_kept_a_while_even_once_their_horizon_has_passed(self) -> None:
        spans = ReadSpans(settle_min_s=1.0)
        spans.advance([10, 12], full=False, xmin=100, xmax=101, now=0)
        spans.advance([], full=False, xmin=200, xmax=201, now=0.5)
        assert ranges(spans) == [(MIN_ID, 9), (11, 11), (13, MAX_ID)]
        spans.advance([], full=False, xmin=200, xmax=201, now=1.0)
        assert ranges(spans) == [(13, MAX_ID)]

    def test_a_sweep_reads_every_id_below_the_tail_once(self) -> None:
        spans = ReadSpans(settle_min_s=0)
        spans.advance([10, 20], full=False, xmin=100, xmax=101, now=0)
        spans.advance([], full=False, xmin=101, xmax=101, now=1)
        assert ranges(spans) == [(21, MAX_ID)]
        spans.advance([30], full=False, xmin=101, xmax=105, now=2)  # 21-29 in flight
        spans.sweep(now=3)
        assert ranges(spans) == [(MIN_ID, 20), (21, 29), (30, 30), (31, MAX_ID)]
        # The sweep finds a row the spans had forgotten (say, an id drawn by hand) and is
        # gone after one read; the spans it did not replace are kept.
        spans.advance([7], full=False, xmin=102, xmax=106, now=4)
        assert ranges(spans) == [(21, 29), (31, MAX_ID)]

    def test_a_sweep_cut_short_by_a_full_read_goes_on_where_it_stopped(self) -> None:
        spans = ReadSpans(settle_min_s=0)
        spans.advance([10], full=False, xmin=100, xmax=100, now=0)
        spans.advance([], full=False, xmin=100, xmax=100, now=1)
        spans.sweep(now=2)
        spans.advance([1, 2], full=True, xmin=100, xmax=100, now=3)
        assert ranges(spans) == [(3, 10), (11, MAX_ID)]
        spans.advance([], full=False, xmin=100, xmax=100, now=4)
        assert ranges(spans) == [(11, MAX_ID)]

    def test_too_many_spans_are_merged_into_one_that_holds_them_all(self) -> None:
        spans = ReadSpans(settle_min_s=0, max_spans=3)
        spans.advance([2, 4, 6, 8, 10], full=False, xmin=100, xmax=101, now=0)
        assert ranges(spans) == [(MIN_ID, 9), (11, MAX_ID)]
        spans.advance([5], full=False, xmin=100, xmax=101, now=1)  # a straggler in it
        assert ranges(spans) == [(MIN_ID, 4), (6, 9), (11, MAX_ID)]
        spans.advance([], full=False, xmin=101, xmax=102, now=2)
        assert ranges(spans) == [(11, MAX_ID)]

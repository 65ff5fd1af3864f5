"""Which outbox ids a relay on PostgreSQL still has to read, so that it need not read from the
head of the `id` index, where the rows it published and deleted lie dead until vacuum.

Outbox ids come from a sequence when a row is inserted, but rows become visible when their
transaction commits, which is not in id order: a row whose id was drawn before a later row's
may commit after the relay read past it (a straggler). So a relay keeps, besides its tail
(every id from one above the highest it read), the spans of ids below it that it has not seen
committed and that a transaction still running may yet commit. A span is settled once a read's
snapshot shows every transaction that was running when its ids were passed over has ended (its
oldest running transaction id is at least the span's horizon) and found none of them committed:
those ids were rolled back, or their rows deleted by someone else. See `OutboxRelay` for why
this keeps each key's events in order.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

MIN_ID = -(2**63)
MAX_ID = 2**63 - 1
# A span is kept at least this long, even settled: an id drawn just before a read's snapshot
# by a transaction that had no transaction id yet (the insert that drew it takes one
# microseconds later) is not covered by the snapshot's horizon.
SETTLE_MIN_S = 1.0
# More spans than this (many rollbacks while a long transaction holds the horizon back) are
# merged into one: a superset, so still safe, at the cost of reading its published rows' dead
# entries until it settles.
MAX_SPANS = 32


@dataclass(frozen=True)
class Span:
    """Ids [lo, hi] still to read. `horizon`: the first transaction id not running when these
    ids were passed over (None for a sweep's span, read once and dropped)."""

    lo: int
    hi: int
    horizon: int | None
    since: float


class ReadSpans:
    """The ids a relay reads next: its closed spans below `tail`, and every id from `tail` up.

    A relay that starts knows nothing: its tail is the lowest id, so its first read is from the
    head, and the ids below the first row it finds are a span like any other, settled once every
    transaction running at that read has ended.
    """

    def __init__(self, settle_min_s: float = SETTLE_MIN_S, max_spans: int = MAX_SPANS) -> None:
        self.settle_min_s = settle_min_s
        self.max_spans = max_spans
        self.tail = MIN_ID
        self.spans: list[Span] = []  # below `tail`, disjoint, by `lo`

    def bounds(self) -> tuple[list[int], list[int]]:
        """The (lo, hi) of every span to read, the tail last."""
        return [s.lo for s in self.spans] + [self.tail], [s.hi for s in self.spans] + [MAX_ID]

    def sweep(self, now: float) -> None:
        """Read once more every id below the tail that no span holds (a safety net for what the
        spans cannot know: see `OutboxRelay`); what the sweep finds is published, and its spans
        are dropped once read."""
        holes: list[Span] = []
        lo = MIN_ID
        for span in self.spans:
            if span.lo > lo:
                holes.append(Span(lo, span.lo - 1, None, now))
            lo = span.hi + 1
        if lo < self.tail:
            holes.append(Span(lo, self.tail - 1, None, now))
        self._keep(self.spans + holes)

    def advance(self, ids: Sequence[int], full: bool, xmin: int, xmax: int, now: float) -> None:
        """After a read returned the rows `ids` (ascending; `full`: as many as it could return,
        so ids above the last were not read) at a snapshot whose oldest running transaction was
        `xmin` and first not yet started `xmax`, and once those rows are published."""
        reached = ids[-1] if full else MAX_ID
        kept: list[Span] = []
        for span in self.spans:
            if span.lo > reached:
                kept.append(span)
                continue
            read_to = min(span.hi, reached)
            if span.horizon is not None:
                for lo, hi in _absent(ids, span.lo, read_to):
                    piece = Span(lo, hi, span.horizon, span.since)
                    if not self._settled(piece, xmin, now):
                        kept.append(piece)
            if read_to < span.hi:
                kept.append(Span(read_to + 1, span.hi, span.horizon, span.since))
        if ids and ids[-1] >= self.tail:
            # Ids passed over in the tail: whoever drew them was running at this snapshot.
            kept.extend(Span(lo, hi, xmax, now) for lo, hi in _absent(ids, self.tail, ids[-1]))
            self.tail = ids[-1] + 1
        self._keep(kept)

    def _settled(self, span: Span, xmin: int, now: float) -> bool:
        assert span.horizon is not None
        return xmin >= span.horizon and now - span.since >= self.settle_min_s

    def _keep(self, spans: list[Span]) -> None:
        spans.sort(key=lambda s: s.lo)
        if len(spans) > self.max_spans:
            horizons = [s.horizon for s in spans if s.horizon is not None]
            merged = Span(
                spans[0].lo,
                spans[-1].hi,
                max(horizons) if horizons else None,
                min(s.since for s in spans),
            )
            spans = [merged]
        self.spans = spans


def _absent(ids: Sequence[int], lo: int, hi: int) -> Iterator[tuple[int, int]]:
    """The runs of [lo, hi] holding none of `ids` (ascending)."""
    start = lo
    for i in range(bisect.bisect_left(ids, lo), bisect.bisect_right(ids, hi)):
        if ids[i] > start:
            yield start, ids[i] - 1
        start = ids[i] + 1
    if start <= hi:
        yield start, hi

"""A small write that commits by itself as one statement (PostgreSQL only): the first try of a
batch of requests (below), and the delivery worker's small batches of outcomes (their
deliveries' and attempts' changes deferred into the statement, with the outcome events; no
inbox claim).

In a transaction, accepting took four round trips before a started delivery could be sent:
BEGIN, the reads that prepare the batch, the statement written at commit (deliveries, their
first attempts, outcome events, the inbox claim) and COMMIT. Here the reads run outside any
transaction, each statement on its own, as each already read its own snapshot under READ
COMMITTED with nothing locked; and the write runs alone in autocommit, atomic as any
statement: two round trips.

What keeps it as safe as the transaction:
- nothing is written before that statement: until it, the session refuses anything but a
  SELECT (a write would commit there and then, on its own);
- the statement fails whole, writing nothing, where the transaction would have rolled back:
  its inbox claim is strict (an event handled before breaks the inbox's key, where the
  transaction's claim skipped it and rolled everything back afterwards), and a known
  idempotency key breaks the deliveries' (the deferred insert, as in the transaction). The
  caller then accepts the batch again the careful way: claiming first, in a transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from shared.app import ServiceContext
from shared.db.bulk import fetch_after_inserts, take_deferred
from shared.inbox import claim_sql
from shared.one_statement import OneStatement as ReadsThenWrite
from shared.one_statement import WriteBeforeCommit

__all__ = ["DEFER_AT_MOST", "OneStatement", "WriteBeforeCommit", "statement_of"]

# The most rows a one-statement write carries as JSON documents (deferred writes) rather than
# in a statement of their own (arrays). Measured on 1.5 kB Slack rows, this process's CPU plus
# PostgreSQL's time per batch: 1.1 ms against 1.7 for one row, even at 32 rows, and twice the
# arrays' cost at 150 (JSON rows are dearer to PostgreSQL).
DEFER_AT_MOST = 32


class OneStatement(ReadsThenWrite):
    """The store's session (reads only) and the handlers' outbox (`emit`: published if and only
    if the accepting statement commits) for one accepting try; `commit` writes everything in
    one statement."""

    async def commit(self, consumer: str | None = None, event_ids: Sequence[str] = ()) -> None:
        """The one statement: the deferred writes, the outbox rows and, with a `consumer`, the
        inbox claim of `event_ids` for it; it commits on its own, or fails and writes
        nothing."""
        self.writing()
        session = self.session
        ids = list(dict.fromkeys(event_ids))
        inbox = session.get_bind().dialect.identifier_preparer.quote(self._inbox.name)

        def claim(offset: int) -> str:
            if consumer is None:
                return "SELECT 1"
            consumer_at, now_at, ids_at = (f"${offset + n}" for n in (1, 2, 3))
            return claim_sql(inbox, consumer_at, now_at, ids_at, strict=True)

        params = () if consumer is None else (consumer, datetime.now(UTC), ids)
        await fetch_after_inserts(
            session,
            [(self._outbox, self._pending)],
            claim,
            *params,
            deferred=take_deferred(session),
        )
        await self.wrote()


def statement_of(ctx: ServiceContext) -> Callable[[], OneStatement]:
    """New `OneStatement`s on the service's sessions, outbox and inbox."""
    return lambda: OneStatement(ctx.sessions, ctx.spec.outbox, ctx.spec.inbox, ctx.relay.notify)

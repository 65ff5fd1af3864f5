"""The statistics keeper: on PostgreSQL, ANALYZE a service's tables as soon as they double.

PostgreSQL plans a query from the statistics ANALYZE last gathered: the table's row count
(`pg_class.reltuples`) and each column's distinct values, most common values and histogram.
Autovacuum refreshes them once a table's changes pass 50 rows plus 10% of its size, but it
visits each database only once per `autovacuum_naptime` (60 s). A table analysed while small,
or never (a fresh install, a new schema, every benchmark), that then grows fast is planned for
its old self until that visit, and how fast it runs depends on when that visit falls. On the
speed-to-lead bench at 500 leads/s (fresh schemas, seven runs each way) contacts' capture match
took 0.2-11.7 ms a call without the keeper and 0.2-0.45 ms with it, workflows' BatchView read
3.2-18 ms and 2.4-5.3 ms, for 20-40 ANALYZE statements (0.6-1.1 s of server time) a run.

A keeper task runs beside each service on PostgreSQL (`shared.app.start_context`). Every
`interval_s` it reads, for each table of the service's own schema, the rows its statistics
were taken at (`reltuples`; -1 if never) and the live rows it holds now (the cumulative
statistics, which every backend brings up to date within about a second), and analyses each
table that holds at least twice as many rows, and at least `min_rows` more (`needs_analyze`).

What it gathers is what a plan's choice of index needs, cheaply, since it runs while the
tables fill: the row count, and the statistics of the columns the table's indexes name (every
column when an index is on an expression, or when there is no index), from a sample of 3,000
rows (`SAMPLE_TARGET`).
Autovacuum's full ANALYZE still follows within its minute: an ANALYZE of some columns leaves
the count of changes autovacuum goes by as it was. At 10,000 leads of the speed-to-lead bench
that took `contacts.activities` from 180 ms to 8 ms, `workflows.step_runs` from 100 to 5 and
`notifier.deliveries` from 90 to 14. Over a ramp of that bench to 500 leads/s (measured with
`bench.pg_statements --match ANALYZE`), whole-table ANALYZEs took 0.84-1.19 s of the server's
time, up to 106 ms each, in bursts as the tables doubled together, on a machine with no time
to spare at 500 leads/s. Gathered this way, they take 0.31-0.35 s, at most 21 ms each.

Growth, not changes, is the trigger: a queue table (the outbox, published and deleted) churns
far more rows than it holds without its plans going wrong, and a rule on changes would analyse
it on every round. Changes that keep the size (updates, a queue's churn) and a new workspace
in a big table are left to autovacuum's 10% within its minute.

Bounds:
- A growing table is analysed at about `min_rows`, then each time it doubles: log2(N /
  min_rows) + 1 times on its way to N rows, never again before it doubles; each ANALYZE
  samples at most 3,000 rows, so a big table costs a bounded sample per doubling, whatever
  its size.
- Replicas: a round holds a transaction-level advisory lock named for the schema; a replica
  finding it taken skips the round, and the holder reads the counts only once it has the
  lock, after the previous holder's ANALYZE reset them: one growth, one ANALYZE.
- `ANALYZE (SKIP_LOCKED)`: a table autovacuum or a migration holds is skipped, never waited
  for (it is still grown at the next round if nobody analysed it).
- The event loop only awaits: the statements run on the server, on one pooled connection
  (milliseconds for a young table, tens of milliseconds for a full sample).
- A round that fails (database down, restarting) is logged once per outage and counted; the
  next round tries again. The task never ends the service.

SQLite (the embedded mode) has no such planner statistics to keep: the keeper is not started.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared import metrics
from shared.db.locks import try_xact_lock
from shared.transient import is_transient

log = logging.getLogger(__name__)

# The tables of one schema ANALYZE may be run on by this role (an owner's member, or a
# superuser): their rows at the last statistics, their live rows now, and how many analyses
# (manual and automatic) they had, to tell an ANALYZE done from one skipped on a lock.
_TABLES = text(
    "SELECT c.relname AS name, c.reltuples AS rows_at_analyze,"
    " pg_stat_get_live_tuples(c.oid) AS live_rows,"
    " pg_stat_get_analyze_count(c.oid) + pg_stat_get_autoanalyze_count(c.oid) AS analyses"
    " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE n.nspname = :schema AND c.relkind IN ('r', 'm')"
    " AND pg_has_role(c.relowner, 'USAGE')"
)
# What the indexes of some of those tables name, asked only of the tables a round analyses:
# read for every table in the query above, which runs every round, it doubled that query's
# cost.
_INDEXED = text(
    "SELECT c.relname AS name,"
    " array_remove(array_agg(DISTINCT a.attname), NULL) AS columns,"
    " bool_or(i.indexprs IS NOT NULL) AS expression"
    " FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid"
    " JOIN pg_namespace n ON n.oid = c.relnamespace"
    " LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)"
    " WHERE n.nspname = :schema AND c.relname IN :names GROUP BY c.relname"
).bindparams(bindparam("names", expanding=True))
# ANALYZE samples 300 rows a unit of target: 3,000 rows, a tenth of the default's. Enough to
# tell a key from a repeated value and to count a table's rows; the finer histograms and
# common values are autovacuum's full ANALYZE to take (see the module's docstring).
SAMPLE_TARGET = 10
_SAMPLE = text(f"SET LOCAL default_statistics_target = {SAMPLE_TARGET}")
# The cumulative statistics are read once per transaction and then cached: read afresh.
_FORGET_SNAPSHOT = text("SELECT pg_stat_clear_snapshot()")


@dataclass(frozen=True)
class TableStats:
    """One table's size at its last statistics and now."""

    name: str
    rows_at_analyze: float  # pg_class.reltuples: -1 if never analysed nor vacuumed
    live_rows: int
    analyses: int


@dataclass(frozen=True)
class Indexed:
    """What a table's indexes name: plain columns, and whether one is on an expression."""

    columns: tuple[str, ...] = ()
    expression: bool = False


@dataclass(frozen=True)
class Analysed:
    """A table the keeper analysed, with the sizes that made it."""

    table: TableStats
    seconds: float


def needs_analyze(table: TableStats, min_rows: int) -> bool:
    """True when the table holds at least twice the rows its statistics were taken at, and
    at least `min_rows` more: its plans may be made for a table a fraction of its size."""
    known = max(table.rows_at_analyze, 0.0)
    return table.live_rows >= max(2 * known, known + min_rows)


def columns_to_analyze(indexed: Indexed) -> tuple[str, ...]:
    """The columns the keeper gathers statistics of: those the table's indexes name, which
    decide whether a read probes an index or walks the table. () for every column when an
    index is on an expression, whose statistics only a whole-table ANALYZE gathers, or when
    the table has no index."""
    return () if indexed.expression else indexed.columns


def lock_name(schema: str) -> str:
    return f"leadwire-statistics-{schema}"


async def tables_of(conn: AsyncConnection, schema: str) -> list[TableStats]:
    rows = (await conn.execute(_TABLES, {"schema": schema})).mappings()
    return [
        TableStats(r["name"], float(r["rows_at_analyze"]), int(r["live_rows"]), int(r["analyses"]))
        for r in rows
    ]


async def indexed_of(conn: AsyncConnection, schema: str, names: list[str]) -> dict[str, Indexed]:
    rows = (await conn.execute(_INDEXED, {"schema": schema, "names": names})).mappings()
    return {r["name"]: Indexed(tuple(sorted(r["columns"])), bool(r["expression"])) for r in rows}


async def analyze_grown_tables(engine: AsyncEngine, schema: str, min_rows: int) -> list[Analysed]:
    """One round: ANALYZE the tables of `schema` that grew (`needs_analyze`), unless another
    replica's round is under way; the tables analysed."""
    quote = engine.dialect.identifier_preparer.quote_identifier
    async with engine.connect() as conn, conn.begin():
        if not await try_xact_lock(conn, lock_name(schema)):
            return []
        grown = [t for t in await tables_of(conn, schema) if needs_analyze(t, min_rows)]
        if not grown:
            return []
        indexed = await indexed_of(conn, schema, [t.name for t in grown])
        await conn.execute(_SAMPLE)
        took: dict[str, float] = {}
        for table in grown:
            listed = columns_to_analyze(indexed.get(table.name, Indexed()))
            columns = ", ".join(quote(column) for column in listed)
            started = time.perf_counter()
            await conn.execute(
                text(
                    f"ANALYZE (SKIP_LOCKED) {quote(schema)}.{quote(table.name)}"
                    + (f" ({columns})" if columns else "")
                )
            )
            took[table.name] = time.perf_counter() - started
        await conn.execute(_FORGET_SNAPSHOT)
        after = {t.name: t.analyses for t in await tables_of(conn, schema)}
    return [Analysed(t, took[t.name]) for t in grown if after.get(t.name, t.analyses) > t.analyses]


async def keep_statistics(
    engine: AsyncEngine, schema: str, service: str, interval_s: float, min_rows: int
) -> None:
    """Analyse the schema's grown tables every `interval_s` for as long as the service runs."""
    failing = False
    while True:
        await asyncio.sleep(interval_s)
        try:
            analysed = await analyze_grown_tables(engine, schema, min_rows)
        except Exception as exc:
            metrics.STATISTICS_ROUNDS_FAILED.labels(service).inc()
            if not failing:
                # A bug shows its traceback; an outage only says so, once, until it ends.
                log.warning(
                    "could not keep table statistics, will retry",
                    extra={"schema": schema, "error": str(exc) or type(exc).__name__},
                    exc_info=not is_transient(exc),
                )
            failing = True
            continue
        if failing:
            log.info("keeping table statistics again", extra={"schema": schema})
            failing = False
        for done in analysed:
            metrics.TABLES_ANALYSED.labels(service, done.table.name).inc()
            metrics.ANALYZE_SECONDS.labels(service).observe(done.seconds)
            log.info(
                "analysed a table that grew since its statistics",
                extra={
                    "schema": schema,
                    "table": done.table.name,
                    "rows_at_analyze": max(round(done.table.rows_at_analyze), 0),
                    "live_rows": done.table.live_rows,
                    "seconds": round(done.seconds, 4),
                },
            )

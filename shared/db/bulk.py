"""Bulk writes: many rows in one statement.

One path per need, chosen by measurement (`python -m bench.bulk_write_bench --batch 2000
--rounds 10`, figures in `bench/results/bulk-write-*.json`; 2,000-row batches, this process's
CPU per row, median):

- rows carrying bytes (outbox events, ingest's raw submissions): `insert_rows` /
  `append_rows`, `INSERT … SELECT FROM unnest(<one typed array per column>)`. asyncpg sends
  bytea in binary as it is; in a JSON document it would travel as hex text, twice its size,
  parsed back by the server: 6.0 µs against 9.7 µs a row, 19,500 against 8,000 rows/s.
- wide rows of text, numbers, timestamps and JSON (contacts): `insert_json_rows` /
  `update_json_rows`, `json_populate_recordset(NULL::<table>, <one JSON document>)`. orjson
  encodes the whole batch in C and PostgreSQL parses it into the table's own column types,
  where asyncpg checks and encodes each value of each array in Python: 3.4 µs against
  11.9 µs a row, at the same or a better rate (13,400 against 11,300 rows/s).

On SQLite every path is a Core executemany.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from typing import Any

import orjson
from sqlalchemy import JSON, Table, TextClause, TypeDecorator, bindparam, insert, text, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from shared.db.dialect import insert_for
from shared.db.engine import dialect_of


async def insert_rows(
    session: AsyncSession | AsyncConnection, table: Table, rows: Sequence[Mapping[str, Any]]
) -> None:
    """Insert `rows` (all with the same keys) in the session's (or connection's) transaction.

    On PostgreSQL this is one `INSERT … SELECT FROM unnest(…)` with one array per column (the
    path for rows with bytes, see the module's docstring), where an executemany costs
    SQLAlchemy's parameter processing and a protocol round of its own per row. Elsewhere, a
    Core executemany.
    """
    if not rows:
        return
    columns = tuple(rows[0])
    if dialect_of(session) != "postgresql" or not _unnest_ok(table, columns):
        await session.execute(insert(table), list(rows))
        return
    unnest = _unnest_insert(table, columns)
    arrays = unnest.arrays(rows)
    await session.execute(unnest.statement, {f"c{i}": a for i, a in enumerate(arrays)})


async def append_rows(
    conn: AsyncConnection, writes: Sequence[tuple[Table, Sequence[Mapping[str, Any]]]]
) -> None:
    """Insert rows into several tables atomically, on a connection the caller holds (a hot
    path's writer) and that is not in a transaction. Every column with a Python-side default
    must be given.

    On PostgreSQL this is a single statement sent by the driver itself: each table's rows one
    unnest insert, all but the last as data-modifying CTEs (which PostgreSQL runs exactly once,
    atomically with the rest). One round trip instead of BEGIN, an insert per table and COMMIT,
    and none of SQLAlchemy's per-statement machinery (~0.7 ms of CPU per transaction of two
    inserts, measured). Elsewhere, Core inserts in a Core transaction.
    """
    writes = [(table, rows) for table, rows in writes if rows]
    parts = _unnest_parts(writes)
    if not writes:
        return
    if conn.dialect.name != "postgresql":
        async with conn.begin():
            for table, rows in writes:
                await insert_rows(conn, table, rows)
        return
    arrays = _arrays(parts, writes)
    driver = (await conn.get_raw_connection()).driver_connection
    assert driver is not None  # a live connection, held by the caller
    await driver.execute(_one_statement(parts), *arrays)


# Where a session keeps the JSON inserts deferred to its transaction's last statement.
_DEFERRED = "leadwire.deferred_inserts"


@dataclass(frozen=True)
class DeferredInsert:
    """`insert_json_rows`' statement for one batch, to run as a CTE of a later statement."""

    table: Table
    columns: tuple[str, ...]
    ignore: bool
    document: str

    def positional(self, number: int) -> str:
        names = ", ".join(f'"{name}"' for name in self.columns)
        rows = f"json_populate_recordset(NULL::{_qualified(self.table)}, ${number}::json)"
        conflicts = " ON CONFLICT DO NOTHING" if self.ignore else ""
        target = _qualified(self.table)
        return f"INSERT INTO {target} ({names}) SELECT {names} FROM {rows}{conflicts}"


@dataclass(frozen=True)
class DeferredUpdate:
    """`update_json_rows`' statement for one batch, to run as a CTE of a later statement."""

    table: Table
    columns: tuple[str, ...]  # the columns set
    keys: tuple[str, ...]  # the columns that find each row
    document: str
    count: int  # rows in the document

    def positional(self, number: int) -> str:
        return json_update_sql(self.table, self.columns, self.keys, f"${number}::json", self.count)


Deferred = DeferredInsert | DeferredUpdate


async def defer_json_rows(
    session: AsyncSession, table: Table, rows: Sequence[Mapping[str, Any]], ignore: bool = False
) -> None:
    """`insert_json_rows`, but on PostgreSQL written by the statement that ends the session's
    unit of work (its outbox rows and inbox claim, `shared.uow`): a round trip fewer a table.
    Only for rows nothing reads later in the transaction (a read would not see them); a
    broken constraint then fails the commit rather than this call. Elsewhere (SQLite, rows
    that leave columns to Core's defaults) the rows are inserted at once."""
    if not rows:
        return
    columns = tuple(rows[0])
    whole = len(columns) == len(table.c) and all(len(row) == len(columns) for row in rows)
    if dialect_of(session) != "postgresql" or not whole:
        await insert_json_rows(session, table, rows, ignore)
        return
    document = _json_document(rows)["rows"]
    session.info.setdefault(_DEFERRED, []).append(DeferredInsert(table, columns, ignore, document))


async def defer_json_update(
    session: AsyncSession,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    key: str | tuple[str, ...] = "id",
) -> None:
    """`update_json_rows`, but on PostgreSQL written by the statement that ends the session's
    unit of work (as `defer_json_rows`): for rows whose locks were taken beforehand and that
    nothing reads later in the transaction (a read would see them unchanged). Elsewhere the
    rows are updated at once."""
    if not rows:
        return
    if dialect_of(session) != "postgresql":
        await update_json_rows(session, table, rows, key)
        return
    keys = _keys(key)
    names = tuple(n for n in rows[0] if n not in (*keys, "workspace"))
    update = DeferredUpdate(table, names, keys, _json_document(rows)["rows"], len(rows))
    session.info.setdefault(_DEFERRED, []).append(update)


def take_deferred(session: AsyncSession) -> list[Deferred]:
    """The writes `defer_json_rows` and `defer_json_update` left for the transaction's last
    statement, handed over."""
    deferred: list[Deferred] = session.info.pop(_DEFERRED, [])
    return deferred


async def fetch_after_inserts(
    session: AsyncSession,
    writes: Sequence[tuple[Table, Sequence[Mapping[str, Any]]]],
    statement: Callable[[int], str],
    *params: Any,
    deferred: Sequence[Deferred] = (),
) -> list[Any]:
    """PostgreSQL: insert `deferred` and `writes` and run `statement` in one round trip, in
    the session's transaction: the inserts go first, as data-modifying CTEs (see
    `append_rows`), and `statement(n)` numbers its own parameters `$n+1`, `$n+2`, … after
    theirs. Returns the statement's rows. Every column with a Python-side default must be
    given."""
    writes = [(table, rows) for table, rows in writes if rows]
    parts = _unnest_parts(writes)
    arrays = _arrays(parts, writes)
    inserts = [d.positional(i + 1) for i, d in enumerate(deferred)]
    offset = len(deferred)
    for table, columns in parts:
        inserts.append(_unnest_insert(table, columns).positional(offset))
        offset += len(columns)
    # Through SQLAlchemy's connection (not the driver's own): the transaction is begun first
    # if no statement has begun it yet, so the caller can still roll back what this wrote.
    conn = await session.connection()
    found = await conn.exec_driver_sql(
        _chain(inserts, statement(offset)), (*(d.document for d in deferred), *arrays, *params)
    )
    return list(found.all())


_Parts = tuple[tuple[Table, tuple[str, ...]], ...]


def _unnest_parts(writes: Sequence[tuple[Table, Sequence[Mapping[str, Any]]]]) -> _Parts:
    """Non-empty writes as (table, columns) parts, in order; raises if a table's rows leave
    out a column that has a Python-side default (an unnest insert would not apply it)."""
    for table, rows in writes:
        if not _unnest_ok(table, tuple(rows[0])):
            raise ValueError(f"rows for {table.name} miss a column that has a default")
    return tuple((table, tuple(rows[0])) for table, rows in writes)


def _arrays(
    parts: _Parts, writes: Sequence[tuple[Table, Sequence[Mapping[str, Any]]]]
) -> list[Any]:
    """Every part's column arrays, in order: the unnest inserts' parameters."""
    return [
        array
        for (table, columns), (_, rows) in zip(parts, writes, strict=True)
        for array in _unnest_insert(table, columns).arrays(rows)
    ]


def _chain(inserts: Sequence[str], last: str) -> str:
    """`inserts` as data-modifying CTEs ahead of `last`: PostgreSQL runs each exactly once,
    atomically with the statement."""
    if not inserts:
        return last
    return "WITH " + ", ".join(f"w{i} AS ({sql})" for i, sql in enumerate(inserts)) + " " + last


def _unnest_ok(table: Table, columns: tuple[str, ...]) -> bool:
    """Every named column exists and no omitted one needs a Python-side default."""
    names = set(columns)
    return names <= set(table.c.keys()) and all(
        c.default is None for c in table.c if c.key not in names
    )


_PG = postgresql.dialect()  # type: ignore[no-untyped-call]


@dataclass(frozen=True)
class _Unnest:
    """`INSERT INTO t (cols) SELECT * FROM unnest(<one typed array per column>)`."""

    columns: tuple[str, ...]
    head: str  # up to `unnest`
    types: tuple[str, ...]  # each column's array type
    # JSON columns → whether None is SQL NULL (else JSON null, as SQLAlchemy's JSON type does).
    json_columns: dict[str, bool]
    # Columns of a custom type: their values go through its `process_bind_param` first.
    decorated: dict[str, TypeDecorator[Any]]

    @cached_property
    def statement(self) -> TextClause:
        """For SQLAlchemy, with `:c0`, `:c1`, … parameters."""
        named = ", ".join(f"CAST(:c{i} AS {t})" for i, t in enumerate(self.types))
        return text(f"{self.head}({named})")

    def positional(self, offset: int = 0) -> str:
        """For the driver, with `$n` parameters numbered from `offset + 1`."""
        return (
            f"{self.head}({', '.join(f'${offset + i + 1}::{t}' for i, t in enumerate(self.types))})"
        )

    def arrays(self, rows: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
        arrays = []
        for name in self.columns:
            values = [row[name] for row in rows]
            if name in self.decorated:
                process = self.decorated[name].process_bind_param
                values = [process(v, _PG) for v in values]
            if name in self.json_columns:
                none_as_null = self.json_columns[name]
                values = [
                    None if v is None and none_as_null else orjson.dumps(v).decode() for v in values
                ]
            arrays.append(values)
        return arrays


@cache
def _unnest_insert(table: Table, columns: tuple[str, ...]) -> _Unnest:
    types, json_columns, decorated = [], {}, {}
    for name in columns:
        column_type = table.c[name].type
        base = column_type
        if isinstance(column_type, TypeDecorator):
            decorated[name] = column_type
            base = column_type.impl_instance
        if isinstance(base, JSON):
            json_columns[name] = bool(base.none_as_null)
        types.append(f"{column_type.compile(dialect=_PG)}[]")
    quote = _PG.identifier_preparer.quote
    target = ", ".join(quote(table.c[name].name) for name in columns)
    head = f"INSERT INTO {_qualified(table)} ({target}) SELECT * FROM unnest"
    return _Unnest(columns, head, tuple(types), json_columns, decorated)


@cache
def _one_statement(parts: _Parts) -> str:
    """Several tables' unnest inserts as one statement (see `append_rows`)."""
    inserts, offset = [], 0
    for table, columns in parts:
        inserts.append(_unnest_insert(table, columns).positional(offset))
        offset += len(columns)
    *first, last = inserts
    return _chain(first, last)


async def insert_json_rows(
    session: AsyncSession, table: Table, rows: Sequence[Mapping[str, Any]], ignore: bool = False
) -> None:
    """Insert `rows` (all with the same keys); with `ignore`, rows whose key exists (in the
    table or earlier in `rows`) are skipped.

    On PostgreSQL, when every row gives every column, one `json_populate_recordset` statement
    (the path for wide rows without bytes, see the module's docstring); partial rows need
    Core's Python-side defaults, so they go through a Core executemany, as on SQLite.
    """
    if not rows:
        return
    columns = tuple(rows[0])
    whole = len(columns) == len(table.c) and all(len(row) == len(columns) for row in rows)
    if dialect_of(session) == "postgresql" and whole:
        await session.execute(_json_insert(table, columns, ignore), _json_document(rows))
    elif ignore:
        await session.execute(insert_for(session, table).on_conflict_do_nothing(), list(rows))
    else:
        await session.execute(insert(table), list(rows))


async def update_json_rows(
    session: AsyncSession,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    key: str | tuple[str, ...] = "id",
) -> None:
    """Update many rows in one statement: each row is its `key` (a column, or several) plus
    the same columns to set (`workspace` is never rewritten)."""
    if not rows:
        return
    keys = _keys(key)
    names = tuple(n for n in rows[0] if n not in (*keys, "workspace"))
    if dialect_of(session) == "postgresql":
        statement = _json_update(table, names, keys, row_bound(len(rows)))
        await session.execute(statement, _json_document(rows))
        return
    stmt = (
        update(table)
        .where(*(table.c[k] == bindparam(f"_key_{k}") for k in keys))
        .values({n: bindparam(n) for n in names})
    )
    params = [{**{f"_key_{k}": r[k] for k in keys}, **{n: r[n] for n in names}} for r in rows]
    await session.execute(stmt, params)


def _keys(key: str | tuple[str, ...]) -> tuple[str, ...]:
    return (key,) if isinstance(key, str) else key


def _match(keys: tuple[str, ...]) -> str:
    """The update's join of each target row `t` to its new values `v`."""
    return " AND ".join(f't."{k}" = v."{k}"' for k in keys)


def _json_rows(table: Table) -> str:
    """A batch of `table` rows given as one JSON array parameter, typed by the table itself."""
    return f"json_populate_recordset(NULL::{_qualified(table)}, CAST(:rows AS json))"


def json_update_sql(
    table: Table, columns: tuple[str, ...], keys: tuple[str, ...], document: str, count: int
) -> str:
    """Set `columns` of the rows `keys` find from the JSON document `document` (a parameter's
    SQL) of `count` rows, typed by `table` itself.

    The document's rows come under a LIMIT that tells the planner about how many there are.
    It guesses 100 for any function, and against a table of a few thousand rows it then
    hashes a scan of the whole table rather than look each row up by its key: 2.4 ms to
    update one row of 5,000, 0.2 ms by the index (EXPLAIN ANALYZE). The limit is
    `row_bound(count)`: never below `count`, so nothing is cut, and a dozen statement texts
    cover every batch size. Callers that cache the text per bound pass the bound as `count`:
    a power of two is its own bound."""
    target = _qualified(table)
    values = ", ".join(f'"{name}" = v."{name}"' for name in columns)
    records = f"json_populate_recordset(NULL::{target}, {document})"
    rows = f"(SELECT * FROM {records} LIMIT {row_bound(count)})"
    return f"UPDATE {target} AS t SET {values} FROM {rows} AS v WHERE {_match(keys)}"


def row_bound(count: int) -> int:
    """The least power of two not below `count`."""
    return 1 << max(count - 1, 0).bit_length()


def _qualified(table: Table) -> str:
    quote = _PG.identifier_preparer.quote
    return f"{quote(table.schema)}.{quote(table.name)}" if table.schema else quote(table.name)


@cache
def _json_insert(table: Table, columns: tuple[str, ...], ignore: bool) -> TextClause:
    names = ", ".join(f'"{name}"' for name in columns)
    conflicts = " ON CONFLICT DO NOTHING" if ignore else ""
    return text(
        f"INSERT INTO {_qualified(table)} ({names}) SELECT {names} FROM {_json_rows(table)}"
        + conflicts
    )


@cache
def _json_update(
    table: Table, columns: tuple[str, ...], keys: tuple[str, ...], bound: int
) -> TextClause:
    return text(json_update_sql(table, columns, keys, "CAST(:rows AS json)", bound))


def _json_document(rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    # Naive datetimes are UTC here (as `UtcDateTime` stores them), never the session's zone.
    return {"rows": orjson.dumps(list(rows), option=orjson.OPT_NAIVE_UTC).decode()}

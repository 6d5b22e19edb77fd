"""Bulk replace of whole intervals' warehouse rows, with no value bound in Python (docs/batch.md).

``replace_intervals(conn, data, interval_starts)`` leaves what ``replace_interval`` per interval and table leaves
(exactly the new rows for each interval, one row per key, a key loaded earlier under another interval moved to its
new row by the upsert), in the caller's open transaction, with the values stored as SQLAlchemy's executemany binds
them: NaN and infinities as NULL, SQLite timestamps as the text 'YYYY-MM-DD HH:MM:SS.ffffff' of the UTC wall time,
booleans as 0/1, optional columns the data lacks left NULL on new rows (and untouched on moved rows).

How the rows get in, per dialect (the values are converted by Arrow in C, never per value in Python):

- PostgreSQL: ``COPY ... FROM STDIN (FORMAT csv)`` on the caller's psycopg connection into a temporary table,
  the CSV written by Arrow, then one ``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` per table.
- SQLite: the stdlib driver has no bulk path, so ADBC's SQLite driver writes the rows into a scratch database file,
  the caller's connection ATTACHes it (allowed inside a transaction; only DETACH is not, so a stale attachment is
  detached at the next call) and copies them with one ``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` per table.
  The scratch file is deleted after the copy (the attachment keeps its open handle until it is detached).

Everything happens in the caller's transaction: on any failure a WarehouseError is raised and the caller's rollback
leaves the warehouse as it was.
"""

from __future__ import annotations

import io
import sqlite3
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cryptopipe.archive import models
from cryptopipe.archive.warehouse import lock_interval, warehouse_errors
from cryptopipe.core.errors import WarehouseError

TABLES: dict[str, sa.Table] = {t.name: t for t in (models.market_snapshots, models.indicators, models.anomalies)}
TS_TEXT = "%Y-%m-%d %H:%M:%S"  # Arrow prints SS.ffffff for microsecond timestamps: SQLAlchemy's SQLite DATETIME text
TS_TYPE = pa.timestamp("us", tz="UTC")
DELETE_BATCH = 500  # interval starts per DELETE statement (SQLite's bound-parameter limit)
CSV_BATCH_ROWS = 65_536  # rows per CSV block sent to COPY: bounded memory for a year in one call
ALIAS = "cryptopipe_bulk"  # schema name of the attached scratch database (SQLite)
PAGE_CACHE_KIB = 256 * 1024  # SQLite page cache while copying from the scratch database
SCRATCH_PAGE_BYTES = 65_536  # page size of the scratch database (SQLite's largest)


def replace_intervals(
    conn: Connection, data: Mapping[str, pa.Table], interval_starts: Sequence[datetime]
) -> dict[str, int]:
    """Make the rows of ``interval_starts`` in market_snapshots, indicators and anomalies exactly ``data``'s.

    ``data`` maps table names to Arrow tables with the warehouse's column names, ``interval_start`` included
    (columns the table does not have are ignored); a table not given gets no rows for these intervals. Every row's
    ``interval_start`` must be one of ``interval_starts``. Returns the rows loaded per table. Raises ValueError for
    data that breaks this contract, WarehouseError when the load fails (the caller's transaction must roll back).
    """
    unknown = sorted(set(data) - set(TABLES))
    if unknown:
        raise ValueError(f"replace_intervals: no warehouse table {unknown}; it loads {sorted(TABLES)}")
    starts = sorted(set(interval_starts))
    prepared = {name: _prepare(TABLES[name], data[name], starts) for name in TABLES if name in data}
    dialect = conn.dialect.name
    for start in starts:  # in order: two loads of overlapping ranges take their locks in the same order
        lock_interval(conn, start)
    for table in TABLES.values():
        with _failures(conn, f"delete of {table.name} rows of {_span(starts)}"):
            for first in range(0, len(starts), DELETE_BATCH):
                batch = starts[first : first + DELETE_BATCH]
                conn.execute(sa.delete(table).where(table.c.interval_start.in_(batch)))
    loaded = {name: 0 for name in TABLES}
    rows = {name: t for name, t in prepared.items() if t.num_rows}
    if dialect == "postgresql":
        for name, table in rows.items():
            with _failures(conn, f"load of {table.num_rows} {name} rows of {_span(starts)}"):
                loaded[name] = _load_postgres(conn, TABLES[name], table)
    elif dialect == "sqlite":
        with _failures(conn, f"load of {_describe(rows)} rows of {_span(starts)}"):
            loaded.update(_load_sqlite(conn, rows))
    else:  # pragma: no cover - config validation only admits these two
        raise WarehouseError(f"unsupported warehouse dialect {dialect!r}")
    return loaded


# --- the rows, converted once in Arrow --------------------------------------------------------------------------


def arrow_type(column: sa.Column) -> pa.DataType:
    """The Arrow type a warehouse column's values are converted to before the load."""
    kind = column.type
    if isinstance(kind, sa.DateTime):
        return TS_TYPE
    if isinstance(kind, sa.Boolean):
        return pa.bool_()
    if isinstance(kind, sa.Integer):
        return pa.int64()
    if isinstance(kind, sa.Float):
        return pa.float64()
    if isinstance(kind, sa.String):  # Text included
        return pa.string()
    raise TypeError(f"{column.table.name}.{column.name}: no bulk conversion for {kind!r}")  # pragma: no cover


def arrow_schema(table: sa.Table) -> pa.Schema:
    """The table's columns as Arrow fields: what a caller builds rows with (e.g. anomalies from alert dicts)."""
    return pa.schema([pa.field(c.name, arrow_type(c)) for c in table.columns])


def _prepare(table: sa.Table, data: pa.Table, starts: list[datetime]) -> pa.Table:
    """The columns the table has, converted to their Arrow types, non-finite floats as nulls, and one row per
    key: the last, as a sequence of upserts would leave it."""
    names = [n for n in data.column_names if n in table.c]
    required = [c.name for c in table.primary_key.columns] + ["interval_start"]
    missing = [n for n in dict.fromkeys(required) if n not in names]
    if missing:
        raise ValueError(f"replace_intervals: {table.name} data lacks columns {missing}")
    columns = []
    for name in names:
        try:
            column = data.column(name).cast(arrow_type(table.c[name]))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise WarehouseError(
                f"warehouse load: {table.name}.{name} ({data.column(name).type}) cannot be stored as "
                f"{table.c[name].type}: {exc}"
            ) from exc
        if pa.types.is_floating(column.type):
            column = pc.if_else(pc.is_finite(column), column, pa.scalar(None, column.type))
        columns.append(column)
    prepared = pa.table(columns, names=names)
    outside = pc.invert(pc.is_in(prepared.column("interval_start"), pa.array(starts, TS_TYPE)))
    if pc.any(outside).as_py():
        stray = pc.filter(prepared.column("interval_start"), outside)[0].as_py()
        raise ValueError(
            f"replace_intervals: {table.name} has rows of interval {stray.isoformat()}, which is not among the "
            f"{len(starts)} intervals replaced ({_span(starts)})"
        )
    return _last_per_key(prepared, [c.name for c in table.primary_key.columns])


def _last_per_key(table: pa.Table, keys: list[str]) -> pa.Table:
    # One INSERT ... SELECT may not touch a row twice (PostgreSQL refuses); executemany let the later row win.
    if table.num_rows < 2:
        return table
    order = pa.array(np.arange(table.num_rows, dtype=np.int64))
    last = table.select(keys).append_column("row", order).group_by(keys, use_threads=False).aggregate([("row", "max")])
    if last.num_rows == table.num_rows:
        return table
    rows = last.column("row_max")
    return table.take(pc.take(rows, pc.sort_indices(rows)))  # the kept rows in the data's order


def _span(starts: list[datetime]) -> str:
    if not starts:
        return "no interval"
    first, last = (s.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ") for s in (starts[0], starts[-1]))
    return f"{len(starts)} intervals {first}..{last}"


def _describe(rows: Mapping[str, pa.Table]) -> str:
    return ", ".join(f"{t.num_rows} {name}" for name, t in rows.items()) or "no"


def _failures(conn: Connection, action: str) -> AbstractContextManager[None]:
    """Driver, ADBC and Arrow errors as one WarehouseError naming the warehouse (no password) and what failed."""
    url = conn.engine.url.render_as_string(hide_password=True)
    return warehouse_errors(url, action, also=(sqlite3.Error, pa.ArrowException, OSError, *_driver_errors()))


def _driver_errors() -> tuple[type[Exception], ...]:
    errors: list[type[Exception]] = []
    try:
        import psycopg

        errors.append(psycopg.Error)
    except ImportError:  # pragma: no cover - SQLite-only installs
        pass
    try:
        import adbc_driver_manager

        errors.append(adbc_driver_manager.Error)
    except ImportError:  # pragma: no cover - PostgreSQL-only installs
        pass
    return tuple(errors)


def _upsert_sql(conn: Connection, table: sa.Table, names: list[str], source: str, *, ordered: bool) -> str:
    quote = conn.dialect.identifier_preparer.quote
    keys = [c.name for c in table.primary_key.columns]
    columns = ", ".join(quote(n) for n in names)
    updates = ", ".join(f"{quote(n)} = excluded.{quote(n)}" for n in names if n not in keys)
    action = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"  # nosec B608: quoted identifiers only
    # SQLite: "WHERE true" keeps ON CONFLICT from parsing as a join constraint; rowid order = the data's order.
    tail = " WHERE true ORDER BY rowid" if ordered else ""
    conflict = ", ".join(quote(k) for k in keys)
    # Identifiers only (the model's names, quoted by the dialect); no value is ever formatted into SQL here.
    return (
        f"INSERT INTO {quote(table.name)} ({columns}) SELECT {columns} FROM {source}{tail} "  # noqa: S608 # nosec B608
        f"ON CONFLICT ({conflict}) {action}"
    )


# --- PostgreSQL: COPY of Arrow's CSV into a temporary table -----------------------------------------------------


def _load_postgres(conn: Connection, table: sa.Table, rows: pa.Table) -> int:
    quote = conn.dialect.identifier_preparer.quote
    temp = quote(f"{ALIAS}_{table.name}")
    columns = ", ".join(quote(n) for n in rows.column_names)
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS pg_temp.{temp}")  # a second call in the same transaction
    conn.exec_driver_sql(f"CREATE TEMP TABLE {temp} (LIKE {quote(table.name)}) ON COMMIT DROP")
    driver = conn.connection.driver_connection
    assert driver is not None
    with driver.cursor() as cursor, cursor.copy(f"COPY {temp} ({columns}) FROM STDIN (FORMAT csv)") as copy:
        for block in _csv_blocks(rows):
            copy.write(block)
    conn.exec_driver_sql(_upsert_sql(conn, table, rows.column_names, temp, ordered=False))
    conn.exec_driver_sql(f"DROP TABLE {temp}")
    return rows.num_rows


def _csv_blocks(rows: pa.Table) -> Iterator[bytes]:
    # Arrow's CSV: strings always quoted (so '' stays an empty string), nulls as unquoted empty fields (NULL),
    # timestamps as 'YYYY-MM-DD HH:MM:SS.ffffffZ', floats in their shortest round-trip form.
    options = pacsv.WriteOptions(include_header=False)
    for first in range(0, rows.num_rows, CSV_BATCH_ROWS):
        buffer = io.BytesIO()
        pacsv.write_csv(rows.slice(first, CSV_BATCH_ROWS), buffer, options)
        yield buffer.getvalue()


# --- SQLite: ADBC into an attached scratch database ---------------------------------------------------------------


def _load_sqlite(conn: Connection, rows: Mapping[str, pa.Table]) -> dict[str, int]:
    if not rows:
        return {}
    import adbc_driver_sqlite.dbapi as adbc_sqlite

    alias = _free_alias(conn)
    loaded: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="cryptopipe-bulk-") as tmp:
        path = Path(tmp) / "rows.db"
        # A throwaway file: no journal, no fsync (a day's commit otherwise costs more than its ingest), one
        # transaction (pragmas cannot change inside ADBC's own, hence autocommit and an explicit BEGIN), and
        # 64 KiB pages (set before the first table: 20 % less CPU to ingest a block of 28 days than 4 KiB pages).
        with adbc_sqlite.connect(str(path), autocommit=True) as scratch, scratch.cursor() as cursor:
            cursor.execute(f"PRAGMA page_size = {SCRATCH_PAGE_BYTES}")
            cursor.execute("PRAGMA synchronous = OFF")
            cursor.execute("PRAGMA journal_mode = OFF")
            cursor.fetchall()
            cursor.execute("BEGIN")
            for name, table in rows.items():
                cursor.adbc_ingest(name, _sqlite_values(table), mode="create")
            cursor.execute("COMMIT")
        conn.exec_driver_sql(f"ATTACH DATABASE ? AS {alias}", (str(path),))
        with _page_cache(conn):
            for name, table in rows.items():
                source = f"{alias}.{conn.dialect.identifier_preparer.quote(name)}"
                conn.exec_driver_sql(_upsert_sql(conn, TABLES[name], table.column_names, source, ordered=True))
                loaded[name] = table.num_rows
    return loaded


@contextmanager
def _page_cache(conn: Connection) -> Iterator[None]:
    """A larger page cache for the copy (the year's indexes outgrow SQLite's 2 MB default: measured 20 % faster),
    the connection's own setting restored after it."""
    driver = conn.connection.driver_connection
    assert isinstance(driver, sqlite3.Connection)
    (before,) = driver.execute("PRAGMA main.cache_size").fetchone()
    driver.execute(f"PRAGMA main.cache_size = {-PAGE_CACHE_KIB}")
    try:
        yield
    finally:
        driver.execute(f"PRAGMA main.cache_size = {int(before)}")


def _sqlite_values(table: pa.Table) -> pa.Table:
    """What SQLAlchemy binds on SQLite: DATETIME as text, BOOLEAN as 0/1; the rest as Arrow has it."""
    columns = []
    for column in table.columns:
        if pa.types.is_timestamp(column.type):
            columns.append(_timestamp_text(column))
        elif pa.types.is_boolean(column.type):
            columns.append(column.cast(pa.int64()))
        else:
            columns.append(column)
    return pa.table(columns, names=table.column_names)


def _timestamp_text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    # Arrow's strftime costs ~1 us a value: a column of few distinct times (snapshot_time, interval_start: one
    # per hour) is formatted once per distinct time, one of many (last_updated) as its few distinct days plus
    # the time of day in integer arithmetic (3x less CPU than strftime; same text, a test checks it).
    distinct = pc.unique(column)
    if len(distinct) * 4 > len(column):
        return _many_timestamps_text(column)
    return pc.take(pc.strftime(distinct, format=TS_TEXT), pc.index_in(column, distinct))


def _many_timestamps_text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """``strftime(TS_TEXT)`` of every value (nulls stay null): 'YYYY-MM-DD HH:MM:SS.ffffff'."""
    micros = column.cast(pa.int64())
    day = 86_400_000_000
    days = pc.divide(micros, day)  # truncates toward zero: one day less for a time before 1970 not at midnight
    days = pc.if_else(pc.less(pc.subtract(micros, pc.multiply(days, day)), 0), pc.subtract(days, 1), days)
    rest = pc.subtract(micros, pc.multiply(days, day))  # microseconds into the day, 0 <= rest < day
    midnights = pc.cast(pc.multiply(days, day), column.type)
    distinct = pc.unique(midnights)
    dates = pc.take(pc.strftime(distinct, format="%Y-%m-%d "), pc.index_in(midnights, distinct))
    parts = [dates]
    for unit, width, separator in ((3_600_000_000, 2, ":"), (60_000_000, 2, ":"), (1_000_000, 2, "."), (1, 6, "")):
        value = pc.divide(rest, unit)
        rest = pc.subtract(rest, pc.multiply(value, unit))
        parts += [pc.utf8_lpad(value.cast(pa.string()), width, "0"), separator]
    return pc.binary_join_element_wise(*parts[:-1], "")


def _free_alias(conn: Connection) -> str:
    """Detach the scratch databases earlier calls left attached (DETACH fails inside the transaction that read
    them); the first name not attached."""
    driver = conn.connection.driver_connection
    assert isinstance(driver, sqlite3.Connection)
    attached = {row[1] for row in driver.execute("PRAGMA database_list")}
    for name in sorted(n for n in attached if n.startswith(ALIAS)):
        try:
            driver.execute(f"DETACH DATABASE {name}")
            attached.discard(name)
        except sqlite3.OperationalError:  # read by this transaction: detached by a later call
            continue
    return next(f"{ALIAS}_{n}" for n in range(len(attached) + 1) if f"{ALIAS}_{n}" not in attached)

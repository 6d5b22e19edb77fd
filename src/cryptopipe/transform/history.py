"""Load the validated history of a lookback window only, compacting complete past days on the way.

Why: the cost of one transform run must not grow with the length of history. A run touches at most
``lookback_days`` past days (one object each once compacted) plus the hours of its own day, whatever else is in
the store. Rule (docs/indicators.md, "Lookback and compaction"):

- the window is the ``lookback_days * 24`` hourly partitions ending with the interval's own partition, i.e.
  snapshot times in ``(end - lookback_days, end]``;
- each full past day the window touches: its price projection if it is current (below), else the daily
  compaction ``validated_daily_key(day)`` if present; otherwise the day's hourly partitions that exist and, when
  all 24 are present, write the compaction (the concatenation of the 24 partitions sorted by the snapshot key),
  so the next run reads one object for that day. A day with missing hours is not compacted (it is read hour by
  hour) because a late hour would be silently left out of a compaction;
- the interval's own day: the hourly partitions up to and including the interval. The interval's own partition
  must exist (MissingInputError otherwise).

Price projection (``projection_key(day)``, Arrow IPC): the 4 columns the indicators need of a daily compaction,
dictionary-coded, with the compaction's key, sha256, size and store version in its metadata. A compaction is
~650 kB of 33 columns; reading, hashing and decoding it cost ~1.6 ms, the projection (~75 kB) ~0.1 ms. It is
used only while ``store.version`` of the compaction equals the recorded one (a rewritten or deleted compaction
has another version or none), and written only from a compaction whose version was the same before and after
the read. Lineage: the run records the projection (its own sha256); the projection names the compaction's bytes.

Whoever writes a validated hourly partition of an already compacted day (validate re-running an hour, backfill)
deletes or rewrites that day's compaction; the next transform run rebuilds it (and later its projection).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cryptopipe.core.compaction import compact_tables
from cryptopipe.core.errors import MissingInputError, StorageError
from cryptopipe.core.layout import (
    HOUR,
    VALIDATED,
    VALIDATED_DAILY,
    Interval,
    days_between,
    partition_start,
    validated_daily_key,
    validated_key,
)
from cryptopipe.core.schema import SNAPSHOT_SCHEMA, TS
from cryptopipe.core.stage import ObjectRef, StageContext, sha256
from cryptopipe.core.tables import conform

HOURS_PER_DAY = 24
VALIDATED_FILE = "snapshots.parquet"
PROJECTION_FILE = "prices.arrow"
PROJECTION_FORMAT = b"cryptopipe.transform.prices/1"
ARROW_CONTENT_TYPE = "application/vnd.apache.arrow.file"
# Columns the indicators need; the rest is never decoded. The series keys stay dictionary-coded (cheap to read,
# and build_grid works on the codes).
HISTORY_COLUMNS = ("coin_id", "vs_currency", "snapshot_time", "price")
_DICT = pa.dictionary(pa.int32(), pa.string())
HISTORY_SCHEMA = pa.schema(
    [
        pa.field("coin_id", _DICT, nullable=False),
        pa.field("vs_currency", _DICT, nullable=False),
        pa.field("snapshot_time", TS, nullable=False),
        pa.field("price", pa.float64()),
    ]
)


@dataclass
class History:
    """The rows read (HISTORY_SCHEMA), the interval's own validated rows, and what it cost to read them.

    ``extended``: every row read; the grid keeps those with ``grid_start - 1 h < snapshot_time <= window_end``,
    i.e. the window plus the rows between ``grid_start`` (the accumulator anchor: 01:00 of the first partition's
    day, a day the window reads anyway) and the window start: see transform/engine.py for why.
    """

    current: pa.Table
    window_start: datetime  # exclusive bound on snapshot_time
    window_end: datetime  # inclusive bound on snapshot_time (the interval end)
    extended: pa.Table
    grid_start: datetime  # first grid hour (rows with snapshot_time > grid_start - 1 h)
    rows_read: int = 0
    objects_read: int = 0
    compactions_written: list[str] = field(default_factory=list)
    projections_written: list[str] = field(default_factory=list)

    @property
    def table(self) -> pa.Table:
        """The window's rows only."""
        return between(self.extended, self.window_start, self.window_end)


def first_partition(interval: Interval, lookback_days: int) -> datetime:
    """Start of the oldest hourly partition in the window (the window holds lookback_days * 24 partitions)."""
    return interval.start - (lookback_days * HOURS_PER_DAY - 1) * HOUR


def day_prefix(day: date) -> str:
    return f"{VALIDATED}/date={day:%Y-%m-%d}/"


def projection_key(day: date) -> str:
    """Next to the day's compaction: retention prunes it with the compaction (same ``date=`` folder)."""
    return f"{VALIDATED_DAILY}/date={day:%Y-%m-%d}/{PROJECTION_FILE}"


def _projection(table: pa.Table) -> pa.Table:
    """HISTORY_SCHEMA columns of a snapshot table (series keys dictionary-coded)."""
    columns = []
    for target in HISTORY_SCHEMA:
        if target.name not in table.column_names:
            raise StorageError(f"table lacks required column {target.name!r}")
        column = table.column(target.name)
        if target.type == _DICT and not pa.types.is_dictionary(column.type):
            column = pc.dictionary_encode(column.cast(pa.string()))
        columns.append(column if column.type == target.type else column.cast(target.type))
    return pa.Table.from_arrays(columns, schema=HISTORY_SCHEMA)


def projection_bytes(table: pa.Table, source: ObjectRef, version: str) -> bytes:
    """The projection object: one record batch with one dictionary per key column, its source in the metadata."""
    meta = {
        b"format": PROJECTION_FORMAT,
        b"source_key": source.key.encode(),
        b"source_sha256": source.sha256.encode(),
        b"source_bytes": str(source.bytes).encode(),
        b"source_version": version.encode(),
    }
    table = table.unify_dictionaries().combine_chunks()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema.with_metadata(meta)) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def read_projection(data: bytes, source_key: str, version: str) -> pa.Table | None:
    """The projection's rows if it was made from ``source_key`` at ``version`` in this format, else None."""
    try:
        reader = pa.ipc.open_file(pa.py_buffer(data))
        meta = reader.schema.metadata or {}
        current = (
            meta.get(b"format") == PROJECTION_FORMAT
            and meta.get(b"source_key") == source_key.encode()
            and meta.get(b"source_version") == version.encode()
        )
        if not current or not reader.schema.remove_metadata().equals(HISTORY_SCHEMA):
            return None
        return reader.read_all().replace_schema_metadata(None)
    except (pa.ArrowInvalid, OSError):
        return None  # unreadable: a cache, rebuilt from the compaction


class _Reader:
    """Reads through the stage context (so lineage records every input) and counts rows and objects."""

    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self.rows = 0
        self.objects = 0
        self.projections_written: list[str] = []

    def _record(self, key: str, data: bytes, rows: int) -> None:
        self.ctx.result.inputs.append(ObjectRef(key, sha256(data), len(data), rows))
        self.rows += rows
        self.objects += 1

    def read(self, key: str, columns: tuple[str, ...] | None = None) -> pa.Table | None:
        """Read a Parquet object if it exists (all columns, or only ``columns``); recorded with its sha256."""
        data = self.ctx.store.get_or_none(key)
        if data is None:
            return None
        table = self._parse(key, data, columns)
        self._record(key, data, table.num_rows)
        return table

    def _parse(self, key: str, data: bytes, columns: tuple[str, ...] | None) -> pa.Table:
        """All columns, or the projection (HISTORY_SCHEMA) when ``columns`` is HISTORY_COLUMNS."""
        project = columns == HISTORY_COLUMNS
        try:
            parquet = pq.ParquetFile(
                pa.BufferReader(data), read_dictionary=list(HISTORY_COLUMNS[:2]) if project else None
            )
            table = parquet.read(columns=list(columns) if columns else None, use_threads=False)  # small objects
        except (pa.ArrowInvalid, OSError) as exc:
            raise StorageError(f"{self.ctx.store.url(key)} is not a readable Parquet file: {exc}", key=key) from exc
        return _projection(table) if project else table

    def read_day(self, day: date) -> pa.Table | None:
        """A compacted day's rows: its current projection, else the compaction (then projected for next time)."""
        key = validated_daily_key(day)
        store = self.ctx.store
        version = store.version(key)
        if version is not None:
            cached = store.get_or_none(projection_key(day))
            table = None if cached is None else read_projection(cached, key, version)
            if cached is not None and table is not None:
                self._record(projection_key(day), cached, table.num_rows)
                return table
        data = store.get_or_none(key)
        if data is None:
            return None
        table = self._parse(key, data, HISTORY_COLUMNS)
        self._record(key, data, table.num_rows)
        if version is not None and store.version(key) == version:  # the bytes read are that version's
            out = projection_bytes(table, self.ctx.result.inputs[-1], version)
            self.ctx.put(projection_key(day), out, ARROW_CONTENT_TYPE, rows=table.num_rows)
            self.projections_written.append(projection_key(day))
        return table

    def hourly_keys(self, day: date, last_hour: int = HOURS_PER_DAY - 1) -> dict[int, str]:
        """The day's existing hourly partitions (hour -> key) up to last_hour."""
        found: dict[int, str] = {}
        for key in self.ctx.store.list(day_prefix(day)):
            start = partition_start(key)
            if start is not None and key.endswith("/" + VALIDATED_FILE) and start.hour <= last_hour:
                found[start.hour] = key
        return dict(sorted(found.items()))


def _past_day(reader: _Reader, day: date, compactions: list[str]) -> list[pa.Table]:
    daily = reader.read_day(day)
    if daily is not None:
        return [daily]
    hours = [t for t in (reader.read(k) for k in reader.hourly_keys(day).values()) if t is not None]
    if len(hours) == HOURS_PER_DAY:
        key = validated_daily_key(day)
        reader.ctx.write_table(key, compact_tables(hours), SNAPSHOT_SCHEMA)
        compactions.append(key)
    return [_projection(t) for t in hours]


def anchor_time(interval: Interval, lookback_days: int) -> datetime:
    """First snapshot (01:00) of the day of the window's first partition: where the accumulators start."""
    day = first_partition(interval, lookback_days).date()
    return datetime(day.year, day.month, day.day, tzinfo=interval.start.tzinfo) + HOUR


def read_window_days(
    reader: _Reader, first_day: date, last: Interval, compactions: list[str], skip: str | None = None
) -> list[pa.Table]:
    """Rows (HISTORY_SCHEMA) of the days first_day .. last's day, the last day only up to last's hour."""
    parts: list[pa.Table] = []
    today = last.start.date()
    for day in days_between(first_day, today - timedelta(days=1)):
        parts.extend(_past_day(reader, day, compactions))
    for key in reader.hourly_keys(today, last.start.hour).values():
        if key == skip:
            continue  # already read
        table = reader.read(key, HISTORY_COLUMNS)
        if table is not None:
            parts.append(table)
    return parts


def between(table: pa.Table, after: datetime, until: datetime) -> pa.Table:
    """Rows with after < snapshot_time <= until."""
    times = table.column("snapshot_time")
    keep = pc.and_(pc.greater(times, pa.scalar(after, times.type)), pc.less_equal(times, pa.scalar(until, times.type)))
    return table.filter(keep)


def read_current(reader: _Reader, interval: Interval) -> pa.Table:
    current = reader.read(validated_key(interval))
    if current is None:
        raise MissingInputError(
            f"{reader.ctx.store.url(validated_key(interval))} is missing: transform needs the validated snapshots "
            f"of {interval} (run validate for this interval first)",
            key=validated_key(interval),
        )
    return conform(current, SNAPSHOT_SCHEMA)


def concat(parts: list[pa.Table]) -> pa.Table:
    return pa.concat_tables(parts) if parts else HISTORY_SCHEMA.empty_table()


def load_history(ctx: StageContext, lookback_days: int) -> History:
    interval = ctx.interval
    reader = _Reader(ctx)
    current = read_current(reader, interval)
    compactions: list[str] = []
    first_day = first_partition(interval, lookback_days).date()
    parts = read_window_days(reader, first_day, interval, compactions, skip=validated_key(interval))
    parts.append(_projection(current))

    window_end = interval.end
    return History(
        current=current,
        window_start=window_end - timedelta(days=lookback_days),
        window_end=window_end,
        extended=concat(parts),
        grid_start=anchor_time(interval, lookback_days),
        rows_read=reader.rows,
        objects_read=reader.objects,
        compactions_written=compactions,
        projections_written=reader.projections_written,
    )

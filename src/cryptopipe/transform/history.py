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

Price projection (``projection_key(day)``, transform/projection.py): the day's prices as series x 24 hours
(Arrow IPC, ~60 kB) with the compaction's key, sha256, size and store version in its metadata. A compaction is
~650 kB of 33 columns; reading, hashing and decoding it cost ~1.6 ms, the projection ~0.1 ms, and the grid
copies it as a block. It is used only while ``store.version`` of the compaction equals the recorded one (a
rewritten or deleted compaction has another version or none), and written only from a compaction whose version
was the same before and after the read. Lineage: the run records the projection (its own sha256); the projection
names the compaction's bytes.

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
from cryptopipe.core.schema import SNAPSHOT_SCHEMA
from cryptopipe.core.stage import ObjectRef, StageContext, sha256
from cryptopipe.core.tables import conform
from cryptopipe.transform import projection
from cryptopipe.transform.projection import DayPrices

HOURS_PER_DAY = 24
VALIDATED_FILE = "snapshots.parquet"
PROJECTION_FILE = "prices.arrow"
ARROW_CONTENT_TYPE = "application/vnd.apache.arrow.file"
# Columns the indicators need; the rest is never decoded.
HISTORY_COLUMNS = ("coin_id", "vs_currency", "snapshot_time", "price")
HISTORY_SCHEMA = projection.ROWS_SCHEMA
Part = pa.Table | DayPrices  # a part of the history: rows (HISTORY_SCHEMA), or a day as series x hours


@dataclass
class History:
    """The parts read (rows or whole days), the interval's own validated rows, and what it cost to read them.

    The grid keeps the rows with ``grid_start - 1 h < snapshot_time <= window_end``: the window plus the rows
    between ``grid_start`` (the accumulator anchor: 01:00 of the first partition's day, a day the window reads
    anyway) and the window start (see transform/engine.py for why).
    """

    current: pa.Table
    window_start: datetime  # exclusive bound on snapshot_time
    window_end: datetime  # inclusive bound on snapshot_time (the interval end)
    parts: list[Part]
    grid_start: datetime  # first grid hour (rows with snapshot_time > grid_start - 1 h)
    rows_read: int = 0
    objects_read: int = 0
    compactions_written: list[str] = field(default_factory=list)
    projections_written: list[str] = field(default_factory=list)

    @property
    def extended(self) -> pa.Table:
        """Every row read, as one table (HISTORY_SCHEMA)."""
        return concat(self.parts)

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


class _Reader:
    """Reads through the stage context (so lineage records every input) and counts rows and objects.

    ``known``: objects already read in this process (key -> their record and full table; range mode passes the
    intervals' own partitions), recorded again as inputs here but not read and decoded twice.
    """

    def __init__(self, ctx: StageContext, known: dict[str, tuple[ObjectRef, pa.Table]] | None = None) -> None:
        self.ctx = ctx
        self.known = known or {}
        self.rows = 0
        self.objects = 0
        self.projections_written: list[str] = []

    def _record(self, key: str, data: bytes, rows: int) -> None:
        self._count(ObjectRef(key, sha256(data), len(data), rows))

    def _count(self, ref: ObjectRef) -> None:
        self.ctx.result.inputs.append(ref)
        self.rows += ref.rows or 0
        self.objects += 1

    def read(self, key: str, columns: tuple[str, ...] | None = None) -> pa.Table | None:
        """Read a Parquet object if it exists (all columns, or only ``columns``); recorded with its sha256."""
        if key in self.known:
            ref, full = self.known[key]
            self._count(ObjectRef(ref.key, ref.sha256, ref.bytes, ref.rows, ref.store))
            return (
                projection.as_rows(full)
                if columns == HISTORY_COLUMNS
                else full.select(list(columns or full.column_names))
            )
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
        return projection.as_rows(table) if project else table

    def read_day(self, day: date) -> Part | None:
        """A compacted day: its current projection, else the compaction (then projected for next time)."""
        key = validated_daily_key(day)
        store = self.ctx.store
        version = store.version(key)
        if version is not None:
            cached = store.get_or_none(projection_key(day))
            part = None if cached is None else projection.decode(cached, key, version)
            if cached is not None and part is not None:
                self._record(projection_key(day), cached, part.num_rows)
                return part
        data = store.get_or_none(key)
        if data is None:
            return None
        rows = self._parse(key, data, HISTORY_COLUMNS)
        self._record(key, data, rows.num_rows)
        part = projection.day_prices(rows, day) or rows
        if version is not None and store.version(key) == version:  # the bytes read are that version's
            out = projection.encode(part, self.ctx.result.inputs[-1], version)
            self.ctx.put(projection_key(day), out, ARROW_CONTENT_TYPE, rows=rows.num_rows)
            self.projections_written.append(projection_key(day))
        return part

    def hourly_keys(self, day: date, last_hour: int = HOURS_PER_DAY - 1) -> dict[int, str]:
        """The day's existing hourly partitions (hour -> key) up to last_hour."""
        found: dict[int, str] = {}
        for key in self.ctx.store.list(day_prefix(day)):
            start = partition_start(key)
            if start is not None and key.endswith("/" + VALIDATED_FILE) and start.hour <= last_hour:
                found[start.hour] = key
        return dict(sorted(found.items()))


def _past_day(reader: _Reader, day: date, compactions: list[str]) -> list[Part]:
    daily = reader.read_day(day)
    if daily is not None:
        return [daily]
    hours = [t for t in (reader.read(k) for k in reader.hourly_keys(day).values()) if t is not None]
    if len(hours) == HOURS_PER_DAY:
        key = validated_daily_key(day)
        reader.ctx.write_table(key, compact_tables(hours), SNAPSHOT_SCHEMA)
        compactions.append(key)
    return [projection.as_rows(t) for t in hours]


def anchor_time(interval: Interval, lookback_days: int) -> datetime:
    """First snapshot (01:00) of the day of the window's first partition: where the accumulators start."""
    day = first_partition(interval, lookback_days).date()
    return datetime(day.year, day.month, day.day, tzinfo=interval.start.tzinfo) + HOUR


def read_window_days(
    reader: _Reader, first_day: date, last: Interval, compactions: list[str], skip: str | None = None
) -> list[Part]:
    """The days first_day .. last's day, the last day only up to last's hour."""
    parts: list[Part] = []
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


def concat(parts: list[Part]) -> pa.Table:
    """The parts' rows as one table (HISTORY_SCHEMA)."""
    return projection.concat_rows([part.to_rows() if isinstance(part, DayPrices) else part for part in parts])


def load_history(ctx: StageContext, lookback_days: int) -> History:
    interval = ctx.interval
    reader = _Reader(ctx)
    current = read_current(reader, interval)
    compactions: list[str] = []
    first_day = first_partition(interval, lookback_days).date()
    parts = read_window_days(reader, first_day, interval, compactions, skip=validated_key(interval))
    parts.append(projection.as_rows(current))

    window_end = interval.end
    return History(
        current=current,
        window_start=window_end - timedelta(days=lookback_days),
        window_end=window_end,
        parts=parts,
        grid_start=anchor_time(interval, lookback_days),
        rows_read=reader.rows,
        objects_read=reader.objects,
        compactions_written=compactions,
        projections_written=reader.projections_written,
    )

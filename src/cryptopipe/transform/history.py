"""Load the validated history of a lookback window only, compacting complete past days on the way.

Why: the cost of one transform run must not grow with the length of history. A run touches at most
``lookback_days`` past days (one daily compaction each once compacted) plus the hours of its own day, whatever
else is in the store. Rule (docs/indicators.md, "Lookback and compaction"):

- the window is the ``lookback_days * 24`` hourly partitions ending with the interval's own partition, i.e.
  snapshot times in ``(end - lookback_days, end]``;
- each full past day the window touches: read ``validated_daily_key(day)`` if present; otherwise read the day's
  hourly partitions that exist and, when all 24 are present, write the compaction (the concatenation of the 24
  partitions sorted by the snapshot key), so the next run reads one object for that day. A day with missing hours
  is not compacted (it is read hour by hour) because a late hour would be silently left out of a compaction;
- the interval's own day: the hourly partitions up to and including the interval. The interval's own partition
  must exist (MissingInputError otherwise).

Whoever writes a validated hourly partition of an already compacted day (validate re-running an hour, backfill)
deletes or rewrites that day's compaction; the next transform run rebuilds it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cryptopipe.core.compaction import compact_tables
from cryptopipe.core.errors import MissingInputError, ObjectNotFoundError, StorageError
from cryptopipe.core.layout import (
    HOUR,
    VALIDATED,
    Interval,
    days_between,
    partition_start,
    validated_daily_key,
    validated_key,
)
from cryptopipe.core.schema import SNAPSHOT_SCHEMA
from cryptopipe.core.stage import StageContext
from cryptopipe.core.tables import conform

HOURS_PER_DAY = 24
VALIDATED_FILE = "snapshots.parquet"
# Columns the indicators need; the rest is dropped right after reading to keep memory flat.
HISTORY_COLUMNS = ("coin_id", "vs_currency", "snapshot_time", "price")
HISTORY_SCHEMA = pa.schema([SNAPSHOT_SCHEMA.field(name) for name in HISTORY_COLUMNS])


@dataclass
class History:
    """The window's rows (HISTORY_COLUMNS), the interval's own validated rows, and what it cost to read them.

    ``extended`` also holds the rows between ``grid_start`` (the accumulator anchor: 01:00 of the first
    partition's day, a day the window reads anyway) and the window: see transform/engine.py for why.
    """

    table: pa.Table
    current: pa.Table
    window_start: datetime  # exclusive bound on snapshot_time
    window_end: datetime  # inclusive bound on snapshot_time (the interval end)
    extended: pa.Table
    grid_start: datetime  # first grid hour of ``extended`` (rows with snapshot_time > grid_start - 1 h)
    rows_read: int = 0
    objects_read: int = 0
    compactions_written: list[str] = field(default_factory=list)


def first_partition(interval: Interval, lookback_days: int) -> datetime:
    """Start of the oldest hourly partition in the window (the window holds lookback_days * 24 partitions)."""
    return interval.start - (lookback_days * HOURS_PER_DAY - 1) * HOUR


def day_prefix(day: date) -> str:
    return f"{VALIDATED}/date={day:%Y-%m-%d}/"


class _Reader:
    """Reads through the stage context (so lineage records every input) and counts rows and objects."""

    def __init__(self, ctx: StageContext) -> None:
        self.ctx = ctx
        self.rows = 0
        self.objects = 0

    def read(self, key: str, columns: tuple[str, ...] | None = None) -> pa.Table | None:
        """Read an object if it exists (all columns, or only ``columns``: a daily compaction needs 4 of 33)."""
        try:
            data = self.ctx.get(key)  # recorded as an input (key, sha256, bytes)
        except ObjectNotFoundError:
            return None
        try:
            table = pq.read_table(io.BytesIO(data), columns=list(columns) if columns else None)
        except (pa.ArrowInvalid, OSError) as exc:
            raise StorageError(f"{self.ctx.store.url(key)} is not a readable Parquet file: {exc}", key=key) from exc
        self.ctx.result.inputs[-1].rows = table.num_rows
        self.rows += table.num_rows
        self.objects += 1
        return table

    def hourly_keys(self, day: date, last_hour: int = HOURS_PER_DAY - 1) -> dict[int, str]:
        """The day's existing hourly partitions (hour -> key) up to last_hour."""
        found: dict[int, str] = {}
        for key in self.ctx.store.list(day_prefix(day)):
            start = partition_start(key)
            if start is not None and key.endswith("/" + VALIDATED_FILE) and start.hour <= last_hour:
                found[start.hour] = key
        return dict(sorted(found.items()))


def _slim(table: pa.Table) -> pa.Table:
    return conform(table, HISTORY_SCHEMA)


def _past_day(reader: _Reader, day: date, compactions: list[str]) -> list[pa.Table]:
    daily = reader.read(validated_daily_key(day), HISTORY_COLUMNS)
    if daily is not None:
        return [_slim(daily)]
    hours = [t for t in (reader.read(k) for k in reader.hourly_keys(day).values()) if t is not None]
    if len(hours) == HOURS_PER_DAY:
        key = validated_daily_key(day)
        reader.ctx.write_table(key, compact_tables(hours), SNAPSHOT_SCHEMA)
        compactions.append(key)
    return [_slim(t) for t in hours]


def anchor_time(interval: Interval, lookback_days: int) -> datetime:
    """First snapshot (01:00) of the day of the window's first partition: where the accumulators start."""
    day = first_partition(interval, lookback_days).date()
    return datetime(day.year, day.month, day.day, tzinfo=interval.start.tzinfo) + HOUR


def read_window_days(
    reader: _Reader, first_day: date, last: Interval, compactions: list[str], skip: str | None = None
) -> list[pa.Table]:
    """Rows (HISTORY_COLUMNS) of the days first_day .. last's day, the last day only up to last's hour."""
    parts: list[pa.Table] = []
    today = last.start.date()
    for day in days_between(first_day, today - timedelta(days=1)):
        parts.extend(_past_day(reader, day, compactions))
    for key in reader.hourly_keys(today, last.start.hour).values():
        if key == skip:
            continue  # already read
        table = reader.read(key, HISTORY_COLUMNS)
        if table is not None:
            parts.append(_slim(table))
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


def load_history(ctx: StageContext, lookback_days: int) -> History:
    interval = ctx.interval
    reader = _Reader(ctx)
    current = read_current(reader, interval)
    compactions: list[str] = []
    first_day = first_partition(interval, lookback_days).date()
    parts = read_window_days(reader, first_day, interval, compactions, skip=validated_key(interval))
    parts.append(_slim(current))

    window_end = interval.end
    window_start = window_end - timedelta(days=lookback_days)
    grid_start = anchor_time(interval, lookback_days)
    extended = between(pa.concat_tables(parts), grid_start - HOUR, window_end)
    return History(
        table=between(extended, window_start, window_end),
        current=current,
        window_start=window_start,
        window_end=window_end,
        extended=extended,
        grid_start=grid_start,
        rows_read=reader.rows,
        objects_read=reader.objects,
        compactions_written=compactions,
    )

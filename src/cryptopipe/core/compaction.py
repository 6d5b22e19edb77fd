"""Daily compaction of validated hours: one rule, used by every writer (backfill, transform) so bytes agree.

A day's compaction is its 24 hourly validated partitions, conformed to SNAPSHOT_SCHEMA, concatenated and sorted by
the snapshot key. Sorting makes the bytes independent of the order the hours were read in. Whoever rewrites an hour
of a compacted day (validate rerunning an hour) deletes that day's compaction; the next reader rebuilds it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import pyarrow as pa

from cryptopipe.core.layout import HOUR, Interval, validated_daily_key, validated_key
from cryptopipe.core.schema import SNAPSHOT_KEY, SNAPSHOT_SCHEMA
from cryptopipe.core.storage import ObjectStore
from cryptopipe.core.tables import PARQUET_CONTENT_TYPE, conform, read_table, to_parquet_bytes

HOURS_PER_DAY = 24


def compact_tables(tables: list[pa.Table]) -> pa.Table:
    combined = pa.concat_tables([conform(t, SNAPSHOT_SCHEMA) for t in tables])
    return combined.sort_by([(name, "ascending") for name in SNAPSHOT_KEY])


def day_hour_keys(day: date) -> list[str]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return [validated_key(Interval.starting(start + h * HOUR)) for h in range(HOURS_PER_DAY)]


def compact_day(store: ObjectStore, day: date) -> bool:
    """Write the day's compaction if all 24 hourly partitions exist; False if the day is incomplete."""
    keys = day_hour_keys(day)
    if not all(store.exists(k) for k in keys):
        return False
    table = compact_tables([read_table(store, k) for k in keys])
    store.put(validated_daily_key(day), to_parquet_bytes(table), PARQUET_CONTENT_TYPE)
    return True

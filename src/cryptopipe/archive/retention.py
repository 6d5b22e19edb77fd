"""Retention of the working areas. The archive and the manifests are never touched.

Each run deletes the partitions that expired with it (its own hour, ``working_days`` ago) — constant work per run.
Once a day (the 00:00 interval) a sweep also removes anything older that hourly runs missed (skipped or failed
runs) and the day-level objects (``.../date=D/<file>``: daily compactions and the daily layout) of days before the
cutoff's day; it lists only the working prefixes, which retention itself keeps bounded.
"""

from __future__ import annotations

from datetime import timedelta

from cryptopipe.core import layout
from cryptopipe.core.layout import Interval, partition_start
from cryptopipe.core.storage import ObjectStore


def apply_retention(store: ObjectStore, interval: Interval, working_days: int) -> int:
    cutoff = interval.start - timedelta(days=working_days)  # partitions starting before this are expired
    deleted = 0
    if interval.start.hour == 0:
        candidates = [key for prefix in layout.WORKING_PREFIXES for key in store.list(f"{prefix}/")]
    else:
        expired = Interval.starting(cutoff - timedelta(hours=1))
        candidates = [key for prefix in layout.WORKING_PREFIXES for key in store.list(f"{prefix}/{expired.partition}/")]
    for key in candidates:
        day = layout.day_of(key)  # day-level objects (compactions, the daily layout) expire with their whole day
        if day is not None:
            if day >= cutoff.date():
                continue
        else:
            start = partition_start(key)
            if start is None or start >= cutoff:
                continue
        store.delete(key)
        deleted += 1
    return deleted

"""Retention of the working areas. The archive and the manifests are never touched.

Each run deletes the partitions that expired with it (its own hour, ``working_days`` ago) — constant work per run.
Once a day (the 00:00 interval) a sweep also removes anything older that hourly runs missed (skipped or failed
runs) and the day-level objects (``.../date=D/<file>``: daily compactions and the daily layout) of days before the
cutoff's day. It lists only the ``date=`` folders up to the cutoff's day (later ones hold nothing expired), so it
reads what it deletes plus one day, not the whole retained window.
"""

from __future__ import annotations

import re
from datetime import date, timedelta

from cryptopipe.core import layout
from cryptopipe.core.layout import Interval, partition_start
from cryptopipe.core.storage import ObjectStore


def apply_retention(store: ObjectStore, interval: Interval, working_days: int) -> int:
    cutoff = interval.start - timedelta(days=working_days)  # partitions starting before this are expired
    deleted = 0
    if interval.start.hour == 0:
        candidates = [key for prefix in layout.WORKING_PREFIXES for key in _up_to(store, f"{prefix}/", cutoff.date())]
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


_DATE_FOLDER = re.compile(r"date=(\d{4}-\d{2}-\d{2})/")


def _up_to(store: ObjectStore, prefix: str, last: date) -> list[str]:
    """The keys in the ``date=`` folders under ``prefix`` up to day ``last``, descending into other folders
    (``daily/``). Keys outside a date folder have no partition and never expire; a folder named ``date=`` whose
    date does not exist is not ours to judge."""
    keys: list[str] = []
    for folder in store.folders(prefix):
        match = _DATE_FOLDER.fullmatch(folder[len(prefix) :])
        if match is None:
            keys += _up_to(store, folder, last)
            continue
        try:
            day = date.fromisoformat(match.group(1))
        except ValueError:
            continue
        if day <= last:
            keys += store.list(folder)
    return keys

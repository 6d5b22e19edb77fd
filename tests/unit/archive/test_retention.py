"""Retention's 00:00 sweep: the same deletions as judging every working key, without listing the retained days."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from cryptopipe.archive.retention import apply_retention
from cryptopipe.core import layout
from cryptopipe.core.layout import Interval
from cryptopipe.core.storage import FileStore

SWEEP = Interval.starting(datetime(2026, 3, 10, tzinfo=UTC))  # a 00:00 interval: the sweep runs
WORKING_DAYS = 3
CUTOFF = SWEEP.start - timedelta(days=WORKING_DAYS)  # 2026-03-07T00:00Z


def _expired(key: str) -> bool:
    """Judged key by key, with no listing shortcut: what the sweep must delete (the archive never expires)."""
    if not key.startswith(tuple(f"{prefix}/" for prefix in layout.WORKING_PREFIXES)):
        return False
    day = layout.day_of(key)
    if day is not None:
        return day < CUTOFF.date()
    start = layout.partition_start(key)
    return start is not None and start < CUTOFF


def _seed(store: FileStore) -> list[str]:
    keys = ["quality/notes.json", "archive/raw/coins_markets/date=2026-03-01/hour=00/page.json"]
    for offset in range(-8, 1):
        day = SWEEP.start.date() + timedelta(days=offset)
        keys += [layout.validated_daily_key(day), layout.quality_daily_report_key(day), layout.alerts_daily_key(day)]
        for hour in (0, 23):
            interval = Interval.starting(datetime(day.year, day.month, day.day, hour, tzinfo=UTC))
            keys += [layout.staging_key(interval), layout.quality_report_key(interval)]
    for key in keys:
        store.put(key, b"x")
    (store.root / "staging/market_snapshots/date=2026-02-30/hour=00").mkdir(parents=True)  # not a real day
    return keys


def test_the_sweep_deletes_what_a_full_listing_would_and_lists_no_retained_day(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FileStore(tmp_path / "store")
    keys = _seed(store)
    listed: list[str] = []
    original = FileStore.list

    def spy(self: FileStore, prefix: str) -> list[str]:
        listed.append(prefix)
        return original(self, prefix)

    monkeypatch.setattr(FileStore, "list", spy)
    deleted = apply_retention(store, SWEEP, WORKING_DAYS)

    expired = [key for key in keys if _expired(key)]
    assert len(expired) == 5 * 7  # the 5 days before the cutoff day, 7 keys each (sanity of the seed)
    assert deleted == len(expired)
    assert sorted(k for k in keys if store.exists(k)) == sorted(set(keys) - set(expired))
    assert listed and all("/date=" in prefix for prefix in listed), listed  # date folders only, not whole areas
    listed_days = [date.fromisoformat(prefix.split("/date=")[1][:10]) for prefix in listed]
    assert all(day <= CUTOFF.date() for day in listed_days), listed  # only days that can hold expired keys
    assert len(listed) == len(set(listed))

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cryptopipe.core import layout
from cryptopipe.core.errors import ConfigError
from cryptopipe.core.layout import Interval, hourly_intervals, partition_start


def test_interval_parses_airflow_renderings() -> None:
    for start, end in [
        ("2026-11-22T13:00:00+00:00", "2026-11-22T14:00:00+00:00"),
        ("2026-11-22T13:00:00Z", "2026-11-22T14:00:00Z"),
        ("2026-11-22T14:00:00+01:00", "2026-11-22T15:00:00+01:00"),
    ]:
        iv = Interval.parse(start, end)
        assert iv.start == datetime(2026, 11, 22, 13, tzinfo=UTC)
        assert iv.partition == "date=2026-11-22/hour=13"
        assert iv.snapshot_time == datetime(2026, 11, 22, 14, tzinfo=UTC)


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("2026-11-22T13:00:00", "2026-11-22T14:00:00", "has no UTC offset"),
        ("yesterday", "2026-11-22T14:00:00Z", "is not an ISO-8601 timestamp"),
        ("2026-11-22T13:00:00Z", "2026-11-22T15:00:00Z", "is not one hour"),
        ("2026-11-22T13:30:00Z", "2026-11-22T14:30:00Z", "is not on the hour"),
    ],
)
def test_bad_intervals(start: str, end: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Interval.parse(start, end)


def test_keys_depend_on_interval_only() -> None:
    iv = Interval.parse("2026-11-22T23:00:00Z", "2026-11-23T00:00:00Z")
    assert layout.raw_page_key(iv, "usd", 2) == "raw/coins_markets/date=2026-11-22/hour=23/vs=usd/page=0002.json.gz"
    assert layout.sidecar_key(layout.raw_page_key(iv, "usd", 2)).endswith("page=0002.meta.json")
    assert layout.validated_key(iv) == "validated/market_snapshots/date=2026-11-22/hour=23/snapshots.parquet"
    assert layout.alerts_key(iv) == "alerts/date=2026-11-22/hour=23/alerts.json"
    assert layout.archive_key("raw/a") == "archive/raw/a"
    assert partition_start(layout.manifest_key(iv)) == iv.start
    assert partition_start("no/partition/here") is None


def test_hourly_intervals_cover_range_across_midnight() -> None:
    ivs = hourly_intervals(datetime(2026, 11, 22, 22, tzinfo=UTC), datetime(2026, 11, 23, 2, tzinfo=UTC))
    assert [iv.partition for iv in ivs] == [
        "date=2026-11-22/hour=22", "date=2026-11-22/hour=23", "date=2026-11-23/hour=00", "date=2026-11-23/hour=01",
    ]  # fmt: skip
    with pytest.raises(ConfigError, match="is not after start"):
        hourly_intervals(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, tzinfo=UTC))

"""The data layout: every key is derived from the data interval, never from the wall clock.

Partitions are keyed by the interval start (Airflow's logical date) as ``date=YYYY-MM-DD/hour=HH``;
the snapshot time of an interval is its end. Rerunning an interval therefore writes the same keys.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from cryptopipe.core.errors import ConfigError

HOUR = timedelta(hours=1)
_PARTITION_RE = re.compile(r"date=(\d{4}-\d{2}-\d{2})/hour=(\d{2})")


def parse_utc(text: str, what: str) -> datetime:
    """ISO-8601 with an explicit offset or Z (as Airflow renders ``data_interval_start``), to UTC."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{what}: {text!r} is not an ISO-8601 timestamp") from None
    if value.tzinfo is None:
        raise ConfigError(f"{what}: {text!r} has no UTC offset; write e.g. 2026-11-22T13:00:00Z")
    return value.astimezone(UTC)


@dataclass(frozen=True, order=True)
class Interval:
    """One hourly data interval [start, end)."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ConfigError("interval bounds must be timezone-aware UTC timestamps")
        if self.end - self.start != HOUR:
            raise ConfigError(
                f"interval {self.start.isoformat()} .. {self.end.isoformat()} is not one hour; "
                "stages process hourly intervals (use `cryptopipe run --start/--end` for ranges)"
            )
        if self.start.minute or self.start.second or self.start.microsecond:
            raise ConfigError(f"interval start {self.start.isoformat()} is not on the hour")

    @classmethod
    def parse(cls, start: str, end: str) -> Interval:
        return cls(parse_utc(start, "--interval-start"), parse_utc(end, "--interval-end"))

    @classmethod
    def starting(cls, start: datetime) -> Interval:
        start = start.astimezone(UTC)
        return cls(start, start + HOUR)

    @property
    def snapshot_time(self) -> datetime:
        return self.end

    @property
    def partition(self) -> str:
        return partition_of(self.start)

    def previous(self, hours: int = 1) -> Interval:
        return Interval.starting(self.start - hours * HOUR)

    def __str__(self) -> str:
        return f"[{self.start:%Y-%m-%dT%H:%MZ}, {self.end:%Y-%m-%dT%H:%MZ})"


def hourly_intervals(start: datetime, end: datetime) -> list[Interval]:
    """The hourly intervals covering [start, end); both bounds must be on the hour."""
    if end <= start:
        raise ConfigError(f"range end {end.isoformat()} is not after start {start.isoformat()}")
    first = Interval.starting(start)  # validates alignment
    if end.minute or end.second or end.microsecond:
        raise ConfigError(f"range end {end.isoformat()} is not on the hour")
    count = int((end - first.start) / HOUR)
    return [Interval.starting(first.start + i * HOUR) for i in range(count)]


def partition_of(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return f"date={moment:%Y-%m-%d}/hour={moment:%H}"


def partition_start(key: str) -> datetime | None:
    """The interval start a key belongs to, or None if the key has no partition."""
    match = _PARTITION_RE.search(key)
    if not match:
        return None
    day = date.fromisoformat(match.group(1))
    return datetime(day.year, day.month, day.day, int(match.group(2)), tzinfo=UTC)


def days_between(first: date, last: date) -> Iterator[date]:
    for offset in range((last - first).days + 1):
        yield first + timedelta(days=offset)


# --- keys, one function per dataset (docs/architecture.md "Storage layout") ---

RAW_MARKETS = "raw/coins_markets"
STAGING = "staging/market_snapshots"
VALIDATED = "validated/market_snapshots"
VALIDATED_DAILY = "validated/market_snapshots_daily"
QUARANTINE = "quarantine/market_snapshots"
QUALITY = "quality"
INDICATORS = "analytics/indicators"
ALERTS = "alerts"
REPORTS = "reports"
MANIFESTS = "manifests"
ARCHIVE = "archive"

# Working areas that retention may prune; the archive is never pruned.
WORKING_PREFIXES = (RAW_MARKETS, STAGING, VALIDATED, VALIDATED_DAILY, QUARANTINE, QUALITY, INDICATORS, ALERTS, REPORTS)


def raw_prefix(interval: Interval) -> str:
    return f"{RAW_MARKETS}/{interval.partition}/"


def raw_page_key(interval: Interval, vs_currency: str, page: int) -> str:
    return f"{RAW_MARKETS}/{interval.partition}/vs={vs_currency}/page={page:04d}.json.gz"


def sidecar_key(raw_key: str) -> str:
    return raw_key.removesuffix(".json.gz") + ".meta.json"


def staging_key(interval: Interval) -> str:
    return f"{STAGING}/{interval.partition}/snapshots.parquet"


def validated_key(interval: Interval) -> str:
    return f"{VALIDATED}/{interval.partition}/snapshots.parquet"


def validated_daily_key(day: date) -> str:
    """A day's validated hours compacted into one object, so a lookback reads ~1 object per day."""
    return f"{VALIDATED_DAILY}/date={day:%Y-%m-%d}/snapshots.parquet"


def quarantine_key(interval: Interval) -> str:
    return f"{QUARANTINE}/{interval.partition}/quarantine.parquet"


def quality_report_key(interval: Interval) -> str:
    return f"{QUALITY}/{interval.partition}/report.json"


def data_docs_prefix(interval: Interval) -> str:
    return f"{QUALITY}/{interval.partition}/data_docs/"


def indicators_key(interval: Interval) -> str:
    return f"{INDICATORS}/{interval.partition}/indicators.parquet"


def alerts_key(interval: Interval) -> str:
    return f"{ALERTS}/{interval.partition}/alerts.json"


def report_prefix(interval: Interval) -> str:
    return f"{REPORTS}/{interval.partition}/"


def manifest_key(interval: Interval) -> str:
    return f"{MANIFESTS}/{interval.partition}/manifest.json"


def archive_key(raw_key: str) -> str:
    return f"{ARCHIVE}/{raw_key}"

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
_DAY_RE = re.compile(r"/date=(\d{4}-\d{2}-\d{2})/")


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


def day_of(key: str) -> date | None:
    """The day of a day-level key (``.../date=YYYY-MM-DD/<file>``, no ``hour=``), else None."""
    match = _DAY_RE.search(key)
    if not match or _PARTITION_RE.search(key):
        return None
    return date.fromisoformat(match.group(1))


def day_start(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def day_intervals(day: date) -> list[Interval]:
    """The 24 hourly intervals of a UTC day."""
    return hourly_intervals(day_start(day), day_start(day) + timedelta(days=1))


def whole_days(intervals: list[Interval]) -> list[date]:
    """The days of a range of hourly intervals that covers whole UTC days only; ConfigError otherwise."""
    if not intervals or intervals[0].start.hour != 0 or intervals[-1].end.hour != 0:
        first, last = (intervals[0].start, intervals[-1].end) if intervals else (None, None)
        raise ConfigError(
            f"daily layout: the range {first} .. {last} does not cover whole UTC days; "
            "give --start and --end at 00:00 (e.g. --start 2025-11-22T00:00:00Z --end 2025-11-23T00:00:00Z)"
        )
    days = list(days_between(intervals[0].start.date(), (intervals[-1].end - HOUR).date()))
    if len(intervals) != 24 * len(days):
        raise ConfigError("daily layout: the range must be consecutive hours")
    return days


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

# Day-level datasets of the daily layout (`run --batch --daily`, docs/batch.md): one object per UTC day.
QUARANTINE_DAILY = "quarantine/market_snapshots_daily"
INDICATORS_DAILY = "analytics/indicators_daily"
DAILY = "daily"  # <area>/daily/date=D/... for quality reports, alerts, report pages, manifests, run records

# Working areas that retention may prune; the archive is never pruned.
WORKING_PREFIXES = (
    RAW_MARKETS, STAGING, VALIDATED, VALIDATED_DAILY, QUARANTINE, QUARANTINE_DAILY, QUALITY, INDICATORS,
    INDICATORS_DAILY, ALERTS, REPORTS,
)  # fmt: skip


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


# --- day-level keys (daily layout): the day's 24 intervals in one object per dataset ---


def _day(day: date) -> str:
    return f"date={day:%Y-%m-%d}"


def quarantine_daily_key(day: date) -> str:
    return f"{QUARANTINE_DAILY}/{_day(day)}/quarantine.parquet"


def quality_daily_report_key(day: date) -> str:
    return f"{QUALITY}/{DAILY}/{_day(day)}/report.json"


def indicators_daily_key(day: date) -> str:
    return f"{INDICATORS_DAILY}/{_day(day)}/indicators.parquet"


def alerts_daily_key(day: date) -> str:
    return f"{ALERTS}/{DAILY}/{_day(day)}/alerts.json"


def report_daily_prefix(day: date) -> str:
    return f"{REPORTS}/{DAILY}/{_day(day)}/"


def manifest_daily_key(day: date) -> str:
    return f"{MANIFESTS}/{DAILY}/{_day(day)}/manifest.json"

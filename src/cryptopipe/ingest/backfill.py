"""Backfill: validated hourly history from ``/coins/{id}/market_chart/range`` (``cryptopipe backfill``).

- The range is cut into windows of at most 90 days (CoinGecko answers 2-90 day ranges hourly); within a window
  every (coin, quote currency) chart is fetched (or re-read from its raw object) before any hour is written, so
  each hourly partition is written once, with all coins.
- Each hour's snapshot (interval end T) takes the chart point nearest to T within ±30 min; an hour without
  such a point is a gap (no row). Only price, market cap and volume are known; other columns are null.
- Hours that already have validated data (from the hourly pipeline) are never overwritten: they are skipped,
  and the write itself is write-once, so a concurrent validate run wins too.
- Resumable: raw chart responses are stored write-once under ``raw/market_chart_range/`` and recorded in
  ``backfill/chunks/`` state; a finished window leaves ``backfill/windows/...json``. A rerun skips finished
  windows and re-reads stored charts instead of fetching them again.
- Days whose 24 hourly partitions all exist are compacted into ``validated_daily_key(day)`` (the concatenation
  of the 24 partitions in hour order), which transform's lookback reads.
"""

from __future__ import annotations

import bisect
import gzip
import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from typing import Any, Protocol

import pyarrow as pa

from cryptopipe.core.coingecko import (
    ALIGN_TOLERANCE,
    HISTORY_LIMIT_MESSAGE,
    ChartSeries,
    chart_rows,
    classify_response,
    parse_market_chart,
    parse_markets_page,
)
from cryptopipe.core.compaction import compact_day
from cryptopipe.core.config import Settings
from cryptopipe.core.errors import ConfigError, StorageError, WriteConflictError
from cryptopipe.core.http import Clock, HttpClient, SystemClock
from cryptopipe.core.layout import HOUR, Interval, hourly_intervals, validated_daily_key, validated_key
from cryptopipe.core.schema import SNAPSHOT_SCHEMA
from cryptopipe.core.stage import json_bytes, sha256
from cryptopipe.core.storage import ObjectStore, open_stores
from cryptopipe.core.tables import PARQUET_CONTENT_TYPE, conform, to_parquet_bytes
from cryptopipe.ingest.stage import MARKETS_PATH, gzip_bytes, top_pages

MAX_WINDOW = timedelta(days=90)
RAW_CHARTS = "raw/market_chart_range"
STATE = "backfill"
_ACCUMULATED = ("coin_id", "vs_currency", "snapshot_time", "price", "market_cap", "total_volume", "source")


def window_key(window: list[Interval]) -> str:
    return f"{STATE}/windows/from={_ts(window[0].start)}-to={_ts(window[-1].end)}.json"


def chart_raw_key(coin: str, vs: str, start: datetime, end: datetime) -> str:
    return f"{RAW_CHARTS}/coin={coin}/vs={vs}/from={_ts(start)}-to={_ts(end)}.json.gz"


def chunk_state_key(coin: str, vs: str, start: datetime, end: datetime) -> str:
    return f"{STATE}/chunks/coin={coin}/vs={vs}/from={_ts(start)}-to={_ts(end)}.json"


def _ts(moment: datetime) -> int:
    return int(moment.timestamp())


def windows_of(intervals: list[Interval], size: timedelta | None = None) -> list[list[Interval]]:
    """Consecutive runs of at most ``size`` (default MAX_WINDOW) of hourly intervals, anchored at the first."""
    per_window = int((size or MAX_WINDOW) / HOUR)
    return [intervals[i : i + per_window] for i in range(0, len(intervals), per_window)]


def fetch_range(window: list[Interval]) -> tuple[datetime, datetime]:
    """The request range: every snapshot time (interval end) of the window, ±30 min; spans the window exactly."""
    return window[0].end - ALIGN_TOLERANCE, window[-1].end + ALIGN_TOLERANCE


# --- progress ---


class Progress(Protocol):
    def update(self, n: int = 1) -> Any: ...

    def close(self) -> None: ...


class _LineProgress:
    """Fallback when tqdm is not installed: one overwritten stderr line."""

    def __init__(self, total: int, desc: str) -> None:
        self.total, self.done, self.desc = total, 0, desc

    def update(self, n: int = 1) -> None:
        self.done += n
        print(f"\r{self.desc}: {self.done}/{self.total}", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        print(file=sys.stderr)


class _NoProgress:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def make_progress(total: int, enabled: bool, desc: str = "backfill charts") -> Progress:
    if not enabled:
        return _NoProgress()
    try:
        from tqdm import tqdm
    except ImportError:
        return _LineProgress(total, desc)
    return tqdm(total=total, desc=desc, unit="chart", file=sys.stderr)  # type: ignore[no-any-return]


# --- the run ---


@dataclass
class BackfillSummary:
    coins: int = 0
    quote_currencies: int = 0
    windows: int = 0
    windows_skipped: int = 0
    charts_fetched: int = 0
    charts_reused: int = 0
    hours_written: int = 0
    hours_existing: int = 0
    hours_without_data: int = 0
    rows: int = 0
    days_compacted: int = 0
    requests: int = 0
    retries: int = 0


def check_history_limit(settings: Settings, start: datetime, now: datetime) -> None:
    """Keyless and Demo plans only reach 365 days back: say so before making any call."""
    limit = settings.api.max_history_days
    if limit is None:
        return
    oldest = now - timedelta(days=limit)
    if start < oldest:
        raise ConfigError(
            f"backfill --start {start:%Y-%m-%dT%H:%MZ} is more than {limit} days ago (oldest allowed now: "
            f"{oldest:%Y-%m-%dT%H:%MZ}) for plan {settings.api.plan.value!r}. {HISTORY_LIMIT_MESSAGE}",
            key="api.plan",
        )


def resolve_coins(settings: Settings, client: HttpClient) -> list[str]:
    """Top N by market cap now (one /coins/markets call per 250), then the explicit ids; no repeats."""
    coins: list[str] = []
    if settings.coins.top_n:
        pages, per_page = top_pages(settings.coins.top_n)
        vs = settings.quote_currencies[0]
        for page in range(1, pages + 1):
            params = {"vs_currency": vs, "order": "market_cap_desc", "per_page": str(per_page), "page": str(page)}
            fetched = client.get(MARKETS_PATH, params)
            parsed = parse_markets_page(
                fetched.payload, vs_currency=vs, snapshot_time=fetched.fetched_at, source_key="", where=fetched.url
            )
            coins.extend(row["coin_id"] for row in parsed.rows)
        coins = list(dict.fromkeys(coins))[: settings.coins.top_n]
    return list(dict.fromkeys(coins + list(settings.coins.ids)))


class Backfill:
    def __init__(self, settings: Settings, store: ObjectStore, client: HttpClient, log: logging.Logger) -> None:
        self.settings, self.store, self.client, self.log = settings, store, client, log
        self.summary = BackfillSummary()
        self.range_start: datetime | None = None

    # one chart: stored raw, or fetched and stored
    def chart(self, coin: str, vs: str, window: list[Interval]) -> tuple[str, ChartSeries]:
        """The window's chart for one coin and currency, parsed: from the stored raw, or fetched and stored."""
        start, end = fetch_range(window)
        raw_key = chart_raw_key(coin, vs, start, end)
        stored = self.store.get_or_none(raw_key)
        if stored is not None:
            self.summary.charts_reused += 1
            return raw_key, parse_market_chart(_decode(raw_key, stored), raw_key)
        params = {"vs_currency": vs, "from": str(_ts(start)), "to": str(_ts(end)), "precision": "full"}
        fetched = self.client.get(f"/coins/{coin}/market_chart/range", params)
        series = parse_market_chart(fetched.payload, raw_key)  # refuse bad data before storing it
        stored = gzip_bytes(fetched.body)
        try:
            self.store.put_once(raw_key, stored, "application/gzip")
        except WriteConflictError:  # a concurrent backfill stored its fetch first: use that one
            stored = self.store.get(raw_key)
            series = parse_market_chart(_decode(raw_key, stored), raw_key)
        state = {
            "coin": coin,
            "vs_currency": vs,
            "from": start.isoformat(),
            "to": end.isoformat(),
            "raw_key": raw_key,
            "sha256": sha256(stored),
            "bytes": len(stored),
            "request": {"path": fetched.path, "params": params, "url": fetched.url},
            "status": fetched.status,
            "fetched_at": fetched.fetched_at.isoformat(),
        }
        self.store.put(chunk_state_key(coin, vs, start, end), json_bytes(state), "application/json")
        self.summary.charts_fetched += 1
        return raw_key, series

    def window(self, window: list[Interval], coins: list[str], progress: Progress) -> None:
        marker = window_key(window)
        charts = len(coins) * len(self.settings.quote_currencies)
        if self.store.exists(marker):
            self.summary.windows_skipped += 1
            progress.update(charts)
            return
        todo = [iv for iv in window if not self.store.exists(validated_key(iv))]
        self.summary.hours_existing += len(window) - len(todo)
        tables = []
        if todo:
            snapshot_times = [iv.snapshot_time for iv in todo]
            for coin in coins:
                for vs in self.settings.quote_currencies:
                    raw_key, series = self.chart(coin, vs, window)
                    rows = chart_rows(
                        series, coin_id=coin, vs_currency=vs, snapshot_times=snapshot_times, source_key=raw_key
                    )
                    if rows:
                        tables.append(pa.Table.from_pylist(rows).select([*_ACCUMULATED, "source_key"]))
                    progress.update(1)
        else:
            progress.update(charts)
        written = self.write_hours(todo, tables)
        self.compact(window, written)
        self.store.put(
            marker,
            json_bytes(
                {
                    "from": window[0].start.isoformat(),
                    "to": window[-1].end.isoformat(),
                    "coins": coins,
                    "quote_currencies": self.settings.quote_currencies,
                    "hours_written": len(written),
                    "hours_existing": len(window) - len(todo),
                }
            ),
            "application/json",
        )

    def write_hours(self, todo: list[Interval], tables: list[pa.Table]) -> list[Interval]:
        """One write-once partition per hour with data; an hour that gained data meanwhile is left alone."""
        if not todo:
            return []
        if not tables:
            self.summary.hours_without_data += len(todo)
            return []
        table = pa.concat_tables(tables, promote_options="permissive")
        table = conform(table, SNAPSHOT_SCHEMA).sort_by(
            [("snapshot_time", "ascending"), ("coin_id", "ascending"), ("vs_currency", "ascending")]
        )
        stamps = table.column("snapshot_time").cast(pa.int64()).to_pylist()  # no numpy in the ingest image
        written = []
        for iv in todo:
            target = int(iv.snapshot_time.timestamp() * 1000)
            lo, hi = bisect.bisect_left(stamps, target), bisect.bisect_right(stamps, target)
            if lo == hi:
                self.summary.hours_without_data += 1
                continue
            data = to_parquet_bytes(table.slice(lo, hi - lo))
            try:
                self.store.put_once(validated_key(iv), data, PARQUET_CONTENT_TYPE)
            except WriteConflictError:  # validate wrote this hour after we looked: its data wins
                self.summary.hours_existing += 1
                continue
            self.summary.hours_written += 1
            self.summary.rows += hi - lo
            written.append(iv)
        return written

    def compact(self, window: list[Interval], written: list[Interval]) -> None:
        """Compact every day that is complete by the end of this window and new or touched by this run."""
        assert self.range_start is not None
        touched = {iv.start.date() for iv in written}
        first = self.range_start.date()
        for day in _days(first, window[-1].end):
            day_start = datetime(day.year, day.month, day.day, tzinfo=self.range_start.tzinfo)
            if day_start < self.range_start:
                continue  # a day that begins before the range: not ours to complete
            if day not in touched and self.store.exists(validated_daily_key(day)):
                continue
            if compact_day(self.store, day):
                self.summary.days_compacted += 1


def _days(first: date, until: datetime) -> Iterator[date]:
    """Days that end at or before ``until``."""
    day = first
    while datetime(day.year, day.month, day.day, tzinfo=until.tzinfo) + timedelta(days=1) <= until:
        yield day
        day += timedelta(days=1)


def _decode(key: str, stored: bytes) -> Any:
    try:
        return json.loads(gzip.decompress(stored).decode("utf-8"))
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StorageError(f"raw chart {key} is not gzip'ed JSON ({exc})") from exc


def run_backfill(
    settings: Settings,
    start: datetime,
    end: datetime,
    log: logging.Logger,
    progress: bool = True,
    *,
    client: HttpClient | None = None,
    clock: Clock | None = None,
) -> BackfillSummary:
    """Fill validated hourly partitions for [start, end) from chart history; see the module docstring."""
    clock = clock or (client.clock if client else SystemClock())
    intervals = hourly_intervals(start, end)
    now = clock.now()
    if end > now:
        raise ConfigError(f"backfill --end {end.isoformat()} is in the future (now {now:%Y-%m-%dT%H:%MZ})")
    check_history_limit(settings, start, now)
    store, _ = open_stores(settings.storage)
    windows = windows_of(intervals)
    own_client = client is None
    client = client or HttpClient(settings.api, classify_response, clock=clock)
    job = Backfill(settings, store, client, log)
    job.range_start = intervals[0].start
    try:
        coins = resolve_coins(settings, client)
        job.summary.coins, job.summary.quote_currencies = len(coins), len(settings.quote_currencies)
        job.summary.windows = len(windows)
        log.info(
            "backfill started",
            extra={"start": start.isoformat(), "end": end.isoformat(), "windows": len(windows), "coins": len(coins)},
        )
        bar = make_progress(len(windows) * len(coins) * len(settings.quote_currencies), progress)
        try:
            for window in windows:
                job.window(window, coins, bar)
        finally:
            bar.close()
    finally:
        job.summary.requests, job.summary.retries = client.stats.requests, client.stats.retries
        if own_client:
            client.close()
    log.info("backfill finished", extra=asdict(job.summary))
    return job.summary

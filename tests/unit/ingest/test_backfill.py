"""Backfill against the replay server: chunking, alignment, no clobbering, compaction, the 365-day limit, resume."""

from __future__ import annotations

import gzip
import io
import json
import logging
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cryptopipe.core.compaction import compact_tables
from cryptopipe.core.config import load_settings
from cryptopipe.core.errors import ConfigError, ExitCode
from cryptopipe.core.layout import Interval, hourly_intervals, validated_daily_key, validated_key
from cryptopipe.core.schema import SNAPSHOT_SCHEMA
from cryptopipe.core.tables import conform, to_parquet_bytes
from cryptopipe.ingest import backfill

from .conftest import Pipeline

START, END = "2025-05-28T00:00:00Z", "2025-05-31T00:00:00Z"  # 72 hours, before the replay clock (2025-06-01)
DAYS = ["2025-05-28", "2025-05-29", "2025-05-30"]


@pytest.fixture
def pro(pipeline: Pipeline) -> Pipeline:
    """A Pro caller (no 365-day limit at the replay server), 3 coins, 2 currencies."""
    pipeline.set(API__PLAN="pro", API__KEY="pro-test-key", COINS__TOP_N="3")
    return pipeline


def table_of(data: bytes) -> pa.Table:
    return pq.read_table(io.BytesIO(data))


def chart_requests(pipeline: Pipeline) -> list[dict]:
    return [r for r in pipeline.server.requests if "market_chart" in r["path"]]


def validated(objects: dict[str, bytes]) -> dict[str, bytes]:
    return {k: v for k, v in objects.items() if k.startswith("validated/")}


def test_backfill_writes_hours_dailies_raw_and_state(pro: Pipeline) -> None:
    assert pro.backfill(START, END) == 0
    objects = pro.objects()
    hours = sorted(k for k in objects if k.startswith("validated/market_snapshots/"))
    assert len(hours) == 72
    first = table_of(objects[hours[0]])
    assert first.schema == SNAPSHOT_SCHEMA
    assert first.num_rows == 6  # 3 coins x 2 currencies
    assert set(first.column("source").to_pylist()) == {"market_chart_range"}
    assert first.column("snapshot_time").to_pylist() == [datetime(2025, 5, 28, 1, tzinfo=UTC)] * 6
    assert first.column("symbol").null_count == 6 and first.column("price").null_count == 0
    # one chart per coin and currency, fetched over the whole (single) window
    charts = chart_requests(pro)
    assert len(charts) == 6
    assert {int(r["query"]["to"]) - int(r["query"]["from"]) for r in charts} == {72 * 3600}
    raw = sorted(k for k in objects if k.startswith("raw/market_chart_range/"))
    assert len(raw) == 6 and raw[0].endswith(".json.gz")
    assert len([k for k in objects if k.startswith("backfill/chunks/")]) == 6
    assert len([k for k in objects if k.startswith("backfill/windows/")]) == 1
    # alignment: each row's price is the chart point nearest its snapshot time (within 30 min)
    row = first.to_pylist()[0]
    chart = json.loads(gzip.decompress(objects[row["source_key"]]))
    target = row["snapshot_time"].timestamp() * 1000
    nearest = min(chart["prices"], key=lambda p: abs(p[0] - target))
    assert abs(nearest[0] - target) <= 30 * 60 * 1000 and row["price"] == nearest[1]
    # daily compactions = the 24 hourly partitions concatenated in hour order
    for day in DAYS:
        daily = table_of(objects[f"validated/market_snapshots_daily/date={day}/snapshots.parquet"])
        day_hours = sorted(k for k in hours if f"date={day}/" in k)
        assert len(day_hours) == 24
        assert daily.equals(compact_tables([table_of(objects[k]) for k in day_hours]))  # the one rule in core


def test_rerun_skips_completed_windows(pro: Pipeline) -> None:
    assert pro.backfill(START, END) == 0
    before = pro.objects()
    pro.server.clear_requests()
    assert pro.backfill(START, END) == 0
    assert chart_requests(pro) == []
    assert pro.objects() == before


def test_chunks_are_windows_of_at_most_90_days() -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    intervals = hourly_intervals(start, start + timedelta(days=200))
    windows = backfill.windows_of(intervals)
    assert [len(w) for w in windows] == [90 * 24, 90 * 24, 20 * 24]
    assert [iv for w in windows for iv in w] == intervals  # no hour lost or repeated
    for window in windows:
        lo, hi = backfill.fetch_range(window)
        assert hi - lo <= timedelta(days=90)  # hourly granularity at CoinGecko
        assert lo == window[0].end - timedelta(minutes=30) and hi == window[-1].end + timedelta(minutes=30)


def test_backfill_chunking_against_the_server(pro: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backfill, "MAX_WINDOW", timedelta(days=1))
    pro.set(QUOTE_CURRENCIES="usd")
    assert pro.backfill(START, END) == 0
    charts = chart_requests(pro)
    assert len(charts) == 9  # 3 windows x 3 coins
    assert {int(r["query"]["to"]) - int(r["query"]["from"]) for r in charts} == {86400}
    assert len([k for k in pro.objects() if k.startswith("backfill/windows/")]) == 3
    assert len([k for k in pro.objects() if k.startswith("validated/market_snapshots_daily/")]) == 3


def test_existing_validated_hours_are_not_clobbered(pro: Pipeline) -> None:
    hour = Interval.starting(datetime(2025, 5, 29, 5, tzinfo=UTC))
    mine = conform(
        pa.Table.from_pylist(
            [
                {
                    "coin_id": "bitcoin",
                    "vs_currency": "usd",
                    "snapshot_time": hour.end,
                    "price": 1.0,
                    "source": "coins_markets",
                }
            ]
        ),
        SNAPSHOT_SCHEMA,
    )
    key = validated_key(hour)
    (pro.root() / key).parent.mkdir(parents=True)
    (pro.root() / key).write_bytes(to_parquet_bytes(mine))
    assert pro.backfill(START, END) == 0
    objects = pro.objects()
    assert objects[key] == to_parquet_bytes(mine)
    daily = table_of(objects[validated_daily_key(hour.start.date())])
    assert daily.num_rows == 23 * 6 + 1  # the pipeline's hour is part of the day, as it is


def test_resume_after_a_failure_reuses_stored_charts(pro: Pipeline) -> None:
    pro.set(API__RETRY__MAX_ATTEMPTS="2")
    assert pro.backfill(START, END, name="clean") == 0
    pro.server.set_faults([{"path": "market_chart", "faults": ["ok", "ok", "503", "503"]}])
    pro.server.clear_requests()
    assert pro.backfill(START, END) == ExitCode.SOURCE_UNAVAILABLE
    partial = pro.objects()
    assert validated(partial) == {}  # no hour is written before all coins of its window are in
    assert len([k for k in partial if k.startswith("raw/market_chart_range/")]) == 2
    assert not any(k.startswith("backfill/windows/") for k in partial)
    pro.server.clear_requests()
    assert pro.backfill(START, END) == 0
    assert len(chart_requests(pro)) == 4  # the 2 stored charts were not fetched again
    assert validated(pro.objects()) == validated(pro.objects("clean"))  # byte-identical to an uninterrupted run


def _day_floor(moment: datetime) -> datetime:
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def test_keyless_history_limit_is_refused_before_any_call(pipeline: Pipeline, capsys: pytest.CaptureFixture) -> None:
    start = _day_floor(datetime.now(UTC) - timedelta(days=400))
    end = start + timedelta(days=1)
    assert pipeline.backfill(start.isoformat(), end.isoformat()) == ExitCode.CONFIG
    assert pipeline.server.requests == []
    out = capsys.readouterr().out
    assert "past 365 days" in out and "more than 365 days ago" in out


def test_server_10012_is_a_clear_source_invalid(pipeline: Pipeline, capsys: pytest.CaptureFixture) -> None:
    start = _day_floor(datetime.now(UTC) - timedelta(days=30))
    pipeline.server.set_clock(_day_floor(datetime.now(UTC) + timedelta(days=400)))  # the server thinks it's later
    pipeline.set(COINS__TOP_N="1", QUOTE_CURRENCIES="usd")
    assert pipeline.backfill(start.isoformat(), (start + timedelta(days=1)).isoformat()) == ExitCode.SOURCE_INVALID
    assert "error 10012" in capsys.readouterr().out
    assert [r["status"] for r in chart_requests(pipeline)] == [401]  # not retried
    assert not any(k.startswith("validated/") for k in pipeline.objects())


def test_bad_ranges_are_config_errors(pro: Pipeline) -> None:
    settings = load_settings()
    log = logging.getLogger("test")
    with pytest.raises(ConfigError, match="not on the hour"):
        backfill.run_backfill(settings, datetime(2025, 5, 1, 0, 30, tzinfo=UTC), datetime(2025, 5, 2, tzinfo=UTC), log)
    future = _day_floor(datetime.now(UTC) + timedelta(days=2))
    assert pro.backfill(START, future.isoformat()) == ExitCode.CONFIG

"""transform in the daily layout (transform/daily.py) against hourly range mode on the same validated data.

The same validated rows are laid down twice: as hourly partitions for ``run_range`` and as the days' compactions
for ``run_days`` (what validate --daily writes); the lookback before the range is the same in both (older days
compacted, the last lookback days as hourly partitions). Compared: the day's indicators are the 24 hourly
tables' rows in hour order, the day's alerts hold the 24 hourly alerts documents (the report URI names the day
page), quality per hour comes from validate's day report.
"""

from __future__ import annotations

import importlib
import json
import logging
import shutil
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from cryptopipe.cli import STAGES
from cryptopipe.core.compaction import compact_day
from cryptopipe.core.config import Settings
from cryptopipe.core.errors import ConfigError
from cryptopipe.core.layout import (
    Interval,
    alerts_daily_key,
    alerts_key,
    day_intervals,
    indicators_daily_key,
    indicators_key,
    quality_daily_report_key,
    quality_report_key,
    report_daily_prefix,
    validated_daily_key,
)
from cryptopipe.core.stage import day_run_record_key, json_bytes, run_record_key
from cryptopipe.core.storage import FileStore
from cryptopipe.core.tables import from_parquet_bytes
from cryptopipe.transform import daily
from cryptopipe.transform.indicators import matching_rows
from cryptopipe.transform.stage import run_range
from tests.unit.transform.builders import write_days, write_hours
from tests.unit.transform.test_transform_engine import END as DATASET_END
from tests.unit.transform.test_transform_engine import dataset

LOOKBACK = 10
DAYS = [date(2026, 3, 2), date(2026, 3, 3), date(2026, 3, 4)]
RANGE_START = datetime(2026, 3, 2, tzinfo=UTC)
HOURLY_LOOKBACK_DAYS = 2  # the lookback's last days as hourly partitions (read hour by hour, as hourly mode does)


def _with_source_moves(table: pa.Table) -> pa.Table:
    """CoinGecko's own 1h change on some rows, above the 5% threshold every 29th hour for c05 (move anomalies)."""
    hour = (table.column("snapshot_time").cast(pa.int64()).to_numpy() // 3_600_000) % 29
    coin = np.array(table.column("coin_id").to_pylist())
    pct = np.where((coin == "c05") & (hour == 0), 7.5, np.where(coin == "c01", 0.5, np.nan))
    column = pa.array(pct, pa.float64(), mask=np.isnan(pct))
    table = table.set_column(table.schema.get_field_index("price_change_pct_1h"), "price_change_pct_1h", column)
    return table.set_column(table.schema.get_field_index("name"), "name", pc.utf8_upper(table.column("coin_id")))


def _quality(interval: Interval, score: float) -> dict[str, Any]:
    """The parts of an hourly quality report transform reads."""
    return {
        "interval": {"start": interval.start.isoformat(), "end": interval.end.isoformat()},
        "quality_score": {"value": score},
        "summary": {"warning_failures": int(score * 10) % 3, "rows_quarantined": interval.start.hour % 2},
    }


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    """(hourly, daily): the same validated data; the range days as hourly partitions / as compactions."""
    end = datetime(2026, 3, 5, tzinfo=UTC)
    hours = (LOOKBACK + 1) * 24 + 24 * len(DAYS)
    table = dataset(hours, seed=5)  # 20 coins with gaps, outages, a flat and a micro-priced one
    shifted = pc.add(table.column("snapshot_time"), pa.scalar(end - DATASET_END, pa.duration("ms")))
    table = _with_source_moves(table.set_column(2, "snapshot_time", shifted.cast(table.schema.field(2).type)))
    times = table.column("snapshot_time").cast(pa.int64()).to_numpy()
    start_ms = int(RANGE_START.timestamp() * 1000)
    hourly_from = start_ms - HOURLY_LOOKBACK_DAYS * 86_400_000
    older = table.filter(pa.array(times <= hourly_from))
    recent = table.filter(pa.array((times > hourly_from) & (times <= start_ms)))
    in_range = table.filter(pa.array(times > start_ms))
    assert in_range.column("snapshot_time")[-1].as_py() == end
    out = []
    for name, range_as_days in (("hourly", False), ("daily", True)):
        store = FileStore(tmp_path / name)
        write_days(store, older)
        write_hours(store, recent)
        (write_days if range_as_days else write_hours)(store, in_range)
        for day in DAYS:
            reports = [_quality(iv, round(0.9 + 0.004 * iv.start.hour, 3)) for iv in day_intervals(day)]
            if range_as_days:
                store.put(quality_daily_report_key(day), json_bytes({"day": str(day), "intervals": reports}))
            else:
                for interval, report in zip(day_intervals(day), reports, strict=True):
                    store.put(quality_report_key(interval), json_bytes(report))
        out.append(tmp_path / name)
    return out[0], out[1]


def _settings(settings_for: Callable[..., Settings], root: Path, top_n: int = 2) -> Settings:
    return settings_for(root, transform__lookback_days=str(LOOKBACK), transform__chart_top_n=str(top_n))


def _range_intervals(days: list[date]) -> list[Interval]:
    return [interval for day in days for interval in day_intervals(day)]


def _day_objects(root: Path, days: list[date]) -> dict[str, bytes]:
    store = FileStore(root)
    return {key: store.get(key) for day in days for key in (indicators_daily_key(day), alerts_daily_key(day))}


def _quality_to_day_record(store: FileStore, day: date) -> None:
    """validate's day run record carrying the hours' quality figures, and no day report: what transform reads
    then can only have come from the record."""
    report = json.loads(store.get(quality_daily_report_key(day)))
    hours = [
        {
            "interval_start": hour["interval"]["start"],
            "quality_score": hour["quality_score"]["value"],
            "warning_failures": hour["summary"]["warning_failures"],
            "rows_quarantined": hour["summary"]["rows_quarantined"],
            "status": "passed",
        }
        for hour in report["intervals"]
    ]
    store.put(day_run_record_key(day, "validate"), json_bytes({"status": "success", "metrics": {"hours": hours}}))
    store.delete(quality_daily_report_key(day))


@pytest.mark.parametrize("quality_from", ["day report", "validate day record"])
def test_days_equal_hourly_range_mode(
    roots: tuple[Path, Path], settings_for: Callable[..., Settings], quiet_log: logging.Logger, quality_from: str
) -> None:
    hourly_root, daily_root = roots
    if quality_from == "validate day record":
        for day in DAYS:
            _quality_to_day_record(FileStore(daily_root), day)
    run_range(_settings(settings_for, hourly_root), _range_intervals(DAYS), quiet_log)
    results = daily.run_days(_settings(settings_for, daily_root), DAYS, quiet_log)

    assert [r.status for r in results] == ["success"] * len(DAYS)
    hourly, store = FileStore(hourly_root), FileStore(daily_root)
    anomalies = 0
    for day, result in zip(DAYS, results, strict=True):
        expected = pa.concat_tables([from_parquet_bytes(hourly.get(indicators_key(iv))) for iv in day_intervals(day)])
        actual = from_parquet_bytes(store.get(indicators_daily_key(day)))
        assert actual.schema.equals(expected.schema)
        assert actual.equals(expected), f"indicators of {day} differ"
        assert actual.num_rows > 20 * 23  # warm values on real rows, not an empty day

        document = json.loads(store.get(alerts_daily_key(day)))
        assert document["day"] == str(day) and document["layout"] == "daily"
        page = store.url(report_daily_prefix(day) + "index.html")
        for interval, alerts in zip(day_intervals(day), document["intervals"], strict=True):
            expected_alerts = json.loads(hourly.get(alerts_key(interval)))
            assert alerts["report_uri"] == page
            assert {**alerts, "report_uri": None} == {**expected_alerts, "report_uri": None}, str(interval)
            assert alerts["quality"]["score"] is not None  # taken from the day report or validate's day record
            anomalies += len(alerts["anomalies"])

        per_hour = [len(a["anomalies"]) for a in document["intervals"]]
        assert result.metrics["anomalies_per_hour"] == per_hour
        assert result.metrics["anomalies"] == sum(per_hour)
        assert result.metrics["rows"] == actual.num_rows and result.metrics["layout"] == "daily"
        assert result.interval_start == f"{day}T00:00:00+00:00"
        assert result.interval_end == f"{day + timedelta(days=1)}T00:00:00+00:00"
        record = json.loads(store.get(day_run_record_key(day, "transform")))
        assert record["status"] == "success"
        inputs = {ref["key"] for ref in record["inputs"]}
        source = quality_daily_report_key(day) if quality_from == "day report" else day_run_record_key(day, "validate")
        assert {validated_daily_key(day), source} <= inputs
        outputs = {ref["key"]: ref for ref in record["outputs"]}
        assert outputs[indicators_daily_key(day)]["rows"] == actual.num_rows
        html = store.get(report_daily_prefix(day) + "index.html").decode()
        assert html.count("<h3 ") == 24
    assert anomalies > 0  # the alerts compared are not all empty
    assert any(ref.key.startswith("validated/market_snapshots/date=") for ref in results[0].inputs)  # lookback
    assert results[0].metrics["rows_read"] > results[1].metrics["rows_read"]  # the head reads the lookback
    charts = [k for day in DAYS for k in store.list(report_daily_prefix(day) + "charts/")]
    assert charts and all(k.startswith(report_daily_prefix(DAYS[-1])) for k in charts)  # the last day only
    assert results[-1].metrics["charts"] == len(charts)


@pytest.mark.parametrize("chunk", [1, 2])
def test_split_calls_and_chunks_give_the_same_bytes(
    roots: tuple[Path, Path],
    settings_for: Callable[..., Settings],
    quiet_log: logging.Logger,
    monkeypatch: pytest.MonkeyPatch,
    chunk: int,
) -> None:
    """What the runner's --workers split and the chunking do: any contiguous part gives the same day objects."""
    _, root = roots
    pristine = root.parent / "pristine"
    shutil.copytree(root, pristine)
    settings = _settings(settings_for, root, top_n=0)
    daily.run_days(settings, DAYS, quiet_log)
    expected = _day_objects(root, DAYS)

    shutil.rmtree(root)
    shutil.copytree(pristine, root)  # same path: report URIs are the same
    monkeypatch.setattr(daily, "DAY_CHUNK", chunk)
    results = daily.run_days(settings, DAYS[:1], quiet_log) + daily.run_days(settings, DAYS[1:], quiet_log)
    assert [r.status for r in results] == ["success"] * len(DAYS)
    assert _day_objects(root, DAYS) == expected


def test_missing_compaction_fails_that_day_only(
    roots: tuple[Path, Path], settings_for: Callable[..., Settings], quiet_log: logging.Logger
) -> None:
    _, root = roots
    store = FileStore(root)
    settings = _settings(settings_for, root, top_n=0)
    daily.run_days(settings, DAYS, quiet_log)
    store.delete(validated_daily_key(DAYS[1]))

    results = daily.run_days(settings, DAYS, quiet_log)
    assert [r.status for r in results] == ["success", "failed", "success"]
    failed = results[1]
    assert failed.exit_code == 8
    assert validated_daily_key(DAYS[1]) in failed.message and "validate" in failed.message
    assert str(DAYS[1]) in failed.message
    assert not failed.outputs
    # the day's stale objects of the earlier run are gone: nothing a reader would take as current
    assert not store.exists(indicators_daily_key(DAYS[1])) and not store.exists(alerts_daily_key(DAYS[1]))
    assert not store.list(report_daily_prefix(DAYS[1]))
    record = json.loads(store.get(day_run_record_key(DAYS[1], "transform")))
    assert record["status"] == "failed" and record["exit_code"] == 8
    assert store.exists(indicators_daily_key(DAYS[2]))


def test_day_compaction_with_a_row_of_another_day_fails_the_day(
    roots: tuple[Path, Path], settings_for: Callable[..., Settings], quiet_log: logging.Logger
) -> None:
    _, root = roots
    store = FileStore(root)
    store.put(validated_daily_key(DAYS[0]), store.get(validated_daily_key(DAYS[1])))  # the next day's rows
    results = daily.run_days(_settings(settings_for, root, top_n=0), DAYS[:1], quiet_log)
    assert results[0].status == "failed" and results[0].exit_code == 5
    assert "not the end of an hour of 2026-03-02" in results[0].message
    assert not store.exists(indicators_daily_key(DAYS[0]))


def test_previous_hourly_run_of_a_day_is_superseded(
    roots: tuple[Path, Path], settings_for: Callable[..., Settings], quiet_log: logging.Logger
) -> None:
    hourly_root, _ = roots
    store = FileStore(hourly_root)
    settings = _settings(settings_for, hourly_root, top_n=0)
    run_range(settings, _range_intervals(DAYS[:1]), quiet_log)
    first = day_intervals(DAYS[0])[0]
    store.put(run_record_key(first, "validate"), b"{}")  # another stage's hourly record stays
    assert compact_day(store, DAYS[0])  # what validate --daily leaves: the day's compaction
    assert store.list(f"analytics/indicators/date={DAYS[0]}/") and store.list(f"alerts/date={DAYS[0]}/")

    results = daily.run_days(settings, DAYS[:1], quiet_log)
    assert results[0].status == "success"
    for prefix in ("analytics/indicators/", "alerts/", "reports/"):
        assert not store.list(f"{prefix}date={DAYS[0]}/"), prefix
    # run records are append-only history: the hourly ones of both stages stay
    assert [k for k in store.list(f"runs/date={DAYS[0]}/") if k.endswith("/transform.json")]
    assert store.exists(run_record_key(first, "validate"))
    assert store.exists(indicators_daily_key(DAYS[0]))


def test_run_days_is_what_the_stage_module_exports(settings_for: Callable[..., Settings], tmp_path: Path) -> None:
    module = importlib.import_module(STAGES["transform"].split(":")[0])
    settings = settings_for(tmp_path / "data")
    with pytest.raises(ConfigError, match="consecutive"):
        module.run_days(settings, [DAYS[0], DAYS[2]], logging.getLogger("t"))
    with pytest.raises(ConfigError, match="no days"):
        module.run_days(settings, [], logging.getLogger("t"))


def test_day_matching_rows_equal_matching_rows_per_hour_with_duplicates_and_gaps() -> None:
    """The day-level lookup (hash of coin, currency, hour) gives every hour's matching_rows, offset into the day;
    with a duplicated key (not validated data) it falls back to matching_rows' "the last row wins"."""

    def table(rows: list[tuple[str, str]]) -> pa.Table:
        return pa.table({"coin_id": [c for c, _ in rows], "vs_currency": [v for _, v in rows]})

    snapshots = [table([("a", "usd"), ("b", "usd"), ("b", "eur")]) for _ in range(24)]
    hours = [table([("b", "eur"), ("a", "usd")] + ([("b", "usd")] if h % 3 else [])) for h in range(24)]
    offsets = np.cumsum([0] + [t.num_rows for t in hours])

    def expected(hours_: list[pa.Table]) -> list[int | None]:
        out: list[int | None] = []
        for snapshot, hour, offset in zip(snapshots, hours_, offsets[:-1], strict=True):
            out += [None if i is None else i + int(offset) for i in matching_rows(snapshot, hour).to_pylist()]
        return out

    assert daily._day_matching_rows(snapshots, hours).to_pylist() == expected(hours)
    assert None in expected(hours)  # the hours without b/usd
    hours[5] = table([("a", "usd"), ("b", "eur"), ("a", "usd")])  # a duplicated key: the last one wins
    offsets = np.cumsum([0] + [t.num_rows for t in hours])
    got = daily._day_matching_rows(snapshots, hours).to_pylist()
    assert got == expected(hours)
    assert got[15] == int(offsets[5]) + 2

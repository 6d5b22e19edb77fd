"""validate.run_days (daily layout): the hourly stage's judgement per hour, one object per day and dataset."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from cryptopipe.core.compaction import compact_day
from cryptopipe.core.layout import (
    Interval,
    day_intervals,
    quality_daily_report_key,
    quality_report_key,
    quarantine_daily_key,
    quarantine_key,
    staging_key,
    validated_daily_key,
    validated_key,
)
from cryptopipe.core.schema import QUARANTINE_SCHEMA
from cryptopipe.core.stage import day_hour_quality, day_run_record_key, run_record_key, sealed_day
from cryptopipe.core.storage import FileStore
from cryptopipe.core.tables import conform, read_table, to_parquet_bytes, write_table
from cryptopipe.validate import daily
from cryptopipe.validate import stage as validate_stage
from cryptopipe.validate.batch import FallBackError
from tests.unit.batch.helpers import FIRST, data_objects, edit, files, staging

D1, D2 = FIRST.date(), FIRST.date() + timedelta(days=1)
H1, H2 = day_intervals(D1), day_intervals(D2)
Edits = dict[Interval, pa.Table | None]


def warnings_day() -> Edits:
    """D1 hours with warning failures: quarantined rows with reasons, skipped checks, stale/absent last_updated."""
    one, three = staging(H1[1]), staging(H1[3])
    one = edit(one, 2, price_change_pct_24h=200.0)
    one = edit(one, 3, market_cap=None)
    one = edit(one, 4, low_24h=None, price=one["price"][4].as_py() * 0.5)
    three = edit(three, 0, last_updated=datetime(2020, 1, 1, tzinfo=UTC))
    three = edit(three, 1, last_updated=None)
    return {H1[1]: one, H1[3]: three}


def duplicate_key(interval: Interval) -> pa.Table:
    table = staging(interval)
    return edit(table, 6, coin_id=table["coin_id"][7].as_py())


def seed(root: Path, days: list[date], edits: Edits | None = None) -> FileStore:
    store = FileStore(root)
    for interval in [iv for day in days for iv in day_intervals(day)]:
        table = (edits or {}).get(interval, staging(interval))
        if table is not None:
            write_table(store, staging_key(interval), table)
    return store


def run_days(settings_for: Callable[..., object], root: Path, days: list[date], log: logging.Logger, **kw: int):  # type: ignore[no-untyped-def]
    return daily.run_days(settings_for(root), days, log, **kw)  # type: ignore[arg-type]


def hourly_then_compact(
    settings_for: Callable[..., object], root: Path, days: list[date], log: logging.Logger
) -> FileStore:
    """The reference: hourly range mode over the days, then each day compacted as the hourly path does."""
    store = FileStore(root)
    validate_stage.run_range(settings_for(root), [iv for day in days for iv in day_intervals(day)], log)  # type: ignore[arg-type]
    for day in days:
        compact_day(store, day)
    return store


def without_objects(report: dict) -> dict:  # type: ignore[type-arg]
    return {k: v for k, v in report.items() if k != "objects"}


def record(store: FileStore, day: date) -> dict:  # type: ignore[type-arg]
    return json.loads(store.get(day_run_record_key(day, "validate")))


def test_clean_days_equal_hourly_range_then_compaction(
    tmp_path: Path, settings_for: Callable[..., object], quiet_log: logging.Logger
) -> None:
    hourly, daily_root = tmp_path / "hourly", tmp_path / "daily"
    seed(hourly, [D1, D2], warnings_day())
    store = seed(daily_root, [D1, D2], warnings_day())
    reference = hourly_then_compact(settings_for, hourly, [D1, D2], quiet_log)

    results = run_days(settings_for, daily_root, [D1, D2], quiet_log)
    assert [(r.status, r.exit_code) for r in results] == [("success", 0), ("success", 0)]
    assert [r.interval_start for r in results] == ["2026-11-22T00:00:00+00:00", "2026-11-23T00:00:00+00:00"]

    for day, hours in ((D1, H1), (D2, H2)):
        assert store.get(validated_daily_key(day)) == reference.get(validated_daily_key(day)), day
        report = json.loads(store.get(quality_daily_report_key(day)))
        assert (report["day"], report["layout"], len(report["intervals"])) == (day.isoformat(), "daily", 24)
        for interval, got in zip(hours, report["intervals"], strict=True):
            expected = json.loads(reference.get(quality_report_key(interval)))
            assert without_objects(got) == without_objects(expected), interval
            assert got["objects"]["validated"] == validated_daily_key(day)
            assert got["objects"]["staging"] == staging_key(interval) and got["objects"]["data_docs"] is None
        assert sealed_day(store, day)
        rec = record(store, day)
        assert rec["status"] == "success" and rec["metrics"]["layout"] == "daily"
        assert [h["interval_start"] for h in rec["metrics"]["hours"]] == [iv.start.isoformat() for iv in hours]
        # the hours' quality figures transform and archive take from the record instead of parsing the report
        assert day_hour_quality(rec) == rec["metrics"]["hours"]
        assert [
            (h["quality_score"], h["warning_failures"], h["rows_quarantined"]) for h in rec["metrics"]["hours"]
        ] == [
            (r["quality_score"]["value"], r["summary"]["warning_failures"], r["summary"]["rows_quarantined"])
            for r in report["intervals"]
        ]
        assert [i["key"] for i in rec["inputs"]] == [staging_key(iv) for iv in hours]
        assert all(len(ref["sha256"]) == 64 for ref in rec["inputs"] + rec["outputs"])
        outputs = {o["key"] for o in rec["outputs"]}
        assert {validated_daily_key(day), quality_daily_report_key(day)} <= outputs

    # D1's quarantine: the hours' quarantine tables in hour order, the same rows and reasons as hourly mode's
    parts = [read_table(reference, quarantine_key(iv)) for iv in H1 if reference.exists(quarantine_key(iv))]
    assert len(parts) == 2  # hours 01 and 03
    assert store.get(quarantine_daily_key(D1)) == to_parquet_bytes(conform(pa.concat_tables(parts), QUARANTINE_SCHEMA))
    assert not store.exists(quarantine_daily_key(D2))
    report = json.loads(store.get(quality_daily_report_key(D1)))
    quarantined = sum(part.num_rows for part in parts)
    assert report["summary"]["rows_quarantined"] == quarantined == record(store, D1)["metrics"]["rows_quarantined"]
    assert report["summary"]["hours_with_warnings"] == [H1[1].start.isoformat(), H1[3].start.isoformat()]
    assert report["intervals"][1]["objects"]["quarantine"] == quarantine_daily_key(D1)
    assert report["intervals"][0]["objects"]["quarantine"] is None
    assert record(store, D1)["metrics"]["quality_score"] == min(
        r["quality_score"]["value"] for r in report["intervals"]
    )
    # the daily layout writes no hourly objects
    assert not [k for k in files(daily_root) if "/hour=" in k and not k.startswith("staging/")]


def test_critical_hour_fails_its_day_only_and_removes_the_days_validated_data(
    tmp_path: Path, settings_for: Callable[..., object], quiet_log: logging.Logger
) -> None:
    root = tmp_path / "daily"
    store = seed(root, [D1, D2])
    assert [r.exit_code for r in run_days(settings_for, root, [D1, D2], quiet_log)] == [0, 0]
    projection = validated_daily_key(D1).replace("snapshots.parquet", "prices.arrow")
    store.put(projection, b"a projection of the compaction")
    write_table(store, validated_key(H1[5]), staging(H1[5]))  # left by some earlier hourly run of the failing hour

    bad = {H1[5]: duplicate_key(H1[5]), H1[9]: edit(staging(H1[9]), 5, price=None), H1[1]: warnings_day()[H1[1]]}
    seed(root, [D1], bad)
    results = run_days(settings_for, root, [D1, D2], quiet_log)
    assert [(r.status, r.exit_code) for r in results] == [("failed", 3), ("success", 0)]
    message = results[0].message
    assert "05:00 (key_unique)" in message and "09:00" in message and "--batch` (hourly range mode" in message
    assert not store.exists(validated_daily_key(D1)) and not store.exists(projection)
    assert not store.exists(validated_key(H1[5]))
    assert not sealed_day(store, D1) and sealed_day(store, D2)
    assert store.exists(validated_daily_key(D2))
    # diagnostics: the day's report and quarantine; per hour the hourly stage's outcome
    report = json.loads(store.get(quality_daily_report_key(D1)))
    assert report["summary"]["gate"] == "failed" and report["summary"]["rows_validated"] == 0
    assert report["summary"]["hours_failed"] == [H1[5].start.isoformat(), H1[9].start.isoformat()]
    assert [r["summary"]["gate"] for r in report["intervals"]].count("failed") == 2
    assert all(r["objects"]["validated"] is None for r in report["intervals"])
    assert store.exists(quarantine_daily_key(D1))
    hourly = tmp_path / "hourly"
    seed(hourly, [D1], bad)
    reference = hourly_then_compact(settings_for, hourly, [D1], quiet_log)
    for interval, got in zip(H1, report["intervals"], strict=True):
        assert without_objects(got) == without_objects(json.loads(reference.get(quality_report_key(interval))))
    rec = record(store, D1)
    assert rec["exit_code"] == 3 and [h["status"] for h in rec["metrics"]["hours"]].count("failed") == 2


def test_missing_staging_hour_fails_the_day_with_exit_8_naming_it(
    tmp_path: Path, settings_for: Callable[..., object], quiet_log: logging.Logger
) -> None:
    root = tmp_path / "daily"
    store = seed(root, [D1, D2], {H1[7]: None})
    results = run_days(settings_for, root, [D1, D2], quiet_log)
    assert [(r.status, r.exit_code) for r in results] == [("failed", 8), ("success", 0)]
    assert "07:00" in results[0].message and staging_key(H1[7]) in results[0].message
    assert "--batch` (hourly range mode" in results[0].message
    assert not store.exists(validated_daily_key(D1)) and not store.exists(quality_daily_report_key(D1))
    assert record(store, D1)["exit_code"] == 8


def test_a_table_off_the_snapshot_schema_fails_the_day_and_points_to_hourly_range_mode(
    tmp_path: Path, settings_for: Callable[..., object], quiet_log: logging.Logger
) -> None:
    root = tmp_path / "daily"
    extra = staging(H1[2]).append_column("unexpected_extra", pa.array(["x"] * 20))
    store = seed(root, [D1], {H1[2]: extra, H1[4]: staging(H1[4]).slice(0, 0)})
    (result,) = run_days(settings_for, root, [D1], quiet_log)
    assert (result.status, result.exit_code) == ("failed", 3)
    assert "02:00, 04:00" in result.message and "['unexpected_extra']" in result.message
    assert "hourly range mode" in result.message
    assert not store.exists(validated_daily_key(D1))


def test_backfilled_days_are_skipped_with_their_compaction(
    tmp_path: Path, settings_for: Callable[..., object], quiet_log: logging.Logger
) -> None:
    root = tmp_path / "daily"
    store = FileStore(root)
    for interval in H1:  # D1: hourly validated partitions only (backfill), no staging
        write_table(store, validated_key(interval), staging(interval))
    write_table(store, validated_daily_key(D2), staging(H2[0]))  # D2: the compaction only
    d3 = D2 + timedelta(days=1)  # D3: nothing at all
    results = run_days(settings_for, root, [D1, D2, d3], quiet_log)
    assert [(r.status, r.exit_code) for r in results] == [("skipped", 0), ("skipped", 0), ("failed", 8)]
    expected = tmp_path / "expected"
    for interval in H1:
        write_table(FileStore(expected), validated_key(interval), staging(interval))
    assert compact_day(FileStore(expected), D1)
    assert store.get(validated_daily_key(D1)) == FileStore(expected).get(validated_daily_key(D1))
    assert all(store.exists(validated_key(iv)) for iv in H1)  # the history stays where backfill put it
    assert not sealed_day(store, D1)
    assert "compaction" in results[2].message


def test_a_day_run_hourly_before_keeps_no_hourly_objects(
    tmp_path: Path, settings_for: Callable[..., object], quiet_log: logging.Logger
) -> None:
    root = tmp_path / "daily"
    store = seed(root, [D1], warnings_day())
    hourly_then_compact(settings_for, root, [D1], quiet_log)
    assert store.exists(validated_key(H1[0])) and store.exists(quarantine_key(H1[1]))
    other = run_record_key(H1[0], "transform")
    store.put(other, b"{}")
    before = store.get(validated_daily_key(D1))

    (result,) = run_days(settings_for, root, [D1], quiet_log)
    assert result.status == "success"
    # data objects of the hours are gone; run records stay (append-only history of what ran)
    left = sorted(k for k in files(root) if "/hour=" in k and not k.startswith("runs/"))
    assert left == sorted(staging_key(iv) for iv in H1)
    assert store.exists(other) and store.exists(run_record_key(H1[0], "validate"))
    assert store.get(validated_daily_key(D1)) == before


def test_days_split_over_calls_and_chunks_give_the_same_bytes(
    tmp_path: Path, settings_for: Callable[..., object], quiet_log: logging.Logger
) -> None:
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    seed(whole, [D1, D2], warnings_day())
    seed(parts, [D1, D2], warnings_day())
    run_days(settings_for, whole, [D1, D2], quiet_log)
    run_days(settings_for, parts, [D1], quiet_log)
    run_days(settings_for, parts, [D2], quiet_log, chunk_days=1)
    assert data_objects(whole) == data_objects(parts)


def test_fallback_to_one_gx_run_per_hour_gives_the_same_bytes(
    tmp_path: Path, settings_for: Callable[..., object], quiet_log: logging.Logger, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    shared, fallback = tmp_path / "shared", tmp_path / "fallback"
    seed(shared, [D1], warnings_day())
    seed(fallback, [D1], warnings_day())
    run_days(settings_for, shared, [D1], quiet_log)

    def raising(*args: object, **kwargs: object) -> None:
        raise FallBackError("an expectation raised (forced by the test)")

    monkeypatch.setattr(daily, "validate_tables", raising)
    (result,) = run_days(settings_for, fallback, [D1], quiet_log)
    assert result.status == "success"
    assert data_objects(shared) == data_objects(fallback)


def test_a_bug_is_recorded_on_the_open_days_and_propagates(
    tmp_path: Path, settings_for: Callable[..., object], quiet_log: logging.Logger, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "daily"
    store = seed(root, [D1])

    def broken(**kwargs: object) -> None:
        raise RuntimeError("a bug in the report")

    monkeypatch.setattr(daily, "build_report", broken)
    with pytest.raises(RuntimeError, match="a bug in the report"):
        run_days(settings_for, root, [D1], quiet_log)
    rec = record(store, D1)
    assert (rec["status"], rec["exit_code"]) == ("failed", 1) and "a bug in the report" in rec["message"]
    assert not sealed_day(store, D1)


@pytest.mark.parametrize(
    "record",
    [
        None,
        {"status": "skipped", "metrics": {"layout": "daily"}},  # backfilled history: no hours
        {"metrics": {"hours": [{"interval_start": "2026-11-22T00:00:00+00:00", "quality_score": 1.0}] * 24}},
        {"metrics": {"hours": [{"quality_score": 1, "warning_failures": 0, "rows_quarantined": 0}] * 24}},
        {"metrics": {"hours": []}},
    ],
    ids=["no record", "no hours", "hours without the counts", "hours without their start", "not 24 hours"],
)
def test_day_hour_quality_is_none_for_a_record_without_the_figures(record: object) -> None:
    assert day_hour_quality(record) is None

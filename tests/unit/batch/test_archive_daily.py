"""archive.run_days (daily layout) leaves the warehouse rows the hourly range archive leaves (SQLite, PostgreSQL).

The day objects are written here in the format validate/transform write them in the daily layout (the validated
compaction, the 24 hourly indicator tables concatenated, alerts and quality reports as {"day", "layout",
"intervals"}, day run records), from the same hourly objects the range archive reads.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from cryptopipe.archive import daily as archive_daily
from cryptopipe.archive import models
from cryptopipe.archive import stage as archive_stage
from cryptopipe.core import layout
from cryptopipe.core.compaction import compact_tables
from cryptopipe.core.layout import Interval
from cryptopipe.core.schema import SNAPSHOT_SCHEMA
from cryptopipe.core.stage import day_hour_quality, day_run_record_key, execute_stage, json_bytes, run_record_key
from cryptopipe.core.storage import FileStore
from cryptopipe.core.tables import conform, read_table, to_parquet_bytes
from tests.support.postgres import PostgresServer
from tests.unit.batch.helpers import COINS, FIRST, intervals, staging
from tests.unit.batch.test_archive_range import indicators, rows

DAYS = [FIRST.date(), FIRST.date() + timedelta(days=1)]
HOURS = intervals(48)
DATA_TABLES = (models.market_snapshots, models.indicators, models.anomalies)


def seed_hour(store: FileStore, interval: Interval, coins: list[str]) -> None:
    """What ingest, validate and transform leave for one hour in the hourly layout."""
    h = HOURS.index(interval)
    validated = staging(interval, coins)
    caps = validated["market_cap"].to_pylist()
    validated = validated.set_column(
        validated.schema.get_field_index("market_cap"), "market_cap", pa.array([None, float("nan"), *caps[2:]])
    )
    store.put(layout.validated_key(interval), to_parquet_bytes(conform(validated, SNAPSHOT_SCHEMA)))
    store.put(layout.staging_key(interval), to_parquet_bytes(staging(interval, coins)))
    store.put(layout.indicators_key(interval), to_parquet_bytes(indicators(interval, coins)))
    raw = layout.raw_page_key(interval, "usd", 1)
    store.put_once(raw, gzip.compress(json.dumps([{"id": c} for c in COINS]).encode(), mtime=0))
    store.put_once(layout.sidecar_key(raw), b'{"status": 200}')
    anomalies = [
        {"coin_id": coins[i], "vs_currency": "usd", "metric": "move_1h", "value": 7.5 + i, "threshold": 5.0,
         "window": "1h", "z": None if i else 3.25}
        for i in range(h % 3)
    ]  # fmt: skip
    store.put(layout.alerts_key(interval), json_bytes({"interval_start": interval.start.isoformat(),
                                                       "anomalies": anomalies}))  # fmt: skip
    quality = {"interval_start": interval.start.isoformat(), "quality_score": {"value": 0.9 + h / 1000}}
    store.put(layout.quality_report_key(interval), json_bytes(quality))
    for name in ("ingest", "validate", "transform"):
        store.put(run_record_key(interval, name), json_bytes(record(name, interval.start.isoformat(), len(coins))))


def record(name: str, start: str, rows_out: int, **extra: Any) -> dict[str, Any]:
    return {"stage": name, "status": "success", "exit_code": 0, "interval_start": start, "started_at": start,
            "finished_at": start, "duration_seconds": 1.0, "outputs": [{"rows": rows_out}],
            "metrics": {"rows": rows_out}, **extra}  # fmt: skip


def to_daily(store: FileStore, day: date) -> None:
    """The day in the daily layout, from its hourly objects, which go (as validate/transform daily delete them)."""
    hours = layout.day_intervals(day)
    compaction = compact_tables([read_table(store, layout.validated_key(iv)) for iv in hours])
    store.put(layout.validated_daily_key(day), to_parquet_bytes(compaction))
    day_indicators = pa.concat_tables([read_table(store, layout.indicators_key(iv)) for iv in hours])
    store.put(layout.indicators_daily_key(day), to_parquet_bytes(day_indicators))
    for key_of, day_key in (
        (layout.alerts_key, layout.alerts_daily_key(day)),
        (layout.quality_report_key, layout.quality_daily_report_key(day)),
    ):
        entries = [json.loads(store.get(key_of(iv))) for iv in hours]
        store.put(day_key, json_bytes({"day": str(day), "layout": "daily", "intervals": entries}))
    store.put(layout.quarantine_daily_key(day), to_parquet_bytes(compaction.slice(0, 0)))
    store.put(f"{layout.report_daily_prefix(day)}index.html", b"<html>day</html>")
    start = layout.day_start(day).isoformat()
    for name in ("validate", "transform"):
        day_record = record(name, start, compaction.num_rows, metrics={"layout": "daily"})
        store.put(day_run_record_key(day, name), json_bytes({**day_record, "duration_seconds": 48.0}))
    for iv in hours:
        for key in (
            layout.validated_key(iv),
            layout.indicators_key(iv),
            layout.alerts_key(iv),
            layout.quality_report_key(iv),
            run_record_key(iv, "validate"),
            run_record_key(iv, "transform"),
        ):
            store.delete(key)  # fmt: skip


@pytest.fixture(params=["sqlite", "postgresql"])
def warehouses(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hourly.db'}", f"sqlite:///{tmp_path / 'daily.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.new_database(), server.new_database()


def stage_rows(url: str) -> list[tuple[str, str]]:
    return sorted((str(r[0]), str(r[1])) for r in rows(url, models.pipeline_runs))


def test_daily_load_equals_hourly_range_load(
    tmp_path: Path,
    warehouses: tuple[str, str],
    settings_for: Callable[..., Any],
    quiet_log: logging.Logger,
) -> None:
    roots = {"hourly": tmp_path / "hourly", "daily": tmp_path / "daily"}
    urls = dict(zip(roots, warehouses, strict=True))
    for mode, root in roots.items():
        store = FileStore(root)
        # An earlier hourly archive of the first hour with one more coin: its row must go (its hourly manifest and
        # run record stay in the daily layout: append-only history).
        seed_hour(store, HOURS[0], [*COINS, "vanished-coin"])
        execute_stage("archive", archive_stage.run, settings_for(root, urls[mode]), HOURS[0], quiet_log)
        store.delete(layout.validated_key(HOURS[0]))
        for interval in HOURS:
            seed_hour(store, interval, COINS)
    daily = FileStore(roots["daily"])
    assert daily.exists(layout.manifest_key(HOURS[0]))
    for day in DAYS:
        to_daily(daily, day)

    hourly_results = archive_stage.run_range(settings_for(roots["hourly"], urls["hourly"]), HOURS, quiet_log)
    assert [r.exit_code for r in hourly_results] == [0] * 48
    results = archive_stage.run_days(settings_for(roots["daily"], urls["daily"]), DAYS, quiet_log)
    assert [(r.status, r.exit_code) for r in results] == [("success", 0)] * 2
    assert [r.interval_start for r in results] == [layout.day_start(d).isoformat() for d in DAYS]

    for table in DATA_TABLES:
        hourly_rows = rows(urls["hourly"], table)
        assert hourly_rows, table.name
        assert rows(urls["daily"], table) == hourly_rows, table.name
    assert not [r for r in rows(urls["daily"], models.market_snapshots) if "vanished-coin" in r]

    # One pipeline_runs row per stage and interval (the earlier hourly archive of hour 0 is its own execution).
    expected = sorted(
        {(str(r[0]), str(r[1])) for r in rows(urls["hourly"], models.pipeline_runs) if r[1] != "archive"}
        | {(str(r[0]), "archive") for r in rows(urls["daily"], models.interval_manifests)}
    )
    runs = stage_rows(urls["daily"])
    assert len(runs) == 48 * 4 + 1
    assert sorted(set(runs)) == expected
    assert runs.count(runs[0]) == 1 or runs[0][1] == "archive"

    manifests = rows(urls["daily"], models.interval_manifests)
    assert len(manifests) == 48
    for day in DAYS:
        uri = daily.url(layout.manifest_daily_key(day))
        manifest = json.loads(daily.get(layout.manifest_daily_key(day)))
        day_rows = [r for r in manifests if r[1] == uri]
        assert len(day_rows) == 24 and {r[3] for r in day_rows} == {len(manifest["objects"])}
        assert manifest["warehouse"]["rows"]["market_snapshots"] == 24 * len(COINS)
        keys = {o["key"] for o in manifest["objects"]}
        assert layout.validated_daily_key(day) in keys and layout.indicators_daily_key(day) in keys
        copied = {a["source"] for a in manifest["archive"]}  # raw pages: described by the archive copy
        for entry in manifest["objects"]:  # read by archive (digest reused) or not: the stored bytes' digest
            if entry["key"] not in copied:
                data = daily.get(entry["key"])
                assert (entry["sha256"], entry["bytes"]) == (hashlib.sha256(data).hexdigest(), len(data)), entry
        assert layout.staging_key(layout.day_intervals(day)[5]) in keys
        assert len(manifest["archive"]) == 48  # 24 raw pages and their sidecars
        assert set(manifest["stages"]) == {"validate", "transform"}
        assert [h["rows"]["anomalies"] for h in manifest["intervals"]][:3] == [0, 1, 2]
        # validate's day record here predates the hours' figures: they are read from the day report
        first = HOURS.index(layout.day_intervals(day)[0])
        assert [h["quality_score"] for h in manifest["intervals"]] == [0.9 + (first + h) / 1000 for h in range(24)]
        # the earlier hourly archive's manifests and run records stay (append-only history); the warehouse points
        # every interval at the day manifest
        assert bool(daily.list(f"manifests/date={day}/")) == (day == DAYS[0])
        archive_record = json.loads(daily.get(day_run_record_key(day, "archive")))
        assert archive_record["metrics"]["layout"] == "daily"
        assert archive_record["metrics"]["warehouse_rows"] == 24 * len(COINS)
        assert archive_record["metrics"]["archived_objects"] == 48
    # the archive copies are the hourly archive's bytes
    hourly_archive = FileStore(roots["hourly"]).list("archive/")
    assert hourly_archive == daily.list("archive/")


def daily_root(root: Path) -> FileStore:
    store = FileStore(root)
    for interval in HOURS:
        seed_hour(store, interval, COINS)
    for day in DAYS:
        to_daily(store, day)
    return store


def test_missing_indicators_fail_only_their_day(
    tmp_path: Path, settings_for: Callable[..., Any], quiet_log: logging.Logger
) -> None:
    root, url = tmp_path / "data", f"sqlite:///{tmp_path / 'wh.db'}"
    store = daily_root(root)
    store.delete(layout.indicators_daily_key(DAYS[1]))
    results = archive_stage.run_days(settings_for(root, url), DAYS, quiet_log)
    assert [(r.status, r.exit_code) for r in results] == [("success", 0), ("failed", 8)]
    assert layout.indicators_daily_key(DAYS[1]) in results[1].message
    assert "--daily" in results[1].message
    record = json.loads(store.get(day_run_record_key(DAYS[1], "archive")))
    assert record["status"] == "failed" and record["exit_code"] == 8
    assert not store.exists(layout.manifest_daily_key(DAYS[1]))
    assert store.exists(layout.manifest_daily_key(DAYS[0]))
    assert not store.list(f"archive/raw/coins_markets/date={DAYS[1]}/")  # a failed day writes nothing
    loaded = {str(r[3])[:10] for r in rows(url, models.market_snapshots)}
    assert loaded == {str(DAYS[0])}
    assert len(rows(url, models.interval_manifests)) == 24


def test_bad_rows_fail_the_day_with_the_key(
    tmp_path: Path, settings_for: Callable[..., Any], quiet_log: logging.Logger
) -> None:
    root, url = tmp_path / "data", f"sqlite:///{tmp_path / 'wh.db'}"
    store = daily_root(root)
    wrong = compact_tables([staging(HOURS[30], COINS)])  # day 2's rows in day 1's compaction
    store.put(layout.validated_daily_key(DAYS[0]), to_parquet_bytes(wrong))
    store.put(layout.alerts_daily_key(DAYS[1]), json_bytes({"day": str(DAYS[1]), "intervals": []}))
    results = archive_stage.run_days(settings_for(root, url), DAYS, quiet_log)
    assert [r.exit_code for r in results] == [5, 5]
    assert layout.validated_daily_key(DAYS[0]) in results[0].message and "not the end of an hour" in results[0].message
    assert layout.alerts_daily_key(DAYS[1]) in results[1].message and "24 hourly entries" in results[1].message
    assert rows(url, models.market_snapshots) == []


def test_daily_rerun_is_idempotent(tmp_path: Path, settings_for: Callable[..., Any], quiet_log: logging.Logger) -> None:
    root, url = tmp_path / "data", f"sqlite:///{tmp_path / 'wh.db'}"
    store = daily_root(root)
    settings = settings_for(root, url)
    assert [r.exit_code for r in archive_daily.run_days(settings, DAYS, quiet_log, chunk_days=1)] == [0, 0]
    first = {t.name: rows(url, t) for t in DATA_TABLES}
    manifest = json.loads(store.get(layout.manifest_daily_key(DAYS[0])))
    assert [r.exit_code for r in archive_stage.run_days(settings, DAYS, quiet_log)] == [0, 0]
    assert first == {t.name: rows(url, t) for t in DATA_TABLES}
    assert len(first["market_snapshots"]) == 48 * len(COINS)
    again = json.loads(store.get(layout.manifest_daily_key(DAYS[0])))
    for part in ("objects", "archive", "intervals", "quality_score"):
        assert again[part] == manifest[part], part
    runs = stage_rows(url)
    for name in ("ingest", "validate", "transform"):
        assert len([r for r in runs if r[1] == name]) == 48, name  # upstream rows are updated, not added
    assert len([r for r in runs if r[1] == "archive"]) == 96  # each archive execution is its own row
    assert len(rows(url, models.interval_manifests)) == 48


def test_after_real_validate_and_transform_daily_equals_hourly(
    tmp_path: Path, settings_for: Callable[..., Any], quiet_log: logging.Logger
) -> None:
    """Staging through the real stages: hourly range validate/transform/archive against validate, transform and
    archive run_days (the daily layout end to end)."""
    from cryptopipe.transform import stage as transform_stage
    from cryptopipe.validate import stage as validate_stage

    roots = {"hourly": tmp_path / "hourly", "daily": tmp_path / "daily"}
    urls = {mode: f"sqlite:///{tmp_path / mode}.db" for mode in roots}
    settings = {mode: settings_for(root, urls[mode], transform__chart_top_n="0") for mode, root in roots.items()}
    for root in roots.values():
        store = FileStore(root)
        for interval in HOURS:
            store.put(layout.staging_key(interval), to_parquet_bytes(staging(interval, COINS)))
    assert {r.status for r in validate_stage.run_range(settings["hourly"], HOURS, quiet_log)} == {"success"}
    assert {r.status for r in transform_stage.run_range(settings["hourly"], HOURS, quiet_log)} == {"success"}
    assert {r.status for r in archive_stage.run_range(settings["hourly"], HOURS, quiet_log)} == {"success"}
    assert [r.status for r in validate_stage.run_days(settings["daily"], DAYS, quiet_log)] == ["success"] * 2
    assert [r.status for r in transform_stage.run_days(settings["daily"], DAYS, quiet_log)] == ["success"] * 2
    assert [r.status for r in archive_stage.run_days(settings["daily"], DAYS, quiet_log)] == ["success"] * 2

    for table in DATA_TABLES:
        assert rows(urls["daily"], table) == rows(urls["hourly"], table), table.name
    assert len(rows(urls["daily"], models.indicators)) == 48 * len(COINS)
    runs = stage_rows(urls["daily"])
    assert len(runs) == len(set(runs)) == 48 * 3  # validate, transform, archive: one row per interval each
    scores = [r[4] for r in sorted(rows(urls["daily"], models.interval_manifests))]
    assert scores == [r[4] for r in sorted(rows(urls["hourly"], models.interval_manifests))]
    daily, hourly = FileStore(roots["daily"]), FileStore(roots["hourly"])
    for day in DAYS:  # the hours' scores come from validate's day record (it carries them), equal to the reports'
        assert day_hour_quality(json.loads(daily.get(day_run_record_key(day, "validate")))) is not None
        manifest = json.loads(daily.get(layout.manifest_daily_key(day)))
        expected = [
            json.loads(hourly.get(layout.manifest_key(iv)))["quality_score"] for iv in layout.day_intervals(day)
        ]
        assert [hour["quality_score"] for hour in manifest["intervals"]] == expected
        assert all(isinstance(score, float) for score in expected)


def test_a_bug_is_recorded_on_the_days_and_raised(
    tmp_path: Path, settings_for: Callable[..., Any], quiet_log: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    root, url = tmp_path / "data", f"sqlite:///{tmp_path / 'wh.db'}"
    store = daily_root(root)

    def broken(*_: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(archive_daily, "_load_warehouse", broken)
    with pytest.raises(RuntimeError, match="boom"):
        archive_daily.run_days(settings_for(root, url), DAYS, quiet_log, chunk_days=1)
    first = json.loads(store.get(day_run_record_key(DAYS[0], "archive")))
    assert (first["status"], first["exit_code"]) == ("failed", 1) and "boom" in first["message"]
    assert not store.exists(layout.manifest_daily_key(DAYS[0]))

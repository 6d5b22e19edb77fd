"""archive.run_range leaves the same objects and warehouse rows as per-interval archive runs (SQLite, PostgreSQL)."""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pytest
import sqlalchemy as sa

from cryptopipe.archive import models
from cryptopipe.archive import stage as archive_stage
from cryptopipe.archive import warehouse as wh
from cryptopipe.core import layout
from cryptopipe.core.errors import PipelineError
from cryptopipe.core.layout import Interval
from cryptopipe.core.schema import SNAPSHOT_SCHEMA
from cryptopipe.core.stage import execute_stage, json_bytes
from cryptopipe.core.storage import FileStore
from cryptopipe.core.tables import conform, to_parquet_bytes
from cryptopipe.transform.schema import INDICATORS_SCHEMA
from tests.support.postgres import PostgresServer
from tests.unit.batch.helpers import COINS, data_objects, intervals, staging

HOURS = intervals(6)
NO_INDICATORS = HOURS[4]


def indicators(interval: Interval, coins: list[str]) -> pa.Table:
    n = len(coins)
    return conform(
        pa.table(
            {
                "coin_id": coins,
                "vs_currency": ["usd"] * n,
                "snapshot_time": pa.array([interval.end] * n, pa.timestamp("ms", tz="UTC")),
                "price": [100.0 + i for i in range(n)],
                "sma_7d": [float("nan")] + [10.0] * (n - 1),  # NaN: NULL in SQL
                "rsi_14": [55.0] * n,
                "zscore_1h": [float("inf")] + [0.5] * (n - 1),  # infinity: NULL as well
                "trend": ["up"] * n,
                "history_hours": [2400] * n,
                "filled_hours_7d": [0] * n,
                "warm_7d": [True] * n,
                "warm_30d": [i % 2 == 0 for i in range(n)],
                "warm_90d": [False] * n,
            }
        ),
        INDICATORS_SCHEMA,
    )


def seed(store: FileStore, interval: Interval, coins: list[str]) -> None:
    validated = staging(interval, coins)
    validated = validated.set_column(
        validated.schema.get_field_index("market_cap"),
        "market_cap",
        pa.array([None, float("nan"), *validated["market_cap"].to_pylist()[2:]], pa.float64()),
    )
    store.put(layout.validated_key(interval), to_parquet_bytes(conform(validated, SNAPSHOT_SCHEMA)))
    if interval != NO_INDICATORS:
        store.put(layout.indicators_key(interval), to_parquet_bytes(indicators(interval, coins)))
    raw = layout.raw_page_key(interval, "usd", 1)
    store.put_once(raw, gzip.compress(json.dumps([{"id": c} for c in COINS]).encode(), mtime=0))
    store.put_once(layout.sidecar_key(raw), b'{"status": 200}')
    anomalies = [
        {"coin_id": coins[h], "vs_currency": "usd", "metric": "move_1h", "value": 7.5, "threshold": 5.0,
         "window": "1h", "z": None}
        for h in range(HOURS.index(interval) % 3)
    ]  # fmt: skip
    alerts = {"interval_start": interval.start.isoformat(), "anomalies": anomalies}
    store.put(layout.alerts_key(interval), json_bytes(alerts))
    store.put(layout.quality_report_key(interval), json_bytes({"quality_score": {"value": 0.98}}))
    for stage in ("ingest", "validate", "transform"):
        record = {"stage": stage, "status": "success", "exit_code": 0, "started_at": interval.end.isoformat(),
                  "finished_at": interval.end.isoformat(), "duration_seconds": 1.0,
                  "outputs": [{"rows": len(coins)}], "metrics": {"rows": len(coins)}}  # fmt: skip
        store.put(f"runs/{interval.partition}/{stage}.json", json_bytes(record))


@pytest.fixture(params=["sqlite", "postgresql"])
def warehouses(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'per.db'}", f"sqlite:///{tmp_path / 'batch.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.new_database(), server.new_database()


def rows(url: str, table: sa.Table) -> list[tuple[object, ...]]:
    """Every row as stored (SQLite: the raw column values, so the bound formats are compared too)."""
    engine = wh.create_engine(url)
    try:
        with engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                result = conn.exec_driver_sql(f"SELECT * FROM {table.name}")
            else:
                result = conn.execute(sa.select(table))
            return sorted((tuple(r) for r in result), key=repr)
    finally:
        engine.dispose()


def test_range_load_equals_per_interval_load(
    tmp_path: Path,
    warehouses: tuple[str, str],
    settings_for: Callable[..., object],
    quiet_log: logging.Logger,
) -> None:
    roots = {"per": tmp_path / "per", "batch": tmp_path / "batch"}
    urls = dict(zip(roots, warehouses, strict=True))
    for mode, root in roots.items():
        store = FileStore(root)
        # An earlier load of the first hour with one more coin: its row must go (replace_interval semantics).
        seed(store, HOURS[0], [*COINS, "vanished-coin"])
        execute_stage("archive", archive_stage.run, settings_for(root, urls[mode]), HOURS[0], quiet_log)
        for interval in HOURS:
            seed_store = FileStore(root)
            seed_store.delete(layout.validated_key(interval))
            seed(seed_store, interval, COINS)

    per_settings = settings_for(roots["per"], urls["per"])
    codes = []
    for interval in HOURS:
        try:
            execute_stage("archive", archive_stage.run, per_settings, interval, quiet_log)
            codes.append(0)
        except PipelineError as exc:
            codes.append(int(exc.exit_code))
    assert codes == [0, 0, 0, 0, 8, 0]

    results = archive_stage.run_range(settings_for(roots["batch"], urls["batch"]), HOURS, quiet_log)
    assert [r.exit_code for r in results] == codes
    assert "indicators" in results[4].message

    assert data_objects(roots["per"]) == data_objects(roots["batch"])  # incl. archive/raw copies
    for table in (models.market_snapshots, models.indicators, models.anomalies):
        per_rows = rows(urls["per"], table)
        assert per_rows == rows(urls["batch"], table), table.name
        assert per_rows, table.name
    assert not [r for r in rows(urls["batch"], models.market_snapshots) if "vanished-coin" in r]

    # Execution records: one pipeline_runs row per stage execution, one manifest row per archived interval.
    def runs(url: str) -> list[tuple[object, ...]]:
        return sorted((str(r[0]), r[1]) for r in rows(url, models.pipeline_runs))

    assert runs(urls["per"]) == runs(urls["batch"])
    per_manifests = rows(urls["per"], models.interval_manifests)
    assert [r[0] for r in per_manifests] == [r[0] for r in rows(urls["batch"], models.interval_manifests)]
    assert len(per_manifests) == 5 + 0  # the first hour's earlier row was updated in place
    for interval in HOURS:
        if interval == NO_INDICATORS:
            assert not FileStore(roots["batch"]).exists(layout.manifest_key(interval))
            continue
        per_m, batch_m = (json.loads(FileStore(r).get(layout.manifest_key(interval))) for r in roots.values())
        per_m["warehouse"].pop("url"), batch_m["warehouse"].pop("url")  # two warehouses in this test
        for part in ("objects", "archive", "warehouse", "quality_score", "interval_start"):
            assert per_m[part] == batch_m[part], (interval, part)


def test_range_rerun_changes_no_data_row(
    tmp_path: Path, settings_for: Callable[..., object], quiet_log: logging.Logger
) -> None:
    root, url = tmp_path / "data", f"sqlite:///{tmp_path / 'wh.db'}"
    for interval in HOURS[:3]:
        seed(FileStore(root), interval, COINS)
    settings = settings_for(root, url)
    assert [r.exit_code for r in archive_stage.run_range(settings, HOURS[:3], quiet_log)] == [0, 0, 0]
    first = {t.name: rows(url, t) for t in (models.market_snapshots, models.indicators, models.anomalies)}
    assert [r.exit_code for r in archive_stage.run_range(settings, HOURS[:3], quiet_log)] == [0, 0, 0]
    assert first == {t.name: rows(url, t) for t in (models.market_snapshots, models.indicators, models.anomalies)}
    assert len(first["market_snapshots"]) == 3 * len(COINS)
    archive_runs = [r for r in rows(url, models.pipeline_runs) if r[1] == "archive"]
    assert len(archive_runs) == 6  # each execution is its own row

"""Archive stage on SQLite and on a real PostgreSQL: idempotent load, lineage, archive copy, retention."""

from __future__ import annotations

import gzip
import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
import sqlalchemy as sa

from cryptopipe.archive import models
from cryptopipe.archive import warehouse as wh
from cryptopipe.cli import main
from cryptopipe.core import layout
from cryptopipe.core.errors import ExitCode
from cryptopipe.core.layout import Interval
from cryptopipe.core.schema import SNAPSHOT_SCHEMA
from cryptopipe.core.stage import json_bytes
from cryptopipe.core.storage import FileStore
from cryptopipe.core.tables import conform, to_parquet_bytes
from tests.support.postgres import PostgresServer

IV = Interval.parse("2026-11-22T13:00:00Z", "2026-11-22T14:00:00Z")
ARGS = ["archive", "--interval-start", "2026-11-22T13:00:00Z", "--interval-end", "2026-11-22T14:00:00Z"]


def snapshots(coins: list[str]) -> pa.Table:
    n = len(coins)
    return conform(
        pa.table(
            {
                "coin_id": coins,
                "vs_currency": ["usd"] * n,
                "snapshot_time": pa.array([IV.end] * n, pa.timestamp("ms", tz="UTC")),
                "symbol": [c[:3] for c in coins],
                "price": [1.5e-10 if c == "shiba-inu" else 100.0 + i for i, c in enumerate(coins)],
                "market_cap": [None if i == 0 else 1e9 for i in range(n)],
                "total_volume": [0.0] * n,
                "source": ["coins_markets"] * n,
            }
        ),
        SNAPSHOT_SCHEMA,
    )


def indicators(coins: list[str]) -> pa.Table:
    from cryptopipe.transform.schema import INDICATORS_SCHEMA

    n = len(coins)
    return conform(
        pa.table(
            {
                "coin_id": coins,
                "vs_currency": ["usd"] * n,
                "snapshot_time": pa.array([IV.end] * n, pa.timestamp("ms", tz="UTC")),
                "price": [100.0] * n,
                "sma_7d": [float("nan")] + [10.0] * (n - 1),
                "rsi_14": [55.0] * n,
                "trend": ["up"] * n,
                "history_hours": [2400] * n,
                "filled_hours_7d": [0] * n,
                "warm_7d": [True] * n,
                "warm_30d": [True] * n,
                "warm_90d": [False] * n,
            }
        ),
        INDICATORS_SCHEMA,
    )


def seed(store: FileStore, coins: list[str]) -> None:
    store.put(layout.validated_key(IV), to_parquet_bytes(snapshots(coins)))
    store.put(layout.indicators_key(IV), to_parquet_bytes(indicators(coins)))
    raw = layout.raw_page_key(IV, "usd", 1)
    store.put_once(raw, gzip.compress(b'[{"id": "bitcoin"}]', mtime=0))
    store.put_once(layout.sidecar_key(raw), b'{"status": 200}')
    alerts = {"interval_start": IV.start.isoformat(), "interval_end": IV.end.isoformat(),
              "anomalies": [{"coin_id": coins[0], "vs_currency": "usd", "metric": "move_1h", "value": 7.5,
                             "threshold": 5.0, "window": "1h", "z": None}],
              "quality": {"score": 0.98, "warnings": 1, "quarantined_rows": 0}, "report_uri": None}  # fmt: skip
    store.put(layout.alerts_key(IV), json_bytes(alerts))
    store.put(layout.quality_report_key(IV), json_bytes({"quality_score": {"value": 0.98, "definition": "..."}}))
    for stage in ("ingest", "validate", "transform"):
        record = {"stage": stage, "status": "success", "exit_code": 0, "started_at": IV.end.isoformat(),
                  "finished_at": IV.end.isoformat(), "duration_seconds": 1.0, "outputs": [{"rows": len(coins)}],
                  "metrics": {"rows": len(coins)}}  # fmt: skip
        store.put(f"runs/{IV.partition}/{stage}.json", json_bytes(record))


@pytest.fixture(params=["sqlite", "postgresql"])
def warehouse_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'wh.db'}"
    server: PostgresServer = request.getfixturevalue("postgres_server")
    return server.new_database()


@pytest.fixture
def env(clean_env: pytest.MonkeyPatch, tmp_path: Path, warehouse_url: str) -> FileStore:
    clean_env.setenv("CRYPTOPIPE_STORAGE__URI", f"file://{tmp_path / 'data'}")
    clean_env.setenv("CRYPTOPIPE_WAREHOUSE__URL", warehouse_url)
    return FileStore(tmp_path / "data")


def table_rows(url: str, table: sa.Table) -> list[tuple[object, ...]]:
    engine = wh.create_engine(url)
    with engine.connect() as conn:
        rows = [tuple(r) for r in conn.execute(sa.select(table))]
    engine.dispose()
    return rows


def test_archive_loads_once_per_key_and_rerun_changes_nothing(env: FileStore, warehouse_url: str) -> None:
    coins = ["bitcoin", "ethereum", "shiba-inu"]
    seed(env, coins)
    assert main(ARGS) == 0
    first = sorted(table_rows(warehouse_url, models.market_snapshots), key=str)
    assert main(ARGS) == 0
    assert sorted(table_rows(warehouse_url, models.market_snapshots), key=str) == first
    assert len(first) == 3
    prices = {r[0]: r[6] for r in first}
    assert prices["shiba-inu"] == pytest.approx(1.5e-10, rel=1e-12)  # micro prices survive as doubles
    assert len(table_rows(warehouse_url, models.indicators)) == 3
    assert len(table_rows(warehouse_url, models.anomalies)) == 1
    runs = table_rows(warehouse_url, models.pipeline_runs)
    # one row per stage execution: ingest/validate/transform once each (upserted from their records on every
    # archive run), and each of the two archive runs recorded by itself
    stages = sorted(r[1] for r in runs)
    assert stages.count("ingest") == 1 and stages.count("transform") == 1
    assert stages.count("archive") == 2
    assert len(table_rows(warehouse_url, models.interval_manifests)) == 1


def test_rerun_with_fewer_rows_removes_the_stale_ones(env: FileStore, warehouse_url: str) -> None:
    seed(env, ["bitcoin", "ethereum", "solana"])
    assert main(ARGS) == 0
    env.put(layout.validated_key(IV), to_parquet_bytes(snapshots(["bitcoin", "ethereum"])))
    env.put(layout.indicators_key(IV), to_parquet_bytes(indicators(["bitcoin", "ethereum"])))
    assert main(ARGS) == 0
    assert sorted(r[0] for r in table_rows(warehouse_url, models.market_snapshots)) == ["bitcoin", "ethereum"]
    assert len(table_rows(warehouse_url, models.indicators)) == 2


def test_manifest_lists_every_object_with_checksums(env: FileStore) -> None:
    seed(env, ["bitcoin", "ethereum"])
    assert main(ARGS) == 0
    manifest = json.loads(env.get(layout.manifest_key(IV)))
    keys = {o["key"] for o in manifest["objects"]}
    assert layout.validated_key(IV) in keys and layout.indicators_key(IV) in keys
    validated = next(o for o in manifest["objects"] if o["key"] == layout.validated_key(IV))
    assert validated["rows"] == 2
    import hashlib

    assert validated["sha256"] == hashlib.sha256(env.get(layout.validated_key(IV))).hexdigest()
    assert set(manifest["stages"]) >= {"ingest", "validate", "transform"}
    assert manifest["quality_score"] == 0.98
    assert manifest["archive"][0]["key"].startswith("archive/raw/coins_markets/")
    assert "password" not in json.dumps(manifest["warehouse"])


def test_archive_copy_is_write_once_and_conflict_is_exit_9(env: FileStore) -> None:
    seed(env, ["bitcoin"])
    assert main(ARGS) == 0
    archived = layout.archive_key(layout.raw_page_key(IV, "usd", 1))
    assert env.get(archived) == env.get(layout.raw_page_key(IV, "usd", 1))
    env.put(archived, b"tampered")  # someone changed the archive behind our back
    assert main(ARGS) == ExitCode.CONFLICT
    assert env.get(archived) == b"tampered"  # never overwritten


def test_missing_indicators_is_exit_8_and_writes_nothing(env: FileStore, warehouse_url: str) -> None:
    seed(env, ["bitcoin"])
    env.delete(layout.indicators_key(IV))
    assert main(ARGS) == ExitCode.MISSING_INPUT
    assert not env.exists(layout.manifest_key(IV))


def test_retention_prunes_working_areas_never_the_archive(env: FileStore, clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CRYPTOPIPE_RETENTION__WORKING_DAYS", "10")
    seed(env, ["bitcoin"])
    old = Interval.starting(IV.start - timedelta(days=10, hours=1))
    older = Interval.starting(IV.start - timedelta(days=30))
    for iv in (old, older):
        env.put(layout.validated_key(iv), b"old")
        env.put(layout.archive_key(layout.raw_page_key(iv, "usd", 1)), b"archived")
    kept = Interval.starting(IV.start - timedelta(days=9))
    env.put(layout.validated_key(kept), b"recent")
    assert main(ARGS) == 0
    assert not env.exists(layout.validated_key(old))  # expired with this hour
    assert env.exists(layout.validated_key(older))  # only the daily sweep (00:00 interval) catches stragglers
    assert env.exists(layout.validated_key(kept))
    assert env.exists(layout.archive_key(layout.raw_page_key(old, "usd", 1)))


def test_models_match_migrations(tmp_path: Path) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    engine = wh.create_engine(f"sqlite:///{tmp_path / 'm.db'}")
    assert wh.migrate(engine) == "0001"
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), models.metadata)
    engine.dispose()
    assert diff == []


def test_postgres_down_is_exit_6_with_no_manifest(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, postgres_server: PostgresServer
) -> None:
    store = FileStore(tmp_path / "data")
    clean_env.setenv("CRYPTOPIPE_STORAGE__URI", f"file://{tmp_path / 'data'}")
    url = postgres_server.new_database().replace(f":{postgres_server.port}/", ":9/")  # nothing listens on 9
    clean_env.setenv("CRYPTOPIPE_WAREHOUSE__URL", url)
    seed(store, ["bitcoin"])
    assert main(ARGS) == ExitCode.WAREHOUSE
    assert not store.exists(layout.manifest_key(IV))


def test_lock_held_by_another_run_fails_clearly(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = postgres_server.new_database()
    store = FileStore(tmp_path / "data")
    clean_env.setenv("CRYPTOPIPE_STORAGE__URI", f"file://{tmp_path / 'data'}")
    clean_env.setenv("CRYPTOPIPE_WAREHOUSE__URL", url)
    seed(store, ["bitcoin"])
    assert main(ARGS) == 0
    monkeypatch.setattr(wh, "LOCK_TIMEOUT_MS", 500)
    engine = wh.create_engine(url)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with engine.begin() as conn:
            wh.lock_interval(conn, IV.start)
            held.set()
            release.wait(20)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        held.wait(10)
        assert main(ARGS) == ExitCode.WAREHOUSE
    finally:
        release.set()
        holder.join()
        engine.dispose()
    assert main(ARGS) == 0  # once the other run is done, the rerun converges


def test_sqlite_concurrent_loads_leave_one_row_per_key(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    engine = wh.create_engine(url)
    wh.migrate(engine)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [{"interval_start": start, "stage": "ingest", "started_at": start, "status": "success", "exit_code": 0}]

    def load() -> None:
        e = wh.create_engine(url)
        with e.begin() as conn:
            wh.upsert(conn, models.pipeline_runs, rows)
        e.dispose()

    threads = [threading.Thread(target=load) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wh.count_rows(engine, models.pipeline_runs) == 1
    engine.dispose()


def test_warehouse_indicators_follow_the_transform_schema() -> None:
    """Archive never imports transform (stages are independent); this test keeps their tables in step."""
    from cryptopipe.transform.schema import INDICATORS_SCHEMA

    descriptive = {"symbol", "name", "market_cap", "market_cap_rank"}  # already in market_snapshots
    warehouse = {c.name for c in models.indicators.columns} - {"interval_start"}
    assert warehouse == set(INDICATORS_SCHEMA.names) - descriptive


def test_indicator_values_land_in_typed_columns(env: FileStore, warehouse_url: str) -> None:
    seed(env, ["bitcoin", "ethereum"])
    assert main(ARGS) == 0
    engine = wh.create_engine(warehouse_url)
    with engine.connect() as conn:
        rows = {r.coin_id: r for r in conn.execute(sa.select(models.indicators))}
    engine.dispose()
    assert rows["bitcoin"].sma_7d is None  # NaN (warm-up) is stored as NULL
    assert rows["ethereum"].sma_7d == 10.0 and rows["ethereum"].rsi_14 == 55.0
    assert rows["ethereum"].trend == "up" and rows["ethereum"].warm_90d is False

"""The transform stage end to end on FileStore inputs: anomalies, the alerts record, charts, reruns, run time."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from cryptopipe.core.config import Settings
from cryptopipe.core.errors import MissingInputError
from cryptopipe.core.layout import (
    HOUR,
    Interval,
    alerts_key,
    indicators_key,
    quality_report_key,
    report_prefix,
    validated_key,
)
from cryptopipe.core.schema import SNAPSHOT_SCHEMA
from cryptopipe.core.stage import execute_stage, json_bytes, run_record_key
from cryptopipe.core.storage import FileStore
from cryptopipe.core.tables import read_table, write_table
from cryptopipe.transform.anomalies import quality_summary
from cryptopipe.transform.charts import MAX_ANOMALY_CHARTS, choose_charts
from cryptopipe.transform.schema import INDICATORS_SCHEMA
from cryptopipe.transform.stage import run
from tests.unit.transform.builders import (
    fixture_prices,
    make_ctx,
    series_table,
    write_days,
    write_hours,
)
from tests.unit.transform.test_transform_indicators import ref_rsi, ref_sma

INTERVAL = Interval.starting(datetime(2026, 3, 1, 13, tzinfo=UTC))
LOOKBACK = 10
HOURS = LOOKBACK * 24


def calm_walks(coins: list[str], hours: int, seed: int = 11) -> dict[str, np.ndarray]:
    """0.1% hourly volatility: no 1h/24h move or z-score reaches the default thresholds by chance."""
    rng = np.random.default_rng(seed)
    return {c: (i + 1) * 10.0 * np.exp(np.cumsum(rng.normal(0, 0.001, hours))) for i, c in enumerate(coins)}


def write_window(
    root: Path, series: dict[str, np.ndarray], current_extra: dict[str, dict[str, object]] | None = None
) -> FileStore:
    """The window as hourly partitions; the interval's own partition gets extra columns (CoinGecko's pct)."""
    store = FileStore(root)
    hours = len(next(iter(series.values())))
    table = series_table(series, INTERVAL.end - (hours - 1) * HOUR)
    past = table.slice(0, (hours - 1) * len(series))
    # earlier days as daily compactions (fast to read), the interval's own day as hourly partitions
    today_rows = (INTERVAL.start.hour) * len(series)
    write_days(store, past.slice(0, past.num_rows - today_rows))
    write_hours(store, past.slice(past.num_rows - today_rows))
    current = table.slice((hours - 1) * len(series)).to_pylist()
    for row in current:
        row.update((current_extra or {}).get(row["coin_id"], {}))
        row["market_cap_rank"] = None
    write_table(store, validated_key(INTERVAL), pa.Table.from_pylist(current, SNAPSHOT_SCHEMA), SNAPSHOT_SCHEMA)
    return store


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(transform__lookback_days=LOOKBACK, transform__chart_top_n=2)


@pytest.fixture
def planted(tmp_path: Path) -> tuple[Path, FileStore]:
    """Four calm coins; 'jumpy' jumps +8% in the interval's hour; 'told' is calm but CoinGecko says -12.5% / 24h."""
    series = calm_walks(["calm", "jumpy", "told", "whale"], HOURS)
    series["jumpy"][-1] = series["jumpy"][-2] * 1.08
    series["whale"] *= 1000  # largest market cap
    root = tmp_path / "data"
    store = write_window(root, series, {"told": {"price_change_pct_24h": -12.5, "price_change_pct_1h": 0.2}})
    return root, store


def run_stage(root: Path, settings: Settings) -> dict[str, object]:
    ctx = make_ctx(root, settings, INTERVAL)
    run(ctx)
    return ctx.result.metrics


def test_planted_jump_and_source_moves_are_anomalies(planted: tuple[Path, FileStore], settings: Settings) -> None:
    root, store = planted
    metrics = run_stage(root, settings)
    alerts = json.loads(store.get(alerts_key(INTERVAL)))
    found = {(a["coin_id"], a["metric"]) for a in alerts["anomalies"]}
    assert {("jumpy", "zscore_1h"), ("jumpy", "move_1h_pct"), ("jumpy", "move_24h_pct")} <= found
    assert ("told", "move_24h_pct") in found
    assert not {c for c, _ in found} & {"calm", "whale"}
    jump = next(a for a in alerts["anomalies"] if (a["coin_id"], a["metric"]) == ("jumpy", "move_1h_pct"))
    assert jump["value"] == pytest.approx(8.0, rel=1e-9)
    assert jump["threshold"] == 5.0 and jump["window"] == "1h" and jump["z"] > 4
    told = next(a for a in alerts["anomalies"] if a["coin_id"] == "told")
    assert told["value"] == -12.5  # CoinGecko's own number wins over the computed (near 0) change
    assert metrics["anomalies"] == len(alerts["anomalies"])


def test_alerts_record_shape(planted: tuple[Path, FileStore], settings: Settings) -> None:
    root, store = planted
    metrics = run_stage(root, settings)
    raw = store.get(alerts_key(INTERVAL))
    alerts = json.loads(raw)
    assert raw == json_bytes(alerts)  # canonical, sorted keys
    assert set(alerts) == {"interval_start", "interval_end", "anomalies", "quality", "report_uri"}
    assert alerts["interval_start"] == "2026-03-01T13:00:00Z" and alerts["interval_end"] == "2026-03-01T14:00:00Z"
    assert alerts["quality"] == {"score": None, "warnings": None, "quarantined_rows": None}  # no report written
    assert alerts["report_uri"] == store.url(report_prefix(INTERVAL) + "index.html") == metrics["report_uri"]
    for anomaly in alerts["anomalies"]:
        assert set(anomaly) == {"coin_id", "vs_currency", "metric", "value", "threshold", "window", "z"}
    order = [(a["coin_id"], a["vs_currency"]) for a in alerts["anomalies"]]
    assert order == sorted(order)


def test_quality_summary_comes_from_the_validate_report(planted: tuple[Path, FileStore], settings: Settings) -> None:
    root, store = planted
    report = {  # the shape validate writes (src/cryptopipe/validate/report.py)
        "summary": {"gate": "passed_with_warnings", "rows_quarantined": 2, "warning_failures": 3},
        "quality_score": {"value": 0.97, "definition": "..."},
        "expectations": [],
    }
    store.put(quality_report_key(INTERVAL), json.dumps(report).encode())
    run_stage(root, settings)
    alerts = json.loads(store.get(alerts_key(INTERVAL)))
    assert alerts["quality"] == {"score": 0.97, "warnings": 3, "quarantined_rows": 2}


def test_quality_summary_tolerates_bad_reports() -> None:
    assert quality_summary(b"not json")["score"] is None
    assert quality_summary(b"[1, 2]")["warnings"] is None
    assert quality_summary(b'{"quality_score": 1, "summary": {"warning_failures": 0}}') == {
        "score": 1.0,
        "warnings": 0,
        "quarantined_rows": None,
    }


def test_rerun_is_byte_identical(planted: tuple[Path, FileStore], settings: Settings) -> None:
    root, store = planted
    run_stage(root, settings)
    outputs = [k for k in store.list("") if k.startswith(("analytics/", "alerts/", "reports/"))]
    first = {k: store.get(k) for k in outputs}
    run_stage(root, settings)
    assert {k: store.get(k) for k in outputs} == first
    assert indicators_key(INTERVAL) in first and alerts_key(INTERVAL) in first


def test_charts_and_index(planted: tuple[Path, FileStore], settings: Settings) -> None:
    root, store = planted
    metrics = run_stage(root, settings)
    prefix = report_prefix(INTERVAL)
    charts = sorted(k.removeprefix(prefix) for k in store.list(prefix + "charts/"))
    # top 2 by market cap (whale, then jumpy/told/calm by cap) plus every coin with an anomaly
    assert "charts/whale.png" in charts and "charts/jumpy.png" in charts and "charts/told.png" in charts
    assert metrics["charts"] == len(charts)
    index = store.get(prefix + "index.html").decode()
    assert "<title>Crypto market report 2026-03-01T13:00:00Z → 2026-03-01T14:00:00Z</title>" in index
    for chart in charts:
        assert store.get(prefix + chart).startswith(b"\x89PNG\r\n\x1a\n")
        assert f'src="{chart}"' in index


def test_indicator_row_matches_reference_on_real_history(
    tmp_path: Path, make_settings: Callable[..., Settings]
) -> None:
    """BTC and SHIB (micro prices) from the fixture, one day per hour, through storage and the stage."""
    settings = make_settings(transform__lookback_days=13, transform__chart_top_n=0)
    series = {c: fixture_prices(c)[1] for c in ("btc", "shib")}
    root = tmp_path / "data"
    store = write_window(root, series)
    run_stage(root, settings)
    rows = {r["coin_id"]: r for r in read_table(store, indicators_key(INTERVAL)).to_pylist()}
    for coin, x in series.items():
        assert rows[coin]["sma_7d"] == pytest.approx(ref_sma(x, 168)[-1], rel=1e-9)
        assert rows[coin]["rsi_14"] == pytest.approx(ref_rsi(x)[-1], abs=1e-7)
        assert rows[coin]["history_hours"] == 300
        assert rows[coin]["warm_7d"] and not rows[coin]["warm_30d"] and rows[coin]["sma_30d"] is None
    assert 0 < rows["shib"]["price"] < 1e-4 and rows["shib"]["bb_width"] > 0


def test_indicators_schema_and_sorting(planted: tuple[Path, FileStore], settings: Settings) -> None:
    root, store = planted
    run_stage(root, settings)
    table = read_table(store, indicators_key(INTERVAL))
    assert table.schema.equals(INDICATORS_SCHEMA, check_metadata=False)
    assert table.column("coin_id").to_pylist() == ["calm", "jumpy", "told", "whale"]
    assert set(table.column("snapshot_time").to_pylist()) == {INTERVAL.end}


def test_missing_input_exit_code_and_run_record(tmp_path: Path, make_settings: Callable[..., Settings]) -> None:
    root = tmp_path / "data"
    settings = make_settings(root)
    with pytest.raises(MissingInputError) as excinfo:
        execute_stage("transform", run, settings, INTERVAL, logging.getLogger("test"))
    assert excinfo.value.exit_code == 8
    record = json.loads(FileStore(root).get(run_record_key(INTERVAL, "transform")))
    assert record["status"] == "failed" and "validated/market_snapshots/date=2026-03-01/hour=13" in record["message"]


def test_through_execute_stage_records_lineage(
    planted: tuple[Path, FileStore], make_settings: Callable[..., Settings]
) -> None:
    root, _ = planted
    settings = make_settings(root, transform__lookback_days=LOOKBACK, transform__chart_top_n=0)
    result = execute_stage("transform", run, settings, INTERVAL, logging.getLogger("test"))
    assert result.status == "success"
    assert {indicators_key(INTERVAL), alerts_key(INTERVAL)} <= {o.key for o in result.outputs}
    assert validated_key(INTERVAL) in {i.key for i in result.inputs}
    assert result.metrics["objects_read"] == len(result.inputs)


def test_250_coins_100_days_runs_in_seconds(tmp_path: Path, make_settings: Callable[..., Settings]) -> None:
    """Issue 7 expectation: a few seconds for 250 coins x 100 days. Bound generous for a shared 2-core box."""
    settings = make_settings(transform__lookback_days=100, transform__chart_top_n=5)
    coins = [f"coin-{i:03d}" for i in range(250)]
    hours = 100 * 24
    series = calm_walks(coins, hours, seed=3)
    table = series_table(series, INTERVAL.end - (hours - 1) * HOUR)
    store = FileStore(tmp_path / "data")
    midnight_snapshot = datetime(2026, 3, 1, 1, tzinfo=UTC)
    cut = (hours - 1) - int((INTERVAL.end - midnight_snapshot) / HOUR)
    write_days(store, table.slice(0, cut * len(coins)))
    write_hours(store, table.slice(cut * len(coins)))
    ctx = make_ctx(tmp_path / "data", settings, INTERVAL)
    clock = time.perf_counter()
    run(ctx)
    elapsed = time.perf_counter() - clock
    assert ctx.result.metrics["rows"] == 250
    assert ctx.result.metrics["rows_read"] == 250 * hours
    assert elapsed < 30, f"transform of 250 coins x 100 days took {elapsed:.1f} s"


def test_chart_choice_caps_anomaly_charts_and_adds_top_coins() -> None:
    anomalies = [
        {"coin_id": f"c{i:02d}", "vs_currency": "usd", "metric": "move_1h_pct", "value": 6.0 + i, "threshold": 5.0}
        for i in range(MAX_ANOMALY_CHARTS + 5)
    ] + [{"coin_id": "e", "vs_currency": "eur", "metric": "zscore_1h", "value": -99.0, "threshold": 4.0}]
    rows = [
        {"coin_id": "big", "vs_currency": "usd", "market_cap": 9e9},
        {"coin_id": "mid", "vs_currency": "usd", "market_cap": 5e9},
        {"coin_id": "big", "vs_currency": "eur", "market_cap": 8e12},  # not the first quote currency
        {"coin_id": "nocap", "vs_currency": "usd", "market_cap": None},
    ]
    specs = choose_charts(rows, anomalies, "usd", top_n=2)
    anomaly_specs = [c for c in specs if c.reason == "anomaly"]
    assert len(anomaly_specs) == MAX_ANOMALY_CHARTS
    assert ("e", "eur", "charts/e.eur.png") in {(c.coin_id, c.vs_currency, c.filename) for c in anomaly_specs}
    assert "c00" not in {c.coin_id for c in anomaly_specs}  # the mildest ones are left out
    assert {(c.coin_id, c.filename) for c in specs if c.reason == "top 2"} == {
        ("big", "charts/big.png"),
        ("mid", "charts/mid.png"),
    }


def test_empty_validated_partition_gives_empty_outputs(tmp_path: Path, settings: Settings) -> None:
    """All rows quarantined this hour: no indicator rows, no anomalies, but every output exists."""
    root = tmp_path / "data"
    store = write_window(root, calm_walks(["calm"], HOURS))
    empty = read_table(store, validated_key(INTERVAL)).slice(0, 0)
    write_table(store, validated_key(INTERVAL), empty, SNAPSHOT_SCHEMA)
    metrics = run_stage(root, settings)
    assert read_table(store, indicators_key(INTERVAL)).num_rows == 0
    assert json.loads(store.get(alerts_key(INTERVAL)))["anomalies"] == []
    assert metrics["rows"] == 0 and metrics["charts"] == 0


def test_two_quote_currencies_are_separate_series(tmp_path: Path, settings: Settings) -> None:
    usd = calm_walks(["calm"], HOURS)
    eur = calm_walks(["calm"], HOURS, seed=99)
    eur["calm"][-1] = eur["calm"][-2] * 0.9  # -10% in EUR only
    first = INTERVAL.end - (HOURS - 1) * HOUR
    table = pa.concat_tables([series_table(usd, first), series_table(eur, first, vs="eur")])
    store = FileStore(tmp_path / "data")
    write_hours(store, table)  # each hourly partition holds both currencies
    run_stage(tmp_path / "data", settings)
    rows = read_table(store, indicators_key(INTERVAL)).to_pylist()
    assert [(r["coin_id"], r["vs_currency"]) for r in rows] == [("calm", "eur"), ("calm", "usd")]
    assert rows[0]["price"] != rows[1]["price"]
    alerts = json.loads(store.get(alerts_key(INTERVAL)))
    assert ("eur", "move_1h_pct") in {(a["vs_currency"], a["metric"]) for a in alerts["anomalies"]}
    assert all(a["vs_currency"] == "eur" for a in alerts["anomalies"])
    assert store.exists(report_prefix(INTERVAL) + "charts/calm.eur.png")

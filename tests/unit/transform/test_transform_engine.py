"""The vectorised engine (transform/engine.py) against the previous per-coin implementation, and range mode.

- Same numbers (1e-9 relative) and the same null/warm-up cells as the per-coin ta-lib/pandas path, on a fixed
  dataset with gaps, long outages, flat and micro-priced coins, at many snapshots whose windows start at
  different hours of the day (so the accumulator anchor lies 0..23 hours before the window).
- run_range over 48 hours writes byte-identical indicators and alerts to 48 per-interval runs (in one chunk, and
  in chunks of 7 hours that read the past days through their price projections).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from cryptopipe.core.config import Settings
from cryptopipe.core.errors import ConfigError, MissingInputError
from cryptopipe.core.layout import HOUR, Interval, alerts_key, indicators_key, report_prefix, validated_key
from cryptopipe.core.stage import execute_stage, run_record_key
from cryptopipe.core.storage import FileStore
from cryptopipe.transform import stage
from cryptopipe.transform.history import PROJECTION_FILE
from cryptopipe.transform.indicators import Params, build_grid, snapshot_rows_many
from cryptopipe.transform.stage import run, run_range
from tests.unit.transform.builders import series_table, write_days, write_hours
from tests.unit.transform.reference_impl import reference_snapshot_rows

END = datetime(2026, 3, 1, 14, tzinfo=UTC)


def dataset(hours: int, seed: int = 3) -> pa.Table:
    """20 coins: random walks (1%/h), one micro-priced (~1e-10), one flat, one with short and long gaps."""
    rng = np.random.default_rng(seed)
    coins = {f"c{i:02d}": 10.0 ** rng.uniform(-2, 4) * np.exp(np.cumsum(rng.normal(0, 0.01, hours))) for i in range(17)}
    coins["micro"] = 2e-10 * np.exp(np.cumsum(rng.normal(0, 0.02, hours)))
    coins["flat"] = np.full(hours, 1.0)
    gappy = 50 * np.exp(np.cumsum(rng.normal(0, 0.01, hours)))
    coins["gappy"] = gappy
    table = series_table(coins, END - (hours - 1) * HOUR)
    drop = np.zeros(table.num_rows, dtype=bool)
    coin_col = np.array(table.column("coin_id").to_pylist())
    hour_of_row = np.repeat(np.arange(hours), len(coins))
    for lo, hi in ((100, 103), (700, 712), (hours - 300, hours - 296), (hours - 30, hours - 28)):
        drop |= (coin_col == "gappy") & (hour_of_row >= lo) & (hour_of_row < hi)
    for i in rng.choice(hours, 40, replace=False):  # scattered single missing hours in other coins
        drop |= (coin_col == f"c{i % 17:02d}") & (hour_of_row == i)
    return table.filter(pa.array(~drop))


def assert_rows_close(new: list[dict[str, object]], old: list[dict[str, object]]) -> None:
    assert [r["coin_id"] for r in new] == [r["coin_id"] for r in old]
    for a, b in zip(new, old, strict=True):
        assert a.keys() == b.keys()
        for name, expected in b.items():
            actual = a[name]
            where = f"{b['coin_id']}.{name}"
            if isinstance(expected, float) and name != "price":
                assert actual is not None, f"{where}: null, expected {expected}"
                # MACD is a difference of two EMAs: near 0 (a flat coin) only a price-scaled bound makes sense
                scale = abs(float(b["price"])) * 1e-12 if name.startswith("macd") else 1e-300
                assert actual == pytest.approx(expected, rel=1e-9, abs=scale), where
            else:
                assert actual == expected, f"{where}: {actual!r} != {expected!r}"


@pytest.mark.parametrize("window", [2400, 400])
def test_engine_matches_per_coin_reference(window: int) -> None:
    hours = window + 60
    table = dataset(hours)
    params = Params(zscore_window=168 if window > 400 else 48)
    grid = build_grid(table, END, hours, window=window)
    ks = list(range(hours - 30, hours))  # windows starting at 30 different hours: anchors 0..23 h before
    many = snapshot_rows_many(grid, params, ks)
    compared = 0
    for k, rows in zip(ks, many, strict=True):
        reference = reference_snapshot_rows(grid.window_grid(k), params)
        assert_rows_close(rows, reference)
        compared += sum(v is not None for r in rows for v in r.values())
    assert compared > 30 * 15 * 25  # the comparison really covered warm values


def test_engine_value_does_not_depend_on_the_batch() -> None:
    """A snapshot's bytes are the same computed alone or with its neighbours (what range mode relies on)."""
    hours = 500
    grid = build_grid(dataset(hours), END, hours, window=400)
    params = Params(zscore_window=48)
    together = snapshot_rows_many(grid, params, list(range(hours - 40, hours)))
    for i, k in enumerate(range(hours - 40, hours, 7)):
        alone = snapshot_rows_many(grid, params, [k])[0]
        assert alone == together[k - (hours - 40)], f"snapshot row {k} (check {i})"


LOOKBACK = 10
RANGE = 48


@pytest.fixture
def range_store(tmp_path: Path) -> Path:
    """LOOKBACK days before the range + the 48 range hours; past days compacted, the rest as hourly partitions."""
    hours = LOOKBACK * 24 + RANGE + 30
    table = dataset(hours, seed=9)
    root = tmp_path / "data"
    store = FileStore(root)
    times = table.column("snapshot_time").cast(pa.int64()).to_numpy()
    cut = int((END - (RANGE + 40) * HOUR).timestamp() * 1000)  # older days as compactions, later as hours
    day_cut = cut - cut % 86_400_000 + 3_600_000
    write_days(store, table.filter(pa.array(times < day_cut)))
    write_hours(store, table.filter(pa.array(times >= day_cut)))
    return root


def snapshot_outputs(root: Path, intervals: list[Interval]) -> dict[str, bytes]:
    store = FileStore(root)
    out = {}
    for interval in intervals:
        for key in (indicators_key(interval), alerts_key(interval)):
            out[key] = store.get(key)
    return out


# chunk 7: chunks start at every hour of the day; files settled at once: compactions read via their projections
@pytest.mark.parametrize(("chunk", "settle_ns"), [(stage.RANGE_CHUNK, FileStore.VERSION_SETTLE_NS), (7, 0)])
def test_run_range_equals_per_interval_runs(
    range_store: Path,
    make_settings: Callable[..., Settings],
    monkeypatch: pytest.MonkeyPatch,
    chunk: int,
    settle_ns: int,
) -> None:
    monkeypatch.setattr(stage, "RANGE_CHUNK", chunk)
    monkeypatch.setattr(FileStore, "VERSION_SETTLE_NS", settle_ns)
    settings = make_settings(range_store, transform__lookback_days=LOOKBACK, transform__chart_top_n=2)
    log = logging.getLogger("test.transform.range")
    last_start = END - HOUR
    intervals = [Interval.starting(last_start - (RANGE - 1 - i) * HOUR) for i in range(RANGE)]
    pristine = range_store.parent / "pristine"
    shutil.copytree(range_store, pristine)

    for interval in intervals:
        execute_stage("transform", run, settings, interval, log)
    expected = snapshot_outputs(range_store, intervals)
    last_report = report_prefix(intervals[-1])
    store = FileStore(range_store)
    expected_report = {k: store.get(k) for k in store.list(last_report)}
    assert any(k.endswith(".png") for k in expected_report)

    shutil.rmtree(range_store)
    shutil.copytree(pristine, range_store)  # same path: report URIs in the alerts are the same
    results = run_range(settings, intervals, log)

    actual = snapshot_outputs(range_store, intervals)
    differing = [k for k in expected if expected[k] != actual[k]]
    assert not differing, f"{len(differing)} objects differ, first {differing[:3]}"
    assert {k: store.get(k) for k in store.list(last_report)} == expected_report  # charts of the last interval
    assert not store.list(report_prefix(intervals[0]) + "charts/")  # earlier intervals: index only
    assert [r.status for r in results] == ["success"] * RANGE
    assert sum(r.metrics["anomalies"] for r in results) > 0  # the alerts compared are not all empty
    for interval, result in zip(intervals, results, strict=True):
        assert store.exists(run_record_key(interval, "transform"))
        assert result.metrics["range_intervals"] == RANGE
        assert any(ref.key == validated_key(interval) for ref in result.inputs)
    assert results[0].metrics["rows_read"] > 0
    through_projections = any(ref.key.endswith(PROJECTION_FILE) for r in results for ref in r.inputs)
    assert through_projections == (settle_ns == 0)


def test_run_range_missing_partition_fails_that_interval_only(
    range_store: Path, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(range_store, transform__lookback_days=LOOKBACK, transform__chart_top_n=0)
    intervals = [Interval.starting(END - (4 - i) * HOUR) for i in range(4)]
    FileStore(range_store).delete(validated_key(intervals[1]))
    with pytest.raises(MissingInputError, match="hour=11"):
        run_range(settings, intervals, logging.getLogger("test"))
    store = FileStore(range_store)
    assert not store.exists(indicators_key(intervals[1]))
    assert all(store.exists(indicators_key(i)) for i in (intervals[0], intervals[2], intervals[3]))
    record = store.get(run_record_key(intervals[1], "transform")).decode()
    assert '"exit_code": 8' in record


def test_run_range_rejects_non_consecutive_intervals(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    with pytest.raises(ConfigError, match="consecutive"):
        run_range(settings, [Interval.starting(END - 3 * HOUR), Interval.starting(END - HOUR)], logging.getLogger("t"))
    with pytest.raises(ConfigError, match="no intervals"):
        run_range(settings, [], logging.getLogger("t"))

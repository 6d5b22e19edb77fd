"""Lookback loading: only the window is read, complete past days are compacted, cost is flat in history length."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from cryptopipe.core.config import Settings
from cryptopipe.core.errors import MissingInputError, StorageError
from cryptopipe.core.layout import HOUR, Interval, indicators_key, validated_daily_key, validated_key
from cryptopipe.core.schema import SNAPSHOT_KEY
from cryptopipe.core.storage import FileStore
from cryptopipe.core.tables import read_table, to_parquet_bytes
from cryptopipe.transform.history import HOURS_PER_DAY, PROJECTION_FILE, load_history, projection_key
from cryptopipe.transform.stage import run
from tests.unit.transform.builders import make_ctx, random_walks, series_table, write_days, write_hours

LOOKBACK = 10
TWO_WEEKS = 14
INTERVAL = Interval.starting(datetime(2026, 3, 1, 13, tzinfo=UTC))  # snapshot 14:00, 14 hours into its day
COINS = ["alpha", "beta", "gamma"]


def lay_down(root: Path, days_of_history: int, *, compacted: bool) -> None:
    """History ending with INTERVAL's partition: past days as compactions (or hours), today's hours as hours."""
    hours = days_of_history * HOURS_PER_DAY + INTERVAL.start.hour + 1
    first_snapshot = INTERVAL.end - (hours - 1) * HOUR
    # calm walks (0.1%/h): no anomalies, so no charts to draw; these tests are about reading
    table = series_table(random_walks(COINS, hours, vol=0.001), first_snapshot)
    store = FileStore(root)
    midnight = datetime(2026, 3, 1, 1, tzinfo=UTC)  # first snapshot of the interval's own day
    times = table.column("snapshot_time")
    past = table.filter(pc.less(times, pa.scalar(midnight, times.type)))
    today = table.filter(pc.greater_equal(times, pa.scalar(midnight, times.type)))
    (write_days if compacted else write_hours)(store, past)
    write_hours(store, today)


def run_once(root: Path, settings: Settings) -> dict[str, object]:
    ctx = make_ctx(root, settings, INTERVAL)
    run(ctx)
    return ctx.result.metrics


@pytest.fixture(scope="module")
def long_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two years of history (daily compactions), laid down once for the module: only read by the tests."""
    root = tmp_path_factory.mktemp("two_years")
    lay_down(root, 730, compacted=True)
    return root


@pytest.fixture
def settings(make_settings: Callable[..., Settings], tmp_path: Path) -> Settings:
    return make_settings(transform__lookback_days=LOOKBACK, transform__chart_top_n=0)


def test_flat_cost_two_years_vs_two_weeks(
    tmp_path: Path, make_settings: Callable[..., Settings], long_root: Path
) -> None:
    """Issue 3 acceptance: with a 2-week lookback, 2 years of history cost what 2 weeks cost (rows and objects)."""
    settings = make_settings(transform__lookback_days=TWO_WEEKS, transform__chart_top_n=0)
    short_root = tmp_path / "two_weeks"
    lay_down(short_root, TWO_WEEKS, compacted=True)
    assert len(FileStore(long_root).list("validated/")) > 700  # the long history really is there

    long_metrics = run_once(long_root, settings)
    short_metrics = run_once(short_root, settings)

    assert long_metrics["rows_read"] == short_metrics["rows_read"]
    assert long_metrics["objects_read"] == short_metrics["objects_read"]
    assert long_metrics["objects_read"] <= TWO_WEEKS + HOURS_PER_DAY
    # one object per past day in the window + the interval's day up to its hour
    assert long_metrics["objects_read"] == TWO_WEEKS + INTERVAL.start.hour + 1
    expected_rows = (TWO_WEEKS * HOURS_PER_DAY + INTERVAL.start.hour + 1) * len(COINS)
    assert long_metrics["rows_read"] == expected_rows
    assert read_table(FileStore(long_root), indicators_key(INTERVAL)).num_rows == len(COINS)


def test_indicators_identical_whatever_history_precedes_the_window(
    tmp_path: Path, settings: Settings, long_root: Path
) -> None:
    """Same window prices, 2 years vs lookback-only: byte-identical indicators (nothing outside was used)."""
    short_root = tmp_path / "short"
    lay_down(short_root, LOOKBACK, compacted=True)
    long_store, short_store = FileStore(long_root), FileStore(short_root)
    # copy the long store's window objects into the short store so the two windows hold the same prices
    for key in short_store.list("validated/"):
        short_store.put(key, long_store.get(key))
    long_metrics = run_once(long_root, settings)
    short_metrics = run_once(short_root, settings)
    assert long_metrics["rows_read"] == short_metrics["rows_read"]
    key = indicators_key(INTERVAL)
    assert long_store.get(key) == short_store.get(key)


def test_hours_are_compacted_once_then_read_as_one_object(tmp_path: Path, settings: Settings) -> None:
    root = tmp_path / "data"
    lay_down(root, LOOKBACK + 2, compacted=False)
    store = FileStore(root)
    day = INTERVAL.start.date() - timedelta(days=2)
    hours = [read_table(store, k) for k in store.list(f"validated/market_snapshots/date={day}/")]

    first = run_once(root, settings)
    assert first["compactions_written"] == LOOKBACK  # every full past day the window touches
    assert first["objects_read"] == LOOKBACK * HOURS_PER_DAY + INTERVAL.start.hour + 1
    before = store.get(indicators_key(INTERVAL))
    # a compaction is the day's 24 hourly tables concatenated and sorted by the snapshot key
    expected = pa.concat_tables(hours).sort_by([(k, "ascending") for k in SNAPSHOT_KEY])
    assert len(hours) == HOURS_PER_DAY
    assert read_table(store, validated_daily_key(day)).equals(expected)

    second = run_once(root, settings)
    assert second["compactions_written"] == 0
    assert second["objects_read"] == LOOKBACK + INTERVAL.start.hour + 1
    assert second["rows_read"] == first["rows_read"]
    assert store.get(indicators_key(INTERVAL)) == before


def test_incomplete_day_is_read_by_the_hour_and_not_compacted(tmp_path: Path, settings: Settings) -> None:
    root = tmp_path / "data"
    lay_down(root, LOOKBACK, compacted=False)
    store = FileStore(root)
    day = INTERVAL.start.date() - timedelta(days=3)
    store.delete(validated_key(Interval.starting(datetime(day.year, day.month, day.day, 5, tzinfo=UTC))))
    metrics = run_once(root, settings)
    assert not store.exists(validated_daily_key(day))
    assert store.exists(validated_daily_key(day + timedelta(days=1)))
    again = run_once(root, settings)
    assert again["objects_read"] == (LOOKBACK - 1) + (HOURS_PER_DAY - 1) + INTERVAL.start.hour + 1
    assert again["rows_read"] == metrics["rows_read"]


def test_window_excludes_older_rows_and_later_hours(tmp_path: Path, settings: Settings) -> None:
    root = tmp_path / "data"
    lay_down(root, LOOKBACK + 3, compacted=True)
    # an hour after the interval exists (a rerun of an old interval): it must not be read
    later = series_table({c: [1.0] for c in COINS}, INTERVAL.end + HOUR)
    write_hours(FileStore(root), later)
    history = load_history(make_ctx(root, settings, INTERVAL), LOOKBACK)
    times = history.table.column("snapshot_time").to_pylist()
    assert min(times) == INTERVAL.end - timedelta(days=LOOKBACK) + HOUR
    assert max(times) == INTERVAL.end
    assert history.table.num_rows == LOOKBACK * HOURS_PER_DAY * len(COINS)
    assert history.current.num_rows == len(COINS)


def test_missing_current_partition_is_missing_input(tmp_path: Path, settings: Settings) -> None:
    root = tmp_path / "data"
    lay_down(root, LOOKBACK, compacted=True)
    FileStore(root).delete(validated_key(INTERVAL))
    with pytest.raises(MissingInputError, match=r"validated/market_snapshots/date=2026-03-01/hour=13"):
        run_once(root, settings)


def test_unreadable_compaction_is_a_storage_error_naming_it(tmp_path: Path, settings: Settings) -> None:
    root = tmp_path / "data"
    lay_down(root, LOOKBACK, compacted=True)
    bad_day = INTERVAL.start.date() - timedelta(days=1)
    FileStore(root).put(validated_daily_key(bad_day), b"not parquet")
    with pytest.raises(StorageError, match=rf"market_snapshots_daily/date={bad_day}/snapshots.parquet"):
        run_once(root, settings)


# --- price projections (history.py): the compaction's 4 columns, used while the compaction is unchanged ---------


def _inputs(root: Path, settings: Settings) -> tuple[dict[str, object], list[str], bytes]:
    ctx = make_ctx(root, settings, INTERVAL)
    run(ctx)
    return ctx.result.metrics, [ref.key for ref in ctx.result.inputs], FileStore(root).get(indicators_key(INTERVAL))


@pytest.fixture
def settled(monkeypatch: pytest.MonkeyPatch) -> None:
    """Files count as settled at once (the store otherwise vouches for a version only 2 s after a write)."""
    monkeypatch.setattr(FileStore, "VERSION_SETTLE_NS", 0)


def test_compaction_is_read_once_then_through_its_projection(tmp_path: Path, settings: Settings, settled: None) -> None:
    root = tmp_path / "data"
    lay_down(root, LOOKBACK, compacted=True)
    first, first_inputs, first_bytes = _inputs(root, settings)
    assert first["projections_written"] == LOOKBACK
    assert sum(k.endswith("/snapshots.parquet") and "_daily/" in k for k in first_inputs) == LOOKBACK

    second, second_inputs, second_bytes = _inputs(root, settings)
    assert second["projections_written"] == 0
    assert not [k for k in second_inputs if "_daily/" in k and k.endswith("/snapshots.parquet")]
    assert [k for k in second_inputs if k.endswith(PROJECTION_FILE)] == [
        projection_key(INTERVAL.start.date() - timedelta(days=d)) for d in range(LOOKBACK, 0, -1)
    ]
    assert (second["rows_read"], second["objects_read"]) == (first["rows_read"], first["objects_read"])
    assert second_bytes == first_bytes  # same indicators through the projection


def test_rewritten_compaction_is_not_read_through_a_stale_projection(
    tmp_path: Path, settings: Settings, settled: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "data"
    lay_down(root, LOOKBACK, compacted=True)
    _inputs(root, settings)  # projections of every day
    store = FileStore(root)
    day = INTERVAL.start.date() - timedelta(days=1)
    table = read_table(store, validated_daily_key(day))
    bumped = table.set_column(table.column_names.index("price"), "price", pc.multiply(table.column("price"), 1.5))
    store.put(validated_daily_key(day), to_parquet_bytes(bumped))  # e.g. a backfill rewrote the day

    metrics, inputs, through_projections = _inputs(root, settings)
    assert validated_daily_key(day) in inputs and projection_key(day) not in inputs
    assert metrics["projections_written"] == 1
    monkeypatch.setattr(FileStore, "VERSION_SETTLE_NS", 10**18)  # no version: every compaction read directly
    _, inputs, direct = _inputs(root, settings)
    assert not [k for k in inputs if k.endswith(PROJECTION_FILE)]
    assert through_projections == direct


def test_unreadable_projection_is_rebuilt_not_an_error(tmp_path: Path, settings: Settings, settled: None) -> None:
    root = tmp_path / "data"
    lay_down(root, LOOKBACK, compacted=True)
    _, _, before = _inputs(root, settings)
    day = INTERVAL.start.date() - timedelta(days=2)
    FileStore(root).put(projection_key(day), b"not arrow")
    metrics, inputs, after = _inputs(root, settings)
    assert validated_daily_key(day) in inputs and metrics["projections_written"] == 1
    assert after == before


def test_fresh_compaction_gets_no_projection(tmp_path: Path, settings: Settings) -> None:
    """A file written within the last 2 s has no version the store vouches for: read it, cache nothing."""
    root = tmp_path / "data"
    lay_down(root, LOOKBACK, compacted=True)
    metrics, inputs, _ = _inputs(root, settings)
    assert metrics["projections_written"] == 0
    assert not FileStore(root).list("validated/market_snapshots_daily/")[0].endswith(PROJECTION_FILE)
    assert not [k for k in inputs if k.endswith(PROJECTION_FILE)]

"""``cryptopipe run --batch --daily``: the daily layout's runner rules (whole days, refusals on a day it wrote)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from cryptopipe.cli import main
from cryptopipe.core.layout import report_daily_prefix, staging_key
from cryptopipe.core.stage import day_run_record_key, sealed_day
from cryptopipe.core.storage import FileStore
from cryptopipe.core.tables import write_table
from tests.unit.batch.helpers import data_objects, edit, intervals, staging

DAY = intervals(48)
RANGE = ["--start", DAY[0].start.isoformat(), "--end", DAY[-1].end.isoformat()]
STAGES = ["--stages", "validate,transform,archive"]


def _said(capsys: pytest.CaptureFixture[str]) -> str:
    captured = capsys.readouterr()  # errors are logged (JSON lines on stdout); the summary goes to stderr
    return captured.out + captured.err


def _seal(root: Path, status: str = "success") -> None:
    """The record validate's daily layout leaves for the first day (what makes the day sealed)."""
    FileStore(root).put(day_run_record_key(DAY[0].start.date(), "validate"), json.dumps({"status": status}).encode())


def test_daily_needs_batch(
    tmp_path: Path, settings_for: Callable[..., object], capsys: pytest.CaptureFixture[str]
) -> None:
    settings_for(tmp_path / "lake")
    assert main(["run", *RANGE, *STAGES, "--daily"]) == 2
    assert "--daily is a layout of range mode: it needs --batch" in _said(capsys)


def test_daily_needs_whole_days(
    tmp_path: Path, settings_for: Callable[..., object], capsys: pytest.CaptureFixture[str]
) -> None:
    settings_for(tmp_path / "lake")
    partial = ["--start", DAY[1].start.isoformat(), "--end", DAY[-1].end.isoformat()]
    assert main(["run", *partial, *STAGES, "--batch", "--daily"]) == 2
    err = _said(capsys)
    assert "does not cover whole UTC days" in err and "--start and --end at 00:00" in err
    assert not (tmp_path / "lake" / "runs").exists()  # refused before any stage ran


def test_hourly_runs_are_refused_on_a_day_written_in_the_daily_layout(
    tmp_path: Path, settings_for: Callable[..., object], capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "lake"
    settings_for(root, transform__chart_top_n="0")
    store = FileStore(root)
    for interval in DAY:
        write_table(store, staging_key(interval), staging(interval))
    _seal(root)
    assert sealed_day(store, DAY[0].start.date())
    hour = DAY[5]
    for stage in ("validate", "transform", "archive"):
        args = [stage, "--interval-start", hour.start.isoformat(), "--interval-end", hour.end.isoformat()]
        assert main(args) == 2, stage
        err = _said(capsys)
        assert f"day {hour.start.date()} was written in the daily layout" in err, stage
        assert "--batch --daily" in err and f"--start {hour.start.date()}T00:00:00Z" in err, stage
    assert not store.exists(f"validated/market_snapshots/{hour.partition}/snapshots.parquet")

    # hourly range mode over both days: refused before anything runs, the second day untouched
    assert main(["run", *RANGE, *STAGES, "--batch"]) == 2
    assert "was written in the daily layout" in _said(capsys)
    assert store.list("validated/") == []

    # a day whose daily validate failed is not sealed: hourly runs may repair it
    _seal(root, status="failed")
    assert not sealed_day(store, DAY[0].start.date())
    assert main(["run", *RANGE, "--stages", "validate", "--batch"]) == 0
    assert len(store.list("validated/market_snapshots/")) == 48


def test_daily_run_pipelined_over_workers_equals_one_process_and_stops_only_the_failed_day(
    tmp_path: Path,
    settings_for: Callable[..., object],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Three days, the middle one failing validate's gate: one process vs two pipelined processes (blocks of one
    day, so transform and archive of a block run while the next block is validated) leave the same data objects
    and the same warehouse rows; the failed day is in no later stage, the days around it go through."""
    import sqlite3

    from cryptopipe import runner

    monkeypatch.setattr(runner, "BLOCK_DAYS", 1)
    hours = intervals(72)
    bad = hours[30]
    span = ["--start", hours[0].start.isoformat(), "--end", hours[-1].end.isoformat()]
    roots = {1: tmp_path / "one", 2: tmp_path / "two"}
    for workers, root in roots.items():
        store = FileStore(root)
        for interval in hours:
            table = staging(interval)
            write_table(store, staging_key(interval), edit(table, 3, price=-1.0) if interval == bad else table)
        settings_for(root, transform__chart_top_n="2")
        assert main(["run", *span, *STAGES, "--batch", "--daily", "--workers", str(workers)]) == 3
        out = _said(capsys)
        assert "validate  days=3" in out and "transform days=2" in out and "archive   days=2" in out, out
        assert f"FAILED day {bad.start.date()} at validate (exit 3)" in out
    # price projections are a read cache that transform writes only from a compaction older than the store's
    # timestamp resolution (core/storage.py:FileStore.version), so whether one exists depends on timing
    one, two = (
        {k: v for k, v in data_objects(root, docs=False).items() if not k.endswith("/prices.arrow")}
        for root in roots.values()
    )
    assert set(one) == set(two)
    for key, data in one.items():
        if not key.startswith(("alerts/", "quality/")):  # these name their own root in URLs
            assert two[key] == data, key
    bad_day = bad.start.date()
    assert not [k for k in one if f"date={bad_day}" in k and not k.startswith(("staging/", "quality/", "quarantine/"))]
    # charts only for the run's last day, however the run was split into blocks (here one per day)
    charts = [k for k in one if k.endswith(".png")]
    assert len(charts) == 2 and all(report_daily_prefix(hours[-1].start.date()) in k for k in charts), charts
    tables = ("market_snapshots", "indicators", "anomalies")
    rows = {}
    for workers, root in roots.items():
        with sqlite3.connect(root.parent / f"{root.name}.db") as db:
            rows[workers] = {t: sorted(db.execute(f"SELECT * FROM {t}").fetchall()) for t in tables}
    assert rows[1] == rows[2]
    assert len(rows[1]["market_snapshots"]) == 48 * 20  # two days of 20 coins


def test_daily_run_over_backfilled_history_without_staging(
    tmp_path: Path, settings_for: Callable[..., object], capsys: pytest.CaptureFixture[str]
) -> None:
    """README's history path: `cryptopipe backfill` writes validated hours straight (no staging); the daily run
    then validates nothing (skipped days), transforms and archives them."""
    import sqlite3

    root = tmp_path / "lake"
    settings_for(root, transform__chart_top_n="0")
    store = FileStore(root)
    for interval in DAY:
        write_table(store, staging_key(interval), staging(interval))
    assert main(["run", *RANGE, "--stages", "validate", "--batch"]) == 0  # validated hours, as backfill leaves them
    for interval in DAY:
        store.delete(staging_key(interval))
    assert main(["run", *RANGE, *STAGES, "--batch", "--daily"]) == 0, _said(capsys)
    out = _said(capsys)
    assert "validate  days=2      ok=0      skipped=2" in out and "archive   days=2      ok=2" in out, out
    with sqlite3.connect(tmp_path / "lake.db") as db:
        assert db.execute("SELECT count(*) FROM indicators").fetchone() == (48 * 20,)


@pytest.mark.parametrize(
    ("days", "sizes"),
    [
        (0, []),
        (5, [5]),
        (14, [7, 7]),
        (28, [14, 7, 7]),
        (29, [1, 14, 7, 7]),
        (70, [28, 14, 14, 7, 7]),
        (364, [28] * 12 + [14, 7, 7]),
    ],
)
def test_day_blocks_taper_the_last_block(days: int, sizes: list[int]) -> None:
    """Full blocks, then the last 28 days in halves: the stretch where a core would idle at the end is short."""
    from datetime import timedelta

    from cryptopipe.runner import day_blocks

    run = [DAY[0].start.date() + timedelta(days=n) for n in range(days)]
    blocks = day_blocks(run, 28)
    assert [len(b) for b in blocks] == sizes
    assert [day for block in blocks for day in block] == run

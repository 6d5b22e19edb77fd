"""``cryptopipe run --batch --daily``: the daily layout's runner rules (whole days, refusals on a day it wrote)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from cryptopipe.cli import main
from cryptopipe.core.layout import staging_key
from cryptopipe.core.stage import day_run_record_key, sealed_day
from cryptopipe.core.storage import FileStore
from cryptopipe.core.tables import write_table
from tests.unit.batch.helpers import intervals, staging

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

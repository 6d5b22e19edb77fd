"""``cryptopipe run --batch``: same data as per-interval ``run``; a critical failure stops only its interval."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from cryptopipe.cli import main
from cryptopipe.core.layout import staging_key
from cryptopipe.core.storage import FileStore
from cryptopipe.core.tables import write_table
from tests.unit.batch.helpers import data_objects, edit, intervals, report_without_docs, staging

HOURS = intervals(4)
BAD = HOURS[2]
ARGS = ["run", "--start", HOURS[0].start.isoformat(), "--end", HOURS[-1].end.isoformat()]
ARGS += ["--stages", "validate,transform,archive"]


def seed(root: Path) -> None:
    store = FileStore(root)
    for interval in HOURS:
        table = staging(interval)
        if interval == BAD:
            table = edit(table, 3, price=-1.0)  # critical: price_positive_finite
        write_table(store, staging_key(interval), table)


def test_batch_run_equals_per_interval_run_and_isolates_the_failed_interval(
    tmp_path: Path, settings_for: Callable[..., object], capsys: pytest.CaptureFixture[str]
) -> None:
    roots = {"per": tmp_path / "per", "batch": tmp_path / "batch"}
    for mode, root in roots.items():
        seed(root)
        settings_for(root, transform__chart_top_n="0")
        assert main(ARGS + (["--batch"] if mode == "batch" else [])) == 3  # the failed interval's exit code
    summary = capsys.readouterr().err
    assert "validate  intervals=4" in summary and "failed=1" in summary
    assert f"FAILED {BAD} at validate (exit 3)" in summary

    # alerts name their report by URL, which contains the root: compare with the root factored out
    per, batch = (
        {k: v.replace(str(root).encode(), b"ROOT") for k, v in data_objects(root, docs=False).items()}
        for root in roots.values()
    )
    assert set(per) == set(batch)
    for key, data in per.items():
        if key.startswith("quality/") and key.endswith("report.json"):
            assert json.loads(batch[key]) == report_without_docs(data), key
        else:
            assert batch[key] == data, key
    store = FileStore(roots["batch"])
    for interval in HOURS:
        stages = {k.rsplit("/", 1)[1] for k in store.list(f"runs/{interval.partition}/")}
        expected = {"validate.json"} if interval == BAD else {"validate.json", "transform.json", "archive.json"}
        assert stages == expected, interval


DAYS = intervals(48)
DAY_ARGS = ["run", "--start", DAYS[0].start.isoformat(), "--end", DAYS[-1].end.isoformat(), "--batch"]
DAY_ARGS += ["--stages", "validate,transform,archive"]


def test_workers_split_the_range_and_write_the_same_objects(
    tmp_path: Path, settings_for: Callable[..., object], capsys: pytest.CaptureFixture[str]
) -> None:
    bad = DAYS[30]  # in the second worker's day: its failure must come back from the worker process
    roots = {1: tmp_path / "one", 2: tmp_path / "two"}
    for workers, root in roots.items():
        store = FileStore(root)
        for interval in DAYS:
            table = staging(interval)
            write_table(store, staging_key(interval), edit(table, 1, price=-1.0) if interval == bad else table)
        settings_for(root, transform__chart_top_n="0")
        assert main([*DAY_ARGS, "--workers", str(workers)]) == 3
        summary = capsys.readouterr().err
        assert "validate  intervals=48" in summary and "failed=1" in summary, summary
        assert f"FAILED {bad} at validate (exit 3)" in summary
    one, two = (
        {k: v.replace(str(root).encode(), b"ROOT") for k, v in data_objects(root, docs=False).items()}
        for root in roots.values()
    )
    assert set(one) == set(two)
    assert any(k.startswith("analytics/indicators/date=2026-11-23/") for k in two)  # the second part transformed
    for key, data in one.items():
        assert two[key] == data, key


def test_split_parts_keeps_whole_days_and_needs_a_range_for_workers() -> None:
    from cryptopipe.runner import split_parts

    parts = split_parts(intervals(24 * 5), 2)
    assert [len(p) for p in parts] == [72, 48]
    assert [iv for p in parts for iv in p] == intervals(24 * 5)
    assert split_parts(intervals(20), 4) == [intervals(20)]  # under two 24-hour blocks: one part
    assert [len(p) for p in split_parts(intervals(24 * 3), 8)] == [24, 24, 24]
    assert main(["run", "--last", "2", "--workers", "2"]) == 2  # --workers without --batch: a config error

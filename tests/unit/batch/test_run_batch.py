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

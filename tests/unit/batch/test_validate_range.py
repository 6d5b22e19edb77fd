"""validate.run_range writes, per interval, exactly what the per-interval stage writes (docs/batch.md)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from cryptopipe.core.errors import PipelineError
from cryptopipe.core.layout import Interval, staging_key, validated_key
from cryptopipe.core.stage import execute_stage, run_record_key
from cryptopipe.core.storage import FileStore
from cryptopipe.core.tables import write_table
from cryptopipe.validate import stage as validate_stage
from tests.unit.batch.helpers import data_objects, edit, intervals, report_without_docs, staging

HOURS = intervals(10)
SKIPPED, MISSING, FALLBACK = HOURS[6], HOURS[7], HOURS[5]


def scenario(interval: Interval) -> pa.Table | None:
    """Each hour exercises another rule; None: no staging partition."""
    h = HOURS.index(interval)
    table = staging(interval)
    if h == 1:  # warnings: quarantined rows with reasons; a missing market cap and low_24h skip their checks
        table = edit(table, 2, price_change_pct_24h=200.0)
        table = edit(table, 3, market_cap=None)
        table = edit(table, 4, low_24h=None, price=table["price"][4].as_py() * 0.5)
    elif h == 2:  # critical: duplicate key
        table = edit(table, 6, coin_id=table["coin_id"][7].as_py())
    elif h == 3:  # warnings on freshness: stale and absent last_updated
        table = edit(table, 0, last_updated=datetime(2020, 1, 1, tzinfo=UTC))
        table = edit(table, 1, last_updated=None)
    elif h == 4:  # critical: too few rows for the coins asked for
        table = table.slice(0, 10)
    elif h == 5:  # an extra column: not the exact schema, so this hour runs through the per-interval code
        table = table.append_column("unexpected_extra", pa.array(["x"] * table.num_rows))
    elif h in (6, 7):
        return None
    elif h == 8:  # critical: a row of another interval
        table = edit(table, 0, snapshot_time=HOURS[7].end)
    elif h == 9:  # critical: price missing
        table = edit(table, 5, price=None)
    return table


def seed(root: Path) -> None:
    store = FileStore(root)
    for interval in HOURS:
        table = scenario(interval)
        if table is not None:
            write_table(store, staging_key(interval), table)
    write_table(store, validated_key(SKIPPED), staging(SKIPPED))  # backfilled history: validated only


def test_range_outputs_equal_per_interval_outputs(
    tmp_path: Path, settings_for: Callable[..., object], quiet_log: logging.Logger
) -> None:
    per, batch = tmp_path / "per", tmp_path / "batch"
    seed(per)
    seed(batch)
    settings = settings_for(per)
    expected = {}
    for interval in HOURS:
        if interval == SKIPPED:
            continue
        try:
            execute_stage("validate", validate_stage.run, settings, interval, quiet_log)
            expected[interval] = 0
        except PipelineError as exc:
            expected[interval] = int(exc.exit_code)
    assert expected == {HOURS[i]: code for i, code in enumerate([0, 0, 3, 0, 3, 0, 0, 8, 3, 3]) if i != 6}

    results = validate_stage.run_range(settings_for(batch), HOURS, quiet_log)
    assert [r.interval_start for r in results] == [iv.start.isoformat() for iv in HOURS]
    got = {HOURS[i]: r.exit_code for i, r in enumerate(results) if HOURS[i] != SKIPPED}
    assert got == expected
    skipped = results[HOURS.index(SKIPPED)]
    assert (skipped.status, skipped.exit_code) == ("skipped", 0)

    per_objects, batch_objects = data_objects(per), data_objects(batch)
    # Data Docs: built only where the per-interval code ran (the fallback hour), byte-identical there.
    docs = {k for k in per_objects if "/data_docs/" in k}
    assert docs and {k for k in batch_objects if "/data_docs/" in k} == {k for k in docs if FALLBACK.partition in k}
    assert set(data_objects(batch, docs=False)) == set(data_objects(per, docs=False))
    reports = 0
    for key, data in data_objects(per).items():
        if key not in batch_objects:
            continue
        if key.endswith("/report.json") and FALLBACK.partition not in key:
            # the one documented difference: no Data Docs, so the report names none
            assert json.loads(batch_objects[key])["objects"]["data_docs"] is None, key
            assert json.loads(batch_objects[key]) == report_without_docs(data), key
            reports += 1
        else:
            assert batch_objects[key] == data, key
    assert reports == 7  # every interval that had staging (8), except the fallback hour

    # The range really ran as one GX run (not the per-interval fallback) for the exact-schema hours.
    store = FileStore(batch)
    for interval in HOURS[:5]:
        record = json.loads(store.get(run_record_key(interval, "validate")))
        assert record["metrics"].get("batch_intervals") == 7, interval
    fallback = json.loads(store.get(run_record_key(FALLBACK, "validate")))
    assert "batch_intervals" not in fallback["metrics"] and "data_docs_uri" in fallback["metrics"]


def test_range_critical_failure_removes_stale_outputs_of_that_interval_only(
    tmp_path: Path, settings_for: Callable[..., object], quiet_log: logging.Logger
) -> None:
    hours = HOURS[:3]
    store = FileStore(tmp_path / "data")
    for interval in hours:
        write_table(store, staging_key(interval), staging(interval))
    settings = settings_for(tmp_path / "data")
    assert [r.exit_code for r in validate_stage.run_range(settings, hours, quiet_log)] == [0, 0, 0]
    # the middle hour is re-ingested with a duplicate key: its old validated object must go, the others stay
    write_table(store, staging_key(hours[1]), edit(staging(hours[1]), 0, coin_id="coin-01"))
    results = validate_stage.run_range(settings, hours, quiet_log)
    assert [(r.status, r.exit_code) for r in results] == [("success", 0), ("failed", 3), ("success", 0)]
    assert "key_unique" in results[1].message
    assert [store.exists(validated_key(iv)) for iv in hours] == [True, False, True]


@pytest.mark.parametrize("chunk_hours", [1, 3])
def test_chunking_does_not_change_outputs(
    tmp_path: Path, settings_for: Callable[..., object], quiet_log: logging.Logger, chunk_hours: int
) -> None:
    from cryptopipe.validate.batch import run_range

    hours = HOURS[:4]
    roots = []
    for chunk in (chunk_hours, 24):
        root = tmp_path / f"c{chunk}-{len(roots)}"
        store = FileStore(root)
        for interval in hours:
            table = scenario(interval)
            assert table is not None
            write_table(store, staging_key(interval), table)
        run_range(settings_for(root), hours, quiet_log, chunk_hours=chunk)
        roots.append(root)
    assert data_objects(roots[0]) == data_objects(roots[1])

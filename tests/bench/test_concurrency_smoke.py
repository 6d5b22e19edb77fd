"""The concurrency benchmark at smoke size: 2 backfill intervals through real Airflow components.

Starts PostgreSQL, ``airflow db migrate``, api-server, scheduler (LocalExecutor), triggerer and dag-processor as
subprocesses (tests/support/airflow_cluster.py), the Kubernetes API double in this process, and backfills two
intervals of the real DAG whose pods run the fake stage. Asserts that the result and the timeline are well formed
and consistent; not timings (the machine is shared).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.run import main
from tests.conftest import require
from tests.support.postgres import find_pg_bin

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    require(find_pg_bin() is not None, "PostgreSQL server binaries not found (apt-get install -y postgresql-15)")
    root = tmp_path_factory.mktemp("bench-concurrency")
    out = root / "results"
    code = main(["concurrency", "--smoke", "--out", str(out), "--cache", str(root / "cache")])
    assert code == 0, (out / "concurrency.json").read_text() if (out / "concurrency.json").exists() else code
    yield {"result": out / "concurrency.json", "timeline": out / "timelines" / "concurrency.json"}
    shutil.rmtree(root, ignore_errors=True)


def test_result_is_measured_and_well_formed(smoke: dict[str, Path]) -> None:
    data = json.loads(smoke["result"].read_text())
    assert data["benchmark"] == "concurrency"
    assert data["status"] == "measured", data["reason"]
    assert data["config"]["smoke"] is True
    names = [t["name"] for t in data["targets"]]
    assert names[0].startswith("intervals per minute (2 intervals")
    for target in data["targets"]:
        assert isinstance(target["measured"], int | float), target
        assert isinstance(target["met"], bool), target
    [summary] = data["tables"]["summary"]
    assert summary["runs_succeeded"] + summary["runs_failed"] == 2
    assert summary["samples"] > 0 and summary["task_processes"] > 0


def test_timeline_is_consistent(smoke: dict[str, Path]) -> None:
    timeline = json.loads(smoke["timeline"].read_text())
    assert timeline["plan"]["intervals"] == 2
    runs = timeline["runs"]
    assert len(runs) == 2
    assert sorted(r["interval_start"] for r in runs) == ["2026-11-21T00:00:00+00:00", "2026-11-21T01:00:00+00:00"]
    for run in runs:
        assert run["state"] in {"success", "failed"}
        assert set(run["tasks"]) == {"ingest", "validate", "transform", "archive", "notify_anomalies"}
    samples = timeline["samples"]
    assert [s["t"] for s in samples] == sorted(s["t"] for s in samples)
    for sample in samples:
        assert sample["slots_used"] == sample["ti_states"].get("running", 0)
        assert sample["pods_running"] == sum(sample["pods_running_by_stage"].values())
        assert sample["pods_running"] == sum(sample["running_pod_ti_states"].values())
    # The sampler saw the double: pods of the backfill were running while it polled.
    assert max(s["pods_running"] for s in samples) >= 1

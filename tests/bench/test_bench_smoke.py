"""The benchmark harness at tiny sizes: it runs and writes well-formed results (no timing assertions).

Benchmarks are not tests; this keeps them from rotting when the stages or the DAG change. The DAG benchmark
(e2e latency through the Kubernetes API double) is covered by tests/e2e; here only the in-process ones run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.run import main

# concurrency starts a real Airflow cluster: its own smoke test (test_concurrency_smoke.py) covers it.
SMOKE = ["transform_cost", "backfill", "storage", "dag_parse"]


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bench-smoke")
    code = main([*SMOKE, "--smoke", "--coins", "12", "--out", str(root / "results"), "--cache", str(root / "cache")])
    assert code == 0, (root / "results").glob("*.json")
    return root


def test_every_benchmark_wrote_a_well_formed_result(smoke_results: Path) -> None:
    for name in SMOKE:
        data = json.loads((smoke_results / "results" / f"{name}.json").read_text())
        assert data["benchmark"] == name
        assert data["status"] in {"measured", "not_measured"}, data["reason"]
        assert data["machine"]["cores"] >= 1 and data["machine"]["python"]
        assert data["config"]["seed"] == 7 and data["config"]["smoke"] is True
        assert data["targets"], f"{name} states no target"
        for target in data["targets"]:
            assert {"name", "target", "measured", "unit", "met"} <= set(target)
            if data["status"] == "measured":
                assert isinstance(target["measured"], int | float), target
                assert isinstance(target["met"], bool), target
            else:
                assert target["met"] is None and data["reason"]


def test_measured_numbers_are_plausible(smoke_results: Path) -> None:
    transform = json.loads((smoke_results / "results" / "transform_cost.json").read_text())
    [table] = transform["tables"].values()
    assert [row["history"] for row in table] == ["2 days", "10 days"]
    for row in table:
        # The transform reads a bounded window; the baseline reads every row of its CSV.
        assert 0 < row["ours_rows_read"] <= row["history_rows"]
        assert row["baseline_rows_read"] == row["history_rows"]
        assert row["ours_median_s"] > 0 and row["baseline_median_s"] > 0
    storage = json.loads((smoke_results / "results" / "storage.json").read_text())
    total = next(row for row in next(iter(storage["tables"].values())) if row["dataset"] == "total")
    assert total["parquet_bytes"] > 0 and total["csv_bytes"] > 0
    parse = json.loads((smoke_results / "results" / "dag_parse.json").read_text())
    assert parse["data"]["dags"] == ["crypto_market_pipeline"]


def test_results_table_lists_every_target(smoke_results: Path) -> None:
    markdown = (smoke_results / "RESULTS.md").read_text()
    assert markdown.startswith("# Benchmark results")
    for name in SMOKE:
        assert f"## {name}:" in markdown
    assert "| benchmark | target | goal | measured (median) | baseline | verdict | note |" in markdown


def test_generator_is_seeded(tmp_path: Path) -> None:
    from bench.datagen import Spec, write_validated

    first = write_validated(Spec(coins=5, days=1), tmp_path / "a")
    second = write_validated(Spec(coins=5, days=1), tmp_path / "b")
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.parquet"))
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.parquet"))
    assert files_a == files_b and first.rows == second.rows > 0
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files_a)

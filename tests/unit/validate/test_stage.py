"""The validate stage end to end through the CLI: exit codes, outputs, quarantine, reruns."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cryptopipe.cli import main
from cryptopipe.core.layout import (
    data_docs_prefix,
    quality_report_key,
    quarantine_key,
    validated_daily_key,
    validated_key,
)
from cryptopipe.core.schema import QUARANTINE_SCHEMA, SNAPSHOT_SCHEMA
from cryptopipe.core.storage import FileStore
from cryptopipe.validate.suite import SUITE_NAME, SUITE_VERSION
from tests.unit.validate.conftest import pipeline_env
from tests.unit.validate.helpers import (
    INTERVAL,
    cli_args,
    expectation,
    filler_rows,
    report,
    snapshot_row,
    write_staging,
)

END = INTERVAL.end


def _ids(rows: list[dict[str, Any]]) -> list[str]:
    return sorted({r["coin_id"] for r in rows})


def _read(root: Path, key: str) -> pa.Table:
    return pq.read_table(root / key)


def _run_record(root: Path) -> dict[str, Any]:
    return json.loads((root / "runs" / INTERVAL.partition / "validate.json").read_text())


def _tree(root: Path) -> dict[str, str]:
    """sha256 of every object except run records (those carry wall-clock times by design)."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.relative_to(root).as_posix().startswith("runs/")
    }


# --- a passing interval with warning rows: run once, inspected by several tests ---

PRICE_MAX = 100_000.0


def _warning_rows() -> tuple[list[dict[str, Any]], dict[str, set[str]]]:
    """25 healthy rows, 5 rows that break warning checks, 2 rows that look odd but are fine."""
    rows = filler_rows(25)
    bad = [
        snapshot_row("too-expensive", 2e5, market_cap=2e11, circulating_supply=1e6, total_volume=1.0),
        snapshot_row("stale", 3.0, last_updated=END - timedelta(hours=3)),
        # Two reasons at once: a 150 % day and a price above the day's high.
        snapshot_row("wild", 10.0, price_change_pct_24h=150.0, high_24h=5.0, low_24h=4.0),
        snapshot_row("mcap-off", 2.0, market_cap=4e6, circulating_supply=1e6, market_cap_rank=900),
        snapshot_row("neg-volume", 1.5, total_volume=-10.0),
        snapshot_row("yen", 1.0, vs_currency="jpy"),
    ]
    fine = [
        snapshot_row("late-run", 4.0, last_updated=END + timedelta(minutes=20)),  # newer than the end: fine
        snapshot_row("no-mcap", 5.0, market_cap=None, total_volume=0.0, high_24h=None),  # real-data gaps
    ]
    expected = {
        "too-expensive": {"price_max"},
        "stale": {"last_updated_fresh"},
        "wild": {"change_24h_bounded", "price_below_high_24h"},
        "mcap-off": {"market_cap_consistent"},
        "neg-volume": {"total_volume_non_negative"},
        "yen": {"vs_currency_configured"},
    }
    return rows + bad + fine, expected


@pytest.fixture(scope="module")
def warned(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("warned")
    rows, expected = _warning_rows()
    ids = [r["coin_id"] for r in rows if r["vs_currency"] == "usd"]
    with pipeline_env(root, ids, quality__price_max=PRICE_MAX):
        write_staging(root, rows)
        store = FileStore(root)
        store.put(validated_daily_key(INTERVAL.start.date()), b"stale compaction")
        store.put(data_docs_prefix(INTERVAL) + "old-page.html", b"<html>older layout</html>")
        code = main(cli_args())
        first = _tree(root)
        yield {"root": root, "rows": rows, "expected": expected, "code": code, "first": first, "ids": ids}


def test_warnings_pass_the_rest_and_quarantine_only_offending_rows(warned: dict[str, Any]) -> None:
    root = warned["root"]
    assert warned["code"] == 0
    quarantine = _read(root, quarantine_key(INTERVAL))
    assert quarantine.schema.equals(QUARANTINE_SCHEMA, check_metadata=False)
    got = {r["coin_id"]: set(r["reasons"].split(",")) for r in quarantine.to_pylist()}
    assert got == warned["expected"]

    validated = _read(root, validated_key(INTERVAL))
    assert validated.schema.equals(SNAPSHOT_SCHEMA, check_metadata=False)
    all_ids = {r["coin_id"] for r in warned["rows"]}
    assert set(validated["coin_id"].to_pylist()) == all_ids - set(warned["expected"])
    assert validated["coin_id"].to_pylist() == sorted(validated["coin_id"].to_pylist())  # sorted by key


def test_report_summary_metrics_and_daily_compaction(warned: dict[str, Any]) -> None:
    root = warned["root"]
    rep = report(root)
    summary = rep["summary"]
    assert summary["gate"] == "passed_with_warnings"
    assert (summary["rows_in"], summary["rows_validated"], summary["rows_quarantined"]) == (33, 27, 6)
    assert summary["critical_failures"] == 0
    assert set(summary["failed_warning"]) == set().union(*warned["expected"].values())
    assert rep["suite"] == {"name": SUITE_NAME, "version": SUITE_VERSION}
    assert 0.9 < rep["quality_score"]["value"] < 1.0

    wild = expectation(rep, "change_24h_bounded")
    assert (wild["severity"], wild["success"], wild["unexpected_count"]) == ("warning", False, 1)
    assert wild["example_coin_ids"] == ["wild"]
    assert wild["threshold_key"] == "quality.max_abs_change_24h_pct"

    record = _run_record(root)
    assert record["status"] == "success"
    metrics = record["metrics"]
    assert metrics["rows_in"] == 33 and metrics["rows_validated"] == 27 and metrics["rows_quarantined"] == 6
    assert metrics["critical_failures"] == 0 and metrics["warnings"] == len(summary["failed_warning"])
    assert metrics["quality_score"] == rep["quality_score"]["value"]
    assert metrics["quality_report_uri"] == FileStore(root).url(quality_report_key(INTERVAL))
    assert metrics["data_docs_uri"].endswith(data_docs_prefix(INTERVAL) + "index.html")
    # The day's compaction was stale the moment this hour was (re)validated.
    assert not (root / validated_daily_key(INTERVAL.start.date())).exists()


def test_gx_unexpected_counts_match_an_independent_count(warned: dict[str, Any]) -> None:
    """Counted here with plain Python over the staging rows; GX's counts in the report must agree."""
    rows, rep = warned["rows"], report(warned["root"])
    tol = 0.02
    independent = {
        "price_max": sum(r["price"] > PRICE_MAX for r in rows),
        "last_updated_fresh": sum(r["last_updated"] < END - timedelta(minutes=120) for r in rows),
        "change_24h_bounded": sum(abs(r.get("price_change_pct_24h") or 0) > 90 for r in rows),
        "price_below_high_24h": sum(
            bool(r.get("high_24h") and r.get("low_24h") and r["price"] > r["high_24h"] * (1 + tol)) for r in rows
        ),
        "market_cap_consistent": sum(
            bool(r.get("market_cap") and r.get("circulating_supply"))
            and abs(r["market_cap"] / (r["price"] * r["circulating_supply"]) - 1) > 0.10
            for r in rows
        ),
        "total_volume_non_negative": sum((r.get("total_volume") or 0) < 0 for r in rows),
        "market_cap_non_negative": sum((r.get("market_cap") or 0) < 0 for r in rows),
        "vs_currency_configured": sum(r["vs_currency"] != "usd" for r in rows),
        "key_unique": 0,
    }
    for name, count in independent.items():
        entry = expectation(rep, name)
        assert entry["unexpected_count"] == count, name
        assert entry["success"] is (count == 0), name
        assert entry["element_count"] == len(rows), name


def test_rerun_is_byte_identical_and_replaces_stale_docs(warned: dict[str, Any]) -> None:
    root = warned["root"]
    assert not (root / data_docs_prefix(INTERVAL) / "old-page.html").exists()
    docs = [k for k in warned["first"] if k.startswith(data_docs_prefix(INTERVAL))]
    assert data_docs_prefix(INTERVAL) + "index.html" in docs
    assert any("/validations/" in k for k in docs) and any("/expectations/" in k for k in docs)
    assert sum((root / k).stat().st_size for k in docs) < 1_000_000  # pages, not GX's 4 MB of assets

    with pipeline_env(root, warned["ids"], quality__price_max=PRICE_MAX):
        assert main(cli_args()) == 0
    assert _tree(root) == warned["first"]


# --- critical failures ---


def _critical_run(configure: Callable[..., Path], rows: list[dict[str, Any]], **env: object) -> tuple[Path, int]:
    root = configure(_ids(rows), **env)
    write_staging(root, rows)
    return root, main(cli_args())


def test_critical_failure_exits_3_writes_report_and_removes_stale_validated(configure: Callable[..., Path]) -> None:
    rows = filler_rows(20)
    root = configure(_ids(rows))
    write_staging(root, rows)
    assert main(cli_args()) == 0
    assert (root / validated_key(INTERVAL)).exists()
    FileStore(root).put(quarantine_key(INTERVAL), b"previous quarantine")
    FileStore(root).put(validated_daily_key(INTERVAL.start.date()), b"previous compaction")

    rows[0]["price"] = 0.0  # not > price_min
    rows[1]["price"] = float("inf")  # not finite
    rows[2]["price"] = float("nan")  # NaN is missing to GX and pandas
    write_staging(root, rows)
    assert main(cli_args()) == 3

    for key in (validated_key(INTERVAL), quarantine_key(INTERVAL), validated_daily_key(INTERVAL.start.date())):
        assert not (root / key).exists(), key
    rep = report(root)
    assert rep["summary"]["gate"] == "failed"
    assert rep["summary"]["rows_validated"] == 0 and rep["objects"]["validated"] is None
    assert set(rep["summary"]["failed_critical"]) == {"price_not_null", "price_positive_finite"}
    positive = expectation(rep, "price_positive_finite")
    assert positive["unexpected_count"] == 2 and positive["example_coin_ids"] == ["coin-000", "coin-001"]
    assert expectation(rep, "price_not_null")["example_coin_ids"] == ["coin-002"]
    assert rep["quality_score"]["value"] < 1.0
    assert (root / data_docs_prefix(INTERVAL) / "index.html").exists()
    record = _run_record(root)
    assert (record["status"], record["exit_code"]) == ("failed", 3)
    assert record["metrics"]["critical_failures"] == 2 and record["metrics"]["rows_validated"] == 0


def test_duplicate_key_is_critical(configure: Callable[..., Path]) -> None:
    rows = filler_rows(10)
    rows.append(dict(rows[3], price=rows[3]["price"] * 1.001))
    root, code = _critical_run(configure, rows)
    assert code == 3
    unique = expectation(report(root), "key_unique")
    assert (unique["success"], unique["unexpected_count"], unique["example_coin_ids"]) == (False, 2, ["coin-003"])
    assert not (root / validated_key(INTERVAL)).exists()


def test_low_row_count_is_critical(configure: Callable[..., Path]) -> None:
    rows = filler_rows(20)
    root = configure([*_ids(rows), *[f"missing-{i}" for i in range(10)]])  # 30 asked, 20 came back
    write_staging(root, rows)
    assert main(cli_args()) == 3
    count = expectation(report(root), "row_count_usd")
    assert (count["success"], count["observed_value"], count["coins_asked"], count["min_rows"]) == (False, 20, 30, 27)


def test_too_many_quarantined_rows_is_critical(configure: Callable[..., Path]) -> None:
    rows = filler_rows(10)
    for row in rows[:3]:  # 30 % stale > max_quarantine_share 20 %
        row["last_updated"] = END - timedelta(days=1)
    root, code = _critical_run(configure, rows)
    assert code == 3
    rep = report(root)
    assert rep["summary"]["failed_critical"] == ["quarantine_share"]
    assert rep["summary"]["failed_warning"] == ["last_updated_fresh"]
    share = expectation(rep, "quarantine_share")
    assert (share["observed_value"], share["unexpected_count"]) == (0.3, 3)
    assert not (root / validated_key(INTERVAL)).exists() and not (root / quarantine_key(INTERVAL)).exists()


def test_missing_and_mistyped_columns_are_critical(configure: Callable[..., Path]) -> None:
    rows = filler_rows(10)
    base = pa.Table.from_pylist(rows, schema=SNAPSHOT_SCHEMA)
    table = base.drop_columns(["last_updated"]).set_column(
        base.schema.get_field_index("price"), "price", pa.array([str(r["price"]) for r in rows])
    )
    root = configure(_ids(rows))
    write_staging(root, table)
    assert main(cli_args()) == 3
    rep = report(root)
    columns = expectation(rep, "columns_present")
    assert columns["success"] is False
    assert expectation(rep, "type_price")["observed_value"] == "str"
    assert expectation(rep, "type_coin_id")["success"] is True
    assert {"columns_present", "type_price", "type_last_updated"} <= set(rep["summary"]["failed_critical"])


def test_missing_staging_is_exit_8(configure: Callable[..., Path]) -> None:
    root = configure(["bitcoin"])
    assert main(cli_args()) == 8
    assert not (root / quality_report_key(INTERVAL)).exists()

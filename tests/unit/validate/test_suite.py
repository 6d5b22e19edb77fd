"""The suite, the verdict, the score and the Data Docs selection, without running Great Expectations."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from cryptopipe.core.config import load_settings
from cryptopipe.validate.docs_site import collect_site, normalize_html
from cryptopipe.validate.gx_runner import Outcome
from cryptopipe.validate.report import judge, quality_score
from cryptopipe.validate.suite import (
    SUITE_VERSION,
    Check,
    Severity,
    build_suite,
    coins_asked,
    min_rows,
    pandas_type,
)
from tests.unit.validate.conftest import pipeline_env
from tests.unit.validate.helpers import INTERVAL, filler_rows, table_of


def test_importing_the_stage_does_not_import_gx_or_pandas() -> None:
    code = "import sys, cryptopipe.validate.stage; print(sorted({'great_expectations', 'pandas'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_suite_has_every_check_of_the_issue_with_its_severity(tmp_path: Path) -> None:
    with pipeline_env(tmp_path, ["bitcoin"], quote_currencies="usd,eur"):
        checks = build_suite(load_settings(), INTERVAL, table_of(filler_rows(2)))
    severity = {c.name: c.severity for c in checks}
    critical = {
        "columns_present",
        "type_price",
        "type_snapshot_time",
        "key_unique",
        "price_not_null",
        "price_positive_finite",
        "row_count_usd",
        "row_count_eur",
        "snapshot_time_is_interval_end",
    }
    warning = {
        "price_max",
        "market_cap_non_negative",
        "total_volume_non_negative",
        "last_updated_fresh",
        "change_24h_bounded",
        "price_above_low_24h",
        "price_below_high_24h",
        "market_cap_consistent",
    }
    assert {n for n in critical if severity.get(n) is Severity.CRITICAL} == critical
    assert {n for n in warning if severity.get(n) is Severity.WARNING} == warning
    assert SUITE_VERSION.count(".") == 2
    # The price floor is the configured price_min (0 by default), strictly: 5.7e-11 is above it.
    (positive,) = [c for c in checks if c.name == "price_positive_finite"]
    assert positive.kwargs["min_value"] == 0.0 and positive.kwargs["strict_min"] is True


def test_coins_asked_counts_ids_inside_the_top_n_once(tmp_path: Path) -> None:
    rows = filler_rows(3)  # coin-000..002, ranks 1..3
    with pipeline_env(tmp_path, ["coin-001", "extra"], coins__top_n=3):
        settings = load_settings()
    assert coins_asked(settings, table_of(rows), "usd") == 4  # top 3 + "extra"; coin-001 is one of the top 3
    assert coins_asked(settings, table_of(rows), "eur") == 5  # nothing seen in eur: both ids count
    assert min_rows(0.9, 10) == 9 and min_rows(0.9, 11) == 10 and min_rows(0.5, 1) == 1


@pytest.mark.parametrize(
    ("arrow_type", "expected"),
    [(pa.string(), "str"), (pa.float64(), "float64"), (pa.int32(), "int32"), (pa.timestamp("ms", "UTC"), "Timestamp")],
)
def test_pandas_type_names(arrow_type: pa.DataType, expected: str) -> None:
    assert pandas_type(arrow_type) == expected


def _check(name: str, severity: Severity, row_level: bool = True) -> Check:
    return Check(name, severity, "ExpectColumnValuesToBeBetween", {}, ("price",), "test", row_level=row_level)


def test_verdict_and_score() -> None:
    checks = [_check("table", Severity.CRITICAL, row_level=False), _check("rows", Severity.WARNING)]
    outcomes = {
        "table": Outcome("table", True),
        "rows": Outcome("rows", False, element_count=10, unexpected_count=2, unexpected_index=[3, 7]),
    }
    verdict = judge(checks, outcomes, rows_in=10, max_quarantine_share=0.2)
    assert verdict.passed and verdict.row_reasons == {3: ["rows"], 7: ["rows"]}
    # (3 x 1.0 + 1 x 0.8 + 3 x 1.0 for the quarantine share) / 7
    assert quality_score(checks, outcomes, verdict) == round(6.8 / 7, 6)

    strict = judge(checks, outcomes, rows_in=10, max_quarantine_share=0.1)
    assert strict.critical_failures == ["quarantine_share"]


def test_a_warning_that_could_not_be_evaluated_stops_the_gate() -> None:
    checks = [_check("rows", Severity.WARNING)]
    outcomes = {"rows": Outcome("rows", False, exception="column missing")}
    verdict = judge(checks, outcomes, rows_in=5, max_quarantine_share=0.2)
    assert verdict.critical_failures == ["rows"] and not verdict.row_reasons


def test_gx_counts_that_disagree_with_listed_rows_are_a_bug() -> None:
    checks = [_check("rows", Severity.WARNING)]
    outcomes = {"rows": Outcome("rows", False, element_count=5, unexpected_count=2, unexpected_index=[1])}
    with pytest.raises(RuntimeError, match="counted 2 unexpected rows but listed 1"):
        judge(checks, outcomes, rows_in=5, max_quarantine_share=0.5)


def test_data_docs_keep_pages_and_referenced_files_and_drop_run_noise(tmp_path: Path) -> None:
    (tmp_path / "static" / "images").mkdir(parents=True)
    (tmp_path / "static" / "images" / "favicon.ico").write_bytes(b"ico")
    (tmp_path / "static" / "images" / "tutorial.gif").write_bytes(b"x" * 1000)
    (tmp_path / "sub").mkdir()
    uuid_a, uuid_b = "d5685a59-0cac-4d87-8220-357a2976959a", "66609624-6ad7-4047-a887-1f97c401e965"
    (tmp_path / "index.html").write_text(
        f'<link href="./static/images/favicon.ico"><img src="https://x/logo.png?d=20261122T205836.805004Z">'
        f'<a href="#c-{uuid_a}">{uuid_b} {uuid_a}</a><a href="https://cdn/x.js">'
    )
    (tmp_path / "sub" / "page.html").write_text('<a href="../index.html">up</a>')
    files = collect_site(tmp_path)
    assert list(files) == ["index.html", "static/images/favicon.ico", "sub/page.html"]
    index = files["index.html"].decode()
    assert "?d=" not in index and uuid_a not in index and "#c-id0001" in index and "id0002 id0001" in index
    assert normalize_html(index) == index

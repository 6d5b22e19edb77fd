"""Property-based: whatever CoinGecko (or a proxy in front of it) answers, the parsers end in data or a typed error.

Covers ``classify_response`` (any status, headers and bytes), ``parse_markets_page`` + ``rows_to_table`` (the page
as ingest turns it into the staging table) and ``parse_market_chart`` + ``chart_rows`` (as backfill does). Inputs:
arbitrary bytes, arbitrary JSON, and real pages (tests/unit/ingest/fixtures) with random field mutations.
"Typed error" means a PipelineError subclass, or RetryableError for what the HTTP client retries.

The regression tests at the bottom pin each crash these properties found (each fixed in core/coingecko.py).
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cryptopipe.core.coingecko import (
    MARKETS_MAPPING,
    REQUIRED_FIELDS,
    chart_rows,
    classify_response,
    find_api_error,
    parse_market_chart,
    parse_markets_page,
    rows_to_table,
)
from cryptopipe.core.errors import PipelineError, SourceInvalidError
from cryptopipe.core.http import RetryableError
from cryptopipe.core.schema import SNAPSHOT_SCHEMA

FIXTURES = Path(__file__).resolve().parents[1] / "ingest" / "fixtures"
SNAP = datetime(2026, 11, 22, 14, tzinfo=UTC)
TYPED = (PipelineError, RetryableError)
FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


MARKET_PAGES = [_fixture("coins_markets_official_example.json"), _fixture("coins_markets_real_top2_pcp.json")]
CHART = _fixture("market_chart_range_official_example_hourly.json")
MARKET_FIELDS = sorted({src for src, _ in MARKETS_MAPPING.values()} | {"roi", "image", "unknown_new_field"})

# --- strategies ---

nasty_numbers = st.one_of(
    st.integers(),  # includes values beyond float and int64 range
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, -0.0, 1e-300, 1e308, math.inf, -math.inf, math.nan, 2**31, 2**63, -(2**63) - 1, 10**30]),
)
nasty_strings = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        ["", " ", "nan", "NaN", "inf", "-Infinity", "1e999", "1.2e-05", "0x10", "1_000", "٣", "１２", "\ud800",
         "9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "2025-12-27T10:46:21.358Z", "2025-13-45",
         "<html>", "null", "💥", "a" * 5000]
    ),
)  # fmt: skip
json_scalars = st.one_of(st.none(), st.booleans(), nasty_numbers, nasty_strings)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=15,
)


@st.composite
def mutated_page(draw: st.DrawFn) -> list[Any]:
    """A real /coins/markets page with a few fields set to junk (mostly), deleted or added; sometimes junk items."""
    page = [dict(item) for item in draw(st.sampled_from(MARKET_PAGES))]
    for _ in range(draw(st.integers(1, 3))):
        index = draw(st.integers(0, len(page) - 1))
        action = draw(st.sampled_from(["set"] * 6 + ["set_nested", "delete", "replace_item", "append_item"]))
        item = page[index]
        if action.startswith("set") and isinstance(item, dict):
            item[draw(st.sampled_from(MARKET_FIELDS))] = draw(json_scalars if action == "set" else json_values)
        elif action == "delete" and isinstance(item, dict):
            item.pop(draw(st.sampled_from(MARKET_FIELDS)), None)
        elif action == "replace_item":
            page[index] = draw(json_values)
        else:
            page.append(dict(page[0]) if isinstance(page[0], dict) else {})
    return page


# The three error-body shapes CoinGecko uses, with junk in the code and message.
api_error_bodies = st.one_of(
    st.fixed_dictionaries({"status": st.fixed_dictionaries({"error_code": nasty_numbers, "error_message": json_values})}),
    st.fixed_dictionaries({"error": json_values}),
    st.fixed_dictionaries(
        {"error": st.fixed_dictionaries({"status": st.dictionaries(st.sampled_from(["error_code", "error_message",
                                                                                    "message"]), json_values)})}
    ),
)  # fmt: skip
# Bodies a parser's limits trip over: deep nesting, very long numbers, BOMs, HTML, truncation.
pathological_bodies = st.one_of(
    st.builds(lambda unit, n: unit * n, st.sampled_from([b"[", b'{"a":', b"9", b"-1", b" "]), st.integers(0, 60_000)),
    st.builds(lambda n: b"[" + b"9" * n + b"]", st.integers(4000, 20_000)),
    st.sampled_from([b"\xef\xbb\xbf[]", b"<!DOCTYPE html><title>x", b"[{", b"", b"\xff\xfe", b"NaN", b"-Infinity"]),
)


@st.composite
def mutated_chart(draw: st.DrawFn) -> Any:
    chart = {name: [list(p) for p in points[:6]] for name, points in CHART.items()}
    for _ in range(draw(st.integers(1, 5))):
        series = draw(st.sampled_from(["prices", "market_caps", "total_volumes", "extra"]))
        action = draw(st.sampled_from(["point", "series", "delete", "element"]))
        if action == "series":
            chart[series] = draw(json_values)
        elif action == "delete":
            chart.pop(series, None)
        elif isinstance(chart.get(series), list) and chart[series]:
            points = chart[series]
            i = draw(st.integers(0, len(points) - 1))
            if action == "point":
                points[i] = draw(json_values)
            elif isinstance(points[i], list) and points[i]:
                points[i][draw(st.integers(0, len(points[i]) - 1))] = draw(json_values)
    return chart


def _encode(value: Any) -> bytes:
    """JSON as a server might send it: Python's dumps writes NaN/Infinity, surrogates escaped as \\udXXX."""
    return json.dumps(value, allow_nan=True).encode("utf-8")


# --- the properties ---


def _classified(status: int, headers: dict[str, str], body: bytes) -> Any:
    try:
        return classify_response(status, headers, body, "GET /fuzz")
    except TYPED as exc:
        assert str(exc)
        return exc


def _markets_table(payload: Any) -> pa.Table | PipelineError:
    """The ingest path: page -> rows -> staging table, or the typed error."""
    try:
        parsed = parse_markets_page(payload, vs_currency="usd", snapshot_time=SNAP, source_key="raw/k")
    except PipelineError as exc:
        assert str(exc).startswith("raw/k")  # the error says where
        json.dumps(str(exc)).encode("utf-8")  # and can be logged
        return exc
    table = rows_to_table(parsed.rows)
    assert table.schema == SNAPSHOT_SCHEMA and table.num_rows == len(payload)
    for column in ("price", "market_cap", "total_volume"):
        assert all(v is None or math.isfinite(v) for v in table.column(column).to_pylist())
    return table


def _chart_rows(payload: Any) -> list[dict[str, Any]] | PipelineError:
    """The backfill path: chart -> aligned hourly rows -> table, or the typed error."""
    try:
        series = parse_market_chart(payload, "GET chart")
    except PipelineError as exc:
        assert str(exc).startswith("GET chart")
        json.dumps(str(exc)).encode("utf-8")
        return exc
    hours = [datetime(2023, 12, 1, tzinfo=UTC) + timedelta(hours=h) for h in range(4)]
    rows = chart_rows(series, coin_id="bitcoin", vs_currency="usd", snapshot_times=hours, source_key="k")
    rows_to_table(rows)
    return rows


@FUZZ
@given(st.integers(100, 599), st.sampled_from([{}, {"Content-Type": "application/json"}, {"content-type": "text/html"}]),
       st.binary(max_size=300))  # fmt: skip
def test_any_bytes_classify_to_json_or_typed_error(status: int, headers: dict[str, str], body: bytes) -> None:
    _classified(status, headers, body)


@FUZZ
@given(st.sampled_from([200, 400, 401, 429, 500]), pathological_bodies)
def test_pathological_bodies_classify_to_json_or_typed_error(status: int, body: bytes) -> None:
    _classified(status, {}, body)


@FUZZ
@given(st.sampled_from([200, 400, 401, 403, 404, 429]), api_error_bodies)
def test_error_bodies_with_junk_are_typed_errors(status: int, value: Any) -> None:
    result = _classified(status, {}, _encode(value))
    assert isinstance(result, TYPED) or find_api_error(result) is None


@FUZZ
@given(st.integers(100, 599), json_values)
def test_any_json_classifies_to_json_or_typed_error(status: int, value: Any) -> None:
    result = _classified(status, {"Content-Type": "application/json"}, _encode(value))
    if not isinstance(result, Exception):
        assert 200 <= status < 300  # data only ever comes from a 2xx


@FUZZ
@given(json_values)
def test_any_json_markets_page_is_table_or_typed_error(value: Any) -> None:
    _markets_table(value)


@FUZZ
@given(mutated_page())
def test_mutated_real_markets_page_is_table_or_typed_error(page: list[Any]) -> None:
    # Through the classifier first, as ingest does: the bytes a server would send.
    payload = _classified(200, {}, _encode(page))
    if isinstance(payload, Exception):
        return
    result = _markets_table(payload)
    if isinstance(result, pa.Table):  # accepted: every row identified, required fields present
        assert all(result.column("coin_id").to_pylist())
        assert all(all(name in item for name in REQUIRED_FIELDS) for item in payload)


@FUZZ
@given(json_values)
def test_any_json_market_chart_is_rows_or_typed_error(value: Any) -> None:
    _chart_rows(value)


@FUZZ
@given(mutated_chart())
def test_mutated_real_market_chart_is_rows_or_typed_error(chart: Any) -> None:
    payload = _classified(200, {}, _encode(chart))
    if not isinstance(payload, Exception):
        _chart_rows(payload)


def test_unmutated_fixtures_still_parse() -> None:
    """The properties above are not vacuous: the seeds themselves are accepted."""
    for page in MARKET_PAGES:
        assert isinstance(_markets_table(classify_response(200, {}, _encode(page), "GET")), pa.Table)
    assert _chart_rows(classify_response(200, {}, _encode(CHART), "GET")) is not None


# --- regressions: one per crash the properties found (RecursionError, ValueError, OverflowError, UnicodeError) ---


def test_deeply_nested_json_is_source_invalid() -> None:
    with pytest.raises(SourceInvalidError, match="nested too deeply"):
        classify_response(200, {}, b"[" * 100_000, "GET /x")


def test_integer_beyond_digit_limit_is_source_invalid() -> None:
    with pytest.raises(SourceInvalidError, match="unreadable number"):
        classify_response(200, {}, b"[" + b"9" * 5000 + b"]", "GET /x")


def test_infinite_error_code_is_still_an_api_error() -> None:
    with pytest.raises(SourceInvalidError, match="error body"):
        classify_response(200, {}, b'{"status": {"error_code": 1e999, "error_message": "m"}}', "GET /x")


def _coin(**overrides: Any) -> list[dict[str, Any]]:
    return [{**MARKET_PAGES[0][0], **overrides}]


@pytest.mark.parametrize(
    ("overrides", "text"),
    [
        ({"current_price": 10**400}, "'current_price' is .*beyond the range of a number"),
        ({"current_price": float("nan")}, "'current_price' is nan, not a finite number"),
        ({"market_cap": "Infinity"}, "'market_cap' is 'Infinity', not a finite number"),
        ({"total_volume": "1e999"}, "'total_volume' is '1e999', not a finite number"),
        ({"market_cap_rank": 2**31}, "'market_cap_rank' is 2147483648, out of range"),
        ({"last_updated": "9999-12-31T23:59:59-01:00"}, "'last_updated' is .* not an ISO-8601 timestamp in range"),
        ({"ath_date": "0001-01-01T00:00:00+01:00"}, "'ath_date' is .* not an ISO-8601 timestamp in range"),
        ({"name": "\ud800"}, r"'name' is '\\ud800', not valid Unicode text"),
        ({"roi": {"times": 1, "currency": "\udfff", "percentage": 2}}, "'roi.currency' is .*not valid Unicode"),
    ],
)
def test_out_of_range_values_are_field_errors(overrides: dict[str, Any], text: str) -> None:
    with pytest.raises(SourceInvalidError, match=text):
        parse_markets_page(_coin(**overrides), vs_currency="usd", snapshot_time=SNAP, source_key="k")


def test_huge_value_is_quoted_short_in_the_message() -> None:
    with pytest.raises(SourceInvalidError) as info:
        parse_markets_page(_coin(current_price="x" * 100_000), vs_currency="usd", snapshot_time=SNAP, source_key="k")
    assert len(str(info.value)) < 400


def test_chart_timestamp_beyond_float_range_is_source_invalid() -> None:
    with pytest.raises(SourceInvalidError, match=r"prices\[0\] timestamp is .*beyond the range"):
        parse_market_chart({"prices": [[10**400, 1]], "market_caps": [], "total_volumes": []}, "GET chart")


def test_largest_rank_still_fits_the_table() -> None:
    parsed = parse_markets_page(_coin(market_cap_rank=2**31 - 1), vs_currency="usd", snapshot_time=SNAP, source_key="k")
    assert rows_to_table(parsed.rows).column("market_cap_rank").to_pylist() == [2**31 - 1]

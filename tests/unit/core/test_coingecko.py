"""CoinGecko bodies: every file in ../shared/coingecko handled, plus the fixtures kept in the repository."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cryptopipe.core.coingecko import (
    HISTORY_LIMIT_MESSAGE,
    KNOWN_UNMAPPED,
    MARKETS_MAPPING,
    REQUIRED_FIELDS,
    chart_rows,
    classify_response,
    find_api_error,
    parse_market_chart,
    parse_markets_page,
    rows_to_table,
    to_timestamp,
)
from cryptopipe.core.errors import SourceInvalidError
from cryptopipe.core.http import RetryableError
from cryptopipe.core.schema import SNAPSHOT_SCHEMA

SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "coingecko"
FIXTURES = Path(__file__).resolve().parents[1] / "ingest" / "fixtures"
SNAP = datetime(2026, 1, 1, 13, tzinfo=UTC)
JSON = {"Content-Type": "application/json"}
HTML = {"Content-Type": "text/html"}

# body file -> (HTTP status it came with, expected outcome)
ERROR_BODIES = {
    "error_10002_api_key_missing_x402.json": (401, SourceInvalidError, "rejected the API key"),
    "error_10012_demo_365_day_limit.json": (401, SourceInvalidError, "365 days"),
    "error_429_rate_limit.json": (429, RetryableError, "rate limited"),
    "error_coin_not_found.json": (404, SourceInvalidError, "Could not find coin"),
}


def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: the shared CoinGecko reference bodies are needed for this test")
    return SHARED


def sources(name: str) -> list[Path]:
    """The body from ../shared if present and the repository's fixture copy (always)."""
    found = [p for p in (SHARED / name, FIXTURES / name) if p.is_file()]
    assert found, f"neither {SHARED / name} nor {FIXTURES / name} exists"
    return found


# --- every shared body is handled ---


def test_every_shared_body_is_classified() -> None:
    """JSON data bodies come back decoded; error bodies and the HTML page raise typed errors."""
    handled = set()
    for path in sorted(shared_dir().iterdir()):
        if path.suffix not in {".json", ".html"}:
            continue
        body = path.read_bytes()
        if path.name in ERROR_BODIES:
            status, error, text = ERROR_BODIES[path.name]
            with pytest.raises(error, match=text):
                classify_response(status, JSON, body, f"GET {path.name}")
        elif path.suffix == ".html":
            with pytest.raises(RetryableError, match="HTML page instead of JSON") as info:
                classify_response(200, HTML, body, "GET x")
            assert info.value.invalid
            with pytest.raises(SourceInvalidError, match="Cloudflare"):
                classify_response(403, HTML, body, "GET x")
        else:
            assert classify_response(200, JSON, body, "GET x") == json.loads(body)
        handled.add(path.name)
    assert set(ERROR_BODIES) <= handled


@pytest.mark.parametrize("name", sorted(ERROR_BODIES))
def test_error_fixtures_are_typed_errors(name: str) -> None:
    status, error, text = ERROR_BODIES[name]
    for path in sources(name):
        with pytest.raises(error, match=text):
            classify_response(status, JSON, path.read_bytes(), "GET /x")
        # the same error bodies with status 200 are still errors, never data
        with pytest.raises(error, match=text):
            classify_response(200, JSON, path.read_bytes(), "GET /x")


def test_three_error_shapes() -> None:
    assert find_api_error({"status": {"error_code": 10002, "error_message": "m"}}).shape == "status"  # type: ignore[union-attr]
    assert find_api_error({"error": "Could not find coin"}).shape == "error"  # type: ignore[union-attr]
    nested = find_api_error({"error": {"status": {"error_code": 10012, "error_message": "range"}}})
    assert nested is not None and nested.code == 10012 and nested.shape == "error.status"
    assert find_api_error({"gecko_says": "(V3) To the Moon!"}) is None
    assert find_api_error([{"id": "bitcoin"}]) is None


def test_history_limit_message_is_clear() -> None:
    for path in sources("error_10012_demo_365_day_limit.json"):
        with pytest.raises(SourceInvalidError) as info:
            classify_response(401, JSON, path.read_bytes(), "GET /coins/bitcoin/market_chart/range")
        assert HISTORY_LIMIT_MESSAGE in str(info.value)


def test_html_fixture_and_truncated_json() -> None:
    for path in sources("error_html_cloudflare_snippet.html"):
        # no Content-Type at all: recognised by its first byte
        with pytest.raises(RetryableError, match="Access denied"):
            classify_response(200, {}, path.read_bytes(), "GET x")
    with pytest.raises(RetryableError, match="truncated or invalid JSON") as info:
        classify_response(200, JSON, b'[{"id": "bitcoin", "current_pr', "GET x")
    assert info.value.invalid
    with pytest.raises(SourceInvalidError, match="unexpected HTTP status 418"):
        classify_response(418, JSON, b"[]", "GET x")


# --- /coins/markets: no field lost ---


def _expected(item: dict[str, Any], source: str) -> Any:
    value = item[source]
    if source in ("ath_date", "atl_date", "last_updated"):
        return to_timestamp(value, source)
    if source == "market_cap_rank" or value is None or isinstance(value, str):
        return value
    return float(value)


def _check_every_field(payload: list[dict[str, Any]], page: Any) -> None:
    assert len(page.rows) == len(payload)
    mapped = {src for src, _ in MARKETS_MAPPING.values()} | {"roi"}
    for item, row in zip(payload, page.rows, strict=True):
        for column, (source, _) in MARKETS_MAPPING.items():
            if source in item:
                assert row[column] == _expected(item, source), (item["id"], source)
            else:
                assert row[column] is None
        roi = item.get("roi")
        assert (row["roi_times"], row["roi_currency"], row["roi_percentage"]) == (
            (roi["times"], roi["currency"], roi["percentage"]) if roi else (None, None, None)
        )
        # every field of the source is either mapped or a documented, deliberately unmapped one
        assert set(item) <= mapped | KNOWN_UNMAPPED, set(item) - mapped - KNOWN_UNMAPPED
    assert page.unknown_fields == set()


@pytest.mark.parametrize(
    "name",
    [
        "coins_markets_official_example.json",
        "coins_markets_real_top2_pcp.json",
        "coins_markets_real_2025-12-27_top7_pcp_1h_24h_7d_30d.json",
        "coins_markets_real_2026-02-17_bitcoin_sparkline_true.json",
    ],
)
def test_markets_examples_parse_with_no_field_lost(name: str) -> None:
    paths = [p for p in (SHARED / name, FIXTURES / name) if p.is_file()]
    if not paths:
        pytest.skip(f"{SHARED / name} is absent (../shared not mounted) and it has no fixture copy")
    for path in paths:
        payload = json.loads(path.read_bytes())
        page = parse_markets_page(payload, vs_currency="usd", snapshot_time=SNAP, source_key="raw/x.json.gz")
        _check_every_field(payload, page)
        table = rows_to_table(page.rows)
        assert table.schema == SNAPSHOT_SCHEMA
        assert table.column("snapshot_time").to_pylist() == [SNAP] * len(payload)
        assert set(table.column("source").to_pylist()) == {"coins_markets"}


def test_real_example_specifics() -> None:
    payload = json.loads(sources("coins_markets_real_top2_pcp.json")[0].read_bytes())
    rows = parse_markets_page(payload, vs_currency="usd", snapshot_time=SNAP, source_key="k").rows
    btc, eth = rows
    assert btc["price_change_pct_1h"] == payload[0]["price_change_percentage_1h_in_currency"]
    assert btc["price_change_pct_7d"] == payload[0]["price_change_percentage_7d_in_currency"]
    assert eth["max_supply"] is None and eth["roi_currency"] == "btc"
    assert btc["last_updated"] == datetime(2025, 12, 27, 10, 46, 21, 358000, tzinfo=UTC)


# --- tolerance and strictness ---


def _coin(**overrides: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": "shiba-inu",
        "symbol": "shib",
        "name": "Shiba Inu",
        "current_price": 5.7e-11,
        "market_cap": 0,
        "total_volume": 12,
        "last_updated": "2026-01-01T12:59:00.000Z",
    }
    item.update(overrides)
    return item


def test_numbers_ints_floats_scientific_and_strings() -> None:
    item = _coin(current_price="1.2e-05", market_cap="123456789", total_volume=1e3, market_cap_rank="12")
    row = parse_markets_page([item], vs_currency="usd", snapshot_time=SNAP, source_key="k").rows[0]
    assert row["price"] == 1.2e-05 and row["market_cap"] == 123456789.0 and row["total_volume"] == 1000.0
    assert row["market_cap_rank"] == 12
    page = parse_markets_page([_coin()], vs_currency="usd", snapshot_time=SNAP, source_key="k")
    assert page.rows[0]["price"] == 5.7e-11 and page.rows[0]["market_cap"] == 0.0
    assert "roi" in page.missing_optional_fields and "high_24h" in page.missing_optional_fields
    # nulls everywhere that is allowed
    nulls = _coin(current_price=None, market_cap=None, total_volume=None, last_updated=None, roi=None)
    assert parse_markets_page([nulls], vs_currency="usd", snapshot_time=SNAP, source_key="k").rows[0]["price"] is None


@pytest.mark.parametrize("missing", REQUIRED_FIELDS)
def test_missing_required_field_names_field_and_page(missing: str) -> None:
    item = _coin()
    del item[missing]
    with pytest.raises(SourceInvalidError, match=rf"raw/p1.json.gz: coin #0 .*required field\(s\) {missing} missing"):
        parse_markets_page([item], vs_currency="usd", snapshot_time=SNAP, source_key="raw/p1.json.gz")


@pytest.mark.parametrize(
    ("overrides", "text"),
    [
        ({"current_price": "n/a"}, "'current_price' is 'n/a', which is not a number"),
        ({"market_cap": True}, "'market_cap' is a boolean"),
        ({"market_cap_rank": 1.5}, "'market_cap_rank' is 1.5, not a whole number"),
        ({"last_updated": "yesterday"}, "'last_updated' is 'yesterday', not an ISO-8601 timestamp"),
        ({"roi": "big"}, "'roi' is a str"),
        ({"id": None}, r"required field\(s\) id null or empty"),
    ],
)
def test_bad_values_are_clear_errors(overrides: dict[str, Any], text: str) -> None:
    with pytest.raises(SourceInvalidError, match=text):
        parse_markets_page([_coin(**overrides)], vs_currency="usd", snapshot_time=SNAP, source_key="k")


def test_unknown_fields_reported_not_fatal() -> None:
    page = parse_markets_page(
        [_coin(new_metric=1), _coin(id="x", other="y")], vs_currency="usd", snapshot_time=SNAP, source_key="k"
    )
    assert page.unknown_fields == {"new_metric", "other"}
    assert len(page.rows) == 2


def test_page_must_be_a_list_of_objects() -> None:
    with pytest.raises(SourceInvalidError, match="expected a JSON list of coins, got a dict"):
        parse_markets_page({"id": "x"}, vs_currency="usd", snapshot_time=SNAP, source_key="k")
    with pytest.raises(SourceInvalidError, match="element 1 is a str"):
        parse_markets_page([_coin(), "bitcoin"], vs_currency="usd", snapshot_time=SNAP, source_key="k")


# --- market_chart ---


def test_market_chart_examples_parse() -> None:
    names = ["market_chart_range_official_example_hourly.json"]
    if SHARED.is_dir():
        names += ["market_chart_official_example.json", "market_chart_daily_5pts_2023-12.json"]
    for name in names:
        for path in sources(name):
            payload = json.loads(path.read_bytes())
            series = parse_market_chart(payload, path.name)
            assert [p[0] for p in series.points["price"]] == sorted(p[0] for p in payload["prices"])
            assert len(series) == len(payload["prices"])


def test_chart_alignment_nearest_within_30_minutes() -> None:
    payload = json.loads(sources("market_chart_range_official_example_hourly.json")[0].read_bytes())
    series = parse_market_chart(payload, "x")
    # points at 00:00:41, 01:00:47, 02:00:43 on 2024-01-01
    hours = [datetime(2024, 1, 1, h, tzinfo=UTC) for h in range(5)]
    rows = chart_rows(series, coin_id="bitcoin", vs_currency="usd", snapshot_times=hours, source_key="raw/c")
    assert [r["snapshot_time"].hour for r in rows] == [0, 1, 2]  # 03:00 is 59 min from the last point: a gap
    assert [r["price"] for r in rows] == [p[1] for p in payload["prices"]]
    assert [r["market_cap"] for r in rows] == [p[1] for p in payload["market_caps"]]
    assert rows[0]["source"] == "market_chart_range" and rows[0]["source_key"] == "raw/c"


def test_chart_alignment_ties_and_tolerance() -> None:
    base = int(datetime(2024, 1, 1, 12, tzinfo=UTC).timestamp() * 1000)
    minute = 60_000
    payload = {
        "prices": [[base - 20 * minute, 1.0], [base + 20 * minute, 2.0], [base + 60 * minute + 31 * minute, 3.0]],
        "market_caps": [[base - 20 * minute, 10.0], [base + 20 * minute, None]],
        "total_volumes": [[str(base - 20 * minute), "5"]],  # drift: numbers as strings
    }
    series = parse_market_chart(payload, "x")
    when = [datetime(2024, 1, 1, 12, tzinfo=UTC), datetime(2024, 1, 1, 13, tzinfo=UTC)]
    rows = chart_rows(series, coin_id="c", vs_currency="usd", snapshot_times=when, source_key="k")
    assert len(rows) == 1  # 13:00 has no price within 30 min (13:31 is 31 min away)
    assert (rows[0]["price"], rows[0]["market_cap"], rows[0]["total_volume"]) == (1.0, 10.0, 5.0)


@pytest.mark.parametrize(
    ("payload", "text"),
    [
        ({"prices": []}, r"market_caps, total_volumes missing"),
        ({"prices": [[1, 2, 3]], "market_caps": [], "total_volumes": []}, "not a .timestamp, value. pair"),
        ({"prices": [["t", 2]], "market_caps": [], "total_volumes": []}, "timestamp is 't'"),
        ([1, 2], "expected a JSON object"),
    ],
)
def test_bad_charts_are_clear_errors(payload: Any, text: str) -> None:
    with pytest.raises(SourceInvalidError, match=text):
        parse_market_chart(payload, "GET chart")

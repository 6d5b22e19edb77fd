"""/coins/markets, /simple/price, /ping: shapes against real CoinGecko responses, paging, filters, clock."""

from __future__ import annotations

import datetime as dt
import json
import math
import re

import pytest
import requests

from cryptopipe.replay import ReplayServer
from tests.conftest import shared_path

ISO_MS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
REAL_TOP7 = "coins_markets_real_2025-12-27_top7_pcp_1h_24h_7d_30d.json"
NULLABLE = {"max_supply", "fully_diluted_valuation", "roi", "market_cap_rank", "market_cap", "total_supply"}


def _markets(server: ReplayServer, **params: object) -> requests.Response:
    query = {"vs_currency": "usd", **params}
    return requests.get(f"{server.url}/coins/markets", params=query, timeout=30)


def _load(name: str) -> object:
    return json.loads(shared_path("coingecko", name).read_text())


def _same_kind(real: object, ours: object, key: str) -> bool:
    if ours is None:
        return key in NULLABLE or real is None
    if isinstance(real, bool) or isinstance(ours, bool):
        return isinstance(real, bool) and isinstance(ours, bool)
    if isinstance(real, int | float) or real is None:
        return isinstance(ours, int | float)
    return type(real) is type(ours)


def test_ping(replay: ReplayServer) -> None:
    assert requests.get(f"{replay.url}/ping", timeout=10).json() == _load("ping.json")


def test_markets_key_order_and_types_match_the_real_response(replay: ReplayServer) -> None:
    real = _load(REAL_TOP7)
    ids = ",".join(row["id"] for row in real)
    ours = _markets(replay, ids=ids, price_change_percentage="1h,24h,7d,30d").json()
    assert {r["id"] for r in ours} == {r["id"] for r in real}
    real_keys = list(real[0])
    for row in ours:
        assert list(row) == real_keys, row["id"]
        for key in real_keys:
            values = [r[key] for r in real]
            assert any(_same_kind(v, row[key], key) for v in values), (row["id"], key, row[key])
        assert ISO_MS_Z.match(row["last_updated"]) and ISO_MS_Z.match(row["ath_date"])
    roi = next(r["roi"] for r in ours if r["id"] == "ethereum")
    assert set(roi) == {"times", "currency", "percentage"}


def test_sparkline_shape_matches_the_real_response(replay: ReplayServer) -> None:
    real = _load("coins_markets_real_2026-02-17_bitcoin_sparkline_true.json")[0]
    ours = _markets(replay, ids="bitcoin", sparkline="true", price_change_percentage="24h").json()[0]
    assert list(ours) == list(real)
    assert len(ours["sparkline_in_7d"]["price"]) == len(real["sparkline_in_7d"]["price"]) == 168


def test_paging_covers_250_coins_once_in_market_cap_order(replay: ReplayServer) -> None:
    pages = [_markets(replay, per_page=100, page=p).json() for p in (1, 2, 3, 4)]
    assert [len(p) for p in pages] == [100, 100, 50, 0]
    rows = [r for p in pages for r in p]
    assert len({r["id"] for r in rows}) == 250
    caps = [r["market_cap"] or 0 for r in rows]
    assert caps == sorted(caps, reverse=True)
    ranked = [r["market_cap_rank"] for r in rows if r["market_cap"]]
    assert ranked == list(range(1, len(ranked) + 1))
    assert all(r["market_cap_rank"] is None for r in rows if not r["market_cap"])
    assert len(_markets(replay).json()) == 100  # default per_page
    assert len(_markets(replay, per_page=1000).json()) == 250  # capped like the real API


def test_dataset_has_realistic_quirks(replay: ReplayServer) -> None:
    rows = _markets(replay, per_page=250).json()
    prices = [r["current_price"] for r in rows]
    assert min(prices) < 1e-6 and max(prices) > 1e4
    assert any(r["max_supply"] is None for r in rows) and any(r["max_supply"] for r in rows)
    assert any(r["fully_diluted_valuation"] is None for r in rows)
    assert any(r["market_cap"] == 0 for r in rows)
    assert any(isinstance(r["roi"], dict) for r in rows) and any(r["roi"] is None for r in rows)
    symbols = [r["symbol"] for r in rows]
    assert len(set(symbols)) < len(symbols)  # symbols are not unique, as on CoinGecko
    shib = next(r for r in rows if r["id"] == "shiba-inu")
    assert 1e-10 < shib["current_price"] < 1e-3


def test_values_are_consistent_with_the_clock(replay: ReplayServer) -> None:
    clock = dt.datetime(2026, 11, 22, 14, tzinfo=dt.UTC)
    for row in _markets(replay, per_page=250, price_change_percentage="1h,24h,7d").json():
        updated = dt.datetime.fromisoformat(row["last_updated"].replace("Z", "+00:00"))
        assert dt.timedelta(seconds=2) <= clock - updated <= dt.timedelta(seconds=60), row["id"]
        price = row["current_price"]
        assert row["low_24h"] * 0.999 <= price <= row["high_24h"] * 1.001, row["id"]
        assert row["atl"] * 0.999 <= price <= row["ath"] * 1.001, row["id"]
        before = price - row["price_change_24h"]
        assert math.isclose(row["price_change_24h"] / before * 100, row["price_change_percentage_24h"],
                            rel_tol=1e-2, abs_tol=1e-3)  # fmt: skip
        assert math.isclose(row["price_change_percentage_24h_in_currency"], row["price_change_percentage_24h"],
                            abs_tol=1e-4)  # fmt: skip


def test_ids_filter_omits_unknown_ids(replay: ReplayServer) -> None:
    rows = _markets(replay, ids="shiba-inu,no-such-coin,bitcoin").json()
    assert [r["id"] for r in rows] == ["bitcoin", "shiba-inu"]
    assert _markets(replay, ids="no-such-coin").json() == []


def test_quote_currencies(replay: ReplayServer) -> None:
    usd = _markets(replay, ids="ethereum").json()[0]
    eur = _markets(replay, ids="ethereum", vs_currency="eur").json()[0]
    btc = _markets(replay, ids="bitcoin,ethereum", vs_currency="btc", precision="full").json()
    assert math.isclose(eur["current_price"], usd["current_price"] * 0.92, rel_tol=1e-3)
    assert btc[0]["current_price"] == pytest.approx(1.0)
    assert 0 < btc[1]["current_price"] < 1


def test_bad_parameters_are_400_with_a_reason(replay: ReplayServer) -> None:
    missing = requests.get(f"{replay.url}/coins/markets", timeout=10)
    assert missing.status_code == 400 and "vs_currency" in missing.json()["error"]
    assert _markets(replay, vs_currency="xyz").status_code == 400
    bad = _markets(replay, per_page="ten")
    assert bad.status_code == 400 and "per_page" in bad.json()["error"]
    assert _markets(replay, precision="99").status_code == 400


def test_precision(replay: ReplayServer) -> None:
    full = _markets(replay, ids="bitcoin", precision="full").json()[0]["current_price"]
    two = _markets(replay, ids="bitcoin", precision="2").json()[0]["current_price"]
    default = _markets(replay, ids="bitcoin").json()[0]["current_price"]
    assert isinstance(default, int) and default == round(full) and two == round(full, 2)


def test_simple_price_shapes(replay: ReplayServer) -> None:
    real = _load("simple_price_official_example_all_include_flags.json")
    flags = {f"include_{f}": "true" for f in ("market_cap", "24hr_vol", "24hr_change", "last_updated_at")}
    ours = requests.get(f"{replay.url}/simple/price", params={"ids": "bitcoin,nope", "vs_currencies": "usd", **flags},
                        timeout=10).json()  # fmt: skip
    assert list(ours) == ["bitcoin"]
    assert list(ours["bitcoin"]) == list(real["bitcoin"])
    updated = ours["bitcoin"]["last_updated_at"]
    assert isinstance(updated, int) and 0 < 1795356000 - updated <= 60  # seconds, before the clock
    minimal = requests.get(f"{replay.url}/simple/price", params={"ids": "bitcoin", "vs_currencies": "usd,eur"},
                           timeout=10).json()  # fmt: skip
    assert set(minimal["bitcoin"]) == {"usd", "eur"}
    market = _markets(replay, ids="bitcoin").json()[0]
    assert minimal["bitcoin"]["usd"] == market["current_price"]


def test_clock_admin_endpoint_moves_the_market(replay: ReplayServer) -> None:
    before = _markets(replay, ids="bitcoin").json()[0]
    put = requests.put(f"{replay.root_url}/__replay/clock", json={"time": "2026-11-22T18:30:00Z"}, timeout=10)
    assert put.status_code == 200 and put.json() == {"time": "2026-11-22T18:30:00.000Z", "mode": "fixed"}
    after = _markets(replay, ids="bitcoin").json()[0]
    assert after["last_updated"].startswith("2026-11-22T18:29") and after["current_price"] != before["current_price"]
    bad = requests.put(f"{replay.root_url}/__replay/clock", json={"time": "next tuesday"}, timeout=10)
    assert bad.status_code == 400 and "next tuesday" in bad.json()["error"]
    outside = requests.put(f"{replay.root_url}/__replay/clock", json={"time": "2040-01-01"}, timeout=10)
    assert outside.status_code == 400 and "outside the served range" in outside.json()["error"]
    wall = requests.put(f"{replay.root_url}/__replay/clock", json={"time": None}, timeout=10).json()
    assert wall["mode"] == "wall"


def test_two_servers_serve_identical_bytes() -> None:
    paths = [
        "/coins/markets?vs_currency=usd&per_page=250&price_change_percentage=1h,24h,7d&sparkline=true",
        "/coins/solana/market_chart/range?vs_currency=usd&from=1793000000&to=1795000000",
        "/simple/price?ids=bitcoin,shiba-inu&vs_currencies=usd,btc&include_24hr_change=true",
    ]
    bodies = []
    for _ in range(2):
        with ReplayServer(clock="2026-11-20T09:17:00Z") as server:
            bodies.append([requests.get(server.url + p, timeout=30).content for p in paths])
    assert bodies[0] == bodies[1]

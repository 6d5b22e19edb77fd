"""/coins/{id}/market_chart/range: granularity, history limit, errors, and the dataset's time mapping."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import json
import math
import time
from importlib import resources
from itertools import pairwise

import requests

from cryptopipe.replay import ReplayServer
from cryptopipe.replay.api import Market, market_chart_range
from cryptopipe.replay.dataset import HISTORY_SHIFT_DAYS, PIVOT_DAY, get_dataset
from cryptopipe.replay.timeutil import SERVED_START_DAY
from tests.conftest import shared_path

NOW = int(dt.datetime(2026, 11, 22, 14, tzinfo=dt.UTC).timestamp())
DAY = 86_400


def _chart(server: ReplayServer, coin: str, start: object, end: object, **extra: str) -> requests.Response:
    params = {"vs_currency": "usd", "from": start, "to": end}
    return requests.get(f"{server.url}/coins/{coin}/market_chart/range", params=params, timeout=30, **extra)


def _steps(points: list[list[float]]) -> list[int]:
    return [b[0] - a[0] for a, b in pairwise(points)]


def test_one_day_is_five_minutely(replay: ReplayServer) -> None:
    body = _chart(replay, "bitcoin", NOW - DAY, NOW).json()
    assert set(body) == {"prices", "market_caps", "total_volumes"}
    prices = body["prices"]
    assert 285 <= len(prices) <= 289
    assert all(290_000 <= s <= 310_000 for s in _steps(prices))
    assert [p[0] for p in prices] == [p[0] for p in body["market_caps"]] == [p[0] for p in body["total_volumes"]]


def test_thirty_days_are_hourly_and_not_on_the_hour(replay: ReplayServer) -> None:
    prices = _chart(replay, "ethereum", NOW - 30 * DAY, NOW).json()["prices"]
    assert 719 <= len(prices) <= 721
    assert all(3_400_000 <= s <= 3_800_000 for s in _steps(prices))
    assert all(p[0] % 3_600_000 != 0 for p in prices)
    assert all(NOW * 1000 - 30 * DAY * 1000 <= p[0] <= NOW * 1000 for p in prices)


def test_long_ranges_are_daily_at_midnight(replay: ReplayServer) -> None:
    body = _chart(replay, "cardano", NOW - 200 * DAY, NOW).json()
    midnight = [p for p in body["prices"] if p[0] % 86_400_000 == 0]
    assert len(midnight) in (199, 200) and len(body["prices"]) == len(midnight) + 1  # + the latest price
    assert body["prices"][-1][0] <= NOW * 1000


def test_no_data_after_the_clock(replay: ReplayServer) -> None:
    prices = _chart(replay, "bitcoin", NOW - 3600, NOW + 10 * DAY).json()["prices"]
    assert prices and max(p[0] for p in prices) <= NOW * 1000


def test_iso_dates_are_accepted(replay: ReplayServer) -> None:
    iso = _chart(replay, "solana", "2026-11-01", "2026-11-03T00:00:00Z").json()
    unix = _chart(replay, "solana", NOW - 21 * DAY - 14 * 3600, NOW - 19 * DAY - 14 * 3600).json()
    assert iso == unix and len(iso["prices"]) == 48


def test_unknown_coin_is_404_like_the_real_api(replay: ReplayServer) -> None:
    answer = _chart(replay, "no-such-coin", NOW - DAY, NOW)
    assert answer.status_code == 404
    assert answer.json() == json.loads(shared_path("coingecko", "error_coin_not_found.json").read_text())


def test_keyless_history_is_limited_to_365_days(replay: ReplayServer) -> None:
    real = json.loads(shared_path("coingecko", "error_10012_demo_365_day_limit.json").read_text())
    answer = _chart(replay, "bitcoin", NOW - 400 * DAY, NOW - 300 * DAY)
    assert answer.status_code == 401
    status = answer.json()["error"]["status"]
    assert set(status) == set(real["error"]["status"])
    assert status["error_code"] == 10012 and status["error_message"] == real["error"]["status"]["error_message"]
    assert status["timestamp"] == "2026-11-22T14:00:00.000+00:00"
    assert _chart(replay, "bitcoin", NOW - 364 * DAY, NOW - 300 * DAY).status_code == 200
    pro = _chart(replay, "bitcoin", NOW - 400 * DAY, NOW - 300 * DAY, headers={"x-cg-pro-api-key": "k"})
    assert pro.status_code == 200 and len(pro.json()["prices"]) == 100  # daily: 100 midnights


def test_daily_points_are_the_real_history_shifted() -> None:
    """A real close on day D is served on day D + HISTORY_SHIFT_DAYS, exactly."""
    market = Market(get_dataset())
    blob = resources.files("cryptopipe.replay").joinpath("data").joinpath("btc-usd-max.csv.gz").read_bytes()
    rows = {r["snapped_at"][:10]: r for r in csv.DictReader(gzip.decompress(blob).decode().splitlines())}
    real_day = dt.date(2021, 1, 15)
    served = dt.datetime.combine(real_day + dt.timedelta(days=HISTORY_SHIFT_DAYS), dt.time(), dt.UTC)
    start = int(served.timestamp())
    query = {"vs_currency": ["usd"], "from": [str(start)], "to": [str(start + 100 * DAY)]}
    body = market_chart_range(market, "bitcoin", query, NOW * 1000, history_limited=False).body
    first, cap, vol = body["prices"][0], body["market_caps"][0], body["total_volumes"][0]
    assert first[0] == start * 1000
    real = rows[real_day.isoformat()]
    assert math.isclose(first[1], float(real["price"]), rel_tol=1e-12)
    assert math.isclose(cap[1], float(real["market_cap"]), rel_tol=1e-9)
    assert math.isclose(vol[1], float(real["total_volume"]), rel_tol=1e-12)


def test_hourly_nodes_pass_through_the_daily_closes_and_mirror_continuously() -> None:
    ds = get_dataset()
    coin = ds.by_id["shiba-inu"]
    for day in range(20_000, 20_030):
        assert ds.day_nodes(coin.index, day)[0] == coin.logp[ds.day_index(day)]
        assert ds.day_nodes(coin.index, day)[24] == ds.day_nodes(coin.index, day + 1)[0]
        assert ds.sub_nodes(coin.index, day * 24)[0] == ds.hour_log(coin.index, day * 24)
    # beyond the end of real history the series is reflected in time: continuous at the turning point
    pivot = PIVOT_DAY - SERVED_START_DAY
    assert all(coin.logp[pivot + k] == coin.logp[pivot - k] for k in range(1, 300))
    assert coin.logp[pivot + 1] != coin.logp[pivot]


def test_ninety_day_hourly_range_is_fast() -> None:
    market = Market(get_dataset())
    query = {"vs_currency": ["usd"], "from": [str(NOW - 90 * DAY - 7 * 3600)], "to": [str(NOW - 7 * 3600)]}
    started = time.perf_counter()
    body = market_chart_range(market, "litecoin", query, NOW * 1000, history_limited=False).body
    elapsed = time.perf_counter() - started
    assert len(body["prices"]) >= 2159
    assert elapsed < 0.25, f"90-day hourly range took {elapsed * 1000:.0f} ms"

"""Indicator numbers against independent references: textbook formulas written here, and talipp.

Tolerances (also in docs/indicators.md):
- textbook formulas with the same seeding as ours: relative 1e-9 (SMA, EMA, Bollinger, volatility, z-score,
  returns; RSI absolute 1e-7 points); support/resistance exact;
- talipp: SMA, EMA, Bollinger relative 1e-9 everywhere; RSI and MACD seed differently (talipp seeds RSI with 13
  changes, MACD's fast EMA from the first price), so they are compared after a burn-in where the seed has decayed
  below the tolerance: RSI absolute 1e-6 points after 250 steps, MACD relative 1e-7 of price after 200 steps.
"""

from __future__ import annotations

import csv
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from talipp.indicators import BB, EMA, MACD, RSI, SMA

from cryptopipe.core.layout import HOUR
from cryptopipe.transform.engine import ANNUALISE, FLAT_RSI, MAX_FILL_HOURS, TREND_BAND
from cryptopipe.transform.indicators import (
    Params,
    build_grid,
    series_indicators,
    snapshot_rows,
)
from tests.conftest import shared_path
from tests.unit.transform.builders import fixture_prices, series_table

RTOL = 1e-9
END = datetime(2026, 3, 1, 14, tzinfo=UTC)


# --- textbook references -------------------------------------------------------------------------------------


def ref_sma(x: np.ndarray, n: int) -> np.ndarray:
    out = np.full(len(x), np.nan)
    if len(x) >= n:
        out[n - 1 :] = sliding_window_view(x, n).mean(axis=1)
    return out


def ref_ema(x: np.ndarray, n: int) -> np.ndarray:
    """Seeded with the SMA of the first n values, then e = a*x + (1-a)*e with a = 2/(n+1)."""
    out = np.full(len(x), np.nan)
    if len(x) < n:
        return out
    a = 2.0 / (n + 1)
    e = float(np.mean(x[:n]))
    out[n - 1] = e
    for i in range(n, len(x)):
        e = a * x[i] + (1 - a) * e
        out[i] = e
    return out


def ref_rsi(x: np.ndarray, n: int = 14) -> np.ndarray:
    """Wilder: averages seeded with the mean of the first n gains/losses, then avg = (avg*(n-1) + new)/n."""
    out = np.full(len(x), np.nan)
    d = np.diff(x)
    if len(d) < n:
        return out
    gain, loss = np.maximum(d, 0), np.maximum(-d, 0)
    ag, al = gain[:n].mean(), loss[:n].mean()
    for i in range(n, len(x)):
        if i > n:
            ag = (ag * (n - 1) + gain[i - 1]) / n
            al = (al * (n - 1) + loss[i - 1]) / n
        out[i] = FLAT_RSI if ag + al == 0 else 100.0 * ag / (ag + al)
    return out


def ref_bollinger(x: np.ndarray, n: int = 20, k: float = 2.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    mid = ref_sma(x, n)
    std = np.full(len(x), np.nan)
    std[n - 1 :] = sliding_window_view(x, n).std(axis=1, ddof=0)  # population std
    return mid + k * std, mid, mid - k * std


def ref_volatility(x: np.ndarray, n: int = 168) -> np.ndarray:
    lr = np.diff(np.log(x))
    out = np.full(len(x), np.nan)
    for i in range(n, len(x)):
        out[i] = np.std(lr[i - n : i], ddof=1) * math.sqrt(24 * 365)
    return out


def ref_zscore(x: np.ndarray, w: int) -> np.ndarray:
    r = x[1:] / x[:-1] - 1
    out = np.full(len(x), np.nan)
    for i in range(w, len(r)):  # r[i] against r[i-w .. i-1]
        prev = r[i - w : i]
        sd = np.std(prev, ddof=1)
        if sd > 0:
            out[i + 1] = (r[i] - prev.mean()) / sd
    return out


def assert_close(actual: np.ndarray, expected: np.ndarray, rtol: float = RTOL, atol: float = 0.0) -> None:
    assert np.array_equal(np.isnan(actual), np.isnan(expected)), "warm-up (null) rows differ"
    mask = ~np.isnan(expected)
    assert mask.any(), "nothing compared"
    np.testing.assert_allclose(actual[mask], expected[mask], rtol=rtol, atol=atol)


def talipp_values(indicator: object, n: int) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in list(indicator)[:n]], dtype=float)


# --- fixture series (never skip) ---------------------------------------------------------------------------

SERIES = ["btc", "shib"]


@pytest.fixture(params=SERIES)
def prices(request: pytest.FixtureRequest) -> np.ndarray:
    return fixture_prices(request.param)[1]


def test_fixture_covers_micro_prices() -> None:
    assert fixture_prices("shib")[1].min() < 1e-9  # the prices near 1e-10 the brief asks for


def test_textbook_reference(prices: np.ndarray) -> None:
    params = Params(zscore_window=48)
    v = series_indicators(prices, params)
    for n, name in ((168, "7d"),):
        assert_close(v[f"sma_{name}"], ref_sma(prices, n))
        assert_close(v[f"ema_{name}"], ref_ema(prices, n))
    assert_close(v["rsi_14"], ref_rsi(prices), rtol=0, atol=1e-7)
    upper, mid, lower = ref_bollinger(prices)
    assert_close(v["bb_middle"], mid)
    assert_close(v["bb_upper"], upper)
    assert_close(v["bb_lower"], lower)
    assert_close(v["bb_width"], (upper - lower) / mid, rtol=1e-7)
    assert_close(v["volatility_7d"], ref_volatility(prices))
    assert_close(v["zscore_1h"], ref_zscore(prices, 48), rtol=1e-7, atol=1e-9)
    expected_ret = np.concatenate([[np.nan], (prices[1:] / prices[:-1] - 1) * 100])
    assert_close(v["return_1h_pct"], expected_ret)
    expected_24 = np.concatenate([np.full(24, np.nan), (prices[24:] / prices[:-24] - 1) * 100])
    assert_close(v["return_24h_pct"], expected_24)
    win = sliding_window_view(prices, 168)
    assert np.array_equal(v["support_7d"][167:], win.min(axis=1))
    assert np.array_equal(v["resistance_7d"][167:], win.max(axis=1))
    assert np.isnan(v["support_7d"][:167]).all()


def test_macd_textbook_after_seed_decay(prices: np.ndarray) -> None:
    v = series_indicators(prices)
    macd = ref_ema(prices, 12) - ref_ema(prices, 26)
    valid = np.flatnonzero(~np.isnan(macd))
    signal = np.full(len(prices), np.nan)
    signal[valid] = ref_ema(macd[valid], 9)
    burn = 200
    scale = prices[burn:]
    assert np.all(np.abs(v["macd"][burn:] - macd[burn:]) <= 1e-7 * scale)
    assert np.all(np.abs(v["macd_signal"][burn:] - signal[burn:]) <= 1e-7 * scale)
    assert np.allclose(v["macd_hist"], v["macd"] - v["macd_signal"], equal_nan=True)
    # ta-lib's warm-up: 26 - 1 + 9 - 1 = 33 rows without MACD
    assert np.isnan(v["macd_signal"][:33]).all() and not np.isnan(v["macd_signal"][33])


def test_talipp_reference(prices: np.ndarray) -> None:
    values = [float(p) for p in prices]
    n = len(values)
    v = series_indicators(prices)
    assert_close(v["sma_7d"], talipp_values(SMA(168, values), n))
    assert_close(v["ema_7d"], talipp_values(EMA(168, values), n))
    bb = list(BB(20, 2.0, values))
    assert_close(v["bb_upper"], np.array([np.nan if b is None else b.ub for b in bb]))
    assert_close(v["bb_lower"], np.array([np.nan if b is None else b.lb for b in bb]))
    rsi = talipp_values(RSI(14, values), n)
    np.testing.assert_allclose(v["rsi_14"][250:], rsi[250:], rtol=0, atol=1e-6)
    macd = list(MACD(12, 26, 9, values))
    ref_macd = np.array([np.nan if m is None else m.macd for m in macd])
    ref_signal = np.array([np.nan if m is None or m.signal is None else m.signal for m in macd])
    burn = 200
    assert np.all(np.abs(v["macd"][burn:] - ref_macd[burn:]) <= 1e-7 * prices[burn:])
    assert np.all(np.abs(v["macd_signal"][burn:] - ref_signal[burn:]) <= 1e-7 * prices[burn:])


def test_micro_prices_are_not_degenerate() -> None:
    """Old ta-lib-bin returned std 0 / RSI 0 below ~1e-5; prices near 1e-10 must give real numbers."""
    rng = np.random.default_rng(3)
    x = 1e-10 * np.exp(np.cumsum(rng.normal(0, 0.01, 400)))
    v = series_indicators(x)
    upper, _, lower = ref_bollinger(x)
    assert_close(v["bb_upper"], upper)
    assert_close(v["bb_lower"], lower)
    assert np.nanmin(v["bb_width"]) > 0
    assert_close(v["rsi_14"], ref_rsi(x), rtol=0, atol=1e-7)
    assert 0 < np.nanmin(v["rsi_14"]) < np.nanmax(v["rsi_14"]) < 100
    assert_close(v["volatility_7d"], ref_volatility(x))
    assert 0.5 < v["volatility_7d"][-1] / (0.01 * ANNUALISE) < 1.5  # the volatility we simulated


def test_flat_series() -> None:
    x = np.full(300, 2.5e-10)
    v = series_indicators(x)
    assert (v["rsi_14"][14:] == FLAT_RSI).all() and np.isnan(v["rsi_14"][:14]).all()
    assert (v["bb_width"][19:] == 0).all()
    assert (v["bb_upper"][19:] == x[19:]).all() and (v["bb_lower"][19:] == x[19:]).all()
    assert np.isnan(v["zscore_1h"]).all()  # std of returns is 0: undefined, not 0 or inf
    assert (v["volatility_7d"][168:] == 0).all()
    assert (v["return_1h_pct"][1:] == 0).all()
    assert list(v["trend"][-3:]) == [None, None, None]  # 30d SMA needs 720 h; 300 h is still warm-up
    assert (v["support_7d"][167:] == x[167:]).all() and (v["resistance_7d"][167:] == x[167:]).all()


def test_flat_then_jump_rsi_and_z() -> None:
    x = np.concatenate([np.full(200, 1.0), [1.2]])
    v = series_indicators(x)
    assert v["rsi_14"][-1] == 100.0  # the only move is a gain
    assert np.isnan(v["zscore_1h"][-1])  # the previous 168 returns are all 0: z undefined


def test_warm_up_rows() -> None:
    x = np.linspace(1.0, 2.0, 800)
    v = series_indicators(x)
    first_valid = {
        name: int(np.flatnonzero(~np.isnan(arr))[0])
        for name, arr in v.items()
        if name not in {"trend", "sma_90d", "ema_90d"}
    }
    assert first_valid["sma_7d"] == 167 and first_valid["ema_7d"] == 167 and first_valid["sma_30d"] == 719
    assert first_valid["rsi_14"] == 14 and first_valid["macd"] == 33 and first_valid["bb_upper"] == 19
    assert first_valid["volatility_7d"] == 168 and first_valid["zscore_1h"] == 169
    assert first_valid["support_7d"] == 167 and first_valid["return_24h_pct"] == 24
    assert np.isnan(v["sma_90d"]).all() and np.isnan(v["ema_90d"]).all()  # 2160 h > 800 h of history
    trend_valid = [i for i, t in enumerate(v["trend"]) if t is not None]
    assert trend_valid[0] == 719  # SMA 30d and the 24h slope of SMA 7d both known


def test_trend_directions() -> None:
    up = series_indicators(np.exp(np.linspace(0, 1, 800)))["trend"][-1]
    down = series_indicators(np.exp(np.linspace(1, 0, 800)))["trend"][-1]
    x = np.exp(np.linspace(0, 1, 800))
    x[-700:] = x[-700]  # rose, then flat for 700 h: SMA 7d flat and within the band of SMA 30d
    flat = series_indicators(x)
    assert (up, down) == ("up", "down")
    assert abs(flat["sma_7d"][-1] / flat["sma_30d"][-1] - 1) <= TREND_BAND
    assert flat["trend"][-1] == "flat"
    # above the 30d SMA by more than the band but the 7d SMA falling: not "up"
    y = np.concatenate([np.exp(np.linspace(0, 1, 700)), np.exp(np.linspace(1, 0.9, 200))])
    mixed = series_indicators(y)
    assert mixed["sma_7d"][-1] / mixed["sma_30d"][-1] - 1 > TREND_BAND
    assert mixed["trend"][-1] == "flat"


# --- the grid: regularisation and gaps ---------------------------------------------------------------------


def _table(points: dict[str, list[tuple[int, float]]]) -> object:
    """Rows at hour offsets (0 = snapshot, -1 = one hour before ...)."""
    import pyarrow as pa

    from cryptopipe.core.schema import SNAPSHOT_SCHEMA
    from cryptopipe.core.tables import conform

    rows = [
        {"coin_id": c, "vs_currency": "usd", "snapshot_time": END + h * HOUR, "price": p, "source": "t"}
        for c, pts in points.items()
        for h, p in pts
    ]
    return conform(pa.Table.from_pylist(rows), SNAPSHOT_SCHEMA)


def test_grid_fills_short_gaps_and_cuts_long_ones() -> None:
    short_gap = [(h, 100.0 + h) for h in range(-50, 1) if not -20 < h < -20 + MAX_FILL_HOURS + 1]
    long_gap = [(h, 5.0) for h in range(-50, 1) if not -20 < h < -20 + MAX_FILL_HOURS + 2]
    grid = build_grid(_table({"a": short_gap, "b": long_gap}), END, 60)
    a, b = grid.series_index()[("a", "usd")], grid.series_index()[("b", "usd")]
    assert grid.segment_start(a) == 9  # from the first observation (hour -50 is row 9 of 60)
    assert not np.isnan(grid.filled[9:, a]).any()
    assert np.isnan(grid.observed[-15, a]) and grid.filled[-15, a] == grid.observed[-21, a]  # carried, not interpolated
    assert grid.segment_start(b) == 60 - 20 + MAX_FILL_HOURS + 1  # restarts after the unfillable gap
    rows = {r["coin_id"]: r for r in snapshot_rows(grid, Params())}
    assert rows["a"]["history_hours"] == 51 and rows["b"]["history_hours"] == 20 - MAX_FILL_HOURS - 1
    assert rows["a"]["filled_hours_7d"] == MAX_FILL_HOURS and rows["b"]["filled_hours_7d"] == 0


def test_no_row_without_an_observation_at_the_snapshot() -> None:
    grid = build_grid(_table({"a": [(h, 1.0) for h in range(-10, 0)], "b": [(0, 2.0)]}), END, 24)
    assert [r["coin_id"] for r in snapshot_rows(grid, Params())] == ["b"]  # a's last price is not carried


def test_grid_rounds_up_to_the_hour_and_later_row_wins() -> None:
    import pyarrow as pa

    from cryptopipe.core.schema import SNAPSHOT_SCHEMA
    from cryptopipe.core.tables import conform

    rows = [
        {"coin_id": "a", "vs_currency": "usd", "snapshot_time": END - timedelta(minutes=56), "price": 1.0},
        {"coin_id": "a", "vs_currency": "usd", "snapshot_time": END - timedelta(minutes=10), "price": 2.0},
        {"coin_id": "a", "vs_currency": "usd", "snapshot_time": END - HOUR, "price": 3.0},
        {"coin_id": "a", "vs_currency": "usd", "snapshot_time": END + timedelta(minutes=1), "price": 9.0},
    ]
    table = conform(pa.Table.from_pylist([{**r, "source": "t"} for r in rows]), SNAPSHOT_SCHEMA)
    grid = build_grid(table, END, 3)
    assert grid.observed[:, 0].tolist()[1:] == [3.0, 2.0]  # beyond the snapshot: ignored


def test_fixture_with_calendar_gaps_through_the_grid() -> None:
    """SHIB's real multi-day gaps (2-5 days, one day = one hour here) are forward-filled like the textbook says."""
    days, prices = fixture_prices("shib")
    offsets = [(d - days[-1]).days for d in days]
    grid = build_grid(_table({"shib": list(zip(offsets, prices, strict=True))}), END, 400)
    filled = np.full(offsets[-1] - offsets[0] + 1, np.nan)
    filled[np.array(offsets) - offsets[0]] = prices
    for i in range(1, len(filled)):  # gaps here are at most 4 missing steps < MAX_FILL_HOURS
        if np.isnan(filled[i]):
            filled[i] = filled[i - 1]
    row = snapshot_rows(grid, Params(zscore_window=48))[0]
    assert row["history_hours"] == len(filled)
    assert row["sma_7d"] == pytest.approx(ref_sma(filled, 168)[-1], rel=RTOL)
    assert row["rsi_14"] == pytest.approx(ref_rsi(filled)[-1], abs=1e-7)
    assert row["zscore_1h"] == pytest.approx(ref_zscore(filled, 48)[-1], rel=1e-7)
    assert row["filled_hours_7d"] > 0


# --- real history (../shared), all windows --------------------------------------------------------------------


@pytest.mark.parametrize("coin", ["btc", "shib"])
def test_real_history_all_windows(coin: str) -> None:
    path = shared_path("market-history", "coingecko-daily", f"{coin}-usd-max.csv")
    with path.open() as fh:
        x = np.array([float(r["price"]) for r in csv.DictReader(fh)])
    v = series_indicators(x)
    for name, n in (("7d", 168), ("30d", 720), ("90d", 2160)):
        if n > len(x):  # shib has 429 days: the long windows stay in warm-up
            assert np.isnan(v[f"sma_{name}"]).all() and np.isnan(v[f"ema_{name}"]).all()
            continue
        assert_close(v[f"sma_{name}"], ref_sma(x, n))
        assert_close(v[f"ema_{name}"], ref_ema(x, n))
    assert_close(v["rsi_14"], ref_rsi(x), rtol=0, atol=1e-7)
    upper, mid, lower = ref_bollinger(x)
    assert_close(v["bb_middle"], mid)
    assert_close(v["bb_upper"], upper)
    assert_close(v["bb_lower"], lower)
    assert_close(v["volatility_7d"], ref_volatility(x))
    assert_close(v["zscore_1h"], ref_zscore(x, 168), rtol=1e-7, atol=1e-9)


def test_grid_from_series_table_matches_direct_computation() -> None:
    rng = np.random.default_rng(5)
    x = 50 * np.exp(np.cumsum(rng.normal(0, 0.01, 500)))
    table = series_table({"c": x}, END - 499 * HOUR)
    row = snapshot_rows(build_grid(table, END, 500), Params())[0]
    direct = series_indicators(x)
    for name in ("sma_7d", "ema_7d", "rsi_14", "macd", "bb_width", "volatility_7d", "zscore_1h"):
        # the stage's vectorised engine vs the per-series path: same numbers up to rounding (docs/indicators.md)
        assert row[name] == pytest.approx(direct[name][-1], rel=RTOL)

"""Technical indicators per (coin, quote currency) on the hourly price series of the lookback window.

The math is ta-lib's (SMA, EMA, RSI, MACD, Bollinger bands) where ta-lib has it, and pandas rolling windows for
the rest; every definition, warm-up rule and edge case is written down in docs/indicators.md and proven against
an independent reference in tests/unit/transform/.

Pipeline of one run: the window's rows → a regular hourly grid (hours x series, NaN where no observation) →
forward-fill of short gaps (at most MAX_FILL_HOURS) → per series, the contiguous segment that ends at the
snapshot → the indicators at the snapshot. Longer gaps cut the series: the indicators warm up again after them,
they are never bridged with invented prices. The stage computes the snapshot values for all series (and, in
range mode, all snapshots) at once with engine.py; ``series_indicators`` is the per-series ta-lib/pandas
definition of the same numbers (whole arrays), used for the charts and as the tests' reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import talib

from cryptopipe.transform.schema import INDICATORS_SCHEMA

if TYPE_CHECKING:
    from cryptopipe.transform.engine import Prepared

HOUR_MS = 3_600_000
WINDOWS = {"7d": 168, "30d": 720, "90d": 2160}  # SMA/EMA windows in hours
RSI_PERIOD = 14
MACD_FAST, MACD_SLOW, MACD_SIGNAL = 12, 26, 9
BB_PERIOD, BB_STDDEV = 20, 2.0
VOL_WINDOW = 168
ANNUALISE = math.sqrt(24 * 365)
SR_WINDOW = 168  # support/resistance: rolling min/max over 7 days
TREND_SLOPE_HOURS = 24
TREND_BAND = 0.01  # |SMA 7d / SMA 30d - 1| within 1% is "flat"
MAX_FILL_HOURS = 6
FLAT_RSI = 50.0
HOURS_PER_DAY = 24


@dataclass(frozen=True)
class Params:
    zscore_window: int = 168


@dataclass
class Grid:
    """Prices on a regular hourly grid ending at the last snapshot: ``observed[t, s]`` (NaN = no row).

    ``window``: the lookback of one snapshot in hours (0 = the whole grid). A grid built for the stage starts at
    the accumulator anchor of its first snapshot (engine.py), up to 23 hours before that snapshot's window.
    """

    times: np.ndarray  # datetime64[ms], length T, the last one is the (last) snapshot time
    coin_ids: list[str]
    vs_currencies: list[str]
    observed: np.ndarray  # float64 [T, S]
    filled: np.ndarray  # observed with gaps of at most MAX_FILL_HOURS forward-filled
    window: int = 0

    def series_index(self) -> dict[tuple[str, str], int]:
        return {(c, v): i for i, (c, v) in enumerate(zip(self.coin_ids, self.vs_currencies, strict=True))}

    def segment_start(self, s: int) -> int:
        """First row of the contiguous (no NaN after filling) segment that ends at the snapshot."""
        missing = np.flatnonzero(np.isnan(self.filled[:, s]))
        return int(missing[-1]) + 1 if missing.size else 0

    def window_grid(self, k: int | None = None) -> Grid:
        """The grid one per-interval run saw for snapshot row ``k`` (default: the last): its window only."""
        k = len(self.times) - 1 if k is None else k
        lo = max(0, k + 1 - (self.window or len(self.times)))
        observed = self.observed[lo : k + 1]
        filled = pd.DataFrame(observed).ffill(limit=MAX_FILL_HOURS).to_numpy() if observed.size else observed.copy()
        return Grid(self.times[lo : k + 1], self.coin_ids, self.vs_currencies, observed, filled)

    def anchors(self, ks: np.ndarray) -> np.ndarray:
        """Accumulator anchor of each snapshot row: 01:00 of the UTC day of its window's first partition."""
        window = self.window or len(self.times)
        first_snapshot = self.times[0].astype("datetime64[h]").astype(np.int64)
        window_start = first_snapshot + np.asarray(ks, dtype=np.int64) - window + 1  # hours since epoch
        partition_day = (window_start - 1) // HOURS_PER_DAY
        return np.maximum(partition_day * HOURS_PER_DAY + 1 - first_snapshot, 0)


def build_grid(table: pa.Table, snapshot_time: datetime, hours: int, window: int = 0) -> Grid:
    """Regularise rows (coin_id, vs_currency, snapshot_time, price) to ``hours`` hourly points ending at snapshot.

    A row's grid hour is its snapshot time rounded up to the hour (ingest snapshots are on the hour; backfill
    points a few minutes past it belong to the next hour's close). Two rows on one grid hour: the later wins.
    Non-positive or non-finite prices count as missing.
    """
    end_ms = int(snapshot_time.timestamp() * 1000)
    first_ms = end_ms - (hours - 1) * HOUR_MS
    keys = pc.binary_join_element_wise(table.column("coin_id"), table.column("vs_currency"), "\x1f")
    labels = sorted(set(keys.to_pylist()))
    codes = pc.index_in(keys, pa.array(labels, pa.string())).to_numpy(zero_copy_only=False)
    ts_ms = table.column("snapshot_time").cast(pa.int64()).to_numpy(zero_copy_only=False)
    price = table.column("price").to_numpy(zero_copy_only=False).astype(np.float64)
    grid_ms = -(-ts_ms // HOUR_MS) * HOUR_MS
    t_idx = (grid_ms - first_ms) // HOUR_MS
    keep = (t_idx >= 0) & (t_idx < hours) & np.isfinite(price) & (price > 0)
    t_idx, s_idx, ts_ms, price = t_idx[keep], codes[keep], ts_ms[keep], price[keep]
    # The last row per (series, hour) wins: sort by series, hour, time and keep the last of each run.
    order = np.lexsort((ts_ms, t_idx, s_idx))
    cell = s_idx[order] * hours + t_idx[order]
    last = np.append(cell[1:] != cell[:-1], True)
    chosen = order[last]
    observed = np.full((hours, len(labels)), np.nan)
    observed[t_idx[chosen], s_idx[chosen]] = price[chosen]
    filled = pd.DataFrame(observed).ffill(limit=MAX_FILL_HOURS).to_numpy() if labels else observed.copy()
    times = (np.arange(hours, dtype=np.int64) * HOUR_MS + first_ms).astype("datetime64[ms]")
    pairs = [label.split("\x1f", 1) for label in labels]
    return Grid(times, [p[0] for p in pairs], [p[1] for p in pairs], observed, filled, window)


def _rsi(x: np.ndarray) -> np.ndarray:
    rsi = talib.RSI(x, RSI_PERIOD)
    # ta-lib gives 0 when neither gains nor losses happened yet; we define a series that never moved as neutral.
    moves = np.concatenate([[0], np.cumsum(np.diff(x) != 0)])
    rsi[~np.isnan(rsi) & (moves == 0)] = FLAT_RSI
    return rsi


def _bollinger(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    upper, middle, lower = talib.BBANDS(x, BB_PERIOD, BB_STDDEV, BB_STDDEV, 0)  # population std, SMA middle
    s = pd.Series(x)
    flat = (s.rolling(BB_PERIOD).max() == s.rolling(BB_PERIOD).min()).to_numpy()
    # A constant window has std 0 exactly (ta-lib's running sums may leave an ulp of noise).
    upper[flat], lower[flat] = middle[flat], middle[flat]
    with np.errstate(divide="ignore", invalid="ignore"):
        width = (upper - lower) / middle
    return upper, middle, lower, width


def _trend(sma_7d: np.ndarray, sma_30d: np.ndarray) -> np.ndarray:
    """'up' / 'down' / 'flat' per hour from the 7d-vs-30d SMA spread and the 24h slope of the 7d SMA."""
    out = np.full(sma_7d.shape, None, dtype=object)
    prev = np.concatenate([np.full(min(TREND_SLOPE_HOURS, len(sma_7d)), np.nan), sma_7d[:-TREND_SLOPE_HOURS]])
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = sma_7d / sma_30d - 1.0
        slope = sma_7d / prev - 1.0
    known = ~np.isnan(spread) & ~np.isnan(slope)
    out[known] = "flat"
    out[known & (spread > TREND_BAND) & (slope > 0)] = "up"
    out[known & (spread < -TREND_BAND) & (slope < 0)] = "down"
    return out


def series_indicators(x: np.ndarray, params: Params = Params()) -> dict[str, np.ndarray]:
    """Every indicator as an array aligned with ``x`` (one contiguous hourly price series, no NaN, > 0)."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    s = pd.Series(x)
    out: dict[str, np.ndarray] = {}
    for name, n in WINDOWS.items():
        out[f"sma_{name}"] = talib.SMA(x, n)
        out[f"ema_{name}"] = talib.EMA(x, n)
    out["rsi_14"] = _rsi(x)
    out["macd"], out["macd_signal"], out["macd_hist"] = talib.MACD(x, MACD_FAST, MACD_SLOW, MACD_SIGNAL)
    out["bb_upper"], out["bb_middle"], out["bb_lower"], out["bb_width"] = _bollinger(x)
    ret = s.pct_change(fill_method=None)
    out["return_1h_pct"] = (ret * 100.0).to_numpy()
    out["return_24h_pct"] = (s.pct_change(24, fill_method=None) * 100.0).to_numpy()
    log_ret = np.log(s).diff()
    out["volatility_7d"] = (log_ret.rolling(VOL_WINDOW).std(ddof=1) * ANNUALISE).to_numpy()
    # z of this hour's return against the previous `zscore_window` returns (the current one excluded).
    mean = ret.rolling(params.zscore_window).mean().shift(1)
    std = ret.rolling(params.zscore_window).std(ddof=1).shift(1)
    z = ((ret - mean) / std).to_numpy(copy=True)
    z[~(std.to_numpy() > 0)] = np.nan
    out["zscore_1h"] = z
    out["support_7d"] = s.rolling(SR_WINDOW).min().to_numpy()
    out["resistance_7d"] = s.rolling(SR_WINDOW).max().to_numpy()
    out["trend"] = _trend(out["sma_7d"], out["sma_30d"])
    return out


FLOAT_COLUMNS = [
    f.name for f in INDICATORS_SCHEMA if pa.types.is_floating(f.type) and f.name not in {"price", "market_cap"}
]


def _nullable(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def snapshot_rows(grid: Grid, params: Params, k: int | None = None) -> list[dict[str, object]]:
    """One dict per series with an observed price at snapshot row ``k`` (never a filled one): its indicators."""
    return snapshot_rows_many(grid, params, [len(grid.times) - 1 if k is None else k])[0]


def snapshot_rows_many(
    grid: Grid, params: Params, ks: list[int], prepared: Prepared | None = None
) -> list[list[dict[str, object]]]:
    """snapshot_rows for many snapshot rows of one grid, computed together (engine.py).

    ``prepared``: ``engine.prepare(grid.observed, grid.filled)`` when the caller computes the grid in chunks.
    """
    from cryptopipe.transform.engine import compute, prepare

    karr = np.asarray(ks, dtype=np.int64)
    window = grid.window or len(grid.times)
    result = compute(
        grid.observed,
        prepared if prepared is not None else prepare(grid.observed, grid.filled),
        karr,
        window=window,
        anchors=grid.anchors(karr),
        zscore_window=params.zscore_window,
    )
    out: list[list[dict[str, object]]] = []
    for i, k in enumerate(karr):
        snapshot = pd.Timestamp(grid.times[k], tz="UTC").to_pydatetime()
        series = np.flatnonzero(result.has_row[i])
        columns = {name: result.values[name][i, series].tolist() for name in FLOAT_COLUMNS}
        trend = result.values["trend"][i, series].tolist()
        rows = []
        for j, s in enumerate(series):
            row: dict[str, object] = {
                "coin_id": grid.coin_ids[s],
                "vs_currency": grid.vs_currencies[s],
                "snapshot_time": snapshot,
                "price": float(grid.observed[k, s]),
                "trend": trend[j],
                "history_hours": int(result.history_hours[i, s]),
                "filled_hours_7d": int(result.filled_hours_7d[i, s]),
            }
            for name in FLOAT_COLUMNS:
                row[name] = _nullable(columns[name][j])
            for name in WINDOWS:
                row[f"warm_{name}"] = row[f"sma_{name}"] is not None
            rows.append(row)
        out.append(rows)
    return out


def indicators_table(
    grid: Grid, current: pa.Table, params: Params, rows: list[dict[str, object]] | None = None
) -> pa.Table:
    """The snapshot rows joined with the interval's own descriptive fields, sorted by (coin_id, vs_currency)."""
    rows = snapshot_rows(grid, params) if rows is None else rows
    meta = {
        (r["coin_id"], r["vs_currency"]): r
        for r in current.select(
            ["coin_id", "vs_currency", "symbol", "name", "market_cap", "market_cap_rank"]
        ).to_pylist()
    }
    for row in rows:
        info = meta.get((row["coin_id"], row["vs_currency"]), {})
        for name in ("symbol", "name", "market_cap", "market_cap_rank"):
            row[name] = info.get(name)
    rows.sort(key=lambda r: (r["coin_id"], r["vs_currency"]))
    return pa.Table.from_pylist(rows, schema=INDICATORS_SCHEMA)

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

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import talib

from cryptopipe.transform.engine import (  # the indicator definitions (engine.py holds them for both paths)
    ANNUALISE,
    BB_PERIOD,
    BB_STDDEV,
    FLAT_RSI,
    MACD_FAST,
    MACD_SIGNAL,
    MACD_SLOW,
    MAX_FILL_HOURS,
    RSI_PERIOD,
    SR_WINDOW,
    TREND_SLOPE_HOURS,
    VOL_WINDOW,
    WINDOWS,
    Prepared,
    compute,
    prepare,
    trend_labels,
)
from cryptopipe.transform.projection import DayPrices, concat_rows, series_codes
from cryptopipe.transform.schema import INDICATORS_SCHEMA

HOUR_MS = 3_600_000
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


def _where(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """values[mask], without the copy when every row is kept (the usual case)."""
    return values if mask.all() else values[mask]


def _label(coin: str, vs: str) -> str:
    return f"{coin}\x1f{vs}"


@dataclass
class _Rows:
    """Rows on the grid: series label codes, hour index, time and price of each (in the parts' order)."""

    names: list[str]  # label of each pair code
    pair: np.ndarray
    t_idx: np.ndarray
    ts_ms: np.ndarray
    price: np.ndarray

    @classmethod
    def of(cls, table: pa.Table, first_ms: int) -> _Rows:
        coin, coins, vs, currencies = series_codes(table)
        ts_ms = table.column("snapshot_time").cast(pa.int64()).to_numpy()
        if first_ms % HOUR_MS == 0:  # the usual case (snapshots on the hour): the same, in fewer passes
            t_idx = (ts_ms - (first_ms - HOUR_MS + 1)) // HOUR_MS
        else:
            t_idx = (-(-ts_ms // HOUR_MS) * HOUR_MS - first_ms) // HOUR_MS
        names = [_label(c, v) for c in coins for v in currencies]
        price = table.column("price").to_numpy().astype(np.float64)
        return cls(names, coin * len(currencies) + vs, t_idx, ts_ms, price)


def build_grid(
    parts: pa.Table | Sequence[pa.Table | DayPrices], snapshot_time: datetime, hours: int, window: int = 0
) -> Grid:
    """Regularise rows (coin_id, vs_currency, snapshot_time, price) to ``hours`` hourly points ending at snapshot.

    A row's grid hour is its snapshot time rounded up to the hour (ingest snapshots are on the hour; backfill
    points a few minutes past it belong to the next hour's close). Two rows on one grid hour: the later wins
    (equal times: the later row). Non-positive or non-finite prices count as missing. The series are those with
    a row in the grid's hours, sorted by (coin_id, vs_currency); the key columns may be dictionary-coded.
    ``parts``: a table, or tables and whole days (projection.DayPrices) in row order; a day is copied as a block
    when no other row falls on its hours (else everything goes through the rows, with the same result).
    """
    items = [parts] if isinstance(parts, pa.Table) else list(parts)
    end_ms = int(snapshot_time.timestamp() * 1000)
    first_ms = end_ms - (hours - 1) * HOUR_MS
    days: list[tuple[int, DayPrices]] = []
    tables = []
    for item in items:
        if not isinstance(item, DayPrices):
            tables.append(item)
            continue
        t0, off = divmod(item.first_ms - first_ms, HOUR_MS)
        if off == 0 and 0 <= t0 <= hours - HOURS_PER_DAY:
            days.append((t0, item))
        else:
            tables.append(item.to_rows())
    rows = _Rows.of(concat_rows(tables), first_ms)
    in_range = (rows.t_idx >= 0) & (rows.t_idx < hours)
    covered = np.zeros(hours, np.int64)
    for t0, _ in days:
        covered[t0 : t0 + HOURS_PER_DAY] += 1
    if days and (covered.max() > 1 or covered[_where(rows.t_idx, in_range)].any()):
        # a row shares an hour with a whole day: "the later row wins" needs every row
        flat_parts = [item.to_rows() if isinstance(item, DayPrices) else item for item in items]
        return build_grid(flat_parts, snapshot_time, hours, window)

    present = np.flatnonzero(np.bincount(_where(rows.pair, in_range), minlength=len(rows.names)))
    labels = {rows.names[i] for i in present}
    day_labels: list[list[str]] = []
    for _, day in days:
        if (
            day_labels
            and day.coin_id.equals(days[len(day_labels) - 1][1].coin_id)
            and day.vs_currency.equals(days[len(day_labels) - 1][1].vs_currency)
        ):
            day_labels.append(day_labels[-1])  # the same series as the day before (the usual case)
            continue
        names = [_label(c, v) for c, v in zip(day.coin_id.to_pylist(), day.vs_currency.to_pylist(), strict=True)]
        labels.update(names)
        day_labels.append(names)
    names = sorted(labels)
    column = {name: i for i, name in enumerate(names)}
    observed = np.full((hours, len(names)), np.nan)
    columns: list[str] | None = None
    for (t0, day), day_names in zip(days, day_labels, strict=True):
        if day_names is not columns:
            columns, cols = day_names, np.array([column[name] for name in day_names], np.int64)
        observed[t0 : t0 + HOURS_PER_DAY, cols] = day.values().T

    rank = np.zeros(len(rows.names), np.int64)
    rank[present] = [column[rows.names[i]] for i in present]
    keep = in_range & np.isfinite(rows.price) & (rows.price > 0)
    t_idx, s_idx, price = _where(rows.t_idx, keep), rank[_where(rows.pair, keep)], _where(rows.price, keep)
    flat = t_idx * len(names) + s_idx  # cell (hour, series) in the row-major grid
    before = np.count_nonzero(np.isnan(observed))
    observed.ravel()[flat] = price  # right when every cell has one row (validated data); prices are > 0
    if before - np.count_nonzero(np.isnan(observed)) != flat.size:  # a cell got two rows: the later wins
        # sort by series, hour, time (stable: equal times keep the row order) and keep the last of each run
        order_rows = np.lexsort((_where(rows.ts_ms, keep), t_idx, s_idx))
        sorted_cells = flat[order_rows]
        chosen = order_rows[np.append(sorted_cells[1:] != sorted_cells[:-1], True)]
        observed.ravel()[flat[chosen]] = price[chosen]
    filled = pd.DataFrame(observed).ffill(limit=MAX_FILL_HOURS).to_numpy() if names else observed.copy()
    times = (np.arange(hours, dtype=np.int64) * HOUR_MS + first_ms).astype("datetime64[ms]")
    pairs = [name.split("\x1f", 1) for name in names]
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
    prev = np.concatenate([np.full(min(TREND_SLOPE_HOURS, len(sma_7d)), np.nan), sma_7d[:-TREND_SLOPE_HOURS]])
    return trend_labels(sma_7d, sma_30d, prev)


# What a chart draws (charts.py): computing only these is ~2x cheaper than every indicator.
CHART_SERIES = frozenset({"sma_7d", "sma_30d", "bb_upper", "bb_lower", "rsi_14", "return_1h_pct", "zscore_1h"})


def series_indicators(
    x: np.ndarray, params: Params = Params(), only: frozenset[str] | None = None
) -> dict[str, np.ndarray]:
    """Every indicator (or those in ``only``) as an array aligned with ``x`` (one contiguous hourly price series,
    no NaN, > 0). A name in ``only`` gets the same array as without ``only``."""

    def wanted(*names: str) -> bool:
        return only is None or any(name in only for name in names)

    x = np.ascontiguousarray(x, dtype=np.float64)
    s = pd.Series(x)
    out: dict[str, np.ndarray] = {}
    for name, n in WINDOWS.items():
        if wanted(f"sma_{name}", "trend"):
            out[f"sma_{name}"] = talib.SMA(x, n)
        if wanted(f"ema_{name}"):
            out[f"ema_{name}"] = talib.EMA(x, n)
    if wanted("rsi_14"):
        out["rsi_14"] = _rsi(x)
    if wanted("macd", "macd_signal", "macd_hist"):
        out["macd"], out["macd_signal"], out["macd_hist"] = talib.MACD(x, MACD_FAST, MACD_SLOW, MACD_SIGNAL)
    if wanted("bb_upper", "bb_middle", "bb_lower", "bb_width"):
        out["bb_upper"], out["bb_middle"], out["bb_lower"], out["bb_width"] = _bollinger(x)
    ret = s.pct_change(fill_method=None)
    if wanted("return_1h_pct"):
        out["return_1h_pct"] = (ret * 100.0).to_numpy()
    if wanted("return_24h_pct"):
        out["return_24h_pct"] = (s.pct_change(24, fill_method=None) * 100.0).to_numpy()
    if wanted("volatility_7d"):
        log_ret = np.log(s).diff()
        out["volatility_7d"] = (log_ret.rolling(VOL_WINDOW).std(ddof=1) * ANNUALISE).to_numpy()
    if wanted("zscore_1h"):
        # z of this hour's return against the previous `zscore_window` returns (the current one excluded).
        mean = ret.rolling(params.zscore_window).mean().shift(1)
        std = ret.rolling(params.zscore_window).std(ddof=1).shift(1)
        z = ((ret - mean) / std).to_numpy(copy=True)
        z[~(std.to_numpy() > 0)] = np.nan
        out["zscore_1h"] = z
    if wanted("support_7d"):
        out["support_7d"] = s.rolling(SR_WINDOW).min().to_numpy()
    if wanted("resistance_7d"):
        out["resistance_7d"] = s.rolling(SR_WINDOW).max().to_numpy()
    if wanted("trend"):
        out["trend"] = _trend(out["sma_7d"], out["sma_30d"])
    return out


FLOAT_COLUMNS = [
    f.name for f in INDICATORS_SCHEMA if pa.types.is_floating(f.type) and f.name not in {"price", "market_cap"}
]
# Columns taken from the interval's own validated rows; the others come from the grid and the engine.
META_COLUMNS = ("symbol", "name", "market_cap", "market_cap_rank")
SNAPSHOT_ROW_SCHEMA = pa.schema([f for f in INDICATORS_SCHEMA if f.name not in META_COLUMNS])


def _floats(values: np.ndarray) -> pa.Array:
    """float64 with null where the value is NaN or infinite (no value: warm-up, degenerate window)."""
    return pa.array(values, pa.float64(), mask=~np.isfinite(values))


def snapshot_tables(grid: Grid, params: Params, ks: list[int], prepared: Prepared | None = None) -> list[pa.Table]:
    """Per snapshot row ``k``: one row per series with an observed price there (never a filled one), sorted by
    (coin_id, vs_currency), columns SNAPSHOT_ROW_SCHEMA; all snapshots computed together (engine.py).

    ``prepared``: ``engine.prepare(grid.observed, grid.filled)`` when the caller computes the grid in chunks.
    """

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
    by_key = np.array(
        sorted(range(len(grid.coin_ids)), key=lambda s: (grid.coin_ids[s], grid.vs_currencies[s])), dtype=np.int64
    )
    # Every snapshot's rows as one table (snapshot i's rows, then i+1's), sliced per snapshot: one Arrow array per
    # column instead of one per column and snapshot (a day of range mode: 24 x 30 small arrays).
    i_idx, j_idx = np.nonzero(result.has_row[:, by_key])
    series, k_idx = by_key[j_idx], karr[i_idx]
    coin_ids, vs_currencies = np.array(grid.coin_ids, dtype=object), np.array(grid.vs_currencies, dtype=object)
    columns: dict[str, pa.Array] = {
        "coin_id": pa.array(coin_ids[series], pa.string()),
        "vs_currency": pa.array(vs_currencies[series], pa.string()),
        "snapshot_time": pa.array(grid.times[k_idx]).cast(SNAPSHOT_ROW_SCHEMA.field(2).type),
        "price": pa.array(grid.observed[k_idx, series], pa.float64()),
        "trend": pa.array(result.values["trend"][i_idx, series], pa.string()),
        "history_hours": pa.array(result.history_hours[i_idx, series], pa.int32()),
        "filled_hours_7d": pa.array(result.filled_hours_7d[i_idx, series], pa.int32()),
    }
    for name in FLOAT_COLUMNS:
        columns[name] = _floats(result.values[name][i_idx, series])
    for name in WINDOWS:
        columns[f"warm_{name}"] = pa.array(np.isfinite(result.values[f"sma_{name}"][i_idx, series]), pa.bool_())
    table = pa.Table.from_arrays([columns[f.name] for f in SNAPSHOT_ROW_SCHEMA], schema=SNAPSHOT_ROW_SCHEMA)
    bounds = np.concatenate([[0], np.cumsum(np.bincount(i_idx, minlength=len(karr)))])
    return [table.slice(int(lo), int(hi - lo)) for lo, hi in itertools.pairwise(bounds)]


def snapshot_rows_many(
    grid: Grid, params: Params, ks: list[int], prepared: Prepared | None = None
) -> list[list[dict[str, object]]]:
    """snapshot_tables as dicts (one list per snapshot row): what the tests compare with the references."""
    return [table.to_pylist() for table in snapshot_tables(grid, params, ks, prepared)]


def snapshot_rows(grid: Grid, params: Params, k: int | None = None) -> list[dict[str, object]]:
    """One dict per series with an observed price at snapshot row ``k`` (default: the last)."""
    return snapshot_rows_many(grid, params, [len(grid.times) - 1 if k is None else k])[0]


def matching_rows(snapshot: pa.Table, current: pa.Table) -> pa.Array:
    """For each snapshot row, the row of ``current`` with its (coin_id, vs_currency), null where there is none
    (the last one of a duplicated key)."""
    keys = zip(current.column("coin_id").to_pylist(), current.column("vs_currency").to_pylist(), strict=True)
    index = {key: i for i, key in enumerate(keys)}
    wanted = zip(snapshot.column("coin_id").to_pylist(), snapshot.column("vs_currency").to_pylist(), strict=True)
    return pa.array([index.get(key) for key in wanted], pa.int64())


def indicators_table(snapshot: pa.Table, current: pa.Table, rows: pa.Array | None = None) -> pa.Table:
    """The snapshot rows joined with the interval's own descriptive fields (META_COLUMNS), INDICATORS_SCHEMA.

    ``rows``: ``matching_rows(snapshot, current)`` when the caller has it already.
    """
    rows = matching_rows(snapshot, current) if rows is None else rows
    meta = current.select(list(META_COLUMNS)).take(rows) if current.num_rows else None
    columns = []
    for field in INDICATORS_SCHEMA:
        if field.name in META_COLUMNS:
            values = meta.column(field.name) if meta is not None else pa.nulls(len(rows), field.type)
            columns.append(values.cast(field.type))
        else:
            columns.append(snapshot.column(field.name))
    return pa.Table.from_arrays(columns, schema=INDICATORS_SCHEMA)

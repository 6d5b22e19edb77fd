"""Vectorised indicators at many snapshot hours at once, for all series of the grid (hours x series).

Why this module: the per-series path (``indicators.series_indicators``: ta-lib + pandas, one series at a time)
costs ~0.5 s per run in Python overhead, and cannot serve a range of intervals, where each interval's EMAs are
seeded at its *own* window start ("EMA over the lookback window, SMA-seeded", docs/indicators.md). Recomputing
every window's recursion is O(window) per value; here every value is O(1) after shared accumulators:

- An EMA seeded at ``s0`` with ``seed`` is, at ``k``: ``q**L * seed + a * (G(k) - q**L * G(s0))`` with
  ``q = 1 - a``, ``L = k - s0`` and ``G(t) = q * G(t-1) + x[t]`` (the same algebra gives Wilder's RSI averages
  and, with one more accumulator, MACD's signal line). Sums over windows are differences of prefix sums.
- The accumulators start at an **anchor**: hour 01:00 (the first snapshot) of the UTC day of the window's first
  partition, a day the run reads anyway. Every interval whose window starts on that day shares the anchor, so a
  range of intervals runs one accumulation per day, and a single interval computes exactly the same floating
  point operations as the same interval inside a range: the bytes written are identical in both modes.
- Rolling statistics that need centred sums (Bollinger std, volatility, z-score) and min/max are computed
  directly over their window, value by value in a fixed order (no accumulator, no cancellation).

Numbers agree with the per-series ta-lib/pandas path to ~1e-12 relative (tests/unit/transform prove 1e-9).
The segment rules (forward fill of at most MAX_FILL_HOURS, a longer gap cuts the series, the window start cuts
the fill) are applied per snapshot: ``seg = max(last unfillable hour + 1, first observation in the window)``.
"""

from __future__ import annotations

import itertools
import math
import threading
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# The indicator definitions, one place for both paths: this engine and the per-series one in indicators.py.
WINDOWS = {"7d": 168, "30d": 720, "90d": 2160}
RSI_PERIOD = 14
MACD_FAST, MACD_SLOW, MACD_SIGNAL = 12, 26, 9
BB_PERIOD, BB_STDDEV = 20, 2.0
VOL_WINDOW = 168
ANNUALISE = math.sqrt(24 * 365)
SR_WINDOW = 168
TREND_SLOPE_HOURS = 24
TREND_BAND = 0.01  # |SMA 7d / SMA 30d - 1| within 1% is "flat"
FLAT_RSI = 50.0
TA_EPSILON = 1e-14  # ta-lib's TA_IS_ZERO: RSI is 0 when avg gain + avg loss is within it
CHUNK = 256
MAX_FILL_HOURS = 6  # the grid's forward-fill limit
FILL_EDGE = MAX_FILL_HOURS + 2  # snapshots per block of the direct window loops (keeps the working set in cache)

# Accumulator rows: (name, decay), in the order one recursion step adds their inputs: six take the price (NaN as
# 0), then (gain, loss) of the hourly change twice: Wilder's averages, then prefix sums (decay 1.0).
_EMA_DECAY = {name: 1.0 - 2.0 / (n + 1) for name, n in WINDOWS.items()}
_FAST_A, _SLOW_A, _SIG_A = 2.0 / (MACD_FAST + 1), 2.0 / (MACD_SLOW + 1), 2.0 / (MACD_SIGNAL + 1)
_WILDER = (RSI_PERIOD - 1) / RSI_PERIOD
_ROWS: list[tuple[str, float]] = [
    ("G7d", _EMA_DECAY["7d"]),
    ("G30d", _EMA_DECAY["30d"]),
    ("G90d", _EMA_DECAY["90d"]),
    ("Gfast", 1.0 - _FAST_A),
    ("Gslow", 1.0 - _SLOW_A),
    ("C", 1.0),  # prefix sum of prices
    ("GG", _WILDER),  # Wilder averages of gains / losses (RSI)
    ("GL", _WILDER),
    ("CG", 1.0),  # prefix sums of gains / losses (RSI seeds)
    ("CL", 1.0),
]
_ROW = {name: r for r, (name, _) in enumerate(_ROWS)}
_PRICE_ROWS = 6
_DECAYS = np.array([d for _, d in _ROWS])[:, None]
ACC_GROUP = 4  # anchors accumulated side by side: wider numpy calls, ~70 MB per anchor of ~2,424 hours x 250 series


@lru_cache(maxsize=64)
def _powers(base: float, length: int) -> np.ndarray:
    """base**m for m < length, each with math.pow (deterministic whatever the table length)."""
    return np.array([math.pow(base, m) for m in range(length)])


@lru_cache(maxsize=8)
def _signal_tables(length: int) -> tuple[np.ndarray, np.ndarray]:
    """P(L) = sum_{i=1..L} (1-c)**(L-i) * (1-a)**(i+8) for the fast and slow EMA: MACD's transient in the signal."""
    out = []
    for a in (_FAST_A, _SLOW_A):
        table, value = [0.0], 0.0
        for m in range(1, length):
            value = (1.0 - _SIG_A) * value + math.pow(1.0 - a, m + MACD_SIGNAL - 1)
            table.append(value)
        out.append(np.array(table))
    return out[0], out[1]


@dataclass(frozen=True)
class Prepared:
    """Grid-wide arrays every snapshot reads (computed once per grid)."""

    x: np.ndarray  # filled prices, NaN where unfillable  [T, S]
    xz: np.ndarray  # x with NaN as 0 (accumulator input)
    gain: np.ndarray
    loss: np.ndarray
    ret: np.ndarray  # simple hourly return x[t]/x[t-1] - 1
    logret: np.ndarray  # log(x[t]) - log(x[t-1])
    last_nan: np.ndarray  # last hour <= t where x is NaN, else -1
    next_obs: np.ndarray  # first hour >= t with an observation, else T
    last_obs: np.ndarray  # last hour <= t with an observation, else -1
    moves: np.ndarray  # prefix count of hours whose price changed (int)
    obs_missing: np.ndarray  # prefix count of hours without an observation (int), shifted: [t+1] counts <= t


def prepare(observed: np.ndarray, filled: np.ndarray) -> Prepared:
    t_len, s_len = filled.shape
    x = np.ascontiguousarray(filled, dtype=np.float64)
    prev = np.vstack([np.full((1, s_len), np.nan), x[:-1]])
    with np.errstate(invalid="ignore", divide="ignore"):
        d = x - prev
        gain = np.where(d > 0, d, 0.0)
        loss = np.where(d < 0, -d, 0.0)
        ret = x / prev - 1.0
        logx = np.log(x)
    logret = np.vstack([np.full((1, s_len), np.nan), logx[1:] - logx[:-1]])
    idx = np.arange(t_len, dtype=np.int32)[:, None]  # hour indices and counts fit in int32: half the memory traffic
    last_nan = np.maximum.accumulate(np.where(np.isnan(x), idx, np.int32(-1)), axis=0)
    has_obs = ~np.isnan(observed)
    next_obs = np.minimum.accumulate(np.where(has_obs, idx, np.int32(t_len))[::-1], axis=0)[::-1]
    last_obs = np.maximum.accumulate(np.where(has_obs, idx, np.int32(-1)), axis=0)
    moved = (d != 0) & ~np.isnan(d)
    moves = np.vstack([np.zeros((1, s_len), np.int32), np.cumsum(moved, axis=0, dtype=np.int32)])
    missing = np.vstack([np.zeros((1, s_len), np.int32), np.cumsum(~has_obs, axis=0, dtype=np.int32)])
    return Prepared(x, np.nan_to_num(x, nan=0.0), gain, loss, ret, logret, last_nan, next_obs, last_obs, moves, missing)


def _anchored_inputs(p: Prepared, anchor: int) -> np.ndarray:
    """Price, gain and loss of the first hours after ``anchor`` as a grid starting at the anchor has them.

    A grid that starts earlier may have forward-filled those hours from before the anchor; a run whose grid
    starts at the anchor cannot. Only MAX_FILL_HOURS + 2 hours can differ; they are rebuilt so that the
    accumulators, hence the bytes, do not depend on where the grid started.
    """
    hours = min(FILL_EDGE, p.x.shape[0] - anchor)
    x = p.x[anchor : anchor + hours].copy()
    x[p.last_obs[anchor : anchor + hours] < anchor] = np.nan
    prev = np.vstack([np.full((1, x.shape[1]), np.nan), x[:-1]])
    with np.errstate(invalid="ignore"):
        d = x - prev
    return np.stack([np.nan_to_num(x, nan=0.0), np.where(d > 0, d, 0.0), np.where(d < 0, -d, 0.0)])


@dataclass(frozen=True)
class Accumulators:
    """One anchor's accumulators: ``series[name][i + 1]`` is the value at hour anchor + i, ``[0]`` = 0; ``h``: MACD
    signal's, indexed alike."""

    series: dict[str, np.ndarray]  # name -> [steps + 1, S]
    h: np.ndarray  # [steps + 1, S]


def _accumulate(p: Prepared, anchors: list[int], lasts: list[int]) -> list[Accumulators]:
    """Accumulators of each anchor from ``anchors[j]`` to ``lasts[j]``, the anchors side by side along the series axis.

    Why side by side: each recursion step is a numpy call on (rows x series), and with one anchor at a time per-call
    overhead dominated (~2,424 steps per anchor). Every element still gets exactly ``decay * acc + input`` per step
    from the same values as alone, so the bits do not depend on which anchors share a call; the columns of a shorter
    anchor run on past its last hour (zero input) and are cut off.
    """
    width = p.x.shape[1]
    steps = [last - anchor + 1 for anchor, last in zip(anchors, lasts, strict=True)]
    inputs = _stacked_inputs(p, anchors, steps)  # [max steps + 1, (price, gain, loss), anchors * S], step 0 is 0
    acc = _scratch("acc", (inputs.shape[0], len(_ROWS), inputs.shape[2]))
    acc[0] = 0.0
    prices = acc[:, :_PRICE_ROWS]
    changes = acc[:, _PRICE_ROWS:].reshape(acc.shape[0], 2, 2, acc.shape[2])  # [[GG, GL], [CG, CL]] += (gain, loss)
    assert np.shares_memory(changes, acc)  # a view: the in-place adds below must land in acc
    for prev, cur, price, change, x in zip(acc[:-1], acc[1:], prices[1:], changes[1:], inputs[1:], strict=True):
        np.multiply(prev, _DECAYS, out=cur)  # acc = decay * acc + input (the same operations in every batch)
        np.add(price, x[0], out=price)
        np.add(change, x[1:], out=change)
    # MACD signal accumulator: H(t) = (1-c) H(t-1) + a_f Gfast(t) - a_s Gslow(t); h holds the input until its step
    h, slow = _scratch("h", (acc.shape[0], acc.shape[2])), _scratch("slow", (acc.shape[0], acc.shape[2]))
    np.multiply(acc[:, _ROW["Gfast"]], _FAST_A, out=h)
    np.multiply(acc[:, _ROW["Gslow"]], _SLOW_A, out=slow)
    np.subtract(h, slow, out=h)
    h[0] = 0.0
    decayed = slow[0]
    for prev, cur in itertools.pairwise(h):
        np.multiply(prev, 1.0 - _SIG_A, out=decayed)
        np.add(cur, decayed, out=cur)
    out = []
    for j, n in enumerate(steps):
        cols = slice(j * width, (j + 1) * width)
        out.append(Accumulators({name: acc[: n + 1, r, cols] for name, r in _ROW.items()}, h[: n + 1, cols]))
    return out


_SCRATCH = threading.local()


def _scratch(name: str, shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialised array of ``shape``, reusing this thread's buffer of that name (grown when too small).

    Why: the accumulators are ~70 MB per anchor; fresh arrays each call cost page faults (zeroing, huge page
    compaction) about as much as the recursion itself. The result is valid until the next call with that name.
    """
    size = math.prod(shape)
    buffer = getattr(_SCRATCH, name, None)
    if buffer is None or buffer.size < size:
        buffer = np.empty(size)
        setattr(_SCRATCH, name, buffer)
    return buffer[:size].reshape(shape)


def _stacked_inputs(p: Prepared, anchors: list[int], steps: list[int]) -> np.ndarray:
    """Price, gain and loss per step for each anchor's columns (``_anchored_inputs`` at its start), zero padded."""
    width = p.x.shape[1]
    inputs = _scratch("inputs", (max(steps) + 1, 3, len(anchors) * width))
    inputs[0] = 0.0
    for j, (anchor, n) in enumerate(zip(anchors, steps, strict=True)):
        cols = slice(j * width, (j + 1) * width)
        inputs[n + 1 :, :, cols] = 0.0
        for r, source in enumerate((p.xz, p.gain, p.loss)):
            inputs[1 : n + 1, r, cols] = source[anchor : anchor + n]
        edge = _anchored_inputs(p, anchor)[:, :n]
        inputs[1 : edge.shape[1] + 1, :, cols] = edge.transpose(1, 0, 2)
    return inputs


def _window_stats(values: np.ndarray, ks: np.ndarray, n: int, ddof: int, offset: int = 0) -> tuple[np.ndarray, ...]:
    """Mean and std (two-pass, centred) of values[k-offset-n+1 .. k-offset], plus min and max."""
    last_row = values.shape[0] - 1
    first = ks - offset - n + 1  # rows outside the grid are clipped: those windows are masked as warm-up later

    def at(i: int) -> np.ndarray:
        return values[np.clip(first + i, 0, last_row)]

    total = at(0).copy()
    low, high = total.copy(), total.copy()
    for i in range(1, n):
        row = at(i)
        total += row
        np.fmin(low, row, out=low)
        np.fmax(high, row, out=high)
    mean = total / n
    sq = np.zeros_like(mean)
    for i in range(n):
        dev = at(i) - mean
        sq += dev * dev
    with np.errstate(invalid="ignore"):
        std = np.sqrt(sq / (n - ddof))
    return mean, std, low, high


def _direct(p: Prepared, ks: np.ndarray, zscore_window: int) -> dict[str, np.ndarray]:
    """Indicators computed straight from their window (no accumulator): valid wherever the window is in range."""
    out: dict[str, np.ndarray] = {}
    k = ks
    middle, std, low, high = _window_stats(p.x, k, BB_PERIOD, ddof=0)
    std = np.where(low == high, 0.0, std)  # a constant window has std 0 exactly
    out["bb_middle"], out["bb_upper"], out["bb_lower"] = middle, middle + BB_STDDEV * std, middle - BB_STDDEV * std
    with np.errstate(divide="ignore", invalid="ignore"):
        out["bb_width"] = (out["bb_upper"] - out["bb_lower"]) / middle
    _, vol, _, _ = _window_stats(p.logret, k, VOL_WINDOW, ddof=1)
    out["volatility_7d"] = vol * ANNUALISE
    mean, zstd, _, _ = _window_stats(p.ret, k, zscore_window, ddof=1, offset=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (p.ret[k] - mean) / zstd
    z[~(zstd > 0)] = np.nan
    out["zscore_1h"] = z
    _, _, out["support_7d"], out["resistance_7d"] = _window_stats(p.x, k, SR_WINDOW, ddof=0)
    out["return_1h_pct"] = p.ret[k] * 100.0
    with np.errstate(divide="ignore", invalid="ignore"):
        out["return_24h_pct"] = (p.x[k] / p.x[np.clip(k - 24, 0, None)] - 1.0) * 100.0
    return out


def _take(acc: np.ndarray, pos: np.ndarray, anchor: int) -> np.ndarray:
    """acc value at grid hour pos (per snapshot row and series); pos = anchor - 1 gives 0."""
    cols = np.arange(acc.shape[-1])
    return acc[np.clip(pos - anchor + 1, 0, acc.shape[0] - 1), cols]


def _recursive(p: Prepared, ks: np.ndarray, seg: np.ndarray, anchor: int, acc: Accumulators) -> dict[str, np.ndarray]:
    """SMA, EMA, RSI and MACD for snapshots ``ks`` (one anchor group) from the anchored accumulators."""
    kk = np.broadcast_to(ks[:, None], seg.shape)
    length = acc.h.shape[0] + 1
    out: dict[str, np.ndarray] = {}
    c = acc.series["C"]

    def window_sum(end: np.ndarray, n: int) -> np.ndarray:
        return _take(c, end, anchor) - _take(c, end - n, anchor)

    def ema(g: np.ndarray, decay: float, a: float, s0: np.ndarray, seed: np.ndarray) -> np.ndarray:
        q = _powers(decay, length)[np.clip(kk - s0, 0, length - 1)]
        return q * seed + a * (_take(g, kk, anchor) - q * _take(g, s0, anchor))

    for name, n in WINDOWS.items():
        out[f"sma_{name}"] = window_sum(kk, n) / n
        s0 = seg + n - 1
        seed = window_sum(s0, n) / n
        out[f"ema_{name}"] = ema(acc.series[f"G{name}"], _EMA_DECAY[name], 2.0 / (n + 1), s0, seed)
    prev = kk - TREND_SLOPE_HOURS
    out["sma_7d_prev"] = window_sum(prev, WINDOWS["7d"]) / WINDOWS["7d"]

    # RSI (Wilder), seeded with the mean of the first 14 gains / losses of the segment
    s0 = seg + RSI_PERIOD
    q = _powers(_WILDER, length)[np.clip(kk - s0, 0, length - 1)]
    averages = []
    for cum, rec in (("CG", "GG"), ("CL", "GL")):
        seed = (_take(acc.series[cum], s0, anchor) - _take(acc.series[cum], seg, anchor)) / RSI_PERIOD
        g = acc.series[rec]
        averages.append(q * seed + (1.0 / RSI_PERIOD) * (_take(g, kk, anchor) - q * _take(g, s0, anchor)))
    gains, losses = averages
    total = gains + losses
    with np.errstate(divide="ignore", invalid="ignore"):
        rsi = np.where((total > -TA_EPSILON) & (total < TA_EPSILON), 0.0, 100.0 * (gains / total))
    never_moved = _moves_between(p, seg, kk) == 0
    rsi[never_moved] = FLAT_RSI
    out["rsi_14"] = rsi

    # MACD: both EMAs start at seg+25 (slow seed: 26 prices; fast seed: the last 12 of them), signal EMA 9
    s0 = seg + MACD_SLOW - 1
    gf, gs = acc.series["Gfast"], acc.series["Gslow"]
    fast_seed = window_sum(s0, MACD_FAST) / MACD_FAST
    slow_seed = window_sum(s0, MACD_SLOW) / MACD_SLOW
    pf, ps = _powers(1.0 - _FAST_A, length), _powers(1.0 - _SLOW_A, length)

    def macd_at(t: np.ndarray) -> np.ndarray:
        lag = np.clip(t - s0, 0, length - 1)
        fast = pf[lag] * fast_seed + _FAST_A * (_take(gf, t, anchor) - pf[lag] * _take(gf, s0, anchor))
        slow = ps[lag] * slow_seed + _SLOW_A * (_take(gs, t, anchor) - ps[lag] * _take(gs, s0, anchor))
        return fast - slow

    s1 = s0 + MACD_SIGNAL - 1
    signal_seed = macd_at(s0)
    for i in range(1, MACD_SIGNAL):
        signal_seed = signal_seed + macd_at(s0 + i)
    signal_seed = signal_seed / MACD_SIGNAL
    lag = np.clip(kk - s1, 0, length - 1)
    qc = _powers(1.0 - _SIG_A, length)[lag]
    ta, tb = _signal_tables(length)
    alpha_f = fast_seed - _FAST_A * _take(gf, s0, anchor)
    alpha_s = slow_seed - _SLOW_A * _take(gs, s0, anchor)
    tail = alpha_f * ta[lag] - alpha_s * tb[lag] + (_take(acc.h, kk, anchor) - qc * _take(acc.h, s1, anchor))
    macd = macd_at(kk)
    signal = qc * signal_seed + _SIG_A * tail
    out["macd"], out["macd_signal"], out["macd_hist"] = macd, signal, macd - signal
    return out


def _moves_between(p: Prepared, seg: np.ndarray, kk: np.ndarray) -> np.ndarray:
    """Number of price changes in (seg, k] per snapshot and series."""
    cols = np.arange(seg.shape[1])
    return p.moves[kk + 1, cols] - p.moves[np.clip(seg, 0, None) + 1, cols]


# first segment length at which each output has a value (docs/indicators.md, warm-up column)
def _warm_up(zscore_window: int) -> dict[str, int]:
    need = {f"sma_{k}": n for k, n in WINDOWS.items()} | {f"ema_{k}": n for k, n in WINDOWS.items()}
    need |= {"rsi_14": RSI_PERIOD + 1, "return_1h_pct": 2, "return_24h_pct": 25, "volatility_7d": VOL_WINDOW + 1}
    need |= {n: MACD_SLOW + MACD_SIGNAL - 1 for n in ("macd", "macd_signal", "macd_hist")}
    need |= {n: BB_PERIOD for n in ("bb_middle", "bb_upper", "bb_lower", "bb_width")}
    need |= {"zscore_1h": zscore_window + 2, "support_7d": SR_WINDOW, "resistance_7d": SR_WINDOW}
    need |= {"sma_7d_prev": WINDOWS["7d"] + TREND_SLOPE_HOURS}
    return need


@dataclass
class Snapshots:
    """Indicator values at snapshot hours ``ks`` (rows) for every series (columns); NaN = no value."""

    ks: np.ndarray
    values: dict[str, np.ndarray]  # name -> float [K, S]; "trend" -> object [K, S]
    has_row: np.ndarray  # bool [K, S]: observed price at the snapshot
    history_hours: np.ndarray  # int [K, S]
    filled_hours_7d: np.ndarray  # int [K, S]


def trend_labels(sma_7d: np.ndarray, sma_30d: np.ndarray, prev: np.ndarray) -> np.ndarray:
    """'up' / 'down' / 'flat' from the 7d-vs-30d SMA spread and the slope of the 7d SMA since ``prev`` (its value
    TREND_SLOPE_HOURS earlier); None where either is unknown."""
    out = np.full(sma_7d.shape, None, dtype=object)
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = sma_7d / sma_30d - 1.0
        slope = sma_7d / prev - 1.0
    known = ~np.isnan(spread) & ~np.isnan(slope)
    out[known] = "flat"
    out[known & (spread > TREND_BAND) & (slope > 0)] = "up"
    out[known & (spread < -TREND_BAND) & (slope < 0)] = "down"
    return out


def compute(
    observed: np.ndarray, p: Prepared, ks: np.ndarray, *, window: int, anchors: np.ndarray, zscore_window: int
) -> Snapshots:
    """Indicators at grid hours ``ks`` (ascending), each over its own window of ``window`` hours.

    ``anchors[i]`` is the accumulator start of snapshot ``ks[i]`` (<= its window start, >= 0); snapshots that
    share an anchor share one accumulation, and a snapshot's numbers depend only on (its window, its anchor).
    """
    ks = np.asarray(ks, dtype=np.int64)
    starts = ks - window + 1
    if (anchors > np.maximum(starts, 0)).any() or (anchors < 0).any():
        raise ValueError("an anchor must lie in the grid, at or before its snapshot's window start")
    cols = np.arange(p.x.shape[1])
    first_obs = p.next_obs[np.clip(starts, 0, None)]
    seg = np.maximum(np.maximum(p.last_nan[ks] + 1, first_obs), np.maximum(starts, 0)[:, None])
    lengths = ks[:, None] - seg + 1
    has_row = ~np.isnan(observed[ks])
    seg = np.where(has_row, seg, ks[:, None])  # rows without a snapshot price are dropped; keep indices sane

    values: dict[str, np.ndarray] = {}
    for lo in range(0, len(ks), CHUNK):
        part = _direct(p, ks[lo : lo + CHUNK], zscore_window)
        for name, arr in part.items():
            values.setdefault(name, np.empty((len(ks), p.x.shape[1])))[lo : lo + CHUNK] = arr
    unique = [int(a) for a in np.unique(anchors)]
    for lo in range(0, len(unique), ACC_GROUP):
        group = unique[lo : lo + ACC_GROUP]
        rows_of = [np.flatnonzero(anchors == anchor) for anchor in group]
        accs = _accumulate(p, group, [int(ks[rows].max()) for rows in rows_of])
        for anchor, rows, acc in zip(group, rows_of, accs, strict=True):
            part = _recursive(p, ks[rows], seg[rows], anchor, acc)
            for name, arr in part.items():
                values.setdefault(name, np.empty((len(ks), p.x.shape[1])))[rows] = arr
    for name, need in _warm_up(zscore_window).items():
        values[name][lengths < need] = np.nan
    values["trend"] = trend_labels(values["sma_7d"], values["sma_30d"], values.pop("sma_7d_prev"))

    lo7 = np.maximum(ks[:, None] - SR_WINDOW + 1, seg)
    filled_7d = p.obs_missing[(ks + 1)[:, None], cols] - p.obs_missing[lo7, cols]
    return Snapshots(ks, values, has_row, np.where(has_row, lengths, 0), np.where(has_row, filled_7d, 0))

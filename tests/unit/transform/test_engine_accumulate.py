"""The engine's accumulators (anchors side by side, reused scratch buffers) against the plain step-by-step recursion.

Bit for bit: the indicators' bytes must not depend on how many anchors share a call (hourly, range and daily
runs group them differently), so every accumulator equals ``acc = decay * acc + input`` run one anchor, one row and
one hour at a time, compared on the raw float64 bytes (NaN positions, signed zeros included).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cryptopipe.transform import engine
from cryptopipe.transform.engine import MACD_FAST, MACD_SIGNAL, MACD_SLOW, RSI_PERIOD, WINDOWS, Prepared

# The definitions written out again (not read from the engine's tables): name -> (input, decay)
EMA = {f"G{name}": (0, 1.0 - 2.0 / (n + 1)) for name, n in WINDOWS.items()}
ROWS = EMA | {
    "Gfast": (0, 1.0 - 2.0 / (MACD_FAST + 1)),
    "Gslow": (0, 1.0 - 2.0 / (MACD_SLOW + 1)),
    "C": (0, 1.0),
    "GG": (1, (RSI_PERIOD - 1) / RSI_PERIOD),
    "CG": (1, 1.0),
    "GL": (2, (RSI_PERIOD - 1) / RSI_PERIOD),
    "CL": (2, 1.0),
}


def prepared(hours: int, series: int, seed: int) -> Prepared:
    """Random walks with gaps: short ones (forward filled across anchors), long ones (NaN), a dead series."""
    rng = np.random.default_rng(seed)
    observed = 10.0 ** rng.uniform(-3, 4, series) * np.exp(np.cumsum(rng.normal(0, 0.02, (hours, series)), axis=0))
    observed[rng.random((hours, series)) < 0.05] = np.nan
    observed[20:40, 1] = np.nan  # longer than the fill limit
    observed[:, 2] = np.nan
    observed[::24, 3] = 1.0  # repeated values: zero changes
    filled = pd.DataFrame(observed).ffill(limit=engine.MAX_FILL_HOURS).to_numpy()
    return engine.prepare(observed, filled)


def reference(p: Prepared, anchor: int, last: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """One anchor's accumulators, one row and one hour at a time."""
    steps = last - anchor + 1
    edge = engine._anchored_inputs(p, anchor)[:, :steps]
    inputs = [source[anchor : last + 1].copy() for source in (p.xz, p.gain, p.loss)]
    for r in range(3):
        inputs[r][: edge.shape[1]] = edge[r]
    series = {}
    for name, (source, decay) in ROWS.items():
        acc = np.zeros((steps + 1, p.x.shape[1]))
        for i in range(steps):
            acc[i + 1] = decay * acc[i] + inputs[source][i]
        series[name] = acc
    core = (2.0 / (MACD_FAST + 1)) * series["Gfast"] - (2.0 / (MACD_SLOW + 1)) * series["Gslow"]
    h = np.zeros_like(core)
    for i in range(steps):
        h[i + 1] = (1.0 - 2.0 / (MACD_SIGNAL + 1)) * h[i] + core[i + 1]
    return series, h


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.array_equal(a, b, equal_nan=True) and a.tobytes() == b.tobytes()


@pytest.mark.parametrize(
    ("anchors", "lasts"),
    [
        ([0], [0]),  # one hour
        ([5], [9]),  # shorter than the rebuilt edge of forward-filled hours
        ([1], [300]),
        ([1, 25, 49], [300, 324, 348]),  # a range's anchors, a day apart
        ([3, 30, 100, 101], [40, 400, 120, 101]),  # different lengths: the shorter anchors' columns are padded
    ],
)
def test_accumulate_equals_the_step_by_step_recursion(anchors: list[int], lasts: list[int]) -> None:
    p = prepared(420, 7, seed=len(anchors) + lasts[0])
    # copies: the accumulators live in scratch buffers that the next call reuses
    got = [
        ({n: a.copy() for n, a in acc.series.items()}, acc.h.copy()) for acc in engine._accumulate(p, anchors, lasts)
    ]
    assert len(got) == len(anchors)
    for (series, h), anchor, last in zip(got, anchors, lasts, strict=True):
        want_series, want_h = reference(p, anchor, last)
        assert series.keys() == want_series.keys()
        for name, want in want_series.items():
            assert same_bits(series[name], want), f"{name} of anchor {anchor}..{last}"
        assert same_bits(h, want_h), f"MACD signal accumulator of anchor {anchor}..{last}"


def test_accumulate_alone_or_grouped_gives_the_same_bits() -> None:
    p = prepared(400, 5, seed=11)
    anchors, lasts = [1, 25, 49, 73, 97], [350, 374, 398, 399, 120]
    grouped = [
        ({n: a.copy() for n, a in acc.series.items()}, acc.h.copy()) for acc in engine._accumulate(p, anchors, lasts)
    ]
    for j, (anchor, last) in enumerate(zip(anchors, lasts, strict=True)):
        (alone,) = engine._accumulate(p, [anchor], [last])
        for name, arr in alone.series.items():
            assert same_bits(arr, grouped[j][0][name]), name
        assert same_bits(alone.h, grouped[j][1])


@pytest.mark.parametrize("group", [1, 3, 64])
def test_compute_bytes_do_not_depend_on_the_anchor_group_size(monkeypatch: pytest.MonkeyPatch, group: int) -> None:
    p = prepared(500, 6, seed=5)
    observed = np.where(np.isnan(p.x), np.nan, p.x)
    ks = np.arange(300, 500, 7)
    window = 200
    anchors = np.maximum((ks - window) // 24 * 24 + 1, 0)  # the day of each window start, as Grid.anchors does

    def run() -> dict[str, np.ndarray]:
        return engine.compute(observed, p, ks, window=window, anchors=anchors, zscore_window=48).values

    monkeypatch.setattr(engine, "ACC_GROUP", 1)
    one = run()
    monkeypatch.setattr(engine, "ACC_GROUP", group)
    many = run()
    assert len(np.unique(anchors)) > 3
    assert one.keys() == many.keys()
    for name, arr in one.items():
        if arr.dtype == object:
            assert (arr == many[name]).all(), name
        else:
            assert same_bits(arr, many[name]), name

"""The per-coin implementation the stage used before the vectorised engine (kept as a reference for tests).

One series at a time: the window grid's contiguous segment ending at the snapshot → ``series_indicators``
(ta-lib + pandas) → the last value. Copied from src/cryptopipe/transform/indicators.py as of commit e3e6aed.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from cryptopipe.transform.indicators import FLOAT_COLUMNS, SR_WINDOW, WINDOWS, Grid, Params, series_indicators


def _nullable(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def reference_snapshot_rows(grid: Grid, params: Params) -> list[dict[str, object]]:
    """One dict per series with an observed price at the grid's last hour (the grid is exactly the window)."""
    rows: list[dict[str, object]] = []
    snapshot = pd.Timestamp(grid.times[-1], tz="UTC").to_pydatetime()
    for s in range(len(grid.coin_ids)):
        price = grid.observed[-1, s]
        if np.isnan(price):
            continue
        start = grid.segment_start(s)
        values = series_indicators(grid.filled[start:, s], params)
        filled_7d = np.isnan(grid.observed[-SR_WINDOW:, s]) & ~np.isnan(grid.filled[-SR_WINDOW:, s])
        row: dict[str, object] = {
            "coin_id": grid.coin_ids[s],
            "vs_currency": grid.vs_currencies[s],
            "snapshot_time": snapshot,
            "price": float(price),
            "trend": values["trend"][-1],
            "history_hours": len(grid.times) - start,
            "filled_hours_7d": int(filled_7d[-(len(grid.times) - start) :].sum()),
        }
        for name in FLOAT_COLUMNS:
            row[name] = _nullable(float(values[name][-1]))
        for name in WINDOWS:
            row[f"warm_{name}"] = row[f"sma_{name}"] is not None
        rows.append(row)
    return rows

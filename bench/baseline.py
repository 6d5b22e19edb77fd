"""The baseline: what the pipelines this project replaces do on every run.

They append every pull to one CSV and, each run, load the whole file with pandas and recompute the rolling
statistics (SMA, EMA, RSI, Bollinger bands, volatility) per coin over all of it, then keep the latest row.
Their cost per run therefore grows with the length of history. This module reproduces that faithfully (same
statistics windows as ours, idiomatic pandas, no tricks to make it slow or fast).
"""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

# The columns such a pipeline keeps from /coins/markets.
CSV_COLUMNS = (
    "snapshot_time",
    "coin_id",
    "symbol",
    "name",
    "price",
    "market_cap",
    "market_cap_rank",
    "total_volume",
    "high_24h",
    "low_24h",
    "price_change_pct_24h",
)
SMA_EMA_HOURS = (168, 720, 2160)
RSI_PERIOD, BB_PERIOD, VOL_HOURS = 14, 20, 168


def write_history_csv(parquet_files: list[Path], target: Path) -> int:
    """The appended CSV of the whole history (in time order, as appends leave it); returns its rows."""
    rows = 0
    tmp = target.with_suffix(".tmp")
    with tmp.open("wb") as sink:
        writer = None
        for path in parquet_files:
            table = pq.read_table(path, columns=list(CSV_COLUMNS)).sort_by([("snapshot_time", "ascending")])
            if writer is None:
                writer = pacsv.CSVWriter(sink, table.schema)
            writer.write_table(table)
            rows += table.num_rows
        if writer is not None:
            writer.close()
    tmp.replace(target)
    return rows


def run_baseline(csv_path: Path) -> dict[str, float]:
    """One baseline run: load all history, recompute every statistic, return the latest rows' summary."""
    import numpy as np
    import pandas as pd

    df = pd.read_csv(csv_path, parse_dates=["snapshot_time"])
    df = df.sort_values(["coin_id", "snapshot_time"], kind="stable").reset_index(drop=True)
    price = df["price"]
    by_coin = price.groupby(df["coin_id"], sort=False)
    for hours in SMA_EMA_HOURS:
        df[f"sma_{hours}h"] = by_coin.transform(lambda s, n=hours: s.rolling(n).mean())
        df[f"ema_{hours}h"] = by_coin.transform(lambda s, n=hours: s.ewm(span=n, adjust=False).mean())
    delta = by_coin.diff()
    gain = delta.clip(lower=0).groupby(df["coin_id"], sort=False)
    loss = (-delta.clip(upper=0)).groupby(df["coin_id"], sort=False)
    avg_gain = gain.transform(lambda s: s.ewm(alpha=1 / RSI_PERIOD, adjust=False).mean())
    avg_loss = loss.transform(lambda s: s.ewm(alpha=1 / RSI_PERIOD, adjust=False).mean())
    df["rsi_14"] = 100 - 100 / (1 + avg_gain / avg_loss)
    mid = by_coin.transform(lambda s: s.rolling(BB_PERIOD).mean())
    std = by_coin.transform(lambda s: s.rolling(BB_PERIOD).std(ddof=0))
    df["bb_upper"], df["bb_lower"] = mid + 2 * std, mid - 2 * std
    log_ret = np.log(price).groupby(df["coin_id"], sort=False).diff()
    df["volatility_7d"] = log_ret.groupby(df["coin_id"], sort=False).transform(
        lambda s: s.rolling(VOL_HOURS).std() * math.sqrt(24 * 365)
    )
    latest = df.groupby("coin_id", sort=False).tail(1)
    return {"rows_read": len(df), "coins": int(latest["coin_id"].nunique()), "rsi_mean": float(latest["rsi_14"].mean())}


def csv_bytes(table: pa.Table) -> int:
    """Bytes of a table written as CSV (header + rows), the way the old pipelines store it."""
    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink)
    return sink.getvalue().size

"""Arrow schema of the transform stage's table: one row per (coin, quote currency) at the interval's snapshot.

Definitions of every column are in docs/indicators.md. Indicator columns are null during warm-up (not enough
contiguous history) and where a definition has no value (e.g. the z-score of a series whose returns never move).
"""

from __future__ import annotations

import pyarrow as pa

from cryptopipe.core.schema import TS

TRENDS = ("up", "down", "flat")

INDICATORS_SCHEMA = pa.schema(
    [
        pa.field("coin_id", pa.string(), nullable=False),
        pa.field("vs_currency", pa.string(), nullable=False),
        pa.field("snapshot_time", TS, nullable=False),
        pa.field("symbol", pa.string()),
        pa.field("name", pa.string()),
        pa.field("market_cap", pa.float64()),
        pa.field("market_cap_rank", pa.int32()),
        pa.field("price", pa.float64(), nullable=False),
        pa.field("return_1h_pct", pa.float64()),
        pa.field("return_24h_pct", pa.float64()),
        pa.field("sma_7d", pa.float64()),
        pa.field("sma_30d", pa.float64()),
        pa.field("sma_90d", pa.float64()),
        pa.field("ema_7d", pa.float64()),
        pa.field("ema_30d", pa.float64()),
        pa.field("ema_90d", pa.float64()),
        pa.field("rsi_14", pa.float64()),
        pa.field("macd", pa.float64()),
        pa.field("macd_signal", pa.float64()),
        pa.field("macd_hist", pa.float64()),
        pa.field("bb_middle", pa.float64()),
        pa.field("bb_upper", pa.float64()),
        pa.field("bb_lower", pa.float64()),
        pa.field("bb_width", pa.float64()),
        pa.field("volatility_7d", pa.float64()),
        pa.field("zscore_1h", pa.float64()),
        pa.field("trend", pa.string()),
        pa.field("support_7d", pa.float64()),
        pa.field("resistance_7d", pa.float64()),
        # Warm-up and gap bookkeeping: how much contiguous history fed the numbers above.
        pa.field("history_hours", pa.int32(), nullable=False),
        pa.field("filled_hours_7d", pa.int32(), nullable=False),
        pa.field("warm_7d", pa.bool_(), nullable=False),
        pa.field("warm_30d", pa.bool_(), nullable=False),
        pa.field("warm_90d", pa.bool_(), nullable=False),
    ]
)

INDICATORS_KEY = ("coin_id", "vs_currency", "snapshot_time")

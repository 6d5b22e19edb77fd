"""Arrow schemas of the pipeline's tables: the one definition every stage reads and writes."""

from __future__ import annotations

import pyarrow as pa

TS = pa.timestamp("ms", tz="UTC")

# One row per (coin_id, vs_currency, snapshot_time). Written by ingest (staging) and backfill, carried through
# validate. Every market field is nullable: CoinGecko returns nulls (max_supply, fdv, roi, rank, sometimes
# market_cap) and backfilled history only has price, market cap and volume.
SNAPSHOT_SCHEMA = pa.schema(
    [
        pa.field("coin_id", pa.string(), nullable=False),
        pa.field("vs_currency", pa.string(), nullable=False),
        pa.field("snapshot_time", TS, nullable=False),
        pa.field("symbol", pa.string()),
        pa.field("name", pa.string()),
        pa.field("price", pa.float64()),
        pa.field("market_cap", pa.float64()),
        pa.field("market_cap_rank", pa.int32()),
        pa.field("fully_diluted_valuation", pa.float64()),
        pa.field("total_volume", pa.float64()),
        pa.field("high_24h", pa.float64()),
        pa.field("low_24h", pa.float64()),
        pa.field("price_change_24h", pa.float64()),
        pa.field("price_change_pct_1h", pa.float64()),
        pa.field("price_change_pct_24h", pa.float64()),
        pa.field("price_change_pct_7d", pa.float64()),
        pa.field("market_cap_change_24h", pa.float64()),
        pa.field("market_cap_change_pct_24h", pa.float64()),
        pa.field("circulating_supply", pa.float64()),
        pa.field("total_supply", pa.float64()),
        pa.field("max_supply", pa.float64()),
        pa.field("ath", pa.float64()),
        pa.field("ath_change_pct", pa.float64()),
        pa.field("ath_date", TS),
        pa.field("atl", pa.float64()),
        pa.field("atl_change_pct", pa.float64()),
        pa.field("atl_date", TS),
        pa.field("roi_times", pa.float64()),
        pa.field("roi_currency", pa.string()),
        pa.field("roi_percentage", pa.float64()),
        pa.field("last_updated", TS),
        # Lineage: "coins_markets" (hourly ingest) or "market_chart_range" (backfill), and the raw object.
        pa.field("source", pa.string(), nullable=False),
        pa.field("source_key", pa.string()),
    ]
)

SNAPSHOT_KEY = ("coin_id", "vs_currency", "snapshot_time")

QUARANTINE_SCHEMA = SNAPSHOT_SCHEMA.append(pa.field("reasons", pa.string(), nullable=False))

"""Warehouse tables (SQLAlchemy Core). Their DDL is owned by the Alembic migrations in ``migrations/``;
these definitions are what the loader writes through, and a test checks that both agree.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

TS = sa.DateTime(timezone=True)

# One row per natural key (coin_id, vs_currency, snapshot_time): hourly snapshots and backfilled history.
market_snapshots = sa.Table(
    "market_snapshots",
    metadata,
    sa.Column("coin_id", sa.String(128), primary_key=True),
    sa.Column("vs_currency", sa.String(16), primary_key=True),
    sa.Column("snapshot_time", TS, primary_key=True),
    sa.Column("interval_start", TS, nullable=False, index=True),
    sa.Column("symbol", sa.String(64)),
    sa.Column("name", sa.String(256)),
    sa.Column("price", sa.Float(precision=53)),
    sa.Column("market_cap", sa.Float(precision=53)),
    sa.Column("market_cap_rank", sa.Integer),
    sa.Column("total_volume", sa.Float(precision=53)),
    sa.Column("high_24h", sa.Float(precision=53)),
    sa.Column("low_24h", sa.Float(precision=53)),
    sa.Column("price_change_pct_1h", sa.Float(precision=53)),
    sa.Column("price_change_pct_24h", sa.Float(precision=53)),
    sa.Column("price_change_pct_7d", sa.Float(precision=53)),
    sa.Column("circulating_supply", sa.Float(precision=53)),
    sa.Column("total_supply", sa.Float(precision=53)),
    sa.Column("max_supply", sa.Float(precision=53)),
    sa.Column("last_updated", TS),
    sa.Column("source", sa.String(32), nullable=False),
)

# Indicators per (coin, currency) at each snapshot: the transform stage's table (docs/indicators.md) minus the
# descriptive columns already in market_snapshots. A test keeps both in step.
indicators = sa.Table(
    "indicators",
    metadata,
    sa.Column("coin_id", sa.String(128), primary_key=True),
    sa.Column("vs_currency", sa.String(16), primary_key=True),
    sa.Column("snapshot_time", TS, primary_key=True),
    sa.Column("interval_start", TS, nullable=False, index=True),
    sa.Column("price", sa.Float(precision=53)),
    sa.Column("return_1h_pct", sa.Float(precision=53)),
    sa.Column("return_24h_pct", sa.Float(precision=53)),
    sa.Column("sma_7d", sa.Float(precision=53)),
    sa.Column("sma_30d", sa.Float(precision=53)),
    sa.Column("sma_90d", sa.Float(precision=53)),
    sa.Column("ema_7d", sa.Float(precision=53)),
    sa.Column("ema_30d", sa.Float(precision=53)),
    sa.Column("ema_90d", sa.Float(precision=53)),
    sa.Column("rsi_14", sa.Float(precision=53)),
    sa.Column("macd", sa.Float(precision=53)),
    sa.Column("macd_signal", sa.Float(precision=53)),
    sa.Column("macd_hist", sa.Float(precision=53)),
    sa.Column("bb_middle", sa.Float(precision=53)),
    sa.Column("bb_upper", sa.Float(precision=53)),
    sa.Column("bb_lower", sa.Float(precision=53)),
    sa.Column("bb_width", sa.Float(precision=53)),
    sa.Column("volatility_7d", sa.Float(precision=53)),
    sa.Column("zscore_1h", sa.Float(precision=53)),
    sa.Column("support_7d", sa.Float(precision=53)),
    sa.Column("resistance_7d", sa.Float(precision=53)),
    sa.Column("trend", sa.String(8)),
    sa.Column("history_hours", sa.Integer, nullable=False),
    sa.Column("filled_hours_7d", sa.Integer, nullable=False),
    sa.Column("warm_7d", sa.Boolean, nullable=False),
    sa.Column("warm_30d", sa.Boolean, nullable=False),
    sa.Column("warm_90d", sa.Boolean, nullable=False),
)

anomalies = sa.Table(
    "anomalies",
    metadata,
    sa.Column("interval_start", TS, primary_key=True),
    sa.Column("coin_id", sa.String(128), primary_key=True),
    sa.Column("vs_currency", sa.String(16), primary_key=True),
    sa.Column("metric", sa.String(64), primary_key=True),
    sa.Column("value", sa.Float(precision=53)),
    sa.Column("threshold", sa.Float(precision=53)),
    sa.Column("window", sa.String(32)),
    sa.Column("z", sa.Float(precision=53)),
)

# One row per stage execution (interval, stage, start time): what monitoring and dashboards read.
pipeline_runs = sa.Table(
    "pipeline_runs",
    metadata,
    sa.Column("interval_start", TS, primary_key=True),
    sa.Column("stage", sa.String(32), primary_key=True),
    sa.Column("started_at", TS, primary_key=True),
    sa.Column("finished_at", TS),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("exit_code", sa.Integer, nullable=False),
    sa.Column("duration_seconds", sa.Float),
    sa.Column("rows_out", sa.Integer),
    sa.Column("code_version", sa.String(64)),
    sa.Column("config_fingerprint", sa.String(32)),
    sa.Column("message", sa.Text),
    sa.Column("metrics", sa.JSON),
)

# The lineage manifest of each archived interval: where it is and its checksum.
interval_manifests = sa.Table(
    "interval_manifests",
    metadata,
    sa.Column("interval_start", TS, primary_key=True),
    sa.Column("manifest_uri", sa.Text, nullable=False),
    sa.Column("manifest_sha256", sa.String(64), nullable=False),
    sa.Column("objects", sa.Integer, nullable=False),
    sa.Column("quality_score", sa.Float),
    sa.Column("archived_at", TS, nullable=False),
)

"""Initial warehouse schema: snapshots, indicators, anomalies, pipeline runs, interval manifests.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
F = sa.Float(precision=53)


def upgrade() -> None:
    op.create_table(
        "market_snapshots",
        sa.Column("coin_id", sa.String(128), primary_key=True),
        sa.Column("vs_currency", sa.String(16), primary_key=True),
        sa.Column("snapshot_time", TS, primary_key=True),
        sa.Column("interval_start", TS, nullable=False),
        sa.Column("symbol", sa.String(64)),
        sa.Column("name", sa.String(256)),
        sa.Column("price", F),
        sa.Column("market_cap", F),
        sa.Column("market_cap_rank", sa.Integer),
        sa.Column("total_volume", F),
        sa.Column("high_24h", F),
        sa.Column("low_24h", F),
        sa.Column("price_change_pct_1h", F),
        sa.Column("price_change_pct_24h", F),
        sa.Column("price_change_pct_7d", F),
        sa.Column("circulating_supply", F),
        sa.Column("total_supply", F),
        sa.Column("max_supply", F),
        sa.Column("last_updated", TS),
        sa.Column("source", sa.String(32), nullable=False),
    )
    op.create_index("ix_market_snapshots_interval_start", "market_snapshots", ["interval_start"])
    op.create_table(
        "indicators",
        sa.Column("coin_id", sa.String(128), primary_key=True),
        sa.Column("vs_currency", sa.String(16), primary_key=True),
        sa.Column("snapshot_time", TS, primary_key=True),
        sa.Column("interval_start", TS, nullable=False),
        sa.Column("price", F),
        sa.Column("return_1h_pct", F),
        sa.Column("return_24h_pct", F),
        sa.Column("sma_7d", F),
        sa.Column("sma_30d", F),
        sa.Column("sma_90d", F),
        sa.Column("ema_7d", F),
        sa.Column("ema_30d", F),
        sa.Column("ema_90d", F),
        sa.Column("rsi_14", F),
        sa.Column("macd", F),
        sa.Column("macd_signal", F),
        sa.Column("macd_hist", F),
        sa.Column("bb_middle", F),
        sa.Column("bb_upper", F),
        sa.Column("bb_lower", F),
        sa.Column("bb_width", F),
        sa.Column("volatility_7d", F),
        sa.Column("zscore_1h", F),
        sa.Column("support_7d", F),
        sa.Column("resistance_7d", F),
        sa.Column("trend", sa.String(8)),
        sa.Column("history_hours", sa.Integer, nullable=False),
        sa.Column("filled_hours_7d", sa.Integer, nullable=False),
        sa.Column("warm_7d", sa.Boolean, nullable=False),
        sa.Column("warm_30d", sa.Boolean, nullable=False),
        sa.Column("warm_90d", sa.Boolean, nullable=False),
    )
    op.create_index("ix_indicators_interval_start", "indicators", ["interval_start"])
    op.create_table(
        "anomalies",
        sa.Column("interval_start", TS, primary_key=True),
        sa.Column("coin_id", sa.String(128), primary_key=True),
        sa.Column("vs_currency", sa.String(16), primary_key=True),
        sa.Column("metric", sa.String(64), primary_key=True),
        sa.Column("value", F),
        sa.Column("threshold", F),
        sa.Column("window", sa.String(32)),
        sa.Column("z", F),
    )
    op.create_table(
        "pipeline_runs",
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
    op.create_table(
        "interval_manifests",
        sa.Column("interval_start", TS, primary_key=True),
        sa.Column("manifest_uri", sa.Text, nullable=False),
        sa.Column("manifest_sha256", sa.String(64), nullable=False),
        sa.Column("objects", sa.Integer, nullable=False),
        sa.Column("quality_score", sa.Float),
        sa.Column("archived_at", TS, nullable=False),
    )


def downgrade() -> None:
    for table in ("interval_manifests", "pipeline_runs", "anomalies", "indicators", "market_snapshots"):
        op.drop_table(table)

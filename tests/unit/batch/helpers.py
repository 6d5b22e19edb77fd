"""Small deterministic staging data for the range-mode tests, and the comparisons they make."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from cryptopipe.core.layout import HOUR, Interval
from cryptopipe.core.schema import SNAPSHOT_SCHEMA
from cryptopipe.core.tables import conform

FIRST = datetime(2026, 11, 22, 0, tzinfo=UTC)
COINS = [f"coin-{i:02d}" for i in range(20)]


def intervals(hours: int, first: datetime = FIRST) -> list[Interval]:
    return [Interval.starting(first + h * HOUR) for h in range(hours)]


def staging(interval: Interval, coins: list[str] = COINS) -> pa.Table:
    """One plausible staging table: prices on a gentle random-free walk, every cross-field check satisfied."""
    h = int((interval.start - FIRST) / HOUR)
    rows: dict[str, list[Any]] = {name: [] for name in SNAPSHOT_SCHEMA.names}
    for i, coin in enumerate(coins):
        price = (10.0 ** (i % 7 - 3)) * (1 + 0.01 * math.sin(h + i))
        supply = 1e6 * (i + 1)
        values = {
            "coin_id": coin,
            "vs_currency": "usd",
            "snapshot_time": interval.end,
            "symbol": coin[-3:],
            "name": coin.title(),
            "price": price,
            "market_cap": price * supply,
            "market_cap_rank": i + 1,
            "total_volume": price * supply * 0.05,
            "high_24h": price * 1.01,
            "low_24h": price * 0.99,
            "price_change_pct_24h": 1.0 + (i % 3),
            "circulating_supply": supply,
            "last_updated": interval.end - timedelta(minutes=3),
            "source": "coins_markets",
            "source_key": f"raw/coins_markets/{interval.partition}/vs=usd/page=0001.json.gz",
        }
        for name, column in rows.items():
            column.append(values.get(name))
    return pa.Table.from_pydict(rows, schema=SNAPSHOT_SCHEMA)


def edit(table: pa.Table, row: int, **fields: Any) -> pa.Table:
    data = table.to_pylist()
    data[row].update(fields)
    return conform(pa.Table.from_pylist(data, schema=table.schema), SNAPSHOT_SCHEMA)


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def data_objects(root: Path, *, docs: bool = True) -> dict[str, bytes]:
    """Every data object (docs/architecture.md): run records and manifests are execution records."""
    return {
        k: v
        for k, v in files(root).items()
        if not k.startswith(("runs/", "manifests/")) and (docs or "/data_docs/" not in k)
    }


def report_without_docs(data: bytes) -> dict[str, Any]:
    report = json.loads(data)
    report["objects"]["data_docs"] = None
    return report

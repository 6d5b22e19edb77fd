"""Validated inputs for transform tests, written with cryptopipe.core.tables (no other stage involved)."""

from __future__ import annotations

import csv
import logging
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa

from cryptopipe.core.config import Settings
from cryptopipe.core.layout import HOUR, Interval, validated_daily_key, validated_key
from cryptopipe.core.schema import SNAPSHOT_KEY, SNAPSHOT_SCHEMA
from cryptopipe.core.stage import StageContext, StageResult
from cryptopipe.core.storage import FileStore, ObjectStore
from cryptopipe.core.tables import conform, to_parquet_bytes

FIXTURES = Path(__file__).parent / "fixtures"


def fixture_prices(coin: str) -> tuple[list[date], np.ndarray]:
    """Dates and prices of a fixture CSV (CoinGecko export format)."""
    with (FIXTURES / f"{coin}-usd-300.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    days = [date.fromisoformat(r["snapped_at"][:10]) for r in rows]
    return days, np.array([float(r["price"]) for r in rows])


def snapshot_table(rows: list[dict[str, object]]) -> pa.Table:
    base = {"source": "coins_markets"}
    return conform(pa.Table.from_pylist([{**base, **r} for r in rows]), SNAPSHOT_SCHEMA)


def hour_rows(
    snapshot: datetime, prices: dict[str, float], vs: str = "usd", extra: dict[str, dict[str, object]] | None = None
) -> list[dict[str, object]]:
    extra = extra or {}
    return [
        {
            "coin_id": coin,
            "vs_currency": vs,
            "snapshot_time": snapshot,
            "price": price,
            "market_cap": price * 1e6,
            "symbol": coin[:3],
            "name": coin.title(),
            **extra.get(coin, {}),
        }
        for coin, price in sorted(prices.items())
    ]


def random_walks(
    coins: list[str], hours: int, seed: int = 7, start: float = 100.0, vol: float = 0.01
) -> dict[str, np.ndarray]:
    """Geometric random walks (default hourly volatility 1%, realistic for crypto), one per coin, seeded."""
    rng = np.random.default_rng(seed)
    out = {}
    for i, coin in enumerate(coins):
        steps = rng.normal(0.0, vol, hours)
        out[coin] = start * (i + 1) * np.exp(np.cumsum(steps))
    return out


def series_table(series: dict[str, np.ndarray], first_snapshot: datetime, vs: str = "usd") -> pa.Table:
    """All hours of all coins as one snapshot table (hour i has snapshot first_snapshot + i h)."""
    coins = sorted(series)
    hours = len(series[coins[0]])
    times = [first_snapshot + i * HOUR for i in range(hours)]
    n = len(coins)
    prices = np.column_stack([series[c] for c in coins]).reshape(-1)
    table = pa.table(
        {
            "coin_id": pa.array([c for _ in range(hours) for c in coins]),
            "vs_currency": pa.array([vs] * (hours * n)),
            "snapshot_time": pa.array([t for t in times for _ in range(n)], pa.timestamp("ms", tz="UTC")),
            "price": pa.array(prices),
            "market_cap": pa.array(prices * 1e6),
            "source": pa.array(["coins_markets"] * (hours * n)),
        }
    )
    return conform(table, SNAPSHOT_SCHEMA)


def _write(store: ObjectStore, key: str, table: pa.Table) -> None:
    """Test data straight to the file (no fsync: thousands of objects in a test must stay fast)."""
    data = to_parquet_bytes(conform(table, SNAPSHOT_SCHEMA))
    if isinstance(store, FileStore):
        path = store.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    else:
        store.put(key, data)


def write_hours(store: ObjectStore, table: pa.Table) -> None:
    """One validated hourly partition per distinct snapshot hour (partition start = snapshot - 1 h)."""
    times = table.column("snapshot_time").cast(pa.int64()).to_numpy()
    for t in np.unique(times):
        start = datetime.fromtimestamp(int(t) / 1000, UTC) - HOUR
        part = table.filter(pa.compute.equal(table.column("snapshot_time").cast(pa.int64()), int(t)))
        _write(store, validated_key(Interval.starting(start)), part)


def write_days(store: ObjectStore, table: pa.Table) -> None:
    """Daily compactions directly (fast way to lay down long history): grouped by the partition's day."""
    starts = table.column("snapshot_time").cast(pa.int64()).to_numpy() - 3_600_000
    days = starts // 86_400_000
    for d in np.unique(days):
        part = table.filter(pa.array(days == d))
        day = date(1970, 1, 1) + timedelta(days=int(d))
        sorted_part = part.sort_by([(k, "ascending") for k in SNAPSHOT_KEY])
        _write(store, validated_daily_key(day), sorted_part)


def make_ctx(root: Path | ObjectStore, settings: Settings, interval: Interval) -> StageContext:
    store = root if isinstance(root, ObjectStore) else FileStore(root)
    result = StageResult("transform", interval.start.isoformat(), interval.end.isoformat())
    return StageContext("transform", settings, interval, store, store, logging.getLogger("test.transform"), result)

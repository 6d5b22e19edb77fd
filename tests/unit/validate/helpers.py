"""Staging tables for the validate tests, built from real CoinGecko history (../shared, or the fixture copy)."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from cryptopipe.core.layout import Interval, staging_key
from cryptopipe.core.schema import SNAPSHOT_SCHEMA
from cryptopipe.core.storage import FileStore
from cryptopipe.core.tables import write_table

FIXTURE = Path(__file__).parent / "fixtures" / "market_history_sample.csv"
SHARED_HISTORY = Path(__file__).resolve().parents[3].parent / "shared" / "market-history" / "coingecko-daily"
INTERVAL = Interval.starting(datetime(2026, 11, 22, 13, tzinfo=UTC))
COIN_IDS = {"btc": "bitcoin", "shib": "shiba-inu"}


@dataclass(frozen=True)
class DailyRow:
    coin: str
    day: str
    price: float
    market_cap: float | None
    total_volume: float | None


def _number(text: str) -> float | None:
    return float(text) if text.strip() else None  # an empty cell is CoinGecko's missing value


def parse_history(path: Path, coin: str | None = None) -> list[DailyRow]:
    rows = []
    with path.open(newline="") as fh:
        for rec in csv.DictReader(fh):
            price = _number(rec["price"])
            assert price is not None, f"{path}: row {rec} has no price"
            rows.append(
                DailyRow(
                    coin=rec.get("coin") or coin or path.name.split("-")[0],
                    day=rec["snapped_at"][:10],
                    price=price,
                    market_cap=_number(rec["market_cap"]),
                    total_volume=_number(rec["total_volume"]),
                )
            )
    return rows


def fixture_rows(coin: str) -> list[DailyRow]:
    return [r for r in parse_history(FIXTURE) if r.coin == coin]


def snapshot_row(coin_id: str, price: float | None, interval: Interval = INTERVAL, **fields: Any) -> dict[str, Any]:
    """One staging row as ingest writes it; fields override the plausible defaults."""
    row: dict[str, Any] = {
        "coin_id": coin_id,
        "vs_currency": "usd",
        "snapshot_time": interval.end,
        "symbol": coin_id[:4],
        "name": coin_id.title(),
        "price": price,
        "last_updated": interval.end - timedelta(minutes=3),
        "source": "coins_markets",
        "source_key": "raw/coins_markets/test/page=0001.json.gz",
    }
    if price is not None and math.isfinite(price) and price > 0:
        row.update(high_24h=price * 1.01, low_24h=price * 0.99, price_change_pct_24h=1.5)
    row.update(fields)
    return row


def from_daily(row: DailyRow, coin_id: str | None = None, interval: Interval = INTERVAL, **fields: Any) -> dict:
    return snapshot_row(
        coin_id or COIN_IDS.get(row.coin, row.coin),
        row.price,
        interval,
        market_cap=row.market_cap,
        total_volume=row.total_volume,
        **fields,
    )


def filler_rows(count: int, interval: Interval = INTERVAL, start: int = 0) -> list[dict[str, Any]]:
    """Healthy rows of made-up coins, so a test controls the share of bad rows."""
    rows = []
    for i in range(start, start + count):
        price = 1.0 + i
        rows.append(
            snapshot_row(
                f"coin-{i:03d}",
                price,
                interval,
                market_cap=price * 1e6,
                circulating_supply=1e6,
                total_volume=1e5,
                market_cap_rank=i + 1,
            )
        )
    return rows


def table_of(rows: list[dict[str, Any]]) -> pa.Table:
    columns = {f.name: [r.get(f.name) for r in rows] for f in SNAPSHOT_SCHEMA}
    return pa.Table.from_pydict(columns, schema=SNAPSHOT_SCHEMA)


def write_staging(root: Path, rows: list[dict[str, Any]] | pa.Table, interval: Interval = INTERVAL) -> None:
    table = rows if isinstance(rows, pa.Table) else table_of(rows)
    write_table(FileStore(root), staging_key(interval), table)


def report(root: Path, interval: Interval = INTERVAL) -> dict[str, Any]:
    path = root / "quality" / interval.partition / "report.json"
    return json.loads(path.read_text())


def expectation(rep: dict[str, Any], name: str) -> dict[str, Any]:
    (entry,) = [e for e in rep["expectations"] if e["name"] == name]
    return entry


def cli_args(interval: Interval = INTERVAL) -> list[str]:
    return ["validate", "--interval-start", interval.start.isoformat(), "--interval-end", interval.end.isoformat()]

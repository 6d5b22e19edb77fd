"""Price projections (transform/projection.py): exact round trips, and the grid built from whole days is the grid
built from the rows."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime, timedelta

import numpy as np
import pyarrow as pa
import pytest

from cryptopipe.core.stage import ObjectRef
from cryptopipe.transform.indicators import build_grid
from cryptopipe.transform.projection import DayPrices, as_rows, day_prices, decode, encode

DAY = date(2026, 3, 1)
FIRST = datetime(2026, 3, 1, 1, tzinfo=UTC)  # snapshot of the day's first partition
SOURCE = ObjectRef("validated/market_snapshots_daily/date=2026-03-01/snapshots.parquet", "ab" * 32, 123)


def day_rows(day: date = DAY, *, skip: set[tuple[str, int]] = frozenset(), seed: int = 1) -> pa.Table:
    """Rows of one day for 3 coins x 2 quote currencies, sorted by key, with odd prices and holes."""
    rng = np.random.default_rng(seed)
    first = datetime(day.year, day.month, day.day, 1, tzinfo=UTC)
    rows = []
    for coin in ("alpha", "beta", "gamma"):
        for vs in ("eur", "usd"):
            for hour in range(24):
                if (coin, hour) in skip:
                    continue
                time = first + timedelta(hours=hour)
                price = float(rng.uniform(1, 2))
                rows.append({"coin_id": coin, "vs_currency": vs, "snapshot_time": time, "price": price})
    rows[3]["price"], rows[4]["price"], rows[5]["price"] = None, math.nan, 0.0  # unusable prices keep their row
    return as_rows(pa.Table.from_pylist(rows))


def same_rows(a: pa.Table, b: pa.Table) -> bool:
    """Equal rows, NaN equal to NaN (pyarrow's equality says NaN != NaN)."""

    def plain(value: object) -> object:
        return "nan" if isinstance(value, float) and math.isnan(value) else value

    def key(table: pa.Table) -> list[tuple[object, ...]]:
        return [tuple(plain(v) for v in row.values()) for row in as_rows(table).to_pylist()]

    return key(a) == key(b)


def test_hours_layout_round_trips_the_rows() -> None:
    rows = day_rows(skip={("beta", 7)})
    part = day_prices(rows, DAY)
    assert isinstance(part, DayPrices)
    assert part.num_rows == rows.num_rows == 3 * 2 * 24 - 2
    decoded = decode(encode(part, SOURCE, "v1"), SOURCE.key, "v1")
    assert isinstance(decoded, DayPrices)
    assert same_rows(decoded.to_rows(), rows)
    values = decoded.values()
    assert values.shape == (6, 24)
    assert np.isnan(values[0, 3:6]).all()  # null, NaN and 0 are not usable prices
    assert np.isnan(values[2:4, 7]).all()  # beta has no row at hour 7


@pytest.mark.parametrize(
    "change",
    ["off the hour", "two rows on one hour", "the next day's hour"],
)
def test_rows_that_do_not_fit_the_hours_keep_the_rows_layout(change: str) -> None:
    rows = day_rows().to_pylist()
    if change == "off the hour":
        rows[10]["snapshot_time"] -= timedelta(minutes=5)
    elif change == "two rows on one hour":
        rows.append({**rows[10], "price": 9.0})
    else:
        rows[10]["snapshot_time"] += timedelta(days=1)
    table = as_rows(pa.Table.from_pylist(rows))
    assert day_prices(table, DAY) is None
    decoded = decode(encode(table, SOURCE, "v1"), SOURCE.key, "v1")
    assert isinstance(decoded, pa.Table)
    assert same_rows(decoded, table)


def test_a_projection_of_another_version_or_source_is_not_used() -> None:
    data = encode(day_prices(day_rows(), DAY) or day_rows(), SOURCE, "v1")
    assert decode(data, SOURCE.key, "v1") is not None
    assert decode(data, SOURCE.key, "v2") is None
    assert decode(data, "validated/market_snapshots_daily/date=2026-03-02/snapshots.parquet", "v1") is None
    assert decode(b"not arrow", SOURCE.key, "v1") is None
    assert decode(data[: len(data) // 2], SOURCE.key, "v1") is None


def assert_same_grid(parts: list[pa.Table | DayPrices], snapshot: datetime, hours: int) -> None:
    rows = pa.concat_tables([p.to_rows() if isinstance(p, DayPrices) else p for p in parts])
    expected = build_grid(rows, snapshot, hours, window=hours)
    actual = build_grid(parts, snapshot, hours, window=hours)
    assert actual.coin_ids == expected.coin_ids and actual.vs_currencies == expected.vs_currencies
    assert np.array_equal(actual.observed, expected.observed, equal_nan=True)
    assert np.array_equal(actual.filled, expected.filled, equal_nan=True)
    assert np.array_equal(actual.times, expected.times)


def test_grid_from_whole_days_is_the_grid_from_their_rows() -> None:
    days = [DAY + timedelta(days=i) for i in range(3)]
    parts: list[pa.Table | DayPrices] = []
    for i, day in enumerate(days):
        rows = day_rows(day, skip={("gamma", h) for h in range(i * 5)}, seed=i)  # gamma lists fewer hours
        parts.append(day_prices(rows, day) or rows)
    today = day_rows(days[-1] + timedelta(days=1), seed=9).slice(0, 20)  # a few hourly rows after the days
    parts.append(today)
    assert sum(isinstance(p, DayPrices) for p in parts) == 3
    snapshot = FIRST + timedelta(days=3, hours=5)
    assert_same_grid(parts, snapshot, 3 * 24 + 6)
    assert_same_grid(parts, snapshot, 3 * 24 - 10)  # the first day starts before the grid: read as rows


def test_a_row_on_a_days_hour_sends_everything_through_the_rows() -> None:
    """The later row wins, also against a whole day: an hourly row at the same time later in the parts wins, one a
    few minutes earlier on the same grid hour loses (copying the day then the rows would get this wrong)."""
    rows = day_rows()
    part = day_prices(rows, DAY)
    assert part is not None
    hour10 = FIRST + timedelta(hours=10)
    late = as_rows(
        pa.Table.from_pylist(
            [
                {"coin_id": "alpha", "vs_currency": "usd", "snapshot_time": hour10, "price": 42.0},
                {
                    "coin_id": "beta",
                    "vs_currency": "usd",
                    "snapshot_time": hour10 - timedelta(minutes=5),
                    "price": 43.0,
                },
            ]
        )
    )
    snapshot = FIRST + timedelta(hours=23)
    assert_same_grid([part, late], snapshot, 24)
    grid = build_grid([part, late], snapshot, 24)
    index = grid.series_index()
    assert grid.observed[10, index[("alpha", "usd")]] == 42.0
    series = list(zip(part.coin_id.to_pylist(), part.vs_currency.to_pylist(), strict=True))
    day_price = part.values()[series.index(("beta", "usd")), 10]
    assert grid.observed[10, index[("beta", "usd")]] == day_price != 43.0  # the day's row is the later one

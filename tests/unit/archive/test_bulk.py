"""bulk.replace_intervals stores exactly what the executemany path stored (raw values), on SQLite and PostgreSQL,
and a failed load leaves the warehouse as it was."""

from __future__ import annotations

import math
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
import sqlalchemy as sa

from cryptopipe.archive import batch, bulk, models
from cryptopipe.archive import warehouse as wh
from cryptopipe.core.errors import WarehouseError
from tests.support.postgres import PostgresServer

T0 = datetime(2026, 11, 22, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)
TS = pa.timestamp("us", tz="UTC")
TABLES = (models.market_snapshots, models.indicators, models.anomalies)
# Values a CSV or a type conversion could get wrong: separators, quotes, newlines, the COPY end marker, non-ASCII.
TEXTS = ["a,b", 'quo"te', "new\nline", "\\.", "", "ünï€", "plain"]
DOUBLES = [0.1, 1 / 3, -0.0, 5e-324, 1.7976931348623157e308, 123456789.123456789, 2.0**-1074 * 3, -2.5e-300]


@pytest.fixture(params=["sqlite", "postgresql"])
def urls(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """Two fresh migrated warehouses of one dialect: the executemany reference and the bulk load."""
    if request.param == "sqlite":
        pair = f"sqlite:///{tmp_path / 'reference.db'}", f"sqlite:///{tmp_path / 'bulk.db'}"
    else:
        server: PostgresServer = request.getfixturevalue("postgres_server")
        pair = server.new_database(), server.new_database()
    for url in pair:
        engine = wh.create_engine(url)
        wh.migrate(engine)
        engine.dispose()
    return pair


def doubles(rng: np.random.Generator, n: int) -> list[float | None]:
    """Full-precision doubles over the whole exponent range, with NaN, infinities and nulls among them."""
    values: list[float | None] = list(rng.standard_normal(n) * 10.0 ** rng.integers(-300, 300, n))
    for i, special in enumerate([*DOUBLES, math.nan, math.inf, -math.inf, None]):
        values[(i * 7) % n] = special
    return values


def snapshots(starts: list[datetime], coins: list[str], seed: int, *, optional: bool = True) -> pa.Table:
    rng = np.random.default_rng(seed)
    rows: dict[str, list[Any]] = {name: [] for name in ("coin_id", "vs_currency", "snapshot_time", "interval_start")}
    for start in starts:
        for coin in coins:
            rows["coin_id"].append(coin)
            rows["vs_currency"].append("usd")
            rows["snapshot_time"].append(start + HOUR - timedelta(microseconds=int(rng.integers(0, 10**9))))
            rows["interval_start"].append(start)
    n = len(rows["coin_id"])
    table = pa.table(
        {
            **{k: rows[k] for k in ("coin_id", "vs_currency")},
            "snapshot_time": pa.array(rows["snapshot_time"], TS),
            "interval_start": pa.array(rows["interval_start"], TS),
            "price": doubles(rng, n),
            "market_cap": doubles(rng, n),
            "market_cap_rank": pa.array([None if i % 5 == 0 else i for i in range(n)], pa.int32()),
            "source": ["coins_markets"] * n,
            "source_key": ["not a warehouse column"] * n,  # ignored, as the range mode's tables carry it
        }
    )
    if optional:
        table = table.append_column("symbol", pa.array([TEXTS[i % len(TEXTS)] for i in range(n)]))
        table = table.append_column("name", pa.array([None if i % 3 else TEXTS[i % len(TEXTS)] for i in range(n)]))
        table = table.append_column("max_supply", pa.array(doubles(rng, n), pa.float32()))  # widened exactly
        # few distinct values (formatted once per value on SQLite), nulls among them
        last = [None if i % 4 == 0 else s + timedelta(minutes=57) for i, s in enumerate(rows["interval_start"])]
        table = table.append_column("last_updated", pa.array(last, pa.timestamp("ms", tz="UTC")))
    return table


def indicators(snaps: pa.Table, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    n = snaps.num_rows
    columns = {name: snaps.column(name) for name in ("coin_id", "vs_currency", "snapshot_time", "interval_start")}
    for column in models.indicators.columns:
        if column.name in columns:
            continue
        if isinstance(column.type, sa.Boolean):
            columns[column.name] = pa.array([bool(v) for v in rng.integers(0, 2, n)])
        elif isinstance(column.type, sa.Integer):
            columns[column.name] = pa.array(rng.integers(0, 3000, n), pa.int32())
        elif isinstance(column.type, sa.String):
            columns[column.name] = pa.array([[None, "up", "down", "flat"][i % 4] for i in range(n)])
        else:
            columns[column.name] = pa.array(doubles(rng, n))
    return pa.table(columns)


def anomalies(starts: list[datetime], coins: list[str]) -> pa.Table:
    rows = [
        {"interval_start": s, "coin_id": c, "vs_currency": "usd", "metric": "move_1h", "value": 7.5 + i,
         "threshold": 5.0, "window": None if i % 2 else "1h", "z": [None, math.nan, 2.25][i % 3]}
        for i, (s, c) in enumerate((s, c) for s in starts for c in coins[:2])
    ]  # fmt: skip
    return pa.Table.from_pylist(rows, schema=bulk.arrow_schema(models.anomalies))


def reference_load(conn: sa.Connection, data: dict[str, pa.Table], starts: list[datetime]) -> None:
    """What the range mode did before: delete by interval, executemany upserts with values bound in Python."""
    for table in TABLES:
        conn.execute(sa.delete(table).where(table.c.interval_start.in_(starts)))
    batch._bulk_upsert(conn, models.market_snapshots, data["market_snapshots"])
    batch._bulk_upsert(conn, models.indicators, data["indicators"])
    if "anomalies" in data:
        wh.upsert(conn, models.anomalies, data["anomalies"].to_pylist())


def stored(url: str) -> dict[str, list[tuple[object, ...]]]:
    """Every row as stored (SQLite: raw column values, so the stored text/real/integer forms are compared)."""
    engine = wh.create_engine(url)
    try:
        with engine.connect() as conn:
            out = {}
            for table in TABLES:
                if conn.dialect.name == "sqlite":
                    result = conn.exec_driver_sql(f"SELECT * FROM {table.name}")
                else:
                    result = conn.execute(sa.select(table))
                out[table.name] = sorted((tuple(r) for r in result), key=repr)
            return out
    finally:
        engine.dispose()


def load(url: str, data: dict[str, pa.Table], starts: list[datetime], *, reference: bool = False) -> dict[str, int]:
    engine = wh.create_engine(url)
    try:
        with engine.begin() as conn:
            if reference:
                reference_load(conn, data, starts)
                return {}
            return bulk.replace_intervals(conn, data, starts)
    finally:
        engine.dispose()


def day(first: datetime, hours: int) -> list[datetime]:
    return [first + h * HOUR for h in range(hours)]


COINS = ["bitcoin", "ethereum", "coin,with,commas", 'coin"quoted', "solana"]


def test_same_stored_values_as_executemany(urls: tuple[str, str]) -> None:
    earlier, starts = day(T0, 3), day(T0 + 2 * HOUR, 4)  # overlap at T0+2h
    first = snapshots(earlier, [*COINS, "vanished"], seed=1)
    first_data = {"market_snapshots": first, "indicators": indicators(first, 2), "anomalies": anomalies(earlier, COINS)}
    # The second load: optional columns absent; one key of an earlier interval (T0+1h) moves to the new rows; a key
    # twice in the data (two intervals of this load): the later row wins, as sequential upserts leave it.
    snaps = snapshots(starts, COINS, seed=3, optional=False)
    moved = first.filter(pa.compute.equal(first.column("interval_start"), pa.scalar(T0 + HOUR, TS))).slice(0, 1)
    keys = snaps.column("snapshot_time").to_pylist()
    keys[0] = moved.column("snapshot_time")[0].as_py()  # bitcoin at T0+2h takes the T0+1h row's key
    keys[len(COINS) + 1] = keys[2 * len(COINS) + 1]  # ethereum's rows at T0+3h and T0+4h: the same key
    snaps = snaps.set_column(2, "snapshot_time", pa.array(keys, TS))
    data = {"market_snapshots": snaps, "indicators": indicators(snaps, 4), "anomalies": anomalies(starts, COINS)}
    reference_url, bulk_url = urls
    load(reference_url, first_data, earlier, reference=True)
    load(reference_url, data, starts, reference=True)
    assert load(bulk_url, first_data, earlier) == {"market_snapshots": 18, "indicators": 18, "anomalies": 6}
    counts = load(bulk_url, data, starts)
    assert counts == {"market_snapshots": 19, "indicators": 19, "anomalies": 8}  # 20 rows, 1 of them superseded
    expected = stored(reference_url)
    assert stored(bulk_url) == expected
    assert all(expected.values())
    # The moved key keeps the optional values of its earlier row (the upsert sets only the columns given).
    bitcoin = [r for r in expected["market_snapshots"] if r[0] == "bitcoin" and r[4] is not None]
    assert bitcoin, "the moved row keeps its symbol"
    assert not [r for r in expected["market_snapshots"] if "vanished" in r and str(T0 + 2 * HOUR)[:13] in str(r)]

    # A rerun: the moved row is now this load's own and is replaced by its new values (symbol absent: NULL), as with
    # executemany; from then on a rerun changes nothing.
    load(reference_url, data, starts, reference=True)
    load(bulk_url, data, starts)
    rerun = stored(bulk_url)
    assert rerun == stored(reference_url)
    assert rerun != expected
    load(bulk_url, data, starts)
    assert stored(bulk_url) == rerun


def test_intervals_without_rows_and_tables_not_given(urls: tuple[str, str]) -> None:
    _, url = urls
    starts = day(T0, 2)
    snaps = snapshots(starts, COINS, seed=5)
    full = {"market_snapshots": snaps, "indicators": indicators(snaps, 6), "anomalies": anomalies(starts, COINS)}
    load(url, full, starts)
    empty = {"market_snapshots": snaps.slice(0, 0), "indicators": full["indicators"].slice(0, 0)}  # no anomalies
    assert load(url, empty, starts) == {"market_snapshots": 0, "indicators": 0, "anomalies": 0}
    assert stored(url) == {t.name: [] for t in TABLES}


@pytest.mark.parametrize("failure", ["null in a NOT NULL column", "a dropped table"])
def test_failed_load_leaves_the_warehouse_as_it_was(urls: tuple[str, str], failure: str) -> None:
    _, url = urls
    starts = day(T0, 3)
    snaps = snapshots(starts, COINS, seed=7)
    good = {"market_snapshots": snaps, "indicators": indicators(snaps, 8), "anomalies": anomalies(starts, COINS)}
    load(url, good, starts)
    before = stored(url)
    newer = snapshots(starts, COINS, seed=9)
    bad = {"market_snapshots": newer, "indicators": indicators(newer, 10)}
    if failure == "null in a NOT NULL column":
        hours = bad["indicators"].column("history_hours").to_pylist()
        hours[-1] = None
        bad["indicators"] = bad["indicators"].set_column(
            bad["indicators"].schema.get_field_index("history_hours"), "history_hours", pa.array(hours, pa.int32())
        )
        with pytest.raises(WarehouseError, match=r"load of .*indicators.*history_hours|history_hours") as caught:
            load(url, bad, starts)
    else:
        engine = wh.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE indicators RENAME TO indicators_gone"))
        engine.dispose()
        with pytest.raises(WarehouseError, match="indicators") as caught:
            load(url, bad, starts)
        engine = wh.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text("ALTER TABLE indicators_gone RENAME TO indicators"))
        engine.dispose()
    assert "failed" in str(caught.value) and "2026-11-22T00:00Z" in str(caught.value)
    assert "cryptopipe-test" not in str(caught.value)  # the PostgreSQL password is not in the message
    assert stored(url) == before
    load(url, {**good, "market_snapshots": newer, "indicators": indicators(newer, 10)}, starts)  # loads after it
    assert stored(url) != before


def test_calls_on_one_connection_and_in_one_transaction(urls: tuple[str, str]) -> None:
    """Two loads in one transaction and a load after a failed one on the same pooled connection (SQLite: the
    scratch databases stay attached until the transaction that read them ends)."""
    reference_url, url = urls
    a, b = day(T0, 2), day(T0 + 2 * HOUR, 2)
    sa_, sb = snapshots(a, COINS, seed=11), snapshots(b, COINS, seed=12)
    da = {"market_snapshots": sa_, "indicators": indicators(sa_, 13)}
    db = {"market_snapshots": sb, "indicators": indicators(sb, 14)}
    load(reference_url, da, a, reference=True)
    load(reference_url, db, b, reference=True)
    engine = wh.create_engine(url)
    try:
        with engine.begin() as conn:
            bulk.replace_intervals(conn, da, a)
            bulk.replace_intervals(conn, db, b)
        with pytest.raises(WarehouseError), engine.begin() as conn:
            bulk.replace_intervals(conn, {**da, "indicators": da["indicators"].drop_columns(["price"]).append_column(
                "price", pa.array(["not a number"] * sa_.num_rows))}, a)  # fmt: skip
        for _ in range(12):  # more than SQLite's 10 attached databases: earlier ones are detached
            with engine.begin() as conn:
                bulk.replace_intervals(conn, da, a)
    finally:
        engine.dispose()
    assert stored(url) == stored(reference_url)


def test_scratch_files_are_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    url = f"sqlite:///{tmp_path / 'wh.db'}"
    engine = wh.create_engine(url)
    wh.migrate(engine)
    starts = day(T0, 2)
    snaps = snapshots(starts, COINS, seed=15)
    try:
        with engine.begin() as conn:
            bulk.replace_intervals(conn, {"market_snapshots": snaps, "indicators": indicators(snaps, 16)}, starts)
    finally:
        engine.dispose()
    assert list(scratch.iterdir()) == []


def test_contract_errors_change_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'wh.db'}"
    engine = wh.create_engine(url)
    wh.migrate(engine)
    engine.dispose()
    starts = day(T0, 2)
    snaps = snapshots(starts, COINS, seed=17)
    load(url, {"market_snapshots": snaps, "indicators": indicators(snaps, 18)}, starts)
    before = stored(url)
    with pytest.raises(ValueError, match=r"not among the 1 intervals replaced"):
        load(url, {"market_snapshots": snaps}, starts[:1])
    with pytest.raises(ValueError, match=r"market_snapshots data lacks columns \['snapshot_time'\]"):
        load(url, {"market_snapshots": snaps.drop_columns(["snapshot_time"])}, starts)
    with pytest.raises(ValueError, match="no warehouse table"):
        load(url, {"pipeline_runs": snaps}, starts)
    text_price = snaps.set_column(snaps.schema.get_field_index("price"), "price", pa.array(["x"] * snaps.num_rows))
    with pytest.raises(WarehouseError, match=r"market_snapshots\.price \(string\) cannot be stored"):
        load(url, {"market_snapshots": text_price}, starts)
    assert stored(url) == before

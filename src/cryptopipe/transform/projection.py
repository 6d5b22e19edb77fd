"""Price projections of daily compactions: what transform reads for a past day (see history.py).

A daily compaction holds the day's rows with 33 columns (~650 kB at 250 coins); the indicators need one price
per series and hour. The projection keeps exactly the rows' (coin_id, vs_currency, snapshot_time, price), as one
Arrow IPC file next to the compaction, in one of two layouts:

- ``hours`` (every compaction the pipeline writes): one row per series with the day's 24 hourly prices (hour
  ``h`` = the snapshot at 01:00 + h of the day, i.e. the day's 24 partitions) and which of them had a row.
  Possible when every row is on one of those hours and no series has two rows on one hour. ~60 kB; the grid
  copies it as a block (no per-row work).
- ``rows`` (anything else): the rows' 4 columns as read.

Both give back the exact rows (``to_rows``). The metadata names the compaction the projection was made from:
key, sha256, size and store version (history.py uses it only while that version is current).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cryptopipe.core.errors import StorageError
from cryptopipe.core.schema import TS
from cryptopipe.core.stage import ObjectRef

FORMAT = b"cryptopipe.transform.prices/1"
HOURS = 24
HOUR_MS = 3_600_000
_DICT = pa.dictionary(pa.int32(), pa.string())
# The rows as history.py reads them: series keys dictionary-coded (cheap to read; the grid works on the codes).
ROWS_SCHEMA = pa.schema(
    [
        pa.field("coin_id", _DICT, nullable=False),
        pa.field("vs_currency", _DICT, nullable=False),
        pa.field("snapshot_time", TS, nullable=False),
        pa.field("price", pa.float64()),
    ]
)
HOURS_SCHEMA = pa.schema(
    [
        pa.field("coin_id", pa.string(), nullable=False),
        pa.field("vs_currency", pa.string(), nullable=False),
        pa.field("price", pa.list_(pa.float64(), HOURS), nullable=False),  # null: the row's price was null
        pa.field("present", pa.list_(pa.bool_(), HOURS), nullable=False),  # the series has a row at that hour
    ]
)


def as_rows(table: pa.Table) -> pa.Table:
    """ROWS_SCHEMA columns of a snapshot table (series keys dictionary-coded)."""
    columns = []
    for target in ROWS_SCHEMA:
        if target.name not in table.column_names:
            raise StorageError(f"table lacks required column {target.name!r}")
        column = table.column(target.name)
        if pa.types.is_dictionary(target.type) and not pa.types.is_dictionary(column.type):
            column = pc.dictionary_encode(column.cast(pa.string()))
        columns.append(column if column.type == target.type else column.cast(target.type))
    return pa.Table.from_arrays(columns, schema=ROWS_SCHEMA)


def concat_rows(tables: list[pa.Table]) -> pa.Table:
    """One table of the rows of ``tables`` in order (ROWS_SCHEMA unless all share another schema)."""
    if not tables:
        return ROWS_SCHEMA.empty_table()
    if all(t.schema.equals(tables[0].schema) for t in tables):
        return pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    return pa.concat_tables([as_rows(t) for t in tables])


def first_snapshot_ms(day: date) -> int:
    """Snapshot time of the day's first partition (00:00-01:00): 01:00 of the day, in ms."""
    return int(datetime(day.year, day.month, day.day, 1, tzinfo=UTC).timestamp() * 1000)


@dataclass(frozen=True)
class DayPrices:
    """A day's rows as series x 24 hours (the ``hours`` layout)."""

    coin_id: pa.Array  # string, one per series, sorted by (coin_id, vs_currency)
    vs_currency: pa.Array
    first_ms: int  # snapshot time of hour 0
    price: pa.Array  # float64, series-major (S * 24), null where the row's price was null or there is no row
    present: np.ndarray  # bool [S, 24]

    @property
    def num_rows(self) -> int:
        return int(self.present.sum())

    def values(self) -> np.ndarray:
        """[S, 24] float64: the price where there is a usable one (present, finite, > 0), else NaN."""
        price = self.price.to_numpy(zero_copy_only=False).reshape(-1, HOURS)
        with np.errstate(invalid="ignore"):
            return np.where(self.present & np.isfinite(price) & (price > 0), price, np.nan)

    def to_rows(self) -> pa.Table:
        """The rows (ROWS_SCHEMA), sorted by (coin_id, vs_currency, snapshot_time)."""
        series, hour = np.nonzero(self.present)
        flat = pa.array(series * HOURS + hour, pa.int64())
        times = pa.array(self.first_ms + hour.astype(np.int64) * HOUR_MS, pa.int64()).cast(TS)
        positions = pa.array(series, pa.int64())
        coins = pc.dictionary_encode(self.coin_id.take(positions))
        currencies = pc.dictionary_encode(self.vs_currency.take(positions))
        return pa.Table.from_arrays([coins, currencies, times, self.price.take(flat)], schema=ROWS_SCHEMA)


def series_codes(table: pa.Table) -> tuple[np.ndarray, list[str], np.ndarray, list[str]]:
    """Per row: coin code and vs code into one dictionary each (the key columns may be plain or dictionary)."""
    columns = {}
    for name in ("coin_id", "vs_currency"):
        column = table.column(name)
        columns[name] = column if pa.types.is_dictionary(column.type) else pc.dictionary_encode(column)
    unified = pa.table(columns).unify_dictionaries()
    out: list[np.ndarray | list[str]] = []
    for name in columns:
        chunks = unified.column(name).chunks
        if not chunks:
            out += [np.zeros(0, np.int64), []]
            continue
        indices = np.concatenate([chunk.indices.to_numpy(zero_copy_only=False) for chunk in chunks])
        out += [indices.astype(np.int64, copy=False), chunks[0].dictionary.to_pylist()]
    coin, coins, vs, currencies = out
    return coin, coins, vs, currencies  # type: ignore[return-value]


def day_prices(rows: pa.Table, day: date) -> DayPrices | None:
    """The ``hours`` layout of a day's rows (ROWS_SCHEMA), or None when the rows do not fit it."""
    if rows.num_rows == 0:
        return None
    first_ms = first_snapshot_ms(day)
    offset = rows.column("snapshot_time").cast(pa.int64()).to_numpy() - first_ms
    if offset.min() < 0 or offset.max() >= HOURS * HOUR_MS or (offset % HOUR_MS).any():
        return None
    coin, coins, vs, currencies = series_codes(rows)
    pair = coin * len(currencies) + vs
    pairs = np.unique(pair)
    width = len(currencies)
    ordered = pairs[sorted(range(len(pairs)), key=lambda i: (coins[pairs[i] // width], currencies[pairs[i] % width]))]
    rank = np.zeros(len(coins) * len(currencies), np.int64)
    rank[ordered] = np.arange(len(ordered))
    cell = rank[pair] * HOURS + offset // HOUR_MS
    if np.bincount(cell).max() > 1:
        return None  # two rows on one hour: the grid's "later row wins" needs the rows
    size = len(ordered) * HOURS
    price = rows.column("price").combine_chunks()
    values, valid, present = np.zeros(size), np.zeros(size, bool), np.zeros(size, bool)
    values[cell] = price.to_numpy(zero_copy_only=False)
    valid[cell] = price.is_valid().to_numpy(zero_copy_only=False)
    present[cell] = True
    return DayPrices(
        pa.array([coins[p // len(currencies)] for p in ordered], pa.string()),
        pa.array([currencies[p % len(currencies)] for p in ordered], pa.string()),
        first_ms,
        pa.array(values, pa.float64(), mask=~valid),
        present.reshape(-1, HOURS),
    )


def encode(part: pa.Table | DayPrices, source: ObjectRef, version: str) -> bytes:
    """The projection object of a compaction's rows (``part`` from ``day_prices`` or the rows themselves)."""
    meta = {
        b"format": FORMAT,
        b"source_key": source.key.encode(),
        b"source_sha256": source.sha256.encode(),
        b"source_bytes": str(source.bytes).encode(),
        b"source_version": version.encode(),
    }
    if isinstance(part, DayPrices):
        meta |= {b"layout": b"hours", b"first_ms": str(part.first_ms).encode()}
        columns = [
            part.coin_id,
            part.vs_currency,
            pa.FixedSizeListArray.from_arrays(part.price, HOURS),
            pa.FixedSizeListArray.from_arrays(pa.array(part.present.ravel()), HOURS),
        ]
        table = pa.Table.from_arrays(columns, schema=HOURS_SCHEMA)
    else:
        meta |= {b"layout": b"rows"}
        table = part.unify_dictionaries().combine_chunks()
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema.with_metadata(meta)) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def decode(data: bytes, source_key: str, version: str) -> pa.Table | DayPrices | None:
    """The projection's content if it was made from ``source_key`` at ``version`` in this format, else None
    (unreadable included: a projection is a cache, rebuilt from the compaction)."""
    try:
        reader = pa.ipc.open_file(pa.py_buffer(data))
        meta = reader.schema.metadata or {}
        if (meta.get(b"format"), meta.get(b"source_key"), meta.get(b"source_version")) != (
            FORMAT,
            source_key.encode(),
            version.encode(),
        ):
            return None
        schema = reader.schema.remove_metadata()
        if meta.get(b"layout") == b"rows" and schema.equals(ROWS_SCHEMA):
            return reader.read_all().replace_schema_metadata(None)
        if meta.get(b"layout") != b"hours" or not schema.equals(HOURS_SCHEMA) or reader.num_record_batches != 1:
            return None
        batch = reader.get_batch(0)  # written as one batch: no offsets into the list values
        price, present = batch.column(2), batch.column(3)
        return DayPrices(
            batch.column(0),
            batch.column(1),
            int(meta[b"first_ms"]),
            price.values,
            present.values.to_numpy(zero_copy_only=False).reshape(-1, HOURS),
        )
    except (pa.ArrowInvalid, OSError, ValueError, KeyError):
        return None

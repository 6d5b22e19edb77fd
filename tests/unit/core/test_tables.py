"""Parquet write options: exact round trip of every pipeline schema, deterministic bytes, per-column encodings."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cryptopipe.core.schema import QUARANTINE_SCHEMA, SNAPSHOT_SCHEMA
from cryptopipe.core.tables import conform, from_parquet_bytes, to_parquet_bytes, write_options
from cryptopipe.transform.schema import INDICATORS_SCHEMA

COINS, HOURS = 40, 24
START = datetime(2026, 11, 21, tzinfo=UTC)


def market_table(rng: np.random.Generator) -> pa.Table:
    """Time-sorted hourly rows per coin, like a daily compaction: random-walk prices, five-decimal percentages."""
    n = COINS * HOURS
    levels = rng.lognormal(3, 3, COINS)
    walk = np.concatenate([np.round(p * np.exp(np.cumsum(rng.normal(0, 0.01, HOURS))), 6) for p in levels])
    return pa.table(
        {
            "coin_id": [f"coin-{i:03d}" for i in range(COINS) for _ in range(HOURS)],
            "vs_currency": ["usd"] * n,
            "snapshot_time": [START + timedelta(hours=h) for _ in range(COINS) for h in range(HOURS)],
            "price": walk,
            "price_change_pct_24h": np.round(rng.normal(0, 2, n), 5),
            "market_cap_rank": pa.array(np.repeat(np.arange(1, COINS + 1), HOURS), pa.int32()),
        }
    )


def column_meta(data: bytes, name: str) -> pq.ColumnChunkMetaData:
    meta = pq.ParquetFile(io.BytesIO(data)).metadata
    return meta.row_group(0).column(meta.schema.names.index(name))


def filled(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` in ``schema`` with a value in every row of the columns it lacks, so each type carries data."""
    n = table.num_rows
    for field in schema:
        if field.name in table.column_names:
            continue
        kind = field.type
        if pa.types.is_string(kind):
            values: list[object] = [f"v{i % 3}" for i in range(n)]
        elif pa.types.is_boolean(kind):
            values = [i % 2 == 0 for i in range(n)]
        elif pa.types.is_timestamp(kind):
            values = [START - timedelta(hours=i) for i in range(n)]
        else:
            values = [i * (0.5 if pa.types.is_floating(kind) else 1) for i in range(n)]
        table = table.append_column(field.name, pa.array(values).cast(kind))
    return conform(table, schema)


@pytest.mark.parametrize("schema", [SNAPSHOT_SCHEMA, QUARANTINE_SCHEMA, INDICATORS_SCHEMA])
def test_pipeline_schemas_round_trip_exactly_without_the_arrow_schema_in_the_footer(schema: pa.Schema) -> None:
    table = filled(market_table(np.random.default_rng(3)), schema)
    data = to_parquet_bytes(table)
    back = from_parquet_bytes(data)
    assert back.schema.equals(schema, check_metadata=True)
    assert back.equals(table)
    assert b"ARROW:schema" not in (pq.ParquetFile(io.BytesIO(data)).metadata.metadata or {})


@pytest.mark.parametrize(
    "column",
    [
        pa.array([datetime(2026, 1, 1)], pa.timestamp("ms", tz="Europe/Berlin")),  # Parquet keeps no zone name
        pa.array(["a"], pa.large_string()),
        pa.array(["a"]).dictionary_encode(),
        pa.array([5], pa.duration("ms")),
        pa.array([1], pa.uint32()),
    ],
)
def test_types_parquet_cannot_describe_keep_the_arrow_schema(column: pa.Array) -> None:
    table = pa.table({"x": column})
    assert from_parquet_bytes(to_parquet_bytes(table)).schema.equals(table.schema, check_metadata=True)


def test_schema_metadata_is_kept() -> None:
    table = pa.table({"x": [1.5]}).replace_schema_metadata({"origin": "test"})
    assert from_parquet_bytes(to_parquet_bytes(table)).schema.metadata == {b"origin": b"test"}


def test_same_table_same_bytes_whatever_its_chunking() -> None:
    table = market_table(np.random.default_rng(5))
    rechunked = pa.concat_tables([table.slice(0, 100), table.slice(100, 7), table.slice(107)])
    assert rechunked.column("price").num_chunks == 3
    assert to_parquet_bytes(table) == to_parquet_bytes(table) == to_parquet_bytes(rechunked)


def test_each_float_column_gets_the_encoding_that_compresses_it_smaller() -> None:
    table = market_table(np.random.default_rng(7))
    chosen = write_options(table)["column_encoding"] or {}
    for name in ("price", "price_change_pct_24h"):
        sizes = {}
        for encoding in ("PLAIN", "BYTE_STREAM_SPLIT"):
            buffer = io.BytesIO()
            pq.write_table(
                table.select([name]), buffer, compression="zstd", use_dictionary=False, column_encoding=encoding
            )
            sizes[encoding] = column_meta(buffer.getvalue(), name).total_compressed_size
        assert chosen.get(name, "PLAIN") == min(sizes, key=sizes.__getitem__), (name, sizes)
    # Random-walk prices split well; five-decimal fractions are noise in every byte of a double.
    assert chosen.get("price") == "BYTE_STREAM_SPLIT" and "price_change_pct_24h" not in chosen


def test_dictionary_only_for_repeating_strings_and_statistics_only_off_floats() -> None:
    data = to_parquet_bytes(market_table(np.random.default_rng(9)))
    assert "RLE_DICTIONARY" in column_meta(data, "vs_currency").encodings  # one distinct value
    assert "RLE_DICTIONARY" not in column_meta(data, "price").encodings
    unique_ids = pa.table({"coin_id": [f"coin-{i}" for i in range(50)]})
    assert "RLE_DICTIONARY" not in column_meta(to_parquet_bytes(unique_ids), "coin_id").encodings
    assert column_meta(data, "snapshot_time").is_stats_set and column_meta(data, "coin_id").is_stats_set
    assert not column_meta(data, "price").is_stats_set


def test_smaller_than_dictionary_encoding_everything() -> None:
    table = market_table(np.random.default_rng(11))
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd", compression_level=3, use_dictionary=True)
    assert len(to_parquet_bytes(table)) < 0.9 * len(buffer.getvalue())

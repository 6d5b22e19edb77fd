"""Parquet in and out of the object store: zstd, deterministic bytes, schema-checked.

Write options are chosen per column from the table itself (measured in bench/storage.py, bench/FINDINGS.md item 5):
- no dictionary encoding except for strings with few distinct values: with zstd behind it, PLAIN compresses
  better for unique ids and for floats, even repeating ones (zstd finds the repeats);
- BYTE_STREAM_SPLIT for a float column where zstd compresses it smaller than PLAIN (a trial on the column, at the
  writer's level): it wins for prices and amounts, loses for five-decimal percentages in time-sorted data;
- statistics only on non-float columns (ids, times, ranks): min/max of floats prune nothing here, since every
  object spans all coins, and they cost bytes twice (footer and page header) on every column;
- the Arrow schema goes into the footer only when Parquet's own types would not restore the table's schema.
Every choice depends only on the table, so the same table still gives the same bytes.
"""

from __future__ import annotations

import io
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cryptopipe.core.errors import MissingInputError, ObjectNotFoundError, StorageError
from cryptopipe.core.storage import ObjectStore

PARQUET_CONTENT_TYPE = "application/vnd.apache.parquet"
# Level 6 makes a daily compaction 8 % smaller (hourly objects 1 %) but writes it 2.2x slower; 19: 9 %, ~25x slower.
ZSTD_LEVEL = 3
DICTIONARY_MAX_DISTINCT_SHARE = 0.1  # a string column is dictionary-encoded if distinct values <= this x rows

# Arrow types that read back identical from Parquet's own type annotations, without the Arrow schema in the footer.
_SELF_DESCRIBING = (
    pa.types.is_string,
    pa.types.is_boolean,
    pa.types.is_int8,
    pa.types.is_int16,
    pa.types.is_int32,
    pa.types.is_int64,
    pa.types.is_float32,
    pa.types.is_float64,
    pa.types.is_date32,
)


def _self_describing(schema: pa.Schema) -> bool:
    """True if Parquet's logical types restore ``schema`` exactly (types, nullability; no metadata to keep)."""
    if schema.metadata or any(field.metadata for field in schema):
        return False
    for field in schema:
        kind = field.type
        if pa.types.is_timestamp(kind):
            if kind.tz not in (None, "UTC"):  # Parquet keeps only "adjusted to UTC", not the zone's name
                return False
        elif not any(check(kind) for check in _SELF_DESCRIBING):
            return False
    return True


def _split_compresses_better(column: pa.ChunkedArray) -> bool:
    """Trial: zstd on the values' bytes as laid out by BYTE_STREAM_SPLIT vs PLAIN (nulls are not stored)."""
    values = pc.drop_null(column).combine_chunks()
    if len(values) == 0:
        return False
    width = values.type.byte_width
    start = values.offset * width
    plain = values.buffers()[1].to_pybytes()[start : start + len(values) * width]
    # byte k of every value, then byte k+1, ...: BYTE_STREAM_SPLIT's layout (no numpy: the ingest image has none)
    split = b"".join(plain[k::width] for k in range(width))
    codec = pa.Codec("zstd", compression_level=ZSTD_LEVEL)
    return codec.compress(split).size < codec.compress(plain).size


def write_options(table: pa.Table) -> dict[str, Any]:
    """``pyarrow.parquet.write_table`` keyword arguments for ``table`` (see the module docstring)."""
    fields = list(table.schema)
    floats = [f.name for f in fields if pa.types.is_float32(f.type) or pa.types.is_float64(f.type)]
    split = {name: "BYTE_STREAM_SPLIT" for name in floats if _split_compresses_better(table.column(name))}
    dictionary = [
        f.name
        for f in fields
        if pa.types.is_string(f.type)
        and pc.count_distinct(table.column(f.name)).as_py() <= DICTIONARY_MAX_DISTINCT_SHARE * table.num_rows
    ]
    return {
        "compression": "zstd",
        "compression_level": ZSTD_LEVEL,
        "use_dictionary": dictionary,
        "column_encoding": split or None,
        "write_statistics": [f.name for f in fields if not pa.types.is_floating(f.type)],
        "store_schema": not _self_describing(table.schema),
    }


def to_parquet_bytes(table: pa.Table) -> bytes:
    """Same table in, same bytes out: no timestamps or random ids in the file, so reruns are byte-identical."""
    buffer = io.BytesIO()
    pq.write_table(table, buffer, **write_options(table))
    return buffer.getvalue()


def from_parquet_bytes(data: bytes, where: str = "parquet object") -> pa.Table:
    try:
        # ParquetFile.read skips the dataset layer pq.read_table goes through: ~1 ms less per small object; one
        # thread, since handing an object's few column chunks to Arrow's pool costs more CPU than it saves (-17 % for
        # hourly staging objects), and callers already read many objects side by side.
        return pq.ParquetFile(pa.BufferReader(data)).read(use_threads=False)
    except (pa.ArrowInvalid, OSError) as exc:
        raise StorageError(f"{where} is not a readable Parquet file: {exc}") from exc


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Select and cast to the schema's columns in order; missing nullable columns become nulls."""
    if table.schema.equals(schema, check_metadata=False):  # already conformant: no per-column casts
        return pa.Table.from_arrays(table.columns, schema=schema)
    columns = []
    for field in schema:
        if field.name in table.column_names:
            column = table.column(field.name)
            columns.append(column if column.type == field.type else column.cast(field.type))
        elif field.nullable:
            columns.append(pa.nulls(table.num_rows, field.type))
        else:
            raise StorageError(f"table lacks required column {field.name!r}")
    return pa.Table.from_arrays(columns, schema=schema)


def write_table(store: ObjectStore, key: str, table: pa.Table, schema: pa.Schema | None = None) -> bytes:
    if schema is not None:
        table = conform(table, schema)
    data = to_parquet_bytes(table)
    store.put(key, data, PARQUET_CONTENT_TYPE)
    return data


def read_table(store: ObjectStore, key: str, *, required_by: str | None = None) -> pa.Table:
    """Read a Parquet object; a missing input is MissingInputError naming the stage that needs it."""
    try:
        data = store.get(key)
    except ObjectNotFoundError:
        if required_by:
            raise MissingInputError(
                f"{store.url(key)} is missing: {required_by} needs it (run the upstream stage for this interval first)",
                key=key,
            ) from None
        raise
    return from_parquet_bytes(data, store.url(key))

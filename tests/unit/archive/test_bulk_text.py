"""The SQLite bulk load's timestamp text: the fast path for columns of many distinct times equals Arrow's strftime."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from cryptopipe.archive import bulk

TS = pa.timestamp("us", tz="UTC")
EDGES = [None, 0, 1, 999_999, -1, -1_000_001, -86_400_000_000, 86_399_999_999, -62_135_596_800_000_000]


def _column(values: list[int | None], chunks: int = 2) -> pa.ChunkedArray:
    size = max(1, len(values) // chunks)
    parts = [values[i : i + size] for i in range(0, len(values), size)] or [[]]
    return pa.chunked_array([pa.array(part, pa.int64()).cast(TS) for part in parts], TS)


@pytest.mark.parametrize("span_days", [1, 30, 200_000])
def test_many_distinct_times_give_strftimes_text(span_days: int) -> None:
    rng = np.random.default_rng(span_days)
    base = 1_793_000_000_000_000 - (span_days // 2) * 86_400_000_000
    values = [int(v) for v in base + rng.integers(0, span_days * 86_400_000_000, 5_000)]
    column = _column(values + EDGES)
    expected = pc.strftime(column, format=bulk.TS_TEXT)
    assert bulk._many_timestamps_text(column).equals(expected)
    assert bulk._timestamp_text(column).equals(expected)  # many distinct: this path


def test_edge_values_and_empty_and_null_columns() -> None:
    for values in (EDGES, [], [None, None]):
        column = _column(values)
        assert bulk._many_timestamps_text(column).equals(pc.strftime(column, format=bulk.TS_TEXT))
    assert bulk._many_timestamps_text(_column([0])).to_pylist() == ["1970-01-01 00:00:00.000000"]
    assert bulk._many_timestamps_text(_column([-1])).to_pylist() == ["1969-12-31 23:59:59.999999"]

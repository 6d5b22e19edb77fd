"""transform --daily's row lookup on the unsplit compaction (daily.py ``_current_rows``) against ``matching_rows``
per hour on the hour's own rows: validated data (unique keys) and not validated data (a repeated key, a null)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from cryptopipe.transform import daily
from cryptopipe.transform.indicators import matching_rows


def _table(rows: list[tuple[str | None, str]]) -> pa.Table:
    return pa.table({"coin_id": pa.array([c for c, _ in rows], pa.string()), "vs_currency": [v for _, v in rows]})


def _expected(snapshots: list[pa.Table], current: pa.Table, hour: np.ndarray) -> list[int | None]:
    """matching_rows of each hour on that hour's rows (in the compaction's order), as rows of the compaction."""
    out: list[int | None] = []
    for h, snapshot in enumerate(snapshots):
        own = np.flatnonzero(hour == h)
        found = matching_rows(snapshot, current.take(pa.array(own, pa.int64()))).to_pylist()
        out += [None if i is None else int(own[i]) for i in found]
    return out


def _day(seed: int) -> tuple[list[pa.Table], pa.Table, np.ndarray]:
    rng = np.random.default_rng(seed)
    keys = [(f"c{i:02d}", vs) for i in range(12) for vs in ("usd", "eur")]
    snapshots = [_table([k for k in keys if rng.random() < 0.8]) for _ in range(24)]
    rows = [(k, h) for h in range(24) for k in keys if rng.random() < 0.9]
    order = rng.permutation(len(rows))  # the compaction's rows in no particular order
    current = _table([rows[i][0] for i in order])
    return snapshots, current, np.array([rows[i][1] for i in order], np.int64)


def test_current_rows_equal_matching_rows_per_hour_on_validated_rows() -> None:
    snapshots, current, hour = _day(1)
    got = daily._current_rows(snapshots, current, hour).to_pylist()
    assert got == _expected(snapshots, current, hour)
    assert None in got and len(set(got) - {None}) > 400


def test_current_rows_fall_back_to_last_row_wins_with_a_repeated_or_null_key() -> None:
    snapshots, current, hour = _day(2)
    repeated = pa.concat_tables([current, current.slice(0, 3)])  # three keys twice in their hour: the last wins
    repeated_hour = np.concatenate([hour, hour[:3]])
    got = daily._current_rows(snapshots, repeated, repeated_hour).to_pylist()
    assert got == _expected(snapshots, repeated, repeated_hour)
    assert {current.num_rows, current.num_rows + 1, current.num_rows + 2} <= set(got)
    nulled = pa.concat_tables([current, _table([(None, "usd")])])
    nulled_hour = np.append(hour, 5)
    assert daily._current_rows(snapshots, nulled, nulled_hour).to_pylist() == _expected(snapshots, nulled, nulled_hour)

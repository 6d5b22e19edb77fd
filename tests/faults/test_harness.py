"""The matrix's own yardsticks can fail: compare() counts lost/duplicated rows and partial_data() flags leftovers."""

from __future__ import annotations

from .harness import DATA_LAYERS, WAREHOUSE_TABLES, Snapshot, compare, partial_data


def _snap(keys: list[tuple[str, ...]], objects: dict[str, dict[str, str]] | None = None) -> Snapshot:
    objs = {layer: {} for layer in DATA_LAYERS} | (objects or {})
    rows = [(*k, "x") for k in keys]
    return Snapshot(
        objs, {"validated": list(keys)}, {t: list(rows) if t == "market_snapshots" else [] for t in WAREHOUSE_TABLES}
    )


REF = _snap([("btc", "usd", "t"), ("eth", "usd", "t")], {"validated": {"v/a.parquet": "1"}})


def test_identical_data_counts_nothing() -> None:
    diff = compare(REF, REF)
    assert diff == {"lost": 0, "duplicated": 0, "objects_differ": {}, "warehouse_differ": []}


def test_lost_and_duplicated_rows_are_counted() -> None:
    actual = _snap([("btc", "usd", "t"), ("btc", "usd", "t"), ("sol", "usd", "t")], {"validated": {"v/a.parquet": "2"}})
    diff = compare(REF, actual)
    # eth lost in validated and in the warehouse; btc twice and sol (not in the clean run) in both.
    assert diff["lost"] == 2
    assert diff["duplicated"] == 4
    assert diff["objects_differ"] == {"validated": [("v/a.parquet", "1"), ("v/a.parquet", "2")]}
    assert diff["warehouse_differ"] == ["market_snapshots"]


def test_partial_data_flags_downstream_and_divergent_objects() -> None:
    actual = _snap([], {"validated": {"v/a.parquet": "2"}, "indicators": {"i/x.parquet": "3"}})
    problems = partial_data(REF, actual, "validate")
    assert "v/a.parquet differs from the clean run" in problems
    assert "indicators written although validate failed before it" in problems
    assert partial_data(REF, _snap([]), "ingest") == []

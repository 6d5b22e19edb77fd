"""Warehouse bulk load (archive/bulk.py ``replace_intervals``) at a year's size, per table, SQLite and PostgreSQL.

The rows: a week of the backfill benchmark's own warehouse rows (validated snapshots and indicators of the work
store's last week, as archive builds them), tiled 52 times with the key times moved a week per copy (as
bench/backfill.py does for its insert floors). Each table is loaded alone into a fresh migrated warehouse, in
chunks of a day (24 intervals, what range mode and the daily archive load per transaction) or a week, one
transaction per chunk; the time is the chunk transactions' wall time (Arrow conversion included, the tiling not).

    .venv/bin/python -m bench.bulk_load [--weeks 52] [--chunks 24,168] [--databases sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from bench.common import REPO

WORK = REPO / "bench" / ".cache" / "work" / "backfill"
WEEK_HOURS = 7 * 24


def week_rows(work: Path) -> dict[str, pa.Table]:
    """The last week of the work store that has validated and indicator objects, as warehouse tables."""
    from cryptopipe.archive import batch as archive_batch
    from cryptopipe.archive import stage as archive_stage
    from cryptopipe.core.layout import HOUR, Interval, indicators_key, validated_key
    from cryptopipe.core.storage import FileStore
    from cryptopipe.core.tables import read_table

    store = FileStore(work)
    days = sorted(p.name.removeprefix("date=") for p in (work / "validated" / "market_snapshots").iterdir())
    end = datetime.fromisoformat(days[-1]).replace(hour=23, tzinfo=UTC)
    tables: dict[str, list[pa.Table]] = {"market_snapshots": [], "indicators": []}
    for h in range(WEEK_HOURS):
        interval = Interval.starting(end - (WEEK_HOURS - 1 - h) * HOUR)
        if not (store.exists(validated_key(interval)) and store.exists(indicators_key(interval))):
            continue
        validated = read_table(store, validated_key(interval))
        indicators = read_table(store, indicators_key(interval))
        snapshots = validated.select(archive_batch._present(validated))
        tables["market_snapshots"].append(archive_batch._with_start(snapshots, interval.start))
        indicators = indicators.select(archive_stage.INDICATOR_COLUMNS)
        tables["indicators"].append(archive_batch._with_start(indicators, interval.start))
    if not tables["indicators"]:
        raise SystemExit(f"no hour of the last week in {work} has validated and indicator objects: run bench backfill")
    return {name: pa.concat_tables(ts, promote_options="permissive") for name, ts in tables.items()}


def tiled(table: pa.Table, weeks: int) -> pa.Table:
    """``weeks`` copies, the oldest first, each with its key times a week earlier than the next."""
    copies = []
    for back in range(weeks - 1, -1, -1):
        copy = table
        for name in ("snapshot_time", "interval_start"):
            column = copy.column(name)
            shift = pa.scalar(timedelta(weeks=back), pa.duration(column.type.unit))
            copy = copy.set_column(copy.schema.get_field_index(name), name, pc.subtract(column, shift))
        copies.append(copy)
    return pa.concat_tables(copies).combine_chunks()


def chunks(table: pa.Table, hours: int) -> list[tuple[pa.Table, list[datetime]]]:
    """The table split into runs of ``hours`` consecutive intervals (rows are in interval order)."""
    starts = pc.unique(table.column("interval_start")).to_pylist()
    out = []
    boundaries = table.column("interval_start")
    offset = 0
    for first in range(0, len(starts), hours):
        group = starts[first : first + hours]
        stop = pc.sum(pc.less_equal(boundaries, pa.scalar(group[-1], boundaries.type))).as_py()
        out.append((table.slice(offset, stop - offset), group))
        offset = stop
    return out


def load_seconds(url: str, name: str, parts: list[tuple[pa.Table, list[datetime]]]) -> float:
    from cryptopipe.archive import bulk
    from cryptopipe.archive import warehouse as wh

    engine = wh.create_engine(url)
    wh.migrate(engine)
    seconds = 0.0
    try:
        for part, starts in parts:
            clock = time.perf_counter()
            with engine.begin() as conn:
                bulk.replace_intervals(conn, {name: part}, starts)
            seconds += time.perf_counter() - clock
    finally:
        engine.dispose()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weeks", type=int, default=52)
    parser.add_argument("--chunks", default="24,168", help="intervals per transaction, comma-separated")
    parser.add_argument("--databases", default="sqlite,postgresql")
    args = parser.parse_args()
    sample = week_rows(WORK)
    year = {name: tiled(table, args.weeks) for name, table in sample.items()}
    results: list[dict[str, Any]] = []
    for database in args.databases.split(","):
        server = None
        if database == "postgresql":
            from tests.support.postgres import start_postgres

            server = start_postgres()
        try:
            for hours in (int(h) for h in args.chunks.split(",")):
                for name, table in year.items():
                    with tempfile.TemporaryDirectory() as tmp:
                        url = server.new_database() if server else f"sqlite:///{Path(tmp) / 'wh.db'}"
                        seconds = load_seconds(url, name, chunks(table, hours))
                    row = {"database": database, "chunk_hours": hours, "table": name, "rows": table.num_rows,
                           "columns": table.num_columns, "seconds": round(seconds, 1),
                           "rows_per_s": round(table.num_rows / seconds)}  # fmt: skip
                    results.append(row)
                    print(json.dumps(row), flush=True)
        finally:
            if server is not None:
                server.stop()


if __name__ == "__main__":
    main()

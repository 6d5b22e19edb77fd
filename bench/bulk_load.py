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
    """The last week of the work store as warehouse tables (daily layout: day objects; hourly: hourly objects)."""
    from bench import backfill

    daily = (work / "analytics" / "indicators_daily").exists()
    validated = work / ("validated/market_snapshots_daily" if daily else "validated/market_snapshots")
    if not validated.exists():
        raise SystemExit(f"no validated data in {work}: run `python -m bench backfill` first")
    days = sorted(p.name.removeprefix("date=") for p in validated.iterdir() if p.name.startswith("date="))
    first = datetime.fromisoformat(days[-1]).replace(tzinfo=UTC) - timedelta(days=6)
    rows = backfill._warehouse_rows_daily if daily else backfill._warehouse_rows
    try:
        return rows(work, first, WEEK_HOURS)  # type: ignore[no-any-return]
    except RuntimeError as exc:
        raise SystemExit(f"{exc}: run `python -m bench backfill` first") from None


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

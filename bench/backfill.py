"""Benchmark 3: backfill throughput of one year, hourly, 250 coins (~2.2M rows) through validate/transform/archive.

How the year is pushed through: ``LAYOUT`` "daily" (default) runs ``cryptopipe run --start --end --batch --daily``
(docs/batch.md, daily layout): each stage's ``run_days`` over the 365 days, one object per day per dataset (the
daily compaction as validated data, the day's indicators, one report, manifest and run record per day) and the
warehouse loaded in bulk. ``BENCH_BACKFILL_LAYOUT=hourly`` measures the hourly layout of range mode
instead: the range mode (``cryptopipe run --start --end --batch``, docs/batch.md): each stage
runs once over all 8760 intervals through its ``run_range`` (one GX run per chunk of intervals, one indicator pass
over the whole window, one warehouse transaction per day), writing per interval exactly the objects a per-interval
run writes. Data: the generator's year as **staging** partitions (what ingest leaves), one per hour, no history
before the year (the first 100 days of indicators are partly warm-up). Each stage runs in its own process (a pod
per stage; the process import, e.g. GX, is included in the wall time and also reported apart; peak RSS per
stage); validate and transform split the range over every core (``--workers``). The whole year is measured,
nothing is extrapolated.

Baseline: the per-interval figure this benchmark measured first (``PER_INTERVAL_PROJECTED_S``); the previous result
file's total is reported next to it, so each rerun shows its own before.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from bench.common import CHILD_TIMEOUT_S, REPO, BenchConfig, Result, Target, environment, pipeline_env

YEAR_HOURS = 8760
TARGET_SECONDS = 60.0
STAGES = ("validate", "transform", "archive")
# The before of range mode: one execution per interval and stage, a 24-hour sample extrapolated to 8760 h and
# split over the 2 cores (this benchmark's first result, in the git history of bench/results/backfill.json).
PER_INTERVAL_PROJECTED_S = 18_300
FLOOR_SAMPLE_HOURS = 7 * 24  # a week of the year's rows for the insert floors
WORKERS = os.cpu_count() or 1  # `run --batch --workers`: validate and transform use every core
# The daily layout's year is run this many times, each from the same state; the median wall time is the result
# (one run varies by a few seconds on a shared 2-core machine).
DAILY_RUNS = 5
STAGING_VERSION = 1  # bump when the staging year's layout changes: invalidates the cache
# "daily" or "hourly". Not a CRYPTOPIPE_* name: the settings loader rejects unknown CRYPTOPIPE_* keys.
LAYOUT = os.environ.get("BENCH_BACKFILL_LAYOUT", "daily")


def _staging_year(cfg: BenchConfig, days: int) -> tuple[Path, int, Any]:
    """Every generated hour as its own staging partition, cached under the bench cache (a marker says complete)."""
    from bench.datagen import Spec, hourly_tables
    from cryptopipe.core.layout import staging_key
    from cryptopipe.core.storage import FileStore
    from cryptopipe.core.tables import write_table

    spec = Spec(seed=cfg.seed, coins=cfg.coins, days=days, interval_start=Spec().interval_start.replace(hour=23))
    root = cfg.cache / f"{spec.cache_key}-allstaging-v{STAGING_VERSION}"
    marker = root / ".complete.json"
    if marker.exists():
        return root, int(json.loads(marker.read_text())["rows"]), spec
    shutil.rmtree(root, ignore_errors=True)
    store, rows = FileStore(root), 0
    for interval, table in hourly_tables(spec):
        write_table(store, staging_key(interval), table)
        rows += table.num_rows
    marker.write_text(json.dumps({"rows": rows, "hours": spec.hours}))
    return root, rows, spec


def _copy(source: Path, target: Path) -> None:
    """A private copy (hard links: instant; the stages replace objects atomically, never write into them)."""

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, copy_function=link, ignore=shutil.ignore_patterns(".complete.json"))


def _worker(stage: str, start: str, hours: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}  # this checkout's code
    began = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "bench.backfill", stage, start, str(hours)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=False,
        timeout=CHILD_TIMEOUT_S,
    )
    wall = time.perf_counter() - began
    if proc.returncode != 0:
        raise RuntimeError(f"{stage} worker exited {proc.returncode}: {proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "process_wall_s": wall}


def _previous(cfg: BenchConfig) -> float | None:
    """The total of the previous measured result file, if there is one (the 'before' of the latest change)."""
    try:
        old = json.loads((cfg.out / "backfill.json").read_text())
    except (OSError, ValueError):
        return None
    targets = old.get("targets") or []
    return targets[0].get("measured") if old.get("status") == "measured" and targets else None


def run(cfg: BenchConfig) -> Result:
    result = Result("backfill", "Backfill throughput: one year hourly x 250 coins through validate, transform, archive")
    previous = _previous(cfg)
    days = 1 if cfg.smoke else 364
    source, rows, spec = _staging_year(cfg, days)
    hours = spec.hours
    work = cfg.work / "backfill"
    _copy(source, work)
    warehouse = cfg.work / "backfill-warehouse.db"
    warehouse.unlink(missing_ok=True)
    first = spec.first_partition
    stage_rows, outs = [], []
    with environment(pipeline_env(work, coins=cfg.coins, warehouse=warehouse)):
        for stage in STAGES if LAYOUT == "hourly" else ():
            out = _worker(stage, first.isoformat(), hours)
            outs.append(out)
            stage_rows.append(
                {
                    "stage": stage,
                    "intervals": hours,
                    "ok": out["ok"],
                    "skipped": out["skipped"],
                    "failed": out["failed"],
                    "not_run_failed_upstream": out["not_run"],
                    "wall_s": round(out["process_wall_s"], 1),
                    "range_s": round(out["seconds"], 1),
                    "cpu_s": round(out["cpu_seconds"], 1),
                    "process_import_s": round(out["import_seconds"], 2),
                    "rows_per_s": round(rows / out["process_wall_s"]) if out["process_wall_s"] else None,
                    "peak_rss_mib": out["peak_rss_mib"],
                }
            )
        runs: list[dict[str, Any]] = []
        count = 0 if LAYOUT != "daily" else 1 if cfg.smoke else DAILY_RUNS
        for n in range(count):
            if n:  # every run starts from the same state: the staging year alone, no warehouse
                _copy(source, work)
                warehouse.unlink(missing_ok=True)
            runs.append(_worker("all", first.isoformat(), hours))
        if runs:  # the run with the median wall time stands for all (its stage table, phases and peak memory)
            out = sorted(runs, key=lambda r: r["process_wall_s"])[len(runs) // 2]
            stage_rows, outs = _daily_rows(out, rows), [out["stages"][stage] for stage in STAGES]
    if LAYOUT == "daily":
        total = round(out["process_wall_s"], 1)
        result.tables["the run (run --batch --daily --workers N: the stages pipelined in blocks of days)"] = [
            {
                "run": n + 1,
                "wall_s": round(r["process_wall_s"], 1),
                "run_s": round(r["seconds"], 1),
                "cpu_s": round(r["cpu_seconds"], 1),
                "rows_per_s": round(rows / r["process_wall_s"]),
                "peak_rss_mib": r["peak_rss_mib"],
                "workers": WORKERS,
                "median": r is out,
            }
            for n, r in enumerate(runs)
        ]
        result.tables["per stage (outcomes; the stages overlap: the run's wall and CPU time above is the measure)"] = (
            stage_rows
        )
    else:
        total = sum(r["wall_s"] for r in stage_rows)
        result.tables["per stage (whole range, range mode, one process per stage)"] = stage_rows
    phase_rows = []
    for row, out in zip(stage_rows, outs, strict=True):
        (step, step_s), *_ = out["phases"].items() or [("-", None)]
        timing = (
            {}
            if LAYOUT == "daily"
            else {
                "range_wall_s": row["range_s"],
                "cpu_s": row["cpu_s"],
                "ms_per_interval_wall": round(1000 * out["seconds"] / hours, 1),
            }
        )
        phase_rows.append({"stage": row["stage"], **timing, "bulk_step": step, "bulk_step_wall_s_summed": step_s})
    result.tables["where the time goes (bulk step: wall time summed over worker processes)"] = phase_rows
    sample_hours = min(hours, FLOOR_SAMPLE_HOURS)
    # the range's last week: still in the work store after archive's retention pruned the older working data
    sample_first = first + timedelta(hours=hours - sample_hours)
    sample = (_warehouse_rows_daily if LAYOUT == "daily" else _warehouse_rows)(work, sample_first, sample_hours)
    year_rows = {"market_snapshots": rows, "indicators": rows}  # one row per staging row and table (upper bound)
    floors: dict[str, float] = {}
    floor_rows = []
    copies = max(1, round(hours / sample_hours))  # the sample tiled to the range's size (52 weeks for a year)
    for database, measure in (("SQLite executemany", _sqlite_floor), ("PostgreSQL COPY", _postgres_floor)):
        try:
            measured = measure(sample, copies)
        except RuntimeError as exc:
            floor_rows.append({"database": database, "table": "-", "note": f"not measured: {exc}"})
            continue
        floors[database] = sum(year_rows[name] / f["rows_per_s"] for name, f in measured.items())
        for name, f in measured.items():
            year_s = round(year_rows[name] / f["rows_per_s"], 1)
            floor_rows.append(
                {"database": database, "table": name, **f, "year_rows": year_rows[name], "year_s": year_s}
            )
    result.tables["warehouse insert floor (the year's last week tiled to a year, timed inserts only)"] = floor_rows
    result.runs = len(runs) if LAYOUT == "daily" else 1
    result.data = {
        "mode": f"range, {LAYOUT} layout",
        "workers": WORKERS,
        "coins": cfg.coins,
        "hours": hours,
        "rows": rows,
        "storage": "file://",
        "warehouse": "SQLite",
        "per_interval_projected_s": PER_INTERVAL_PROJECTED_S,
        "previous_run_s": previous,
    }
    result.targets = [
        Target(
            "one year (8760 h) through validate+transform+archive",
            f"< {TARGET_SECONDS:.0f} s",
            round(total, 1),
            "s",
            total < TARGET_SECONDS and hours >= YEAR_HOURS,
            baseline=PER_INTERVAL_PROJECTED_S,
            note=f"range mode, {LAYOUT} layout, {hours} h measured end to end (no extrapolation), median of "
            + f"{result.runs} run(s), stages "
            + (f"pipelined over {WORKERS} processes" if LAYOUT == "daily" else "in sequence")
            + f"; baseline: per-interval stages, projected {PER_INTERVAL_PROJECTED_S:,} s"
            + (f"; previous run of this benchmark {previous:,.0f} s" if previous else ""),
        )
    ]
    layout_note = (
        "The daily layout writes one object per day and dataset (compaction, quarantine, quality report, "
        "indicators, alerts, report page, manifest, run records) and loads the warehouse in bulk "
        "(archive/bulk.py), the stages pipelined over the workers; where the CPU time goes is in bench/FINDINGS.md "
        "item 4 (profiles per block of 28 days)."
        if LAYOUT == "daily"
        else "Range mode in the hourly layout writes every interval's objects (validated, quarantine, report, "
        "indicators, alerts, manifest, run records): the cost left is per-interval object I/O and serialisation."
    )
    if LAYOUT == "hourly":
        slowest = max(stage_rows, key=lambda r: r["wall_s"])
        layout_note = f"Slowest stage: {slowest['stage']} ({slowest['wall_s']} s for {hours} intervals). {layout_note}"
    result.notes.append(layout_note)
    load = next((row["bulk_step_wall_s_summed"] for row in phase_rows if row["stage"] == "archive"), None)
    result.notes.append(
        "Floors: loading the year's warehouse rows alone (market_snapshots + indicators, one row per staging row each) "
        + "; ".join(f"{db}: {sec:.0f} s" for db, sec in floors.items())
        + f" at the rates measured above, against the {TARGET_SECONDS:.0f} s target for all three stages, before any "
        f"validation, indicator or object write. This run's own warehouse transactions (delete + bulk load: "
        f"archive/bulk.py, no value bound in Python) took {load} s."
    )
    return result


PHASE_METRICS = {"validate": "batch_gx_seconds", "archive": "batch_warehouse_seconds"}


def _phases(settings: Any, intervals: list[Any], stage: str) -> dict[str, float]:
    """The range's bulk step, from the run records: validate's GX checkpoints over the rows, archive's warehouse
    transactions (each record carries its chunk's time and size). The rest of a stage's time is per-interval
    object work (reads, Parquet/JSON writes, run records, manifests)."""
    from cryptopipe.core.stage import run_record_key
    from cryptopipe.core.storage import open_store

    metric = PHASE_METRICS.get(stage)
    if metric is None:
        return {}
    store = open_store(settings.storage.uri, settings.storage)
    total = 0.0
    for interval in intervals:
        data = store.get_or_none(run_record_key(interval, stage))
        metrics = json.loads(data).get("metrics", {}) if data else {}
        if metric in metrics and metrics.get("batch_intervals"):
            total += metrics[metric] / metrics["batch_intervals"]
    return {metric.removeprefix("batch_"): round(total, 2)}


def _warehouse_rows(work: Path, first: Any, hours: int) -> dict[str, Any]:
    """The warehouse rows of ``hours`` intervals from ``first``, as archive builds them, one table per SQL table."""
    import pyarrow as pa

    from cryptopipe.archive import batch as archive_batch
    from cryptopipe.archive import stage as archive_stage
    from cryptopipe.core.layout import HOUR, Interval, indicators_key, validated_key
    from cryptopipe.core.storage import FileStore
    from cryptopipe.core.tables import read_table

    store = FileStore(work)
    tables: dict[str, list[pa.Table]] = {"market_snapshots": [], "indicators": []}
    for i in range(hours):
        interval = Interval.starting(first + i * HOUR)
        if not (store.exists(validated_key(interval)) and store.exists(indicators_key(interval))):
            continue  # an interval the quality gate stopped has no warehouse rows
        validated = read_table(store, validated_key(interval))
        indicators = read_table(store, indicators_key(interval))
        tables["market_snapshots"].append(
            archive_batch._with_start(validated.select(archive_batch._present(validated)), interval.start)
        )
        tables["indicators"].append(
            archive_batch._with_start(indicators.select(archive_stage.INDICATOR_COLUMNS), interval.start)
        )
    if not tables["indicators"]:
        raise RuntimeError(f"no interval from {first.isoformat()} has validated and indicator objects in {work}")
    return {name: pa.concat_tables(ts, promote_options="permissive") for name, ts in tables.items()}


def _warehouse_rows_daily(work: Path, first: Any, hours: int) -> dict[str, Any]:
    """As ``_warehouse_rows`` from the daily layout's objects: each day's compaction and indicators, the interval
    of a row being the hour its snapshot closes."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from cryptopipe.archive import batch as archive_batch
    from cryptopipe.archive import stage as archive_stage
    from cryptopipe.core.layout import days_between, indicators_daily_key, validated_daily_key
    from cryptopipe.core.storage import FileStore
    from cryptopipe.core.tables import read_table

    def with_start(table: pa.Table) -> pa.Table:
        times = table.column("snapshot_time")
        hour = pa.scalar(timedelta(hours=1), pa.duration("us")).cast(pa.duration(times.type.unit))
        return table.append_column("interval_start", pc.subtract(times, hour).cast(times.type))

    store = FileStore(work)
    tables: dict[str, list[pa.Table]] = {"market_snapshots": [], "indicators": []}
    for day in days_between(first.date(), (first + timedelta(hours=hours - 1)).date()):
        if not (store.exists(validated_daily_key(day)) and store.exists(indicators_daily_key(day))):
            continue  # a day the quality gate stopped has no warehouse rows
        validated = read_table(store, validated_daily_key(day))
        indicators = read_table(store, indicators_daily_key(day))
        tables["market_snapshots"].append(with_start(validated.select(archive_batch._present(validated))))
        tables["indicators"].append(with_start(indicators.select(archive_stage.INDICATOR_COLUMNS)))
    if not tables["indicators"]:
        raise RuntimeError(f"no day from {first.date()} has a compaction and daily indicators in {work}")
    return {name: pa.concat_tables(ts, promote_options="permissive") for name, ts in tables.items()}


def _shifted(table: Any, weeks: int) -> Any:
    """The table with its key times moved back ``weeks`` weeks: the same rows standing for another week."""
    import pyarrow as pa
    import pyarrow.compute as pc

    for name in ("snapshot_time", "interval_start"):
        column = table.column(name)
        moved = pc.subtract(
            column, pa.scalar(timedelta(weeks=weeks), pa.duration("us")).cast(pa.duration(column.type.unit))
        )
        table = table.set_column(table.schema.get_field_index(name), name, moved.cast(column.type))
    return table


def _sqlite_floor(combined: dict[str, Any], copies: int) -> dict[str, Any]:
    """SQLite's own insert cost at the year's size: the sample tiled ``copies`` times (key times shifted a week per
    copy) into a fresh database, one transaction per copy, values already bound, the DB-API ``executemany`` of a
    plain ``INSERT`` (no SQLAlchemy, no upsert): the lowest per-row cost of loading the year into it."""
    import sqlite3
    import tempfile

    import sqlalchemy as sa

    from cryptopipe.archive import batch as archive_batch
    from cryptopipe.archive import models

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "floor.db"
        engine = sa.create_engine(f"sqlite:///{path}")
        models.metadata.create_all(engine)
        with engine.connect() as conn:
            db = sqlite3.connect(path)
            for name, table in combined.items():
                names = table.column_names
                sql = f"INSERT INTO {name} ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
                seconds = 0.0
                for copy in range(copies):
                    shifted = _shifted(table, copy)
                    columns = [
                        archive_batch._bind_values(conn, models.metadata.tables[name].c[c], shifted.column(c))
                        for c in names
                    ]
                    rows = list(zip(*columns, strict=True))
                    clock = time.perf_counter()
                    with db:
                        db.executemany(sql, rows)
                    seconds += time.perf_counter() - clock
                total = table.num_rows * copies
                out[name] = {"rows": total, "columns": len(names), "rows_per_s": round(total / seconds)}
            db.close()
        engine.dispose()
    return out


def _postgres_floor(combined: dict[str, Any], copies: int) -> dict[str, Any]:
    """PostgreSQL's bulk path, what a production (RDS) load could at best do: the sample tiled ``copies`` times as
    CSV (Arrow's writer) and ``COPY`` straight into the warehouse tables (primary key and index maintained; no
    upsert, no staging table), one transaction per copy, on a throwaway local server. RuntimeError when no
    PostgreSQL binaries are installed."""
    import io

    import psycopg
    import pyarrow.csv as pacsv
    import sqlalchemy as sa

    from cryptopipe.archive import models
    from tests.support.postgres import find_pg_bin, start_postgres

    if find_pg_bin() is None:
        raise RuntimeError("PostgreSQL binaries are not installed (apt-get install postgresql-15)")
    server = start_postgres()
    try:
        url = server.new_database()
        engine = sa.create_engine(url)
        models.metadata.create_all(engine)
        engine.dispose()
        out: dict[str, Any] = {}
        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://")) as conn:
            for name, table in combined.items():
                sql = f"COPY {name} ({', '.join(table.column_names)}) FROM STDIN (FORMAT csv)"
                seconds = 0.0
                for copy in range(copies):
                    shifted = _shifted(table, copy)
                    clock = time.perf_counter()
                    buffer = io.BytesIO()
                    pacsv.write_csv(shifted, buffer, pacsv.WriteOptions(include_header=False))
                    with conn.cursor().copy(sql) as cp:
                        cp.write(buffer.getvalue())
                    conn.commit()
                    seconds += time.perf_counter() - clock
                total = table.num_rows * copies
                out[name] = {"rows": total, "columns": table.num_columns, "rows_per_s": round(total / seconds)}
        return out
    finally:
        server.stop()


def _cpu_seconds() -> float:
    """This process and its finished worker processes (range parts run in processes of their own)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _peak_rss_mib() -> float:
    """The largest resident set of this process or any of its finished worker processes."""
    import resource

    own = 0.0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            own = int(line.split()[1]) / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return round(max(own, children), 1)


def _daily_rows(out: dict[str, Any], rows: int) -> list[dict[str, Any]]:
    """Outcomes per stage. No seconds per stage: the stages overlap in the pipeline, and a day record's duration
    includes its share of its chunk's shared work, so they do not add up to a stage's time."""
    return [
        {
            "stage": stage,
            "days": o["days"],
            "ok": o["ok"],
            "skipped": o["skipped"],
            "failed": o["failed"],
            "not_run_failed_upstream": o["not_run"],
            "rows": rows if o["ok"] == o["days"] else None,
        }
        for stage, o in out["stages"].items()
    ]


def _failed_upstream_day(settings: Any, day: Any, upstream: str) -> bool:
    from cryptopipe.core.stage import day_run_record_key
    from cryptopipe.core.storage import open_store

    data = open_store(settings.storage.uri, settings.storage).get_or_none(day_run_record_key(day, upstream))
    return data is None or json.loads(data).get("status") == "failed"


DAY_PHASE_METRICS = {"validate": "batch_gx_seconds", "archive": "warehouse_seconds"}


def _day_phases(settings: Any, stage: str) -> dict[str, float]:
    """The daily layout's bulk step from the day run records (validate: GX over the rows, shared by the days of a
    chunk and divided by ``batch_days``; archive: the warehouse transactions)."""
    from cryptopipe.core.stage import RUNS
    from cryptopipe.core.storage import open_store

    metric = DAY_PHASE_METRICS.get(stage)
    if metric is None:
        return {}
    store = open_store(settings.storage.uri, settings.storage)
    total = 0.0
    for key in store.list(f"{RUNS}/daily/"):
        if key.endswith(f"/{stage}.json"):
            metrics = json.loads(store.get(key)).get("metrics", {})
            total += metrics.get(metric, 0.0) / max(1, metrics.get("batch_days", 1))
    return {metric.removeprefix("batch_"): round(total, 2)}


def _failed_upstream(settings: Any, interval: Any, upstream: str) -> bool:
    from cryptopipe.core.stage import run_record_key
    from cryptopipe.core.storage import open_store

    data = open_store(settings.storage.uri, settings.storage).get_or_none(run_record_key(interval, upstream))
    return data is None or json.loads(data).get("status") == "failed"


def main(argv: list[str]) -> int:
    """``python -m bench.backfill STAGE START_ISO HOURS``: one stage's range run; prints one JSON line."""
    stage, start, hours = argv[0], argv[1], int(argv[2])
    began = time.perf_counter()
    from datetime import datetime

    from bench.common import quiet_logger
    from cryptopipe.core.config import load_settings
    from cryptopipe.core.layout import HOUR, Interval, day_intervals, whole_days
    from cryptopipe.runner import run_pipeline_batch, run_pipeline_daily

    settings = load_settings()
    if stage == "all":
        return _main_all(settings, datetime.fromisoformat(start), hours, began)
    if stage == "validate":
        from cryptopipe.validate.gx_runner import import_gx

        import_gx()  # the one-off import, reported apart from the range
    else:
        import cryptopipe.archive.batch
        import cryptopipe.transform.stage  # noqa: F401
    imported = time.perf_counter() - began
    first = datetime.fromisoformat(start)
    intervals = [Interval.starting(first + i * HOUR) for i in range(hours)]
    upstream = STAGES[STAGES.index(stage) - 1] if stage != STAGES[0] else None
    if LAYOUT == "daily":
        days = whole_days(intervals)
        if upstream:  # as `run --batch --daily` does: a day that failed upstream is not run downstream
            days = [d for d in days if not _failed_upstream_day(settings, d, upstream)]
        intervals = [iv for d in days for iv in day_intervals(d)]
    elif upstream:  # as `run --batch` does: an interval that failed upstream is not run downstream
        intervals = [iv for iv in intervals if not _failed_upstream(settings, iv, upstream)]
    cpu, clock = _cpu_seconds(), time.perf_counter()
    if LAYOUT == "daily":
        summary = run_pipeline_daily(settings, intervals, [stage], quiet_logger(), workers=WORKERS)
    else:
        summary = run_pipeline_batch(settings, intervals, [stage], quiet_logger(), workers=WORKERS)
    seconds, cpu_seconds = time.perf_counter() - clock, _cpu_seconds() - cpu
    per_unit = 24 if LAYOUT == "daily" else 1  # a daily result stands for the day's 24 intervals
    status = [r.status for r in summary.results for _ in range(per_unit)]
    print(
        json.dumps(
            {
                "stage": stage,
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
                "import_seconds": imported,
                "ok": status.count("success"),
                "not_run": hours - len(status),
                "skipped": status.count("skipped"),
                "failed": status.count("failed"),
                "peak_rss_mib": _peak_rss_mib(),
                "phases": _phases(settings, intervals, stage) if LAYOUT == "hourly" else _day_phases(settings, stage),
            }
        )
    )
    return 0


def _main_all(settings: Any, first: Any, hours: int, began: float) -> int:
    """The daily layout's run: validate, transform, archive pipelined over WORKERS processes, as
    ``cryptopipe run --batch --daily --workers N`` runs them; per stage from the day results."""
    from bench.common import quiet_logger
    from cryptopipe.core.layout import HOUR, Interval
    from cryptopipe.runner import run_pipeline_daily

    intervals = [Interval.starting(first + i * HOUR) for i in range(hours)]
    imported = time.perf_counter() - began
    cpu, clock = _cpu_seconds(), time.perf_counter()
    summary = run_pipeline_daily(settings, intervals, list(STAGES), quiet_logger(), workers=WORKERS)
    seconds, cpu_seconds = time.perf_counter() - clock, _cpu_seconds() - cpu
    days = hours // 24
    stages = {}
    for stage in STAGES:
        mine = [r for r in summary.results if r.stage == stage]
        status = [r.status for r in mine]
        stages[stage] = {
            "days": days,
            "ok": status.count("success"),
            "skipped": status.count("skipped"),
            "failed": status.count("failed"),
            "not_run": days - len(mine),
            "seconds": sum(r.duration_seconds for r in mine),
            "phases": _day_phases(settings, stage),
        }
    print(
        json.dumps(
            {
                "stage": "all",
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
                "import_seconds": imported,
                "peak_rss_mib": _peak_rss_mib(),
                "stages": stages,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Benchmark 3: backfill throughput of one year, hourly, 250 coins (~2.2M rows) through validate/transform/archive.

How the year is pushed through: the range mode (``cryptopipe run --start --end --batch``, docs/batch.md): each stage
runs once over all 8760 intervals through its ``run_range`` (one GX run per chunk of intervals, one indicator pass
over the whole window, one warehouse transaction per day), writing per interval exactly the objects a per-interval
run writes. Data: the generator's year as **staging** partitions (what ingest leaves), one per hour, no history
before the year (the first 100 days of indicators are partly warm-up). Each stage runs in its own process (a pod
per stage; the process import, e.g. GX, is included in the wall time and also reported apart; peak RSS per
stage). The whole year is measured, nothing is extrapolated.

"Before": the per-interval figure this benchmark measured earlier (a 24-hour sample of per-interval stage runs,
extrapolated to 8760 h and split over the cores), carried over from the previous result file when it has one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import REPO, BenchConfig, Result, Target, environment, pipeline_env

YEAR_HOURS = 8760
TARGET_SECONDS = 60.0
STAGES = ("validate", "transform", "archive")
STAGING_VERSION = 1  # bump when the staging year's layout changes: invalidates the cache


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
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    began = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "bench.backfill", stage, start, str(hours)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        check=False,
    )
    wall = time.perf_counter() - began
    if proc.returncode != 0:
        raise RuntimeError(f"{stage} worker exited {proc.returncode}: {proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "process_wall_s": wall}


def _before(cfg: BenchConfig) -> float | None:
    """The per-interval figure of the previous result file (the 'before' of this change), if it is one."""
    path = cfg.out / "backfill.json"
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if old.get("data", {}).get("mode") == "range":
        return old.get("data", {}).get("before_per_interval_s")
    targets = old.get("targets") or []
    return targets[0].get("measured") if targets else None


def run(cfg: BenchConfig) -> Result:
    result = Result("backfill", "Backfill throughput: one year hourly x 250 coins through validate, transform, archive")
    before = _before(cfg)
    days = 1 if cfg.smoke else 364
    source, rows, spec = _staging_year(cfg, days)
    hours = spec.hours
    work = cfg.work / "backfill"
    _copy(source, work)
    warehouse = cfg.work / "backfill-warehouse.db"
    warehouse.unlink(missing_ok=True)
    first = spec.first_partition
    stage_rows = []
    with environment(pipeline_env(work, coins=cfg.coins, warehouse=warehouse)):
        for stage in STAGES:
            out = _worker(stage, first.isoformat(), hours)
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
    total = sum(r["wall_s"] for r in stage_rows)
    result.tables["per stage (whole range, range mode, one process per stage)"] = stage_rows
    result.runs = 1
    result.data = {
        "mode": "range",
        "coins": cfg.coins,
        "hours": hours,
        "rows": rows,
        "storage": "file://",
        "warehouse": "SQLite",
        "before_per_interval_s": before,
    }
    result.targets = [
        Target(
            "one year (8760 h) through validate+transform+archive",
            f"< {TARGET_SECONDS:.0f} s",
            round(total, 1),
            "s",
            total < TARGET_SECONDS and hours >= YEAR_HOURS,
            baseline=before,
            note=f"range mode, {hours} h measured end to end (no extrapolation), stages in sequence; "
            + (f"before: per-interval stages, projected {before:,.0f} s" if before else "no per-interval figure"),
        )
    ]
    slowest = max(stage_rows, key=lambda r: r["wall_s"])
    result.notes.append(
        f"Slowest stage: {slowest['stage']} ({slowest['wall_s']} s for {hours} intervals). Range mode writes every "
        "interval's objects (validated, quarantine, report, indicators, alerts, manifest, run records): the cost "
        "left is per-interval object I/O and serialisation, see docs/batch.md."
    )
    return result


def _peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


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
    from cryptopipe.core.layout import HOUR, Interval
    from cryptopipe.runner import run_pipeline_batch

    settings = load_settings()
    if stage == "validate":
        from cryptopipe.validate.gx_runner import import_gx

        import_gx()  # the one-off import, reported apart from the range
    else:
        import cryptopipe.archive.batch
        import cryptopipe.transform.stage  # noqa: F401
    imported = time.perf_counter() - began
    first = datetime.fromisoformat(start)
    intervals = [Interval.starting(first + i * HOUR) for i in range(hours)]
    if stage != STAGES[0]:  # as `run --batch` does: an interval that failed upstream is not run downstream
        intervals = [iv for iv in intervals if not _failed_upstream(settings, iv, STAGES[STAGES.index(stage) - 1])]
    cpu, clock = time.process_time(), time.perf_counter()
    summary = run_pipeline_batch(settings, intervals, [stage], quiet_logger())
    seconds, cpu_seconds = time.perf_counter() - clock, time.process_time() - cpu
    status = [r.status for r in summary.results]
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
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

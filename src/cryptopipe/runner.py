"""``cryptopipe run``: the stages in order, in one process, for one or more hourly intervals.

This is the demo and local-development path. Production runs each stage as its own pod from the DAG, with the
same stage functions and the same storage keys, so what works here works there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptopipe.core.config import Settings
from cryptopipe.core.errors import ConfigError, ExitCode, PipelineError
from cryptopipe.core.layout import HOUR, Interval, hourly_intervals, parse_utc
from cryptopipe.core.stage import StageResult, execute_stage
from cryptopipe.core.storage import open_stores


def intervals_from_args(start: str | None, end: str | None, last: int | None) -> list[Interval]:
    if start or end:
        if not (start and end) or last is not None:
            raise ConfigError("give --start and --end together (or --last N instead)")
        return hourly_intervals(parse_utc(start, "--start"), parse_utc(end, "--end"))
    count = 1 if last is None else last
    if not 1 <= count <= 24 * 366:
        raise ConfigError(f"--last {count}: must be between 1 and 8784 hours")
    now_hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    return hourly_intervals(now_hour - count * HOUR, now_hour)


# The few numbers a person scans for in the summary; every metric is in the run records (runs/...).
SUMMARY_METRICS = (
    "pages", "retries", "missing_ids", "quality_score", "rows_quarantined", "warnings",
    "anomalies", "charts", "rows_read", "warehouse_rows", "archived_objects", "retention_deleted",
)  # fmt: skip


@dataclass
class RunSummary:
    storage_uri: str
    results: list[StageResult] = field(default_factory=list)
    failures: list[tuple[Interval, str, PipelineError]] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return int(self.failures[0][2].exit_code) if self.failures else int(ExitCode.OK)

    def render(self) -> str:
        lines = ["", "=== cryptopipe run summary ==="]
        for res in self.results:
            rows = sum(o.rows or 0 for o in res.outputs if o.rows is not None)
            extras = ", ".join(f"{k}={res.metrics[k]}" for k in SUMMARY_METRICS if k in res.metrics)
            lines.append(
                f"{res.interval_start[:16]}Z  {res.stage:<9} {res.status:<7} {res.duration_seconds:7.2f}s  "
                f"rows={rows:<7} {extras}"
            )
        for interval, stage, err in self.failures:
            lines.append(f"FAILED {interval} at {stage} (exit {int(err.exit_code)}): {err.message}")
        lines.append(f"outputs: {self.storage_uri}")
        wheres = {k: v for res in self.results for k, v in res.metrics.items() if k.endswith("_uri") and k != "raw_uri"}
        lines.extend(f"  {k.removesuffix('_uri').replace('_', ' ')}: {v}" for k, v in sorted(wheres.items()))
        return "\n".join(lines)


def run_pipeline(settings: Settings, intervals: list[Interval], stages: list[str], log: logging.Logger) -> RunSummary:
    from cryptopipe.cli import load_stage

    functions = {name: load_stage(name) for name in stages}  # fail fast on a missing extra
    store, _ = open_stores(settings.storage)
    summary = RunSummary(storage_uri=store.uri)
    for interval in intervals:
        for name in stages:
            try:
                summary.results.append(execute_stage(name, functions[name], settings, interval, log))
            except PipelineError as exc:
                # Nothing downstream runs on this interval (as in the DAG); later intervals still run.
                summary.failures.append((interval, name, exc))
                break
    return summary

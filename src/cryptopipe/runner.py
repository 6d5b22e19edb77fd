"""``cryptopipe run``: the stages in order, in one process, for one or more hourly intervals.

This is the demo and local-development path. Production runs each stage as its own pod from the DAG, with the
same stage functions and the same storage keys, so what works here works there.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import multiprocessing
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TypeVar

from cryptopipe.core.config import Settings
from cryptopipe.core.errors import ConfigError, ExitCode, PipelineError
from cryptopipe.core.layout import HOUR, Interval, day_intervals, hourly_intervals, parse_utc, whole_days
from cryptopipe.core.logging import register_secret, registered_secrets, setup_logging
from cryptopipe.core.stage import (
    DAILY_LAYOUT_STAGES,
    ObjectRef,
    StageResult,
    ensure_hourly_allowed,
    execute_stage,
    run_record_key,
)
from cryptopipe.core.storage import ObjectStore, open_stores


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
    batch: bool = False  # range mode: one aggregate line per stage instead of one line per interval and stage
    daily_stages: set[str] = field(default_factory=set)  # stages that ran in the daily layout (one result per day)

    @property
    def exit_code(self) -> int:
        return int(self.failures[0][2].exit_code) if self.failures else int(ExitCode.OK)

    def render(self) -> str:
        lines = ["", "=== cryptopipe run summary ==="]
        if self.batch:
            lines.extend(self._aggregate())
        for res in [] if self.batch else self.results:
            rows = sum(o.rows or 0 for o in res.outputs if o.rows is not None)
            extras = ", ".join(f"{k}={res.metrics[k]}" for k in SUMMARY_METRICS if k in res.metrics)
            lines.append(
                f"{res.interval_start[:16]}Z  {res.stage:<9} {res.status:<7} {res.duration_seconds:7.2f}s  "
                f"rows={rows:<7} {extras}"
            )
        shown = self.failures if not self.batch else self.failures[:MAX_FAILURES_SHOWN]
        for interval, stage, err in shown:
            where = f"day {interval.start.date()}" if stage in self.daily_stages else str(interval)
            lines.append(f"FAILED {where} at {stage} (exit {int(err.exit_code)}): {err.message}")
        if len(shown) < len(self.failures):
            lines.append(f"... and {len(self.failures) - len(shown)} more failures (see runs/<partition>/*.json)")
        lines.append(f"outputs: {self.storage_uri}")
        if self.batch:
            return "\n".join(lines)
        wheres = {k: v for res in self.results for k, v in res.metrics.items() if k.endswith("_uri") and k != "raw_uri"}
        lines.extend(f"  {k.removesuffix('_uri').replace('_', ' ')}: {v}" for k, v in sorted(wheres.items()))
        return "\n".join(lines)

    def _aggregate(self) -> list[str]:
        lines = []
        stages = list(dict.fromkeys(res.stage for res in self.results))
        for stage in stages:
            runs = [res for res in self.results if res.stage == stage]
            status = {s: sum(1 for r in runs if r.status == s) for s in ("success", "skipped", "failed")}
            rows = sum(o.rows or 0 for r in runs for o in r.outputs if o.rows is not None)
            seconds = sum(r.duration_seconds for r in runs)
            unit = "days" if stage in self.daily_stages else "intervals"
            lines.append(
                f"{stage:<9} {unit}={len(runs):<6} ok={status['success']:<6} skipped={status['skipped']:<5} "
                f"failed={status['failed']:<5} rows={rows:<9} stage_seconds={seconds:.1f}"
            )
        return lines


MAX_FAILURES_SHOWN = 20
RangeFn = Callable[[Settings, list[Interval], logging.Logger], list[StageResult]]


def range_function(name: str) -> RangeFn | None:
    """The stage module's ``run_range`` (range mode), if it has one; ingest never runs as a range (live API)."""
    import importlib

    from cryptopipe.cli import STAGES

    if name == "ingest":
        return None
    module = importlib.import_module(STAGES[name].split(":")[0])
    fn: RangeFn | None = getattr(module, "run_range", None)
    return fn


def _error_of(result: StageResult) -> PipelineError:
    """A failed StageResult as the typed error per-interval mode would have raised (same exit code and message)."""
    err = PipelineError(result.message or f"{result.stage} failed")
    err.exit_code = ExitCode(result.exit_code)
    return err


T = TypeVar("T")


def _runs(items: list[T], adjacent: Callable[[T, T], bool]) -> list[list[T]]:
    """Split into runs whose neighbours are ``adjacent``."""
    segments: list[list[T]] = []
    for item in items:
        if segments and adjacent(segments[-1][-1], item):
            segments[-1].append(item)
        else:
            segments.append([item])
    return segments


def consecutive(intervals: list[Interval]) -> list[list[Interval]]:
    """Split into runs of consecutive hours: an interval stopped upstream leaves a gap a range cannot span
    (transform's range reads one contiguous window)."""
    return _runs(intervals, lambda a, b: a.end == b.start)


def _run_range(
    range_fn: RangeFn, name: str, settings: Settings, segment: list[Interval], log: logging.Logger
) -> list[StageResult]:
    """One StageResult per interval. A range function may also raise the first interval's error after finishing
    the others (transform does); then each interval's run record says how it went."""
    try:
        results = range_fn(settings, segment, log)
    except PipelineError as exc:
        store, _ = open_stores(settings.storage)
        return [_result_from_record(store, name, interval, exc) for interval in segment]
    if len(results) != len(segment):  # a contract breach would silently drop intervals from the summary
        raise RuntimeError(f"{name}.run_range returned {len(results)} results for {len(segment)} intervals")
    return results


def _result_from_record(store: ObjectStore, name: str, interval: Interval, exc: PipelineError) -> StageResult:
    data = store.get_or_none(run_record_key(interval, name))
    record = json.loads(data) if data else {}
    if record.get("interval_start") != interval.start.isoformat() or record.get("status") not in ("success", "failed"):
        return StageResult(name, interval.start.isoformat(), interval.end.isoformat(), "failed",
                           int(exc.exit_code), exc.message)  # fmt: skip
    refs = {k: [ObjectRef(**o) for o in record.get(k, [])] for k in ("inputs", "outputs")}
    return StageResult(**{**record, **refs})


# Stages whose range may be split over worker processes: their intervals' outputs are independent (transform's
# lookback reads validated data, which the validate stage finished before). Archive is not: the warehouse
# serialises writers (SQLite has one), so parallel loads would only queue on its lock.
PARALLEL_STAGES = frozenset({"validate", "transform"})
MAX_WORKERS = 64


def split_parts(segment: list[Interval], workers: int) -> list[list[Interval]]:
    """At most ``workers`` contiguous parts, each a whole number of 24-hour blocks from the range start."""
    days = math.ceil(len(segment) / 24)
    if workers <= 1 or days < 2:
        return [segment]
    size = 24 * math.ceil(days / min(workers, days))
    return [segment[i : i + size] for i in range(0, len(segment), size)]


def _worker_log(name: str, level: int, secrets: list[str]) -> logging.Logger:
    """A spawned worker logs like its parent, with the parent's secrets still redacted."""
    for secret in secrets:
        register_secret(secret)
    return setup_logging(name, logging.getLevelName(level))


def _range_part(
    name: str, settings: Settings, part: list[Interval], level: int, secrets: list[str]
) -> list[StageResult]:
    """A worker process: the same range function on its part, logging like its parent, secrets still redacted."""
    log = _worker_log(name, level, secrets)
    range_fn = range_function(name)
    assert range_fn is not None
    return _run_range(range_fn, name, settings, part, log)


def _run_parts(
    range_fn: RangeFn, name: str, settings: Settings, segment: list[Interval], log: logging.Logger, *, workers: int
) -> list[StageResult]:
    parts = split_parts(segment, workers) if name in PARALLEL_STAGES else [segment]
    if len(parts) == 1:
        return _run_range(range_fn, name, settings, segment, log)
    log.info("range split over worker processes", extra={"stage_name": name, "workers": len(parts)})
    # spawn, not fork: the parent may hold threads (pyarrow, GX) whose locks a forked child would inherit held.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(len(parts), mp_context=context) as pool:
        futures = [
            pool.submit(_range_part, name, settings, part, log.getEffectiveLevel(), registered_secrets())
            for part in parts
        ]
        return [result for future in futures for result in future.result()]


def run_pipeline_batch(
    settings: Settings, intervals: list[Interval], stages: list[str], log: logging.Logger, *, workers: int = 1
) -> RunSummary:
    """Each stage over the whole range, in stage order: a stage's ``run_range`` when it has one, else one
    execution per interval. An interval that fails a stage is left out of the later stages (as per interval:
    nothing downstream runs on it); the other intervals go on. ``workers`` > 1 splits validate's and transform's
    ranges into that many parts of whole days, each in its own process (the results are the same objects)."""
    from cryptopipe.cli import load_stage

    if not 1 <= workers <= MAX_WORKERS:
        raise ConfigError(f"--workers {workers}: must be between 1 and {MAX_WORKERS}")

    functions = {name: load_stage(name) for name in stages}  # fail fast on a missing extra
    store, _ = open_stores(settings.storage)
    _refuse_daily_days(store, intervals, stages)
    summary = RunSummary(storage_uri=store.uri, batch=True)
    stopped: set[Interval] = set()
    for name in stages:
        todo = [iv for iv in intervals if iv not in stopped]
        if not todo:
            break
        range_fn = range_function(name)
        if range_fn is None:
            log.info("stage runs per interval", extra={"stage_name": name, "intervals": len(todo)})
            results = []
            for interval in todo:
                try:
                    results.append(execute_stage(name, functions[name], settings, interval, log))
                except PipelineError as exc:
                    stopped.add(interval)
                    summary.failures.append((interval, name, exc))
            summary.results.extend(results)
            continue
        for segment in consecutive(todo):
            log.info("stage runs as a range", extra={"stage_name": name, "intervals": len(segment)})
            results = _run_parts(range_fn, name, settings, segment, log, workers=workers)
            for interval, result in zip(segment, results, strict=True):
                summary.results.append(result)
                if result.status == "failed":
                    stopped.add(interval)
                    summary.failures.append((interval, name, _error_of(result)))
    summary.failures.sort(key=lambda f: (f[0].start, stages.index(f[1])))
    return summary


def _refuse_daily_days(store: ObjectStore, intervals: list[Interval], stages: list[str]) -> None:
    """Hourly range mode on a day written in the daily layout: refused before anything runs (one check per day)."""
    checked = [s for s in stages if s in DAILY_LAYOUT_STAGES][:1]
    for first in {iv.start.date(): iv for iv in reversed(intervals)}.values() if checked else []:
        ensure_hourly_allowed(store, first, checked[0])


DayFn = Callable[..., list[StageResult]]  # (settings, days, log) -> a result per day; transform's also takes charts=


def day_function(name: str) -> DayFn:
    """The stage module's ``run_days`` (daily layout); ingest has none (it fetches hour by hour)."""
    import importlib

    from cryptopipe.cli import STAGES

    module = importlib.import_module(STAGES[name].split(":")[0])
    fn: DayFn | None = getattr(module, "run_days", None)
    if fn is None:
        raise ConfigError(f"stage {name!r} has no daily layout (run_days); run it without --daily")
    return fn


BLOCK_DAYS = 28  # the daily layout's pipelining unit: a stage runs a block while the next stage runs the one before
TAIL_MIN_DAYS = 7  # the smallest block of the tapered tail (see day_blocks)


def day_blocks(days: list[date], size: int) -> list[list[date]]:
    """Blocks of ``size`` days, the last ``size`` days split in halves down to TAIL_MIN_DAYS (28 -> 14, 7, 7): the
    last block runs validate, transform and archive one after the other with nothing else left to run beside it,
    so the smaller it is, the less a core idles at the end."""
    tail = min(len(days), size)
    head = len(days) - tail
    sizes = [min(size, head - first) for first in range(0, head, size)]
    while tail >= 2 * TAIL_MIN_DAYS:
        sizes.append(tail - tail // 2)
        tail //= 2
    sizes += [tail] if tail else []
    ends = list(itertools.accumulate(sizes))
    return [days[end - n : end] for n, end in zip(sizes, ends, strict=True)]


def consecutive_days(days: list[date]) -> list[list[date]]:
    """Runs of consecutive days: a day stopped upstream leaves a gap (transform reads one contiguous window)."""
    return _runs(days, lambda a, b: (b - a).days == 1)


def _run_days(
    fn: DayFn, name: str, settings: Settings, days: list[date], log: logging.Logger, *, final: bool = True
) -> list[StageResult]:
    """``fn`` over the runs of consecutive days. ``final``: these days end the whole run, so transform draws the
    charts of their last day (as range mode draws the last interval's); an earlier block's last day gets none,
    which keeps the day objects the same however the run is split into blocks."""
    results: list[StageResult] = []
    segments = consecutive_days(days)
    for n, segment in enumerate(segments):
        last = final and n == len(segments) - 1
        got = fn(settings, segment, log, charts=last) if name == "transform" else fn(settings, segment, log)
        if len(got) != len(segment):  # a contract breach would silently drop days from the summary
            raise RuntimeError(f"{name}.run_days returned {len(got)} results for {len(segment)} days")
        results.extend(got)
    return results


def _day_block(
    name: str, settings: Settings, days: list[date], level: int, secrets: list[str], *, final: bool
) -> list[StageResult]:
    """A worker process of the daily layout (see ``_range_part``): one stage over one block of days."""
    return _run_days(day_function(name), name, settings, days, _worker_log(name, level, secrets), final=final)


@dataclass
class _Pipeline:
    """Which (stage, block) runs may start: a block of a stage needs the previous stage done on every block up to
    it (transform's lookback reads earlier validated days); a stage that is not in PARALLEL_STAGES (archive: one
    warehouse writer, retention in order) also needs its own previous block done."""

    stages: list[str]
    blocks: list[list[date]]
    stopped: set[date] = field(default_factory=set)
    done: set[tuple[int, int]] = field(default_factory=set)
    started: set[tuple[int, int]] = field(default_factory=set)

    def ready(self) -> list[tuple[int, int]]:
        out = []
        for s in reversed(range(len(self.stages))):  # downstream first: keeps the serial chain moving
            for b in range(len(self.blocks)):
                if (s, b) in self.started:
                    continue
                upstream = s == 0 or all((s - 1, u) in self.done for u in range(b + 1))
                serial = self.stages[s] in PARALLEL_STAGES or b == 0 or (s, b - 1) in self.done
                if upstream and serial:
                    out.append((s, b))
        return out

    def todo(self, block: int) -> list[date]:
        return [day for day in self.blocks[block] if day not in self.stopped]


def _run_daily_stages(
    settings: Settings,
    days: list[date],
    fns: dict[str, DayFn],
    log: logging.Logger,
    *,
    workers: int,
    summary: RunSummary,
) -> None:
    """validate/transform/archive over the days: in this process (workers == 1), else pipelined over ``workers``
    processes in blocks of BLOCK_DAYS (a stage's block runs while the next stage runs the block before)."""
    stages = list(fns)
    pipe = _Pipeline(stages, day_blocks(days, BLOCK_DAYS))
    results: dict[tuple[int, int], list[StageResult]] = {}

    def record(key: tuple[int, int], got: list[StageResult]) -> None:
        results[key] = got
        pipe.done.add(key)
        for result in got:
            if result.status == "failed":
                pipe.stopped.add(parse_utc(result.interval_start, "run record").date())

    if workers <= 1:
        for s, name in enumerate(stages):
            for b in range(len(pipe.blocks)):
                final = b == len(pipe.blocks) - 1
                record((s, b), _run_days(fns[name], name, settings, pipe.todo(b), log, final=final))
    else:
        context = multiprocessing.get_context("spawn")  # as _run_parts: no inherited thread state
        level, secrets = log.getEffectiveLevel(), registered_secrets()
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            running: dict[Future[list[StageResult]], tuple[int, int]] = {}
            while len(pipe.done) < len(stages) * len(pipe.blocks):
                for key in pipe.ready()[: max(0, workers - len(running))]:
                    pipe.started.add(key)
                    todo = pipe.todo(key[1])
                    if not todo:
                        record(key, [])
                        continue
                    final = key[1] == len(pipe.blocks) - 1
                    future = pool.submit(_day_block, stages[key[0]], settings, todo, level, secrets, final=final)
                    running[future] = key
                if running:
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in finished:
                        record(running.pop(future), future.result())
    for s, name in enumerate(stages):
        summary.daily_stages.add(name)
        for b in range(len(pipe.blocks)):
            for result in results.get((s, b), []):
                summary.results.append(result)
                if result.status == "failed":
                    day_start_hour = Interval.starting(parse_utc(result.interval_start, "run record"))
                    summary.failures.append((day_start_hour, name, _error_of(result)))


def run_pipeline_daily(
    settings: Settings, intervals: list[Interval], stages: list[str], log: logging.Logger, *, workers: int = 1
) -> RunSummary:
    """Range mode in the daily layout: whole UTC days, one object per day per dataset (docs/batch.md). Ingest, if
    asked for, runs per interval first; validate, transform and archive run over the days (``run_days``), with
    ``workers`` > 1 pipelined over that many processes. A day that fails a stage (any of its hours) is left out of
    the later stages; the other days go on."""
    from cryptopipe.cli import load_stage

    if not 1 <= workers <= MAX_WORKERS:
        raise ConfigError(f"--workers {workers}: must be between 1 and {MAX_WORKERS}")
    days = whole_days(intervals)
    functions = {name: load_stage(name) for name in stages}  # fail fast on a missing extra
    fns = {name: day_function(name) for name in stages if name != "ingest"}
    store, _ = open_stores(settings.storage)
    summary = RunSummary(storage_uri=store.uri, batch=True)
    stopped: set[date] = set()
    if "ingest" in stages:
        for interval in (iv for day in days for iv in day_intervals(day)):
            if interval.start.date() in stopped:
                continue
            try:
                summary.results.append(execute_stage("ingest", functions["ingest"], settings, interval, log))
            except PipelineError as exc:
                stopped.add(interval.start.date())
                summary.failures.append((interval, "ingest", exc))
    todo = [day for day in days if day not in stopped]
    if fns and todo:
        log.info("stages run over days", extra={"stages": list(fns), "days": len(todo), "workers": workers})
        _run_daily_stages(settings, todo, fns, log, workers=workers, summary=summary)
    summary.failures.sort(key=lambda f: (f[0].start, stages.index(f[1])))
    return summary


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

"""The stage contract in code: a context for one stage on one interval, and the run record it leaves.

Every read and write a stage makes through its context is recorded (key, sha256, bytes, rows), so lineage is a
by-product of doing the work, not a second bookkeeping effort. The runner writes the record to
``runs/<partition>/<stage>.json``; archive assembles the interval's manifest from those records.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa

from cryptopipe import __version__
from cryptopipe.core.config import Settings
from cryptopipe.core.errors import ConfigError, ExitCode, PipelineError, StorageError
from cryptopipe.core.layout import DAILY, Interval, day_start
from cryptopipe.core.storage import ObjectStore, open_stores
from cryptopipe.core.tables import PARQUET_CONTENT_TYPE, conform, from_parquet_bytes, read_table, to_parquet_bytes

RUNS = "runs"


def run_record_key(interval: Interval, stage: str) -> str:
    return f"{RUNS}/{interval.partition}/{stage}.json"


def day_run_record_key(day: date, stage: str) -> str:
    """The run record of a stage over a whole day in the daily layout (one record for the day's 24 intervals)."""
    return f"{RUNS}/{DAILY}/date={day:%Y-%m-%d}/{stage}.json"


_HOUR_QUALITY_FIELDS = ("quality_score", "warning_failures", "rows_quarantined")


def day_hour_quality(record: Any) -> list[dict[str, Any]] | None:
    """validate's per-hour quality figures from its day run record (``metrics.hours``, in hour order: interval_start,
    quality_score, warning_failures, rows_quarantined), the same numbers its day report holds; None if the record
    lacks any of them (written before they were recorded): the caller then parses the day report."""
    metrics = record.get("metrics") if isinstance(record, dict) else None
    hours = metrics.get("hours") if isinstance(metrics, dict) else None
    if not isinstance(hours, list) or len(hours) != 24:
        return None
    for hour in hours:
        if not isinstance(hour, dict) or not isinstance(hour.get("interval_start"), str):
            return None
        if any(not isinstance(hour.get(name), int | float) for name in _HOUR_QUALITY_FIELDS):
            return None
    return hours


# Stages whose outputs a daily-layout day holds as day objects; an hourly run of one of its hours would write
# hourly objects beside them (and validate would delete the day's compaction), so it is refused.
DAILY_LAYOUT_STAGES = ("validate", "transform", "archive")


def sealed_day(store: ObjectStore, day: date) -> bool:
    """True if validate wrote ``day`` in the daily layout (its day run record says success)."""
    key = day_run_record_key(day, "validate")
    data = store.get_or_none(key)
    if data is None:
        return False
    try:
        record = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        what = f"{store.url(key)} is not a readable run record ({exc})"
        raise StorageError(f"{what}; rerun the day with --daily or delete the record", key=key) from exc
    return isinstance(record, dict) and record.get("status") == "success"


def ensure_hourly_allowed(store: ObjectStore, interval: Interval, stage: str) -> None:
    """Refuse an hourly run of validate/transform/archive on a day written in the daily layout: it would leave
    hourly objects that disagree with the day's objects (validate would also drop the day's compaction)."""
    if stage not in DAILY_LAYOUT_STAGES or not sealed_day(store, interval.start.date()):
        return
    day = interval.start.date()
    raise ConfigError(
        f"{stage} {interval}: day {day} was written in the daily layout by `cryptopipe run --batch --daily` "
        f"({day_run_record_key(day, 'validate')}); its data are day objects, not hourly partitions. Rerun the whole "
        f"day instead: cryptopipe run --start {day}T00:00:00Z --end {day + timedelta(days=1)}T00:00:00Z "
        f"--stages validate,transform,archive --batch --daily",
        day=str(day),
    )


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def json_bytes(obj: Any) -> bytes:
    """Canonical JSON (sorted keys, fixed separators): the same object always gives the same bytes."""
    return (json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False, default=str) + "\n").encode()


@dataclass
class ObjectRef:
    key: str
    sha256: str
    bytes: int
    rows: int | None = None
    store: str = "work"


@dataclass
class StageResult:
    stage: str
    interval_start: str
    interval_end: str
    status: str = "running"
    exit_code: int = 0
    message: str = ""
    started_at: str = ""
    finished_at: str = ""
    duration_seconds: float = 0.0
    code_version: str = __version__
    config_fingerprint: str = ""
    inputs: list[ObjectRef] = field(default_factory=list)
    outputs: list[ObjectRef] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StageContext:
    stage: str
    settings: Settings
    interval: Interval
    store: ObjectStore
    archive_store: ObjectStore
    log: logging.Logger
    result: StageResult
    day: date | None = None  # set for a whole day in the daily layout: the run record is the day's

    # --- reads (recorded as inputs) ---
    def get(self, key: str) -> bytes:
        data = self.store.get(key)
        self.result.inputs.append(ObjectRef(key, sha256(data), len(data)))
        return data

    def read_table(self, key: str, *, required_by: str | None = None) -> pa.Table:
        table = read_table(self.store, key, required_by=required_by or self.stage)
        self.result.inputs.append(ObjectRef(key, "", 0, table.num_rows))
        return table

    def read_table_if_exists(self, key: str) -> pa.Table | None:
        data = self.store.get_or_none(key)
        if data is None:
            return None
        table = from_parquet_bytes(data, self.store.url(key))
        self.result.inputs.append(ObjectRef(key, sha256(data), len(data), table.num_rows))
        return table

    # --- writes (recorded as outputs) ---
    def put(self, key: str, data: bytes, content_type: str | None = None, rows: int | None = None) -> None:
        self.store.put(key, data, content_type)
        self.result.outputs.append(ObjectRef(key, sha256(data), len(data), rows))

    def put_once(self, key: str, data: bytes, content_type: str | None = None, rows: int | None = None) -> bool:
        created = self.store.put_once(key, data, content_type)
        self.result.outputs.append(ObjectRef(key, sha256(data), len(data), rows))
        return created

    def put_json(self, key: str, obj: Any) -> None:
        self.put(key, json_bytes(obj), "application/json")

    def write_table(self, key: str, table: pa.Table, schema: pa.Schema | None = None) -> None:
        if schema is not None:
            table = conform(table, schema)
        self.put(key, to_parquet_bytes(table), PARQUET_CONTENT_TYPE, rows=table.num_rows)

    def delete(self, key: str) -> None:
        self.store.delete(key)


StageFn = Callable[[StageContext], None]


def _now() -> datetime:
    return datetime.now(UTC)


def new_context(
    stage: str,
    settings: Settings,
    interval: Interval,
    stores: tuple[ObjectStore, ObjectStore],
    log: logging.Logger,
) -> StageContext:
    """A context with an open run record; ``finish_stage`` closes and writes it."""
    result = StageResult(
        stage=stage,
        interval_start=interval.start.isoformat(),
        interval_end=interval.end.isoformat(),
        started_at=_now().isoformat(),
        config_fingerprint=settings.fingerprint(),
    )
    return StageContext(stage, settings, interval, stores[0], stores[1], log, result)


def new_day_context(
    stage: str,
    settings: Settings,
    day: date,
    stores: tuple[ObjectStore, ObjectStore],
    log: logging.Logger,
) -> StageContext:
    """A context for one stage over a whole UTC day (daily layout). ``interval`` is the day's first hour (for code
    that needs one); the record spans the day and ``finish_stage`` writes it to ``day_run_record_key``."""
    start = day_start(day)
    ctx = new_context(stage, settings, Interval.starting(start), stores, log)
    ctx.day = day
    ctx.result.interval_end = (start + timedelta(days=1)).isoformat()
    ctx.result.metrics["layout"] = "daily"
    return ctx


def finish_stage(
    ctx: StageContext,
    seconds: float,
    error: BaseException | None = None,
    *,
    status: str | None = None,
    message: str = "",
) -> StageResult:
    """Close the run record (status and exit code from the error, timings), write it, log the outcome.

    ``status`` overrides the "success" of an interval that had nothing to do (e.g. "skipped"). Used by
    ``execute_stage`` and by the stages' range modes, so one interval's record is the same either way.
    """
    result = ctx.result
    if error is None:
        result.status, result.exit_code, result.message = status or "success", int(ExitCode.OK), message
    elif isinstance(error, PipelineError):
        result.status, result.exit_code, result.message = "failed", int(error.exit_code), error.message
    else:
        result.status, result.exit_code, result.message = "failed", int(ExitCode.INTERNAL), repr(error)
    result.finished_at = _now().isoformat()
    result.duration_seconds = round(seconds, 3)
    key = run_record_key(ctx.interval, result.stage) if ctx.day is None else day_run_record_key(ctx.day, result.stage)
    write_run_record(ctx.store, key, result, ctx.log)
    ctx.log.info(
        "stage finished",
        extra={
            "interval_start": result.interval_start,
            "status": result.status,
            "duration_seconds": result.duration_seconds,
            "outputs": len(result.outputs),
            **result.metrics,
        },
    )
    return result


def execute_stage(stage: str, fn: StageFn, settings: Settings, interval: Interval, log: logging.Logger) -> StageResult:
    """Run one stage on one interval; always leave a run record; re-raise typed errors for the exit code."""
    ctx = new_context(stage, settings, interval, open_stores(settings.storage), log)
    clock = time.perf_counter()
    try:
        ensure_hourly_allowed(ctx.store, interval, stage)
    except PipelineError as exc:
        finish_stage(ctx, time.perf_counter() - clock, exc)
        raise
    log.info(
        "stage started", extra={"interval_start": ctx.result.interval_start, "interval_end": ctx.result.interval_end}
    )
    try:
        fn(ctx)
    except BaseException as exc:
        finish_stage(ctx, time.perf_counter() - clock, exc)
        raise
    return finish_stage(ctx, time.perf_counter() - clock)


def write_run_record(store: ObjectStore, key: str, result: StageResult, log: logging.Logger) -> None:
    try:
        store.put(key, json_bytes(result.to_json()), "application/json")
    except PipelineError as exc:  # the store may be the thing that failed; the stage's own error wins
        log.warning("could not write the run record", extra={"error": exc.message})

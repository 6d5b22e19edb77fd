"""Validate in the daily layout (``cryptopipe run --batch --daily``, docs/batch.md): the UTC day is the unit.

``run_days(settings, days, log)`` judges every hour exactly as the hourly stage does (the same GX outcomes through
range mode's helper columns, the same verdicts, scores and per-hour report dicts), but writes one object per day
and dataset instead of ~4 per hour:

- ``validated_daily_key(D)``: the day's compaction (``core.compaction.compact_tables`` over the 24 hours'
  validated rows: the bytes hourly mode gives after ``compact_day``); in this layout it IS the validated data;
- ``quarantine_daily_key(D)``: the hours' quarantine tables in hour order, if any row was quarantined;
- ``quality_daily_report_key(D)``: a day summary plus the 24 hourly report dicts (objects name the day objects);
- the day run record ``runs/daily/date=D/validate.json`` last: written with status success it seals the day.

A day is the unit of success. A critical failure in any hour fails the day (exit 3): the report and quarantine are
written as diagnostics, the day's compaction (and its projection) and the failing hours' hourly objects are removed,
so nothing stale reads as validated. Missing or unreadable staging fails the day with the hourly stage's error and
changes nothing (as the hourly stage does on a missing input). A staging table that is not exactly
``SNAPSHOT_SCHEMA`` or has no rows cannot be judged in the day's shared GX run: the day fails (exit 3) and the
message points to hourly range mode, which validates such an hour on its own.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import pyarrow as pa

from cryptopipe.core.compaction import compact_tables
from cryptopipe.core.config import Settings
from cryptopipe.core.errors import MissingInputError, PipelineError, QualityGateError
from cryptopipe.core.layout import (
    QUALITY,
    QUARANTINE,
    VALIDATED,
    VALIDATED_DAILY,
    Interval,
    day_intervals,
    quality_daily_report_key,
    quarantine_daily_key,
    quarantine_key,
    staging_key,
    validated_daily_key,
    validated_key,
)
from cryptopipe.core.schema import QUARANTINE_SCHEMA, SNAPSHOT_SCHEMA
from cryptopipe.core.stage import (
    ObjectRef,
    StageContext,
    StageResult,
    finish_stage,
    new_day_context,
    sha256,
)
from cryptopipe.core.storage import ObjectStore, open_stores
from cryptopipe.core.tables import from_parquet_bytes
from cryptopipe.validate.batch import FallBackError, RangeValidator, batchable, validate_tables
from cryptopipe.validate.frame import to_frame
from cryptopipe.validate.gx_runner import Outcome, import_gx, run_checks
from cryptopipe.validate.report import Verdict, build_report, judge, quality_score
from cryptopipe.validate.stage import split_table
from cryptopipe.validate.suite import Check, build_suite

STAGE = "validate"
CHUNK_DAYS = 31  # days per GX run, as range mode's CHUNK_HOURS: bounds the pandas frame (~190k rows at 250 coins)
IO_THREADS = 8  # staging reads in flight (fsync'd file store, S3 round trips)
DAY_THREADS = 4  # days published at once: Parquet encoding and fsync'd writes release the GIL


# One GX context per process, kept across calls: the runner calls run_days once per block of days in long-lived
# worker processes, and the checkpoint (~0.15 s to build) is the same for every block (RangeValidator.run rebuilds it
# only when the range suite differs).
_VALIDATOR = RangeValidator()


@dataclass
class _Read:
    """One staging hour as read: the bytes and table, or None (absent), or the error the hourly read gives."""

    interval: Interval
    data: bytes | None = None
    table: pa.Table | None = None
    error: PipelineError | None = None


@dataclass
class _Hour:
    interval: Interval
    table: pa.Table
    checks: list[Check] = field(default_factory=list)
    outcomes: dict[str, Outcome] = field(default_factory=dict)


@dataclass
class _Day:
    ctx: StageContext
    day: date
    hours: list[_Hour]


def run_days(
    settings: Settings, days: list[date], log: logging.Logger, *, chunk_days: int = CHUNK_DAYS
) -> list[StageResult]:
    """Validate whole UTC days; one StageResult per day, in order (failed days carry their exit code)."""
    stores = open_stores(settings.storage)
    validator = _VALIDATOR
    results: list[StageResult] = []
    for first in range(0, len(days), chunk_days):
        results.extend(_run_chunk(settings, stores, days[first : first + chunk_days], log, validator))
    return results


# --- the chunk: read every hour, one GX run, then publish day by day ---------------------------------------------


def _run_chunk(
    settings: Settings,
    stores: tuple[ObjectStore, ObjectStore],
    days: list[date],
    log: logging.Logger,
    validator: RangeValidator,
) -> list[StageResult]:
    clock = time.perf_counter()
    contexts = [new_day_context(STAGE, settings, day, stores, log) for day in days]
    results: dict[date, StageResult] = {}
    pending = dict(zip(days, contexts, strict=True))  # days without a written run record yet
    try:
        hours = [interval for day in days for interval in day_intervals(day)]
        with ThreadPoolExecutor(IO_THREADS) as pool:
            reads = list(pool.map(lambda interval: _read(stores[0], interval), hours))
        ready: list[_Day] = []
        for i, (day, ctx) in enumerate(zip(days, contexts, strict=True)):
            loaded = _guarded(ctx, lambda ctx=ctx, i=i: _settle(ctx, reads[24 * i : 24 * i + 24]), 0.0)
            if isinstance(loaded, _Day):
                ready.append(loaded)
            else:
                pending.pop(day)
                results[day] = loaded
        gx_clock = time.perf_counter()
        _evaluate(settings, [hour for day in ready for hour in day.hours], validator, log)
        gx_seconds = time.perf_counter() - gx_clock
        shared = (time.perf_counter() - clock) / max(1, len(days))
        gx_version = import_gx().__version__  # once here: import_gx swaps warning filters, which is not thread-safe

        def publish(day: _Day) -> StageResult:
            day.ctx.result.metrics.update({"batch_days": len(ready), "batch_gx_seconds": round(gx_seconds, 3)})
            result: StageResult = _guarded(day.ctx, lambda: _publish_day(day, gx_version), shared)
            pending.pop(day.day)  # its record is written (a bug leaves it pending: the handler records that)
            return result

        with ThreadPoolExecutor(DAY_THREADS) as pool:
            for day, result in zip(ready, pool.map(publish, ready), strict=True):
                results[day.day] = result
    except Exception as exc:  # a bug: every day still open gets its failed record, then it propagates
        for ctx in pending.values():
            finish_stage(ctx, time.perf_counter() - clock, exc)
        raise
    return [results[day] for day in days]


def _guarded(ctx: StageContext, work: Callable[[], Any], shared_seconds: float) -> Any:
    """A typed error fails the day (its record written); a bug is recorded by the chunk's handler and propagates.
    Returns the work's value, or the finished StageResult of a day that ended (failed or skipped)."""
    clock = time.perf_counter()
    try:
        value = work()
    except PipelineError as exc:
        return finish_stage(ctx, shared_seconds + time.perf_counter() - clock, exc)
    if value is None:  # the day's outputs are written: close the record (the seal, written last)
        return finish_stage(ctx, shared_seconds + time.perf_counter() - clock)
    return value


def _read(store: ObjectStore, interval: Interval) -> _Read:
    key = staging_key(interval)
    data = store.get_or_none(key)
    if data is None:
        return _Read(interval)
    try:
        return _Read(interval, data, from_parquet_bytes(data, store.url(key)))
    except PipelineError as exc:
        return _Read(interval, data, error=exc)


def _hour_names(intervals: list[Interval]) -> str:
    return ", ".join(f"{interval.start:%H:%M}" for interval in intervals)


def _hourly_advice(day: date) -> str:
    end = day + timedelta(days=1)
    return (
        f"`cryptopipe run --start {day}T00:00:00Z --end {end}T00:00:00Z --stages validate,transform,archive --batch` "
        "(hourly range mode, without --daily) over that day gets its good hours through"
    )


def _settle(ctx: StageContext, reads: list[_Read]) -> _Day | StageResult:
    """The day's 24 staging tables, or the day's end: skipped (backfilled history) or failed (bad input)."""
    day = ctx.day
    assert day is not None
    absent = [r.interval for r in reads if r.data is None]
    if len(absent) == len(reads):
        return _backfilled(ctx, day)
    for r in reads:  # lineage: every staging object the day was judged on, with its hash
        if r.data is not None:
            rows = r.table.num_rows if r.table is not None else None
            ctx.result.inputs.append(ObjectRef(staging_key(r.interval), sha256(r.data), len(r.data), rows))
    if absent:
        raise MissingInputError(
            f"validate day {day}: no staging partition for hour(s) {_hour_names(absent)} "
            f"(first: {ctx.store.url(staging_key(absent[0]))}); the daily layout validates whole days, so nothing "
            f"of the day was validated. Run the upstream stage for those hours first, or {_hourly_advice(day)}",
            missing=[staging_key(interval) for interval in absent],
        )
    unreadable = [r for r in reads if r.error is not None]
    if unreadable:
        first = unreadable[0].error
        assert first is not None
        raise type(first)(
            f"validate day {day}: staging of hour(s) {_hour_names([r.interval for r in unreadable])} cannot be read "
            f"({first.message}); nothing of the day was validated. {_hourly_advice(day)}"
        )
    tables = [r.table for r in reads if r.table is not None]
    odd = [r for r in reads if r.table is not None and not batchable(r.table)]
    if odd:
        _drop_day_data(ctx, day, diagnostics=True)  # what the day had is no longer the judgement of its staging
        raise QualityGateError(
            f"validate day {day}: the staging table of hour(s) {_hour_names([r.interval for r in odd])} "
            f"{_schema_problem(odd[0].table)}; the daily layout judges a day's rows in one shared run and takes only "
            f"tables of exactly the snapshot schema with rows. Nothing of the day was validated; "
            f"{_hourly_advice(day)} (it validates such an hour on its own)",
            hours=[r.interval.start.isoformat() for r in odd],
        )
    return _Day(ctx, day, [_Hour(r.interval, table) for r, table in zip(reads, tables, strict=True)])


def _schema_problem(table: pa.Table | None) -> str:
    assert table is not None
    if table.num_rows == 0:
        return "has no rows"
    expected = {f.name: f.type for f in SNAPSHOT_SCHEMA}
    got = {f.name: f.type for f in table.schema}
    parts = []
    if missing := [name for name in expected if name not in got]:
        parts.append(f"lacks column(s) {missing}")
    if extra := [name for name in got if name not in expected]:
        parts.append(f"has extra column(s) {extra}")
    if mistyped := [f"{n}: {got[n]} (expected {t})" for n, t in expected.items() if n in got and got[n] != t]:
        parts.append(f"has mistyped column(s) {mistyped}")
    return "; ".join(parts) or "differs from the snapshot schema in column order or nullability"


def _backfilled(ctx: StageContext, day: date) -> StageResult:
    """No staging at all: history `cryptopipe backfill` wrote straight into validated is skipped (as range mode
    skips such hours), and its compaction is made sure of; no validated data either is exit 8."""
    key = validated_daily_key(day)
    if not ctx.store.exists(key):
        hourly = [validated_key(interval) for interval in day_intervals(day)]
        absent = [k for k in hourly if not ctx.store.exists(k)]
        if absent:
            raise MissingInputError(
                f"validate day {day}: no staging partition for any hour, and neither the day's validated compaction "
                f"({ctx.store.url(key)}) nor all 24 hourly validated partitions exist ({len(absent)} missing, first "
                f"{ctx.store.url(absent[0])}); run ingest (or `cryptopipe backfill`) for the day first",
                key=key,
            )
        ctx.write_table(key, compact_tables([ctx.read_table(k) for k in hourly]))
    ctx.log.info(
        "validate skipped: no staging partitions, validated exists (written by backfill)",
        extra={"day": str(day), "validated": key},
    )
    ctx.result.metrics["skipped"] = "no staging; validated written by backfill"
    return finish_stage(ctx, 0.0, status="skipped", message="no staging partitions; validated written by backfill")


# --- GX ----------------------------------------------------------------------------------------------------------


def _evaluate(settings: Settings, hours: list[_Hour], validator: RangeValidator, log: logging.Logger) -> None:
    """Every hour's suite and outcomes: one shared GX run (range mode's helper columns make them the hourly ones);
    if an expectation raised in it, each hour is run on its own, as the hourly stage would (no Data Docs)."""
    if not hours:
        return
    try:
        checks, outcomes = validate_tables(settings, [(hour.interval, hour.table) for hour in hours], validator)
    except FallBackError as exc:
        log.warning("daily validation fell back to one GX run per hour", extra={"reason": str(exc)})
        for hour in hours:
            hour.checks, hour.outcomes = _hourly_outcomes(settings, hour)
        return
    for hour, hour_checks, hour_outcomes in zip(hours, checks, outcomes, strict=True):
        hour.checks, hour.outcomes = hour_checks, hour_outcomes


def _hourly_outcomes(settings: Settings, hour: _Hour) -> tuple[list[Check], dict[str, Outcome]]:
    checks = build_suite(settings, hour.interval, hour.table)
    frame = to_frame(hour.table, settings.quality)
    run_name = f"{hour.interval.start:%Y%m%dT%H}"  # as the hourly stage names its run
    return checks, run_checks(frame, checks, run_name=run_name, run_time=hour.interval.end, docs_dir=None)


# --- one day's outputs -------------------------------------------------------------------------------------------


@dataclass
class _Judged:
    hour: _Hour
    verdict: Verdict
    score: float
    validated: pa.Table | None  # passed hours: the rows that go on (unsorted: the compaction sorts the day)
    quarantined: pa.Table | None  # passed hours with quarantined rows: sorted by key, as the hourly object


def _judge(settings: Settings, hour: _Hour) -> _Judged:
    """The hourly stage's verdict, score and split for one hour (validate/stage.py:publish)."""
    quality = settings.quality
    verdict = judge(hour.checks, hour.outcomes, hour.table.num_rows, quality.max_quarantine_share)
    score = quality_score(hour.checks, hour.outcomes, verdict)
    if not verdict.passed:
        return _Judged(hour, verdict, score, None, None)
    if not verdict.row_reasons:  # nothing to split off: the compaction's sort orders it as the hourly sort would
        return _Judged(hour, verdict, score, hour.table, None)
    validated, quarantined = split_table(hour.table, verdict)
    return _Judged(hour, verdict, score, validated, quarantined)


def _publish_day(day: _Day, gx_version: str) -> None:
    ctx, d = day.ctx, day.day
    judged = [_judge(ctx.settings, hour) for hour in day.hours]
    failed = [j for j in judged if not j.verdict.passed]
    quarantines = [j.quarantined for j in judged if j.quarantined is not None and j.quarantined.num_rows]
    validated_key_d = None if failed else validated_daily_key(d)
    quarantine_key_d = quarantine_daily_key(d) if quarantines else None
    if validated_key_d is not None:  # the data first: a crash before the run record leaves an unsealed day
        ctx.write_table(validated_key_d, compact_tables([j.validated for j in judged if j.validated is not None]))
    if quarantine_key_d is not None:
        ctx.write_table(quarantine_key_d, pa.concat_tables(quarantines), QUARANTINE_SCHEMA)
    else:
        ctx.delete(quarantine_daily_key(d))  # a previous run's quarantine no longer applies
    report = _day_report(d, judged, gx_version, validated_key_d, quarantine_key_d)
    report_key = quality_daily_report_key(d)
    ctx.put(report_key, _compact_json(report), "application/json")
    _day_metrics(ctx, judged, report)
    ctx.result.metrics["quality_report_uri"] = ctx.store.url(report_key)
    if failed:
        _drop_day_data(ctx, d, diagnostics=False)
        for j in failed:  # as the hourly stage does for a failed hour: its old outputs must not look current
            ctx.delete(validated_key(j.hour.interval))
            ctx.delete(quarantine_key(j.hour.interval))
        names = "; ".join(f"{j.hour.interval.start:%H:%M} ({', '.join(j.verdict.critical_failures)})" for j in failed)
        raise QualityGateError(
            f"quality gate failed for day {d}: critical expectation(s) failed in hour(s) {names}; nothing of the day "
            f"was validated. Report: {ctx.store.url(report_key)}. {_hourly_advice(d)}",
            hours=[j.hour.interval.start.isoformat() for j in failed],
            failed=sorted({name for j in failed for name in j.verdict.critical_failures}),
        )
    _drop_hourly(ctx, d)  # before the seal: a sealed day never holds two versions of an hour
    ctx.log.info("quality gate", extra={"day": str(d), "gate": report["summary"]["gate"]})


def _compact_json(obj: Any) -> bytes:
    """Canonical JSON (sorted keys) without indentation: json's C encoder only runs without ``indent``, and the day
    report (24 hourly reports, ~40k values) costs ~10x more through the indenting pure-Python one."""
    return (json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str) + "\n").encode()


def _day_report(
    day: date, judged: list[_Judged], gx_version: str, validated: str | None, quarantine: str | None
) -> dict[str, Any]:
    intervals = []
    for j in judged:
        interval = j.hour.interval
        objects: dict[str, str | None] = {
            "staging": staging_key(interval),
            "validated": validated if j.verdict.passed else None,
            "quarantine": quarantine if j.quarantined is not None and j.quarantined.num_rows else None,
            "data_docs": None,
        }
        intervals.append(
            build_report(
                interval=interval,
                checks=j.hour.checks,
                outcomes=j.hour.outcomes,
                verdict=j.verdict,
                table=j.hour.table,
                score=j.score,
                gx_version=gx_version,
                objects=objects,
            )
        )
    summaries = [r["summary"] for r in intervals]
    failed = [r["interval"]["start"] for r in intervals if r["summary"]["gate"] == "failed"]
    warned = [r["interval"]["start"] for r in intervals if r["summary"]["warning_failures"]]
    return {
        "day": day.isoformat(),
        "layout": "daily",
        "summary": {
            "gate": "failed" if failed else ("passed_with_warnings" if warned else "passed"),
            "hours": len(intervals),
            "rows_in": sum(s["rows_in"] for s in summaries),
            "rows_validated": 0 if failed else sum(s["rows_validated"] for s in summaries),
            "rows_quarantined": sum(s["rows_quarantined"] for s in summaries),
            "quality_score_min": min(j.score for j in judged),
            "hours_failed": failed,
            "hours_with_warnings": warned,
        },
        "objects": {"validated": validated, "quarantine": quarantine},
        "intervals": intervals,
    }


def _day_metrics(ctx: StageContext, judged: list[_Judged], report: dict[str, Any]) -> None:
    summary = report["summary"]
    ctx.result.metrics.update(
        {
            "rows": summary["rows_in"],
            "rows_validated": summary["rows_validated"],
            "rows_quarantined": summary["rows_quarantined"],
            "quality_score": summary["quality_score_min"],
            "warnings": sum(len(j.verdict.warning_failures) for j in judged),
            "critical_failures": sum(len(j.verdict.critical_failures) for j in judged),
            "hours": [
                {
                    "interval_start": r["interval"]["start"],
                    "quality_score": r["quality_score"]["value"],
                    "rows": r["summary"]["rows_in"],
                    "rows_quarantined": r["summary"]["rows_quarantined"],
                    "warning_failures": r["summary"]["warning_failures"],
                    "status": r["summary"]["gate"],
                }
                for r in report["intervals"]
            ],
        }
    )


def _partition_day(day: date) -> str:
    return f"date={day:%Y-%m-%d}/"


def _drop_day_data(ctx: StageContext, day: date, *, diagnostics: bool) -> None:
    """Remove the day objects a reader would take as the day's validated data (the compaction and its projection);
    with ``diagnostics`` also the day's quarantine and quality report, when this run writes none of its own."""
    for key in ctx.store.list(f"{VALIDATED_DAILY}/{_partition_day(day)}"):
        ctx.delete(key)
    if diagnostics:
        ctx.delete(quarantine_daily_key(day))
        ctx.delete(quality_daily_report_key(day))


def _drop_hourly(ctx: StageContext, day: date) -> None:
    """A daily run supersedes what an earlier hourly run of this stage left for the day: its hourly validated and
    quarantine partitions, quality reports and Data Docs. Its hourly run records stay: they are the history of what
    ran (runs/ is append-only, docs/architecture.md), and nothing reads them as current on a sealed day."""
    part = _partition_day(day)
    for prefix in (f"{VALIDATED}/{part}", f"{QUARANTINE}/{part}", f"{QUALITY}/{part}"):
        for key in ctx.store.list(prefix):
            ctx.delete(key)

"""``cryptopipe validate``: the quality gate from staging to validated snapshots (docs/data-quality.md).

Reads the interval's staging table, validates it with the expectation suite through Great Expectations, then:
- any critical failure: writes the quality report and Data Docs, removes validated/quarantine objects a previous
  run left for this interval (and the day's compaction), and raises QualityGateError (exit 3);
- otherwise: rows failing warning checks go to quarantine with their reasons, the rest to validated; the day's
  compacted object is deleted, because this hour changed under it.
"""

from __future__ import annotations

import logging
import tempfile
from datetime import date
from pathlib import Path

import pyarrow as pa

from cryptopipe.core.config import Settings
from cryptopipe.core.errors import QualityGateError
from cryptopipe.core.layout import (
    Interval,
    data_docs_prefix,
    quality_report_key,
    quarantine_key,
    staging_key,
    validated_daily_key,
    validated_key,
)
from cryptopipe.core.schema import QUARANTINE_SCHEMA, SNAPSHOT_KEY, SNAPSHOT_SCHEMA
from cryptopipe.core.stage import StageContext, StageResult
from cryptopipe.core.tables import conform
from cryptopipe.validate.docs_site import collect_site, content_type
from cryptopipe.validate.frame import to_frame
from cryptopipe.validate.gx_runner import Outcome, import_gx, run_checks
from cryptopipe.validate.report import Verdict, build_report, judge, quality_score
from cryptopipe.validate.suite import Check, build_suite

DOCS_INDEX = "index.html"


def _sorted(table: pa.Table) -> pa.Table:
    return table.sort_by([(col, "ascending") for col in SNAPSHOT_KEY])


def split_table(table: pa.Table, verdict: Verdict) -> tuple[pa.Table, pa.Table]:
    """(validated, quarantine) tables, each conformed to its schema and sorted by key (also used by daily.py)."""
    bad = set(verdict.row_reasons)
    good_rows = pa.array([i for i in range(table.num_rows) if i not in bad], pa.int64())
    bad_rows = verdict.quarantined_rows
    validated = _sorted(conform(table.take(good_rows), SNAPSHOT_SCHEMA))
    quarantined = conform(table.take(pa.array(bad_rows, pa.int64())), SNAPSHOT_SCHEMA).append_column(
        "reasons", pa.array([",".join(verdict.row_reasons[i]) for i in bad_rows], pa.string())
    )
    return validated, _sorted(conform(quarantined, QUARANTINE_SCHEMA))


def _run_name(interval: Interval) -> str:
    return f"{interval.start:%Y%m%dT%H}"


def _put_docs(ctx: StageContext, files: dict[str, bytes]) -> str:
    """Replace the interval's Data Docs with these files; return the index URL."""
    prefix = data_docs_prefix(ctx.interval)
    for name, data in files.items():
        ctx.put(prefix + name, data, content_type(name))
    for stale in ctx.store.list(prefix):  # pages of an older suite version or GX layout
        if stale.removeprefix(prefix) not in files:
            ctx.delete(stale)
    return ctx.store.url(prefix + DOCS_INDEX)


def run(ctx: StageContext) -> None:
    interval, quality = ctx.interval, ctx.settings.quality
    table = ctx.read_table(staging_key(interval))
    checks = build_suite(ctx.settings, interval, table)
    frame = to_frame(table, quality)
    with tempfile.TemporaryDirectory(prefix="cryptopipe-data-docs-") as tmp:
        outcomes = run_checks(frame, checks, run_name=_run_name(interval), run_time=interval.end, docs_dir=Path(tmp))
        docs = collect_site(Path(tmp))
    if DOCS_INDEX not in docs:
        raise RuntimeError("Great Expectations built no Data Docs index page")
    publish(ctx, table, checks, outcomes, docs)


def publish(
    ctx: StageContext,
    table: pa.Table,
    checks: list[Check],
    outcomes: dict[str, Outcome],
    docs: dict[str, bytes] | None,
    *,
    gx_version: str | None = None,
) -> None:
    """Judge the outcomes and write the interval's outputs; shared by ``run`` and the range mode (batch.py).

    ``docs`` None (range mode): no Data Docs for this interval; Data Docs files of an earlier run are removed
    (they would describe another validation) and the report's ``objects.data_docs`` is null.
    """
    interval, quality = ctx.interval, ctx.settings.quality
    verdict = judge(checks, outcomes, table.num_rows, quality.max_quarantine_share)
    score = quality_score(checks, outcomes, verdict)

    objects: dict[str, str | None] = {
        "staging": staging_key(interval),
        "validated": None,
        "quarantine": None,
        "data_docs": None if docs is None else data_docs_prefix(interval) + DOCS_INDEX,
    }
    rows_validated = rows_quarantined = 0
    day_key = validated_daily_key(interval.start.date())
    if verdict.passed:
        validated, quarantined = split_table(table, verdict)
        ctx.write_table(validated_key(interval), validated)
        objects["validated"] = validated_key(interval)
        if quarantined.num_rows:
            ctx.write_table(quarantine_key(interval), quarantined)
            objects["quarantine"] = quarantine_key(interval)
        else:
            ctx.delete(quarantine_key(interval))  # a previous run's quarantine no longer applies
        rows_validated, rows_quarantined = validated.num_rows, quarantined.num_rows
    else:
        # Old outputs of this interval must not look current after a failed rerun: downstream stages would
        # otherwise keep reading data this gate now rejects.
        for key in (validated_key(interval), quarantine_key(interval)):
            ctx.delete(key)
    ctx.delete(day_key)  # the day's compaction included this hour as it was before

    gx_version = gx_version or import_gx().__version__
    report = build_report(
        interval=interval,
        checks=checks,
        outcomes=outcomes,
        verdict=verdict,
        table=table,
        score=score,
        gx_version=gx_version,
        objects=objects,
    )
    report_key = quality_report_key(interval)
    ctx.put_json(report_key, report)
    docs_uri = _put_docs(ctx, docs or {})

    ctx.result.metrics.update(
        {
            "rows_in": table.num_rows,
            "rows_validated": rows_validated,
            "rows_quarantined": rows_quarantined,
            "quality_score": score,
            "warnings": len(verdict.warning_failures),
            "critical_failures": len(verdict.critical_failures),
            **({"data_docs_uri": docs_uri} if docs is not None else {}),
            "quality_report_uri": ctx.store.url(report_key),
        }
    )
    ctx.log.info(
        "quality gate",
        extra={
            "gate": report["summary"]["gate"],
            "failed_critical": verdict.critical_failures,
            "failed_warning": verdict.warning_failures,
        },
    )
    if not verdict.passed:
        raise QualityGateError(
            f"quality gate failed for {interval}: critical expectation(s) {', '.join(verdict.critical_failures)} "
            f"failed; nothing was validated. Report: {ctx.store.url(report_key)}",
            failed=verdict.critical_failures,
        )


def run_range(settings: Settings, intervals: list[Interval], log: logging.Logger) -> list[StageResult]:
    """Range mode (``cryptopipe run --batch``): one GX run over many intervals; see batch.py and docs/batch.md."""
    from cryptopipe.validate.batch import run_range as run_range_impl

    return run_range_impl(settings, intervals, log)


def run_days(settings: Settings, days: list[date], log: logging.Logger) -> list[StageResult]:
    """Daily layout (``cryptopipe run --batch --daily``): one result and one set of day objects per UTC day; see
    daily.py and docs/batch.md."""
    from cryptopipe.validate.daily import run_days as run_days_impl

    return run_days_impl(settings, days, log)

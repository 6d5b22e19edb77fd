"""The transform stage: lookback history → indicators at the snapshot → anomalies, alerts record, chart report.

Reads:  validated/market_snapshots/P/… (the lookback window, see history.py), quality/P/report.json (optional).
Writes: analytics/indicators/P/indicators.parquet, alerts/P/alerts.json, reports/P/index.html + charts/*.png,
        validated/market_snapshots_daily/date=…/ compactions of complete past days it had to read hour by hour,
        and the price projections of compactions it read (history.py).

Two entry points with the same outputs: ``run(ctx)`` for one interval (the CLI / DAG task), and
``run_range(settings, intervals, log)`` for many consecutive intervals (backfills): a week of intervals at a
time, history read once per week and the indicators of its intervals computed together (engine.py); each
interval gets the same indicators and alerts bytes as its own ``run`` and its own run record. Charts: see
``run_range``.
"""

from __future__ import annotations

import itertools
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import pyarrow as pa

from cryptopipe.core.config import Settings
from cryptopipe.core.errors import ConfigError, PipelineError
from cryptopipe.core.layout import (
    HOUR,
    Interval,
    alerts_key,
    indicators_key,
    quality_report_key,
    report_prefix,
    validated_key,
)
from cryptopipe.core.stage import (
    ObjectRef,
    StageContext,
    StageResult,
    finish_stage,
    json_bytes,
    new_context,
    sha256,
)
from cryptopipe.core.storage import ObjectStore, open_stores
from cryptopipe.core.tables import PARQUET_CONTENT_TYPE, to_parquet_bytes
from cryptopipe.transform.anomalies import alerts_document, detect_anomalies, iso_z, quality_summary
from cryptopipe.transform.charts import ChartSpec, choose_charts, index_html, render_charts
from cryptopipe.transform.history import (
    HOURS_PER_DAY,
    Part,
    _Reader,
    anchor_time,
    load_history,
    read_current,
    read_window_days,
)
from cryptopipe.transform.indicators import Grid, Params, build_grid, indicators_table, matching_rows, snapshot_tables

STAGE = "transform"
RANGE_CHUNK = 24 * 7  # intervals per pass in range mode (a week: 8 anchors, ~2424-hour accumulations)
WRITE_THREADS = 4  # range mode: intervals whose objects are being written while the next ones are computed


def _grid(parts: list[Part], grid_start: datetime, last_snapshot: datetime, lookback_days: int) -> Grid:
    hours = int((last_snapshot - grid_start) / HOUR) + 1
    return build_grid(parts, last_snapshot, hours, window=lookback_days * HOURS_PER_DAY)


@dataclass
class _Output:
    """One interval's objects, computed and ready to write (in the order ``run`` writes them), and its metrics."""

    writes: list[tuple[str, bytes, str, int | None]] = field(default_factory=list)
    metrics: dict[str, object] = field(default_factory=dict)

    def write(self, ctx: StageContext) -> None:
        for key, data, content_type, rows in self.writes:
            ctx.put(key, data, content_type, rows=rows)


def indicators_and_anomalies(
    settings: Settings, snapshot: pa.Table, current: pa.Table
) -> tuple[pa.Table, list[dict[str, Any]]]:
    """One interval's indicators table (its snapshot rows joined with its own rows) and its anomalies."""
    rows = matching_rows(snapshot, current)
    table = indicators_table(snapshot, current, rows)
    return table, detect_anomalies(table, current, settings.alerts, rows)


def chart_pngs(
    settings: Settings, grid: Grid, k: int, interval: Interval, *, table: pa.Table, anomalies: list[dict[str, Any]]
) -> tuple[list[ChartSpec], list[tuple[str, bytes]]]:
    """The charts of snapshot row ``k`` (its interval's window only, as a per-interval run sees it)."""
    params = Params(zscore_window=settings.alerts.zscore_window_hours)
    primary = settings.quote_currencies[0]
    chosen = choose_charts(table.to_pylist(), anomalies, primary, settings.transform.chart_top_n)
    flagged = {(a["coin_id"], a["vs_currency"]) for a in anomalies}
    window = grid.window_grid(k)
    pngs = render_charts(window, chosen, params, settings.alerts, snapshot=interval.end, flagged=flagged)
    return chosen, [(chart.filename, png) for chart, png in pngs]


def _outputs(ctx: StageContext, grid: Grid, k: int, snapshot: pa.Table, current: pa.Table, *, charts: bool) -> _Output:
    """One interval's indicators, report and alerts from its snapshot rows (reads the quality report)."""
    settings, interval = ctx.settings, ctx.interval
    table, anomalies = indicators_and_anomalies(settings, snapshot, current)
    out = _Output()
    out.writes.append((indicators_key(interval), to_parquet_bytes(table), PARQUET_CONTENT_TYPE, table.num_rows))

    report_key = quality_report_key(interval)
    report = ctx.store.get_or_none(report_key)
    if report is not None:  # recorded as ctx.get records it (one request instead of exists + get)
        ctx.result.inputs.append(ObjectRef(report_key, sha256(report), len(report)))
    quality = quality_summary(report)

    prefix = report_prefix(interval)
    title = f"Crypto market report {iso_z(interval.start)} → {iso_z(interval.end)}"
    chosen: list[ChartSpec] = []
    if charts:
        chosen, pngs = chart_pngs(settings, grid, k, interval, table=table, anomalies=anomalies)
        out.writes.extend((prefix + filename, png, "image/png", None) for filename, png in pngs)
    out.writes.append((prefix + "index.html", index_html(title, chosen, anomalies), "text/html; charset=utf-8", None))
    report_uri = ctx.store.url(prefix + "index.html")
    document = alerts_document(interval, anomalies, quality, report_uri)
    out.writes.append((alerts_key(interval), json_bytes(document), "application/json", None))
    out.metrics = {
        "rows": table.num_rows,
        "coins": len(set(table.column("coin_id").to_pylist())),
        "anomalies": len(anomalies),
        "charts": len(chosen),
        "report_uri": report_uri,
    }
    return out


def run(ctx: StageContext) -> None:
    settings, interval = ctx.settings, ctx.interval
    lookback = settings.transform.lookback_days
    history = load_history(ctx, lookback)
    params = Params(zscore_window=settings.alerts.zscore_window_hours)
    grid = _grid(history.parts, history.grid_start, interval.snapshot_time, lookback)
    k = len(grid.times) - 1
    snapshot = snapshot_tables(grid, params, [k])[0]
    out = _outputs(ctx, grid, k, snapshot, history.current, charts=True)
    out.write(ctx)
    ctx.result.metrics.update(
        {
            **out.metrics,
            "rows_read": history.rows_read,
            "objects_read": history.objects_read,
            "compactions_written": len(history.compactions_written),
            "projections_written": len(history.projections_written),
        }
    )
    ctx.log.info(
        "transform done",
        extra={"rows": out.metrics["rows"], "anomalies": out.metrics["anomalies"], "rows_read": history.rows_read},
    )


# --- range mode ---------------------------------------------------------------------------------------------


@dataclass
class _Slot:
    """One interval of a range: its context (lineage, run record) and when its bookkeeping started."""

    ctx: StageContext
    started: datetime
    clock: float
    error: BaseException | None = None
    current: pa.Table | None = None


def _check_range(intervals: list[Interval]) -> None:
    if not intervals:
        raise ConfigError("transform range: no intervals given")
    for before, after in itertools.pairwise(intervals):
        if after.start != before.end:
            raise ConfigError(
                f"transform range: intervals must be consecutive hours in order; {after.start.isoformat()} "
                f"does not follow {before.start.isoformat()}"
            )


def _slot(
    settings: Settings, interval: Interval, log: logging.Logger, stores: tuple[ObjectStore, ObjectStore]
) -> _Slot:
    ctx = new_context(STAGE, settings, interval, stores, log)
    return _Slot(ctx, datetime.fromisoformat(ctx.result.started_at), time.perf_counter())


def _finish(slot: _Slot, log: logging.Logger, error: BaseException | None) -> StageResult:
    return finish_stage(slot.ctx, time.perf_counter() - slot.clock, error)


@dataclass
class _Range:
    """What every chunk of one range shares."""

    settings: Settings
    log: logging.Logger
    stores: tuple[ObjectStore, ObjectStore]
    shared: dict[str, object]
    charts: str
    last: Interval  # the range's last interval (charts="last" draws only its charts)
    pool: ThreadPoolExecutor


def run_range(
    settings: Settings, intervals: list[Interval], log: logging.Logger, *, charts: str = "last"
) -> list[StageResult]:
    """Transform many consecutive hourly intervals; one run record per interval.

    Per chunk of RANGE_CHUNK intervals (memory stays bounded for a year): read the history once (the lookback
    before the chunk's first interval + the chunk, compacting complete past days like ``run``), compute the
    chunk's indicators together, then per interval write exactly what ``run`` writes for it: the same
    indicators Parquet and alerts JSON bytes, and its report. Writes run in WRITE_THREADS threads while the next
    intervals are computed. ``charts``: ``"last"`` (default) renders the PNG charts only for the last interval
    of the range (the others get an index.html listing their anomalies without charts; a backfill of a year
    would otherwise draw ~100k PNGs), ``"all"`` for every one.

    Run records: each interval's own ``runs/P/transform.json``; a chunk's shared reads (history objects,
    compactions) are recorded as inputs of the chunk's first interval, and every record carries
    ``range_start``/``range_end``/``range_intervals``. An interval whose validated partition is missing gets a
    failed record (exit 8) and no outputs, the others are processed; a failed shared read fails its chunk's
    intervals. The first error is re-raised at the end.
    """
    _check_range(intervals)
    if charts not in ("last", "all"):
        raise ConfigError(f"transform range: charts must be 'last' or 'all', not {charts!r}")
    first, last = intervals[0], intervals[-1]
    shared: dict[str, object] = {"range_start": first.start.isoformat(), "range_end": last.end.isoformat()}
    shared["range_intervals"] = len(intervals)
    log.info("transform range started", extra={**shared})
    done: list[tuple[StageResult, BaseException | None]] = []
    with ThreadPoolExecutor(WRITE_THREADS, thread_name_prefix="transform-write") as pool:
        job = _Range(settings, log, open_stores(settings.storage), shared, charts, last, pool)
        for lo in range(0, len(intervals), RANGE_CHUNK):
            done.extend(_run_chunk(job, intervals[lo : lo + RANGE_CHUNK]))
    results = [result for result, _ in done]
    errors = [error for _, error in done if error is not None]
    log.info(
        "transform range finished",
        extra={**shared, "failed": len(errors), "rows": sum(r.metrics.get("rows", 0) for r in results)},
    )
    if errors:
        raise errors[0]
    return results


def _shared_reads(job: _Range, slots: list[_Slot]) -> tuple[Grid, list[int]]:
    """Each interval's own rows, then the chunk's history (one read) → grid and the intervals' snapshot rows."""
    lookback = job.settings.transform.lookback_days
    known: dict[str, tuple[ObjectRef, pa.Table]] = {}  # the intervals' partitions, read once for both uses
    for slot in slots:
        try:
            slot.current = read_current(_Reader(slot.ctx), slot.ctx.interval)
            known[validated_key(slot.ctx.interval)] = (slot.ctx.result.inputs[-1], slot.current)
        except PipelineError as exc:
            slot.error = exc
    head = slots[0].ctx
    first, last = slots[0].ctx.interval, slots[-1].ctx.interval
    reader = _Reader(head, known)
    compactions: list[str] = []
    parts = read_window_days(reader, anchor_time(first, lookback).date(), last, compactions)
    grid = _grid(parts, anchor_time(first, lookback), last.snapshot_time, lookback)
    ks = [len(grid.times) - len(slots) + i for i in range(len(slots))]
    head.result.metrics.update(
        {
            "rows_read": reader.rows,
            "objects_read": reader.objects,
            "compactions_written": len(compactions),
            "projections_written": len(reader.projections_written),
        }
    )
    return grid, ks


def _run_chunk(job: _Range, intervals: list[Interval]) -> list[tuple[StageResult, BaseException | None]]:
    """The chunk's intervals in order: (result, error). A non-pipeline error (a bug) is raised at once."""
    slots = [_slot(job.settings, interval, job.log, job.stores) for interval in intervals]
    try:
        grid, ks = _shared_reads(job, slots)
        params = Params(zscore_window=job.settings.alerts.zscore_window_hours)
        snapshots = snapshot_tables(grid, params, ks)
    except BaseException as exc:  # every interval of the chunk fails with it, and gets its record
        for slot in slots:
            slot.error = slot.error or exc
            _finish(slot, job.log, slot.error)
        if not isinstance(exc, PipelineError):
            raise
        return [(slot.ctx.result, slot.error) for slot in slots]
    pending: list[tuple[_Slot, Future[StageResult]]] = []
    for slot, k, snapshot in zip(slots, ks, snapshots, strict=True):
        out = None
        if slot.error is None and slot.current is not None:
            try:
                draw = job.charts == "all" or slot.ctx.interval == job.last
                out = _outputs(slot.ctx, grid, k, snapshot, slot.current, charts=draw)
            except Exception as exc:  # this interval failed; the others still get their outputs
                slot.error = exc
        slot.current = None
        pending.append((slot, job.pool.submit(_write, job, slot, out)))
    return [(future.result(), slot.error) for slot, future in pending]


def _write(job: _Range, slot: _Slot, out: _Output | None) -> StageResult:
    """An interval's objects, then its run record (so a record never announces objects not yet written)."""
    if out is not None and slot.error is None:
        try:
            out.write(slot.ctx)
            slot.ctx.result.metrics.update(out.metrics)
        except Exception as exc:
            slot.error = exc
    slot.ctx.result.metrics.update(job.shared)
    return _finish(slot, job.log, slot.error)


def run_days(settings: Settings, days: list[date], log: logging.Logger, *, charts: bool = True) -> list[StageResult]:
    """The daily layout (``run --batch --daily``): transform/daily.py; imported on use (it imports this module)."""
    from cryptopipe.transform.daily import run_days as daily_run_days

    return daily_run_days(settings, days, log, charts=charts)

"""The transform stage: lookback history → indicators at the snapshot → anomalies, alerts record, chart report.

Reads:  validated/market_snapshots/P/… (the lookback window, see history.py), quality/P/report.json (optional).
Writes: analytics/indicators/P/indicators.parquet, alerts/P/alerts.json, reports/P/index.html + charts/*.png,
        and validated/market_snapshots_daily/date=…/ compactions of complete past days it had to read hour by hour.

Two entry points with the same outputs: ``run(ctx)`` for one interval (the CLI / DAG task), and
``run_range(settings, intervals, log)`` for many consecutive intervals in one pass (backfills): history is read
once and the indicators of every interval are computed together (engine.py); each interval gets the same
indicators and alerts bytes as its own ``run`` and its own run record. Charts: see ``run_range``.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa

from cryptopipe.core.config import Settings
from cryptopipe.core.errors import ConfigError, PipelineError
from cryptopipe.core.layout import HOUR, Interval, alerts_key, indicators_key, quality_report_key, report_prefix
from cryptopipe.core.stage import StageContext, StageResult, finish_stage, new_context
from cryptopipe.core.storage import open_stores
from cryptopipe.transform.anomalies import alerts_document, detect_anomalies, iso_z, quality_summary
from cryptopipe.transform.charts import choose_charts, index_html, render_charts
from cryptopipe.transform.engine import prepare
from cryptopipe.transform.history import (
    HOURS_PER_DAY,
    _Reader,
    _slim,
    anchor_time,
    between,
    load_history,
    read_current,
    read_window_days,
)
from cryptopipe.transform.indicators import Grid, Params, build_grid, indicators_table, snapshot_rows_many
from cryptopipe.transform.schema import INDICATORS_SCHEMA

STAGE = "transform"
RANGE_CHUNK = 24 * 7  # intervals computed together in range mode (a week: 8 anchors, ~2424-hour accumulations)


def _grid(table: pa.Table, grid_start: datetime, last_snapshot: datetime, lookback_days: int) -> Grid:
    hours = int((last_snapshot - grid_start) / HOUR) + 1
    return build_grid(table, last_snapshot, hours, window=lookback_days * HOURS_PER_DAY)


def _emit(
    ctx: StageContext, grid: Grid, k: int, rows: list[dict[str, object]], current: pa.Table, *, charts: bool
) -> dict[str, object]:
    """Write one interval's indicators, report and alerts from its snapshot rows; return its metrics."""
    settings, interval = ctx.settings, ctx.interval
    params = Params(zscore_window=settings.alerts.zscore_window_hours)
    table = indicators_table(grid, current, params, rows)
    ctx.write_table(indicators_key(interval), table, INDICATORS_SCHEMA)

    anomalies = detect_anomalies(table, current, settings.alerts)
    report_key = quality_report_key(interval)
    quality = quality_summary(ctx.get(report_key) if ctx.store.exists(report_key) else None)

    prefix = report_prefix(interval)
    title = f"Crypto market report {iso_z(interval.start)} → {iso_z(interval.end)}"
    chosen = []
    if charts:
        primary = settings.quote_currencies[0]
        chosen = choose_charts(table.to_pylist(), anomalies, primary, settings.transform.chart_top_n)
        flagged = {(a["coin_id"], a["vs_currency"]) for a in anomalies}
        window = grid.window_grid(k)  # what a per-interval run sees: its window only
        for chart, png in render_charts(
            window, chosen, params, settings.alerts, snapshot=interval.end, flagged=flagged
        ):
            ctx.put(prefix + chart.filename, png, "image/png")
    ctx.put(prefix + "index.html", index_html(title, chosen, anomalies), "text/html; charset=utf-8")
    report_uri = ctx.store.url(prefix + "index.html")
    ctx.put_json(alerts_key(interval), alerts_document(interval, anomalies, quality, report_uri))
    return {
        "rows": table.num_rows,
        "coins": len(set(table.column("coin_id").to_pylist())),
        "anomalies": len(anomalies),
        "charts": len(chosen),
        "report_uri": report_uri,
    }


def run(ctx: StageContext) -> None:
    settings, interval = ctx.settings, ctx.interval
    lookback = settings.transform.lookback_days
    history = load_history(ctx, lookback)
    params = Params(zscore_window=settings.alerts.zscore_window_hours)
    grid = _grid(history.extended, history.grid_start, interval.snapshot_time, lookback)
    k = len(grid.times) - 1
    rows = snapshot_rows_many(grid, params, [k])[0]
    metrics = _emit(ctx, grid, k, rows, history.current, charts=True)
    ctx.result.metrics.update(
        {
            **metrics,
            "rows_read": history.rows_read,
            "objects_read": history.objects_read,
            "compactions_written": len(history.compactions_written),
        }
    )
    ctx.log.info(
        "transform done",
        extra={"rows": metrics["rows"], "anomalies": metrics["anomalies"], "rows_read": history.rows_read},
    )


# --- range mode ---------------------------------------------------------------------------------------------


@dataclass
class _Slot:
    """One interval of a range: its context (lineage, run record) and when its bookkeeping started."""

    ctx: StageContext
    started: datetime
    clock: float


def _check_range(intervals: list[Interval]) -> None:
    if not intervals:
        raise ConfigError("transform range: no intervals given")
    for before, after in itertools.pairwise(intervals):
        if after.start != before.end:
            raise ConfigError(
                f"transform range: intervals must be consecutive hours in order; {after.start.isoformat()} "
                f"does not follow {before.start.isoformat()}"
            )


def _slot(settings: Settings, interval: Interval, log: logging.Logger, stores: tuple) -> _Slot:
    ctx = new_context(STAGE, settings, interval, stores, log)
    return _Slot(ctx, datetime.fromisoformat(ctx.result.started_at), time.perf_counter())


def _finish(slot: _Slot, log: logging.Logger, error: BaseException | None) -> None:
    finish_stage(slot.ctx, time.perf_counter() - slot.clock, error)


def run_range(
    settings: Settings, intervals: list[Interval], log: logging.Logger, *, charts: str = "last"
) -> list[StageResult]:
    """Transform many consecutive hourly intervals in one pass; one run record per interval.

    Reads the history once (the lookback before the first interval + the range, compacting complete past days
    like ``run``), computes every interval's indicators together, then per interval writes exactly what ``run``
    writes for it: the same indicators Parquet and alerts JSON bytes, and its report. ``charts``: ``"last"``
    (default) renders the PNG charts only for the last interval (the others get an index.html listing their
    anomalies without charts; a backfill of a year would otherwise draw ~100k PNGs), ``"all"`` for every one.

    Run records: each interval's own ``runs/P/transform.json``; the shared reads (history objects, compactions)
    are recorded as inputs of the first interval's record, and every record carries ``range_start``/
    ``range_end``/``range_intervals``. An interval whose validated partition is missing gets a failed record
    (exit 8) and no outputs, the others are processed; the first such error is re-raised at the end.
    """
    _check_range(intervals)
    if charts not in ("last", "all"):
        raise ConfigError(f"transform range: charts must be 'last' or 'all', not {charts!r}")
    stores = open_stores(settings.storage)
    lookback = settings.transform.lookback_days
    params = Params(zscore_window=settings.alerts.zscore_window_hours)
    first, last = intervals[0], intervals[-1]
    slots = [_slot(settings, interval, log, stores) for interval in intervals]
    shared = {"range_start": first.start.isoformat(), "range_end": last.end.isoformat()}
    shared["range_intervals"] = len(intervals)
    errors: list[BaseException | None] = [None] * len(intervals)
    currents: list[pa.Table | None] = [None] * len(intervals)
    log.info("transform range started", extra={**shared})
    try:
        head = slots[0].ctx
        reader = _Reader(head)
        for i, slot in enumerate(slots):
            try:
                currents[i] = read_current(_Reader(slot.ctx), slot.ctx.interval)
            except PipelineError as exc:
                errors[i] = exc
        compactions: list[str] = []
        first_day = anchor_time(first, lookback).date()
        parts = read_window_days(reader, first_day, last, compactions)
        grid_start = anchor_time(first, lookback)
        table = between(pa.concat_tables(parts) if parts else _empty(), grid_start - HOUR, last.end)
        grid = _grid(_slim(table), grid_start, last.snapshot_time, lookback)
        ks = [len(grid.times) - len(intervals) + i for i in range(len(intervals))]
        prepared = prepare(grid.observed, grid.filled)
        head.result.metrics.update(
            {"rows_read": reader.rows, "objects_read": reader.objects, "compactions_written": len(compactions)}
        )
    except BaseException as exc:
        for slot, err in zip(slots, errors, strict=True):
            _finish(slot, log, err or exc)
        raise
    rows: list[list[dict[str, object]]] = []
    chunk_error: Exception | None = None
    for i, slot in enumerate(slots):
        if i % RANGE_CHUNK == 0:  # rows of a chunk of intervals at a time: memory stays bounded for a year
            try:
                rows, chunk_error = snapshot_rows_many(grid, params, ks[i : i + RANGE_CHUNK], prepared), None
            except Exception as exc:  # every interval of the chunk fails with it, and gets its record
                rows, chunk_error = [], exc
        current = currents[i]
        errors[i] = errors[i] or chunk_error
        if errors[i] is None and current is not None:
            try:
                draw = charts == "all" or i == len(slots) - 1
                metrics = _emit(slot.ctx, grid, ks[i], rows[i % RANGE_CHUNK], current, charts=draw)
                slot.ctx.result.metrics.update(metrics)
            except Exception as exc:  # this interval failed; the others still get their outputs
                errors[i] = exc
        slot.ctx.result.metrics.update(shared)
        _finish(slot, log, errors[i])
    results = [slot.ctx.result for slot in slots]
    failed = [e for e in errors if e is not None]
    log.info(
        "transform range finished",
        extra={**shared, "failed": len(failed), "rows": sum(r.metrics.get("rows", 0) for r in results)},
    )
    if failed:
        raise failed[0]
    return results


def _empty() -> pa.Table:
    from cryptopipe.transform.history import HISTORY_SCHEMA

    return HISTORY_SCHEMA.empty_table()

"""Transform in the daily layout (``cryptopipe run --batch --daily``, docs/batch.md): one object per UTC day.

Per day D, the 24 hourly snapshots are computed as range mode computes them (the same grid rule, engine and per-hour
outputs, stage.py), and written as day objects instead of 24 x 3 hourly ones:

- ``indicators_daily_key(D)``: the 24 hourly indicator tables concatenated in hour order (one Parquet write);
- ``alerts_daily_key(D)``: ``{"day", "layout": "daily", "intervals": [the 24 hourly alerts dicts]}``; each hour's
  ``report_uri`` names the day's report page (there is no hourly page);
- ``report_daily_prefix(D) + "index.html"``: the day's anomalies per hour; PNG charts only for the last hour of the
  last day of the call (range mode's default ``charts="last"``), and none with ``charts=False``: the runner's
  blocks that do not end the run, so the charts do not depend on how a run is split into blocks.

Input: the day's compaction ``validated_daily_key(D)`` (validate --daily writes it). Its rows split by
``snapshot_time`` are exactly the day's hourly validated partitions: validate's critical checks guarantee every
validated row has ``snapshot_time`` = its interval end and one row per key, so the hour's "current" rows are the
same set (the order differs; nothing per hour depends on it with unique keys). The lookback before a chunk's first
day is read as hourly mode reads past days (history.py ``_past_day``: projection, compaction, else hourly
partitions); days of earlier chunks of the same call are kept in memory instead of being read again.

A day is the unit of success: a missing compaction, a failed shared read or a failing hour fails the whole day (no
data objects; stale day objects of D are deleted), the other days go on. A day that succeeds deletes what an
earlier hourly run left for D (indicators, alerts, report pages, hourly transform run records).
"""

from __future__ import annotations

import itertools
import json
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from cryptopipe.core.config import Settings
from cryptopipe.core.errors import ConfigError, MissingInputError, PipelineError, StorageError
from cryptopipe.core.layout import (
    ALERTS,
    HOUR,
    INDICATORS,
    REPORTS,
    Interval,
    alerts_daily_key,
    day_intervals,
    day_start,
    days_between,
    indicators_daily_key,
    quality_daily_report_key,
    report_daily_prefix,
    validated_daily_key,
)
from cryptopipe.core.schema import SNAPSHOT_SCHEMA
from cryptopipe.core.stage import (
    ObjectRef,
    StageContext,
    StageResult,
    day_hour_quality,
    day_run_record_key,
    finish_stage,
    new_day_context,
    sha256,
)
from cryptopipe.core.storage import ObjectStore, open_stores
from cryptopipe.core.tables import PARQUET_CONTENT_TYPE, conform, from_parquet_bytes, to_parquet_bytes
from cryptopipe.transform import projection
from cryptopipe.transform.anomalies import alerts_document, anomaly_records, iso_z, quality_summary_of, sort_anomalies
from cryptopipe.transform.charts import ChartSpec, day_index_html
from cryptopipe.transform.history import HISTORY_COLUMNS, HOURS_PER_DAY, Part, _past_day, _Reader, anchor_time
from cryptopipe.transform.indicators import Grid, Params, indicators_table, matching_rows, snapshot_tables
from cryptopipe.transform.stage import STAGE, _grid, chart_pngs

DAY_CHUNK = 7  # days per history pass (range mode's week: memory bounded by the week and the lookback)
READ_THREADS = 4  # the chunk's compactions are read and decoded in parallel (I/O and Arrow release the GIL)
WRITE_THREADS = 4  # days whose objects are being written while the next chunk is computed
HOUR_MS = 3_600_000
HTML = "text/html; charset=utf-8"


@dataclass
class _Day:
    """One day of the call: its context (lineage, day run record) and what was read and computed for it."""

    ctx: StageContext
    clock: float
    error: PipelineError | None = None
    current: pa.Table | None = None  # the day's validated rows (the compaction, in its row order)
    hour: np.ndarray | None = None  # the hour of the day of each of its rows
    parts: list[Part] = field(default_factory=list)  # its prices for the grid
    ref: ObjectRef | None = None  # the compaction read

    @property
    def day(self) -> date:
        assert self.ctx.day is not None
        return self.ctx.day


@dataclass
class _Output:
    """A day's objects, computed and ready to write, and its metrics."""

    writes: list[tuple[str, bytes | pa.Table, str]] = field(default_factory=list)
    metrics: dict[str, object] = field(default_factory=dict)


@dataclass
class _Job:
    """What every chunk of one call shares."""

    settings: Settings
    log: logging.Logger
    stores: tuple[ObjectStore, ObjectStore]
    last: date | None  # charts are drawn for the last hour of this day only (None: no charts)
    reads: ThreadPoolExecutor
    writes: ThreadPoolExecutor
    carry: dict[date, tuple[list[ObjectRef], list[Part]]] = field(default_factory=dict)  # earlier chunks' days


def run_days(settings: Settings, days: list[date], log: logging.Logger, *, charts: bool = True) -> list[StageResult]:
    """Transform consecutive whole UTC days in the daily layout; one StageResult (and day run record) per day.
    ``charts``: draw the charts of the last day's last hour (False: a block that does not end the run draws none).

    A PipelineError fails its day (or, for a shared read, its chunk's days) and the others go on; a bug is recorded
    in the day's run record and re-raised.
    """
    _check_days(days)
    log.info("transform daily started", extra={"first_day": str(days[0]), "days": len(days)})
    results: list[StageResult] = []
    with (
        ThreadPoolExecutor(READ_THREADS, thread_name_prefix="transform-read") as reads,
        ThreadPoolExecutor(WRITE_THREADS, thread_name_prefix="transform-write") as writes,
    ):
        job = _Job(settings, log, open_stores(settings.storage), days[-1] if charts else None, reads, writes)
        pending: list[Future[StageResult]] = []
        for lo in range(0, len(days), DAY_CHUNK):
            pending.extend(_run_chunk(job, days[lo : lo + DAY_CHUNK]))
        results = [future.result() for future in pending]
    failed = sum(r.status == "failed" for r in results)
    log.info(
        "transform daily finished",
        extra={"days": len(days), "failed": failed, "rows": sum(r.metrics.get("rows", 0) for r in results)},
    )
    return results


def compact_json(obj: Any) -> bytes:
    """Canonical JSON (sorted keys) without indentation: Python's C encoder, ~10x faster than the indented
    ``json_bytes`` on a day of alerts (thousands of anomaly records)."""
    return (json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str) + "\n").encode()


def _check_days(days: list[date]) -> None:
    if not days:
        raise ConfigError("transform daily: no days given")
    for before, after in itertools.pairwise(days):
        if after - before != timedelta(days=1):
            raise ConfigError(f"transform daily: days must be consecutive and in order; {after} follows {before}")


def _run_chunk(job: _Job, days: list[date]) -> list[Future[StageResult]]:
    """Read the chunk's days and lookback, compute every hour, hand each day's writes to the write pool."""
    slots = [_Day(new_day_context(STAGE, job.settings, day, job.stores, job.log), time.perf_counter()) for day in days]
    try:
        for slot, (ref, table) in zip(slots, job.reads.map(lambda s: _read_compaction(s.ctx), slots), strict=True):
            _take_compaction(slot, ref, table)
        grid = _chunk_grid(job, slots)
        ok = [slot for slot in slots if slot.error is None]
        base = len(grid.times) - HOURS_PER_DAY * len(slots)
        ks = [base + HOURS_PER_DAY * slots.index(slot) + h for slot in ok for h in range(HOURS_PER_DAY)]
        params = Params(zscore_window=job.settings.alerts.zscore_window_hours)
        snapshots = snapshot_tables(grid, params, ks) if ks else []
    except PipelineError as exc:  # a shared read failed: every day of the chunk fails with it
        for slot in slots:
            slot.error = slot.error or exc
        return [job.writes.submit(_write, job, slot, None) for slot in slots]
    except BaseException as exc:
        for slot in slots:
            finish_stage(slot.ctx, time.perf_counter() - slot.clock, exc)
        raise
    futures = []
    for slot in slots:
        out = None
        if slot.error is None:
            i = ok.index(slot)
            day = slice(HOURS_PER_DAY * i, HOURS_PER_DAY * (i + 1))
            try:
                out = _day_outputs(job, slot, grid, ks[day], snapshots[day])
            except PipelineError as exc:
                slot.error = exc
            except BaseException as exc:
                finish_stage(slot.ctx, time.perf_counter() - slot.clock, exc)
                raise
        slot.current, slot.hour, slot.parts = None, None, []
        futures.append(job.writes.submit(_write, job, slot, out))
    return futures


def _read_compaction(ctx: StageContext) -> tuple[ObjectRef | PipelineError, pa.Table | None]:
    """The day's compaction (all columns) with its lineage record, or the error that fails the day."""
    assert ctx.day is not None
    key = validated_daily_key(ctx.day)
    try:
        data = ctx.store.get_or_none(key)
        if data is None:
            raise MissingInputError(
                f"{ctx.store.url(key)} is missing: transform --daily reads the day's validated compaction; validate "
                f"must run first in the daily layout for {ctx.day} (cryptopipe run --start {ctx.day}T00:00:00Z "
                f"--end {ctx.day + timedelta(days=1)}T00:00:00Z --stages validate,transform --batch --daily)",
                key=key,
            )
        table = conform(from_parquet_bytes(data, ctx.store.url(key)), SNAPSHOT_SCHEMA)
    except PipelineError as exc:
        return exc, None
    return ObjectRef(key, sha256(data), len(data), table.num_rows), table


def _take_compaction(slot: _Day, ref: ObjectRef | PipelineError, table: pa.Table | None) -> None:
    if isinstance(ref, PipelineError):
        slot.error = ref
        return
    assert table is not None
    slot.ctx.result.inputs.append(ref)
    slot.ref = ref
    try:
        slot.hour = hour_of_rows(table, slot.day, ref.key)
    except PipelineError as exc:
        slot.error = exc
        return
    slot.current = table
    rows = projection.as_rows(table)
    slot.parts = [projection.day_prices(rows, slot.day) or rows]


def hour_of_rows(table: pa.Table, day: date, key: str) -> np.ndarray:
    """The hour of the day of each compaction row (hour h: snapshot_time = the end of hour h)."""
    offset = table.column("snapshot_time").cast(pa.int64()).to_numpy() - int(day_start(day).timestamp() * 1000)
    stray = (offset <= 0) | (offset > HOURS_PER_DAY * HOUR_MS) | (offset % HOUR_MS != 0)
    if stray.any():
        raise StorageError(
            f"{key}: {int(stray.sum())} rows have a snapshot_time that is not the end of an hour of {day}; "
            "it is not the compaction of that day's validated hours (rerun validate --daily for the day)",
            key=key,
        )
    return offset // HOUR_MS - 1


def split_hours(table: pa.Table, hour: np.ndarray) -> tuple[list[pa.Table], np.ndarray]:
    """The rows per hour of the day, each in row order, and the row order of their concatenation."""
    order = np.argsort(hour, kind="stable")
    ordered = table.take(pa.array(order))
    bounds = np.concatenate([[0], np.cumsum(np.bincount(hour, minlength=HOURS_PER_DAY))])
    return [ordered.slice(int(lo), int(hi - lo)) for lo, hi in itertools.pairwise(bounds)], order


def _chunk_grid(job: _Job, slots: list[_Day]) -> Grid:
    """The grid from the lookback anchor to the chunk's last snapshot; lookback days read as hourly mode does."""
    lookback = job.settings.transform.lookback_days
    first = Interval.starting(day_start(slots[0].day))
    last = Interval.starting(day_start(slots[-1].day) + (HOURS_PER_DAY - 1) * HOUR)
    head = slots[0].ctx
    reader = _Reader(head)
    compactions: list[str] = []
    parts: list[Part] = []
    anchor_day = anchor_time(first, lookback).date()
    for day in days_between(anchor_day, slots[0].day - timedelta(days=1)):
        if day in job.carry:
            refs, carried = job.carry[day]
            for ref in refs:
                reader._count(ref)
            parts.extend(carried)
        else:
            parts.extend(_past_day(reader, day, compactions))
    for slot in slots:
        if slot.error is not None:  # absent from the compaction: its hours as a later chunk's lookback reads them
            slot.parts = _hourly_parts(reader, slot.day)
        parts.extend(slot.parts)
    head.result.metrics.update(
        {
            "lookback_rows_read": reader.rows,
            "lookback_objects_read": reader.objects,
            "compactions_written": len(compactions),
            "projections_written": len(reader.projections_written),
        }
    )
    _carry(job, slots, anchor_day)
    return _grid(parts, anchor_time(first, lookback), last.snapshot_time, lookback)


def _hourly_parts(reader: _Reader, day: date) -> list[Part]:
    tables = [reader.read(key, HISTORY_COLUMNS) for key in reader.hourly_keys(day).values()]
    return [t for t in tables if t is not None]


def _carry(job: _Job, slots: list[_Day], anchor_day: date) -> None:
    """Keep the chunk's days for the next chunks' lookback (the next anchor is at least a chunk later)."""
    for slot in slots:
        job.carry[slot.day] = ([slot.ref] if slot.ref is not None else [], list(slot.parts))
    for day in [d for d in job.carry if d < anchor_day]:
        del job.carry[day]


def _quality_by_hour(ctx: StageContext, day: date) -> dict[str, dict[str, Any]]:
    """Each hour's quality summary (keyed by interval start): from validate's day run record, which carries the
    hours' figures (parsing the ~0.7 MB day report for them cost ~2.5 s of CPU a year); from the day report when
    the record lacks them; none when neither exists."""
    key = day_run_record_key(day, "validate")
    data = ctx.store.get_or_none(key)
    try:
        hours = day_hour_quality(json.loads(data)) if data is not None else None
    except (UnicodeDecodeError, ValueError):
        hours = None
    if data is not None and hours is not None:
        ctx.result.inputs.append(ObjectRef(key, sha256(data), len(data)))
        return {
            hour["interval_start"]: quality_summary_of(
                {
                    "quality_score": hour["quality_score"],
                    "summary": {k: hour[k] for k in ("warning_failures", "rows_quarantined")},
                }
            )
            for hour in hours
        }
    return _quality_from_report(ctx, day)


def _quality_from_report(ctx: StageContext, day: date) -> dict[str, dict[str, Any]]:
    key = quality_daily_report_key(day)
    data = ctx.store.get_or_none(key)
    if data is None:
        return {}
    ctx.result.inputs.append(ObjectRef(key, sha256(data), len(data)))
    try:
        report = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        return {}
    hours = report.get("intervals") if isinstance(report, dict) else None
    out: dict[str, dict[str, Any]] = {}
    for hour in hours if isinstance(hours, list) else []:
        interval = hour.get("interval") if isinstance(hour, dict) else None
        if isinstance(interval, dict) and isinstance(interval.get("start"), str):
            out[interval["start"]] = quality_summary_of(hour)
    return out


def _day_outputs(job: _Job, slot: _Day, grid: Grid, ks: list[int], snapshots: list[pa.Table]) -> _Output:
    """The day's indicators, alerts and report page from its 24 snapshot tables."""
    ctx, day, settings = slot.ctx, slot.day, job.settings
    quality = _quality_by_hour(ctx, day)
    prefix = report_daily_prefix(day)
    report_uri = ctx.store.url(prefix + "index.html")
    documents, sections = [], []
    charts: list[ChartSpec] = []
    out = _Output()
    assert slot.current is not None and slot.hour is not None
    indicators, by_hour = day_indicators_and_anomalies(settings, snapshots, slot.current, slot.hour)
    for interval, anomalies in zip(day_intervals(day), by_hour, strict=True):
        hour_quality = quality.get(interval.start.isoformat(), quality_summary_of(None))
        documents.append(alerts_document(interval, anomalies, hour_quality, report_uri))
        sections.append((f"{iso_z(interval.start)} → {iso_z(interval.end)}", anomalies))
    if day == job.last:  # range mode's default: charts for the last interval of the range only
        interval, k = day_intervals(day)[-1], ks[-1]
        table = indicators.slice(indicators.num_rows - snapshots[-1].num_rows)
        charts, pngs = chart_pngs(settings, grid, k, interval, table=table, anomalies=by_hour[-1])
        out.writes.extend((prefix + filename, png, "image/png") for filename, png in pngs)
    out.writes.insert(0, (indicators_daily_key(day), indicators, PARQUET_CONTENT_TYPE))
    title = f"Crypto market report {day} (UTC), by hour"
    out.writes.append((prefix + "index.html", day_index_html(title, charts, sections), HTML))
    alerts = {"day": str(day), "layout": "daily", "intervals": documents}
    out.writes.append((alerts_daily_key(day), compact_json(alerts), "application/json"))
    per_hour = [len(anomalies) for _, anomalies in sections]
    own_rows = slot.current.num_rows
    out.metrics = {
        "rows": indicators.num_rows,
        "coins": len(set(indicators.column("coin_id").to_pylist())),
        "anomalies": sum(per_hour),
        "anomalies_per_hour": per_hour,
        "charts": len(charts),
        "rows_read": own_rows + int(ctx.result.metrics.get("lookback_rows_read", 0)),
        "report_uri": report_uri,
    }
    return out


def day_indicators_and_anomalies(
    settings: Settings, snapshots: list[pa.Table], current: pa.Table, hour: np.ndarray
) -> tuple[pa.Table, list[list[dict[str, Any]]]]:
    """The day's indicators (the 24 hourly tables' rows in hour order) and each hour's anomalies (sorted as
    ``detect_anomalies`` sorts them), computed over the whole day at once: per-row operations, same values.

    ``current``: the day's validated rows in any order, ``hour`` the hour of each (their split by hour is each
    hour's validated partition; a row is joined by its key, so the order does not change a value)."""
    snapshot = pa.concat_tables(snapshots)
    rows = _current_rows(snapshots, current, hour)
    table = indicators_table(snapshot, current, rows)
    hour_of_row = np.repeat(np.arange(HOURS_PER_DAY), [t.num_rows for t in snapshots])
    by_hour: list[list[dict[str, Any]]] = [[] for _ in range(HOURS_PER_DAY)]
    for i, record in anomaly_records(table, current, settings.alerts, rows):
        by_hour[hour_of_row[i]].append(record)
    return table, [sort_anomalies(found) for found in by_hour]


def _current_rows(snapshots: list[pa.Table], current: pa.Table, hour: np.ndarray) -> pa.Array:
    """``matching_rows`` of every hour (snapshot of hour h against the rows of hour h), as rows of ``current``."""
    rows = _keyed_rows(_snapshot_keys(snapshots), _key_columns(current), hour)
    if rows is not None:
        return rows
    hours, order = split_hours(current, hour)  # not validated data: matching_rows' "last wins" per hour
    split_rows = _day_matching_rows(snapshots, hours)
    return pc.take(pa.array(order), split_rows)


def _key_columns(table: pa.Table) -> tuple[pa.Array, pa.Array]:
    coin, vs = (table.column(name).combine_chunks().cast(pa.string()) for name in ("coin_id", "vs_currency"))
    return coin, vs


def _snapshot_keys(snapshots: list[pa.Table]) -> tuple[pa.Array, pa.Array, np.ndarray]:
    coin, vs = _key_columns(pa.concat_tables([t.select(["coin_id", "vs_currency"]) for t in snapshots]))
    return coin, vs, np.repeat(np.arange(HOURS_PER_DAY), [t.num_rows for t in snapshots])


def _keyed_rows(
    wanted: tuple[pa.Array, pa.Array, np.ndarray], have: tuple[pa.Array, pa.Array], have_hour: np.ndarray
) -> pa.Array | None:
    """For each wanted (coin_id, vs_currency, hour), the row of ``have`` with that key (null: none), by one sorted
    lookup of integer codes; None when a key of ``have`` is null or repeated (the caller's fallback decides)."""
    coin, vs, hour = wanted
    n_wanted, n_have = len(coin), len(have[0])
    codes = []
    for ours, theirs in ((coin, have[0]), (vs, have[1])):
        encoded = pa.concat_arrays([ours, theirs]).dictionary_encode()
        if encoded.indices.null_count:
            return None
        codes.append((encoded.indices.to_numpy().astype(np.int64), len(encoded.dictionary)))
    (coin_code, _), (vs_code, n_vs) = codes
    key = (coin_code * n_vs + vs_code) * HOURS_PER_DAY + np.concatenate([hour, have_hour]).astype(np.int64)
    wanted_key, have_key = key[:n_wanted], key[n_wanted:]
    order = np.argsort(have_key, kind="stable")
    sorted_key = have_key[order]
    if n_have and (sorted_key[1:] == sorted_key[:-1]).any():
        return None
    pos = np.minimum(np.searchsorted(sorted_key, wanted_key), max(n_have - 1, 0))
    found = sorted_key[pos] == wanted_key if n_have else np.zeros(n_wanted, bool)
    return pa.array(order[pos] if n_have else np.zeros(n_wanted, np.int64), pa.int64(), mask=~found)


def _day_matching_rows(snapshots: list[pa.Table], hours: list[pa.Table]) -> pa.Array:
    """``matching_rows`` of every hour, as row numbers into the hours' concatenation (one lookup per day)."""
    have = _key_columns(pa.concat_tables([t.select(["coin_id", "vs_currency"]) for t in hours]))
    have_hour = np.repeat(np.arange(HOURS_PER_DAY), [t.num_rows for t in hours])
    rows = _keyed_rows(_snapshot_keys(snapshots), have, have_hour)
    if rows is not None:
        return rows
    offsets = np.cumsum([0] + [t.num_rows for t in hours])[:-1]  # not validated data: matching_rows' "last wins"
    parts = [pc.add(matching_rows(s, h), int(o)) for s, h, o in zip(snapshots, hours, offsets, strict=True)]
    return pa.concat_arrays(parts) if parts else pa.array([], pa.int64())


def _write(job: _Job, slot: _Day, out: _Output | None) -> StageResult:
    """A day's objects, then the removal of what they supersede, then its run record (the record comes last)."""
    ctx = slot.ctx
    try:
        if out is not None and slot.error is None:
            for key, data, content_type in out.writes:
                if isinstance(data, pa.Table):
                    ctx.put(key, to_parquet_bytes(data), content_type, rows=data.num_rows)
                else:
                    ctx.put(key, data, content_type)
            _delete_hourly(ctx.store, slot.day)
            ctx.result.metrics.update(out.metrics)
    except PipelineError as exc:
        slot.error = exc
    except BaseException as exc:
        finish_stage(ctx, time.perf_counter() - slot.clock, exc)
        raise
    if slot.error is not None:
        _delete_day_objects(ctx, slot.day)
    error = None if slot.error is None else _day_error(slot.day, slot.error)
    return finish_stage(ctx, time.perf_counter() - slot.clock, error)


def _day_error(day: date, exc: PipelineError) -> PipelineError:
    """The error of the day (same exit code), saying that the day failed as a whole."""
    error = PipelineError(
        f"transform day {day} failed as a whole (daily layout; no day objects written): {exc.message}", day=str(day)
    )
    error.exit_code = exc.exit_code
    return error


def _delete_day_objects(ctx: StageContext, day: date) -> None:
    """A failed day leaves no day object a reader would take as current (its own error stays the day's error)."""
    store = ctx.store
    try:
        for key in (indicators_daily_key(day), alerts_daily_key(day), *store.list(report_daily_prefix(day))):
            store.delete(key)
    except PipelineError as exc:
        ctx.log.warning(
            "could not delete the failed day's stale objects", extra={"day": str(day), "error": exc.message}
        )


def _delete_hourly(store: ObjectStore, day: date) -> None:
    """What an earlier hourly run left for the day: the day objects supersede it. Its hourly run records stay (the
    history of what ran; runs/ is append-only)."""
    partition = f"date={day:%Y-%m-%d}/"
    for prefix in (f"{INDICATORS}/{partition}", f"{ALERTS}/{partition}", f"{REPORTS}/{partition}"):
        for key in store.list(prefix):
            store.delete(key)

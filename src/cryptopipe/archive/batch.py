"""Range mode of the archive stage: many hourly intervals per warehouse transaction (docs/batch.md).

``run_range(settings, intervals, log)`` leaves for every interval what ``cryptopipe archive`` leaves (archive copy
of raw, warehouse rows, manifest, pipeline_runs rows, interval_manifests row, run record), but:

- the schema is migrated once per range, not once per interval;
- the warehouse is loaded one chunk of intervals (``CHUNK_HOURS``, a day) per transaction: the chunk's rows of
  ``market_snapshots``, ``indicators`` and ``anomalies`` are deleted by ``interval_start`` and re-inserted in bulk
  (``bulk.replace_intervals``: COPY on PostgreSQL, an ADBC-written scratch database on SQLite, then one
  ``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` per table). The end state equals ``replace_interval`` per
  interval: exactly the new rows for each interval, one row per key (a key loaded earlier under another interval
  is moved, as the upsert there does);
- objects are read and written by a thread pool (object-store latency overlaps);
- retention runs once, in the last chunk, with the same rules as hourly runs (the union of what each interval's
  run would delete: one sweep at the last 00:00 interval plus the expired hours after it); its count is reported
  on the last interval, the others report 0.

An interval whose inputs are missing fails alone (exit 8, as per interval); a warehouse failure fails the chunk's
intervals (one transaction) and the range goes on with the next chunk.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from cryptopipe.archive import bulk, models, stage
from cryptopipe.archive.lineage import build_manifest
from cryptopipe.archive.retention import apply_retention
from cryptopipe.archive.warehouse import create_engine, migrate, safe_url, upsert, warehouse_errors
from cryptopipe.core import layout
from cryptopipe.core.config import Settings
from cryptopipe.core.errors import PipelineError, StorageError
from cryptopipe.core.layout import Interval
from cryptopipe.core.stage import (
    StageContext,
    StageResult,
    finish_stage,
    json_bytes,
    new_context,
    sha256,
)
from cryptopipe.core.storage import ObjectStore, open_stores

STAGE = "archive"
CHUNK_HOURS = 24  # intervals per warehouse transaction
IO_THREADS = 8
TS_FORMAT = "%Y-%m-%d %H:%M:%S"  # with microsecond timestamps Arrow's %S prints SS.ffffff: SQLAlchemy's SQLite form


@dataclass
class _Item:
    ctx: StageContext
    clock: float = field(default_factory=time.perf_counter)
    validated: pa.Table | None = None
    indicators: pa.Table | None = None
    alerts: dict[str, Any] | None = None
    quality: dict[str, Any] | None = None
    archived: list[dict[str, Any]] = field(default_factory=list)
    error: PipelineError | None = None


def run_range(
    settings: Settings, intervals: list[Interval], log: logging.Logger, *, chunk_hours: int = CHUNK_HOURS
) -> list[StageResult]:
    store, archive_store = open_stores(settings.storage)
    url = settings.warehouse.url.get_secret_value()
    engine = create_engine(url)
    results: list[StageResult] = []
    try:
        try:
            with warehouse_errors(url, "schema migration"):
                revision = migrate(engine)
        except PipelineError as exc:  # nothing can load: every interval fails with the warehouse's error
            items = [_Item(new_context(STAGE, settings, iv, (store, archive_store), log)) for iv in intervals]
            return [_finish(item, exc) for item in items]
        for first in range(0, len(intervals), chunk_hours):
            chunk = intervals[first : first + chunk_hours]
            last = first + chunk_hours >= len(intervals)
            retention = intervals if last else None
            run = ChunkRun(settings, (store, archive_store), engine, url, revision, log)
            results.extend(_run_chunk(run, chunk, retention=retention))
    finally:
        engine.dispose()
    return results


def _finish(item: _Item, error: PipelineError | None = None) -> StageResult:
    return finish_stage(item.ctx, time.perf_counter() - item.clock, error)


class _Failable(Protocol):
    error: PipelineError | None


T = TypeVar("T", bound=_Failable)


def each(items: Sequence[T], work: Callable[[T], None]) -> None:
    """Run ``work`` on every item still healthy (an interval, or a day in the daily archive), in threads; a typed
    error marks that item failed."""

    def guarded(item: T) -> None:
        try:
            work(item)
        except PipelineError as exc:
            item.error = exc

    with ThreadPoolExecutor(IO_THREADS) as pool:
        list(pool.map(guarded, [item for item in items if item.error is None]))


def _load(item: _Item) -> None:
    ctx, interval = item.ctx, item.ctx.interval
    item.validated = ctx.read_table(layout.validated_key(interval), required_by="archive")
    item.indicators = ctx.read_table(layout.indicators_key(interval), required_by="archive")
    missing = [c for c in stage.INDICATOR_COLUMNS if c not in item.indicators.column_names]
    if missing:
        raise StorageError(f"indicators table lacks columns {missing}: transform and archive versions disagree")
    item.alerts = stage._read_json(ctx, layout.alerts_key(interval))
    item.quality = stage._read_json(ctx, layout.quality_report_key(interval))
    item.archived = stage.archive_raw(ctx)


@dataclass(frozen=True)
class ChunkRun:
    """What every chunk of one range (of intervals, or of days in the daily archive) shares."""

    settings: Settings
    stores: tuple[ObjectStore, ObjectStore]
    engine: sa.Engine
    url: str
    revision: str
    log: logging.Logger


def _run_chunk(run: ChunkRun, intervals: list[Interval], *, retention: list[Interval] | None) -> list[StageResult]:
    settings, url, revision = run.settings, run.url, run.revision
    items = [_Item(new_context(STAGE, settings, iv, run.stores, run.log)) for iv in intervals]
    each(items, _load)
    healthy = [item for item in items if item.error is None]
    counts: dict[Interval, dict[str, int]] = {}
    load_clock = time.perf_counter()
    if healthy:
        try:
            action = f"load of {len(healthy)} intervals from {healthy[0].ctx.interval}"
            with warehouse_errors(url, action), run.engine.begin() as conn:
                counts = _load_warehouse(conn, healthy)
        except PipelineError as exc:
            for item in healthy:
                item.error = exc
    load_seconds = round(time.perf_counter() - load_clock, 3)  # the chunk's warehouse transaction, shared
    for item in healthy:
        if item.error is None:
            item.ctx.log.info("warehouse loaded", extra={"rows": counts[item.ctx.interval], "revision": revision})
    warehouse_url = safe_url(url)

    manifests: dict[Interval, tuple[bytes, dict[str, Any]]] = {}

    def write_manifest(item: _Item) -> None:
        ctx = item.ctx
        loaded = {"revision": revision, "rows": counts[ctx.interval]}
        manifest = build_manifest(
            ctx, archived=item.archived, warehouse={"url": warehouse_url, **loaded}, quality=item.quality
        )
        data = json_bytes(manifest)
        ctx.put(layout.manifest_key(ctx.interval), data, "application/json")
        manifests[ctx.interval] = (data, manifest)
        ctx.result.metrics.update(
            {
                "archived_objects": len(item.archived),
                "warehouse_rows": loaded["rows"]["market_snapshots"],
                "indicator_rows": loaded["rows"]["indicators"],
                "retention_deleted": 0,
                "manifest_uri": ctx.store.url(layout.manifest_key(ctx.interval)),
                "warehouse_uri": warehouse_url,
                "batch_intervals": len(intervals),
                "batch_warehouse_seconds": load_seconds,
            }
        )

    each(items, write_manifest)
    done = [item for item in items if item.error is None]
    if retention is not None and done:
        deleted = apply_retention_range(done[0].ctx.store, retention, settings.retention.working_days)
        done[-1].ctx.result.metrics["retention_deleted"] = deleted
    if done:
        try:
            with warehouse_errors(url, "manifest record"), run.engine.begin() as conn:
                _record_manifests(conn, done, manifests)
        except PipelineError as exc:
            for item in done:
                item.error = exc
    return [_finish(item, item.error) for item in items]


def apply_retention_range(store: ObjectStore, intervals: list[Interval], working_days: int) -> int:
    """What the hourly runs of ``intervals`` would delete, in one pass: the last 00:00 sweep covers every expired
    hour before it; the intervals after it delete their own expired hour."""
    sweeps = [i for i, iv in enumerate(intervals) if iv.start.hour == 0]
    first = sweeps[-1] if sweeps else 0
    return sum(apply_retention(store, iv, working_days) for iv in intervals[first:])


# --- the warehouse load -----------------------------------------------------------------------------------------


def _load_warehouse(conn: Connection, items: list[_Item]) -> dict[Interval, dict[str, int]]:
    snapshot_tables, indicator_tables, anomalies = [], [], []
    counts: dict[Interval, dict[str, int]] = {}
    for item in items:
        interval = item.ctx.interval
        assert item.validated is not None and item.indicators is not None
        snapshots = _with_start(item.validated.select(_present(item.validated)), interval.start)
        indicators = _with_start(item.indicators.select(stage.INDICATOR_COLUMNS), interval.start)
        anomaly = stage.anomaly_rows(item.alerts, interval.start)
        snapshot_tables.append(snapshots)
        indicator_tables.append(indicators)
        anomalies.extend(anomaly)
        counts[interval] = {
            "market_snapshots": snapshots.num_rows,
            "indicators": indicators.num_rows,
            "anomalies": len(anomaly),
        }
    data = {
        "market_snapshots": _concat(snapshot_tables),
        "indicators": _concat(indicator_tables),
        "anomalies": pa.Table.from_pylist(anomalies, schema=bulk.arrow_schema(models.anomalies)),
    }
    # Takes the per-interval advisory locks (PostgreSQL), deletes the chunk's rows and loads them in bulk.
    bulk.replace_intervals(conn, data, [item.ctx.interval.start for item in items])
    runs = []
    for item in items:
        rows = stage.run_rows(item.ctx)
        counts[item.ctx.interval]["pipeline_runs"] = len(rows)
        runs.extend(rows)
    upsert(conn, models.pipeline_runs, runs)  # one statement for the chunk, not one per interval
    return counts


def _present(table: pa.Table) -> list[str]:
    return [c for c in stage.SNAPSHOT_COLUMNS if c in table.column_names]


def _with_start(table: pa.Table, start: datetime) -> pa.Table:
    return table.append_column("interval_start", pa.array([start] * table.num_rows, pa.timestamp("us", tz="UTC")))


def _concat(tables: list[pa.Table]) -> pa.Table:
    # Per-interval tables may differ in which optional columns they carry (snapshot_rows takes what is present):
    # promote to the union, the absent columns as nulls (NULL in SQL, as the per-interval upsert leaves them).
    return pa.concat_tables(tables, promote_options="permissive")


def _bulk_upsert(conn: Connection, table: sa.Table, data: pa.Table) -> None:
    """One prepared INSERT ... ON CONFLICT DO UPDATE, executemany over all rows, values bound exactly as
    SQLAlchemy binds them (the column type's processor; NaN and infinities as NULL, as ``upsert`` does).
    No longer the range mode's load (``bulk.replace_intervals`` is); kept as the reference the bulk load is tested
    against and for the bench's executemany floor (``_bind_values``)."""
    if data.num_rows == 0:
        return
    keys = [c.name for c in table.primary_key.columns]
    names = [n for n in data.column_names if n in table.c]
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    stmt = insert(table)
    stmt = stmt.on_conflict_do_update(index_elements=keys, set_={c: stmt.excluded[c] for c in names if c not in keys})
    compiled = stmt.compile(dialect=conn.dialect, column_keys=names)
    columns = {name: _bind_values(conn, table.c[name], data.column(name)) for name in names}
    order = compiled.positiontup if compiled.positional else None
    if order is not None:
        params: list[Any] = list(zip(*(columns[n] for n in order), strict=True))
    else:
        params = [dict(zip(names, values, strict=True)) for values in zip(*(columns[n] for n in names), strict=True)]
    conn.exec_driver_sql(str(compiled), params)


def _bind_values(conn: Connection, column: sa.Column, values: pa.ChunkedArray) -> list[Any]:
    if pa.types.is_floating(values.type):
        values = pc.if_else(pc.is_finite(values), values, pa.scalar(None, values.type))
    if conn.dialect.name == "sqlite" and pa.types.is_timestamp(values.type):
        # SQLAlchemy's SQLite DATETIME bind: 'YYYY-MM-DD HH:MM:SS.ffffff' of the UTC wall time; Arrow does it in C.
        return pc.strftime(values.cast(pa.timestamp("us", tz="UTC")), format=TS_FORMAT).to_pylist()
    python = values.to_pylist()
    processor = column.type.dialect_impl(conn.dialect).bind_processor(conn.dialect)
    return python if processor is None else [None if v is None else processor(v) for v in python]


def _record_manifests(conn: Connection, items: list[_Item], manifests: dict[Interval, tuple[bytes, dict]]) -> None:
    own_runs, records = [], []
    for item in items:
        ctx = item.ctx
        data, manifest = manifests[ctx.interval]
        own_runs.append(stage.own_run_row(ctx))
        records.append(
            {
                "interval_start": ctx.interval.start,
                "manifest_uri": ctx.store.url(layout.manifest_key(ctx.interval)),
                "manifest_sha256": sha256(data),
                "objects": len(manifest["objects"]),
                "quality_score": manifest.get("quality_score"),
                "archived_at": datetime.now(UTC),
            }
        )
    upsert(conn, models.pipeline_runs, own_runs)
    upsert(conn, models.interval_manifests, records)

"""The archive stage in the daily layout (``cryptopipe run --batch --daily``, docs/batch.md).

``run_days(settings, days, log)`` archives whole UTC days whose data validate and transform wrote as day objects:

- per day, reads the day's validated compaction, indicators, alerts and quality report (a missing one fails the
  day, exit 8, naming the key), then copies the 24 hours' raw objects to the archive, write-once and verified by
  checksum, as the hourly archive does;
- per chunk of days (``CHUNK_DAYS``), one warehouse transaction: the per-interval advisory locks, then the days'
  rows of ``market_snapshots``, ``indicators`` (``interval_start`` = ``snapshot_time`` - 1 h, per row in Arrow) and
  ``anomalies`` replace those intervals' rows (``archive.bulk.replace_intervals``: no value bound in Python), and
  ``pipeline_runs`` gets one row per stage and interval, as hourly mode has (from the day run records of validate
  and transform and the hourly ingest records);
- after that commit, one manifest per day (``manifest_daily_key``) and, in a second transaction, this run's own
  ``pipeline_runs`` rows and one ``interval_manifests`` row per interval pointing at the day manifest;
- what an earlier hourly archive left for the day (hourly manifests, hourly run records) stays: manifests and run
  records are the append-only history of what ran; the warehouse's ``interval_manifests`` rows now point at the day
  manifest;
- retention once per call, with the hourly rules (``apply_retention_range``).

Failures: a day with a missing or malformed input fails alone and writes nothing; a warehouse error fails the
chunk's days (one transaction) and the next chunk goes on; any other exception is a bug: the days not finished get
a failed run record and it is re-raised.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy.engine import Connection

from cryptopipe import __version__
from cryptopipe.archive import bulk, models, stage
from cryptopipe.archive.batch import IO_THREADS, ChunkRun, apply_retention_range, each
from cryptopipe.archive.lineage import MANIFEST_VERSION, parquet_rows, quality_score, stage_entry
from cryptopipe.archive.warehouse import create_engine, migrate, safe_url, upsert, warehouse_errors
from cryptopipe.core import layout
from cryptopipe.core.config import Settings
from cryptopipe.core.errors import MissingInputError, ObjectNotFoundError, PipelineError, StorageError
from cryptopipe.core.layout import HOUR
from cryptopipe.core.stage import (
    RUNS,
    StageContext,
    StageResult,
    day_hour_quality,
    day_run_record_key,
    finish_stage,
    json_bytes,
    new_day_context,
    sha256,
)
from cryptopipe.core.storage import open_stores
from cryptopipe.core.tables import from_parquet_bytes

STAGE = "archive"
CHUNK_DAYS = 7  # days per warehouse transaction (measured: see docs/batch.md)
HOURS = 24
UPSTREAM = ("validate", "transform")  # stages whose day run records give pipeline_runs rows
WAREHOUSE_TABLES = ("market_snapshots", "indicators", "anomalies")
TS = pa.timestamp("us", tz="UTC")
ANOMALY_SCHEMA = pa.schema(
    [
        ("interval_start", TS),
        ("coin_id", pa.string()),
        ("vs_currency", pa.string()),
        ("metric", pa.string()),
        ("value", pa.float64()),
        ("threshold", pa.float64()),
        ("window", pa.string()),
        ("z", pa.float64()),
    ]
)


@dataclass
class _Day:
    """One day's work: its context, what was read, and what the warehouse and manifest need."""

    ctx: StageContext
    clock: float = field(default_factory=time.perf_counter)
    read: dict[str, bytes] = field(default_factory=dict)  # objects read, by key: hashed once for the manifest
    snapshots: pa.Table | None = None
    indicators: pa.Table | None = None
    anomalies: pa.Table | None = None
    quality: dict[str, Any] | None = None
    hour_quality: list[float | None] = field(default_factory=list)
    run_keys: list[str] = field(default_factory=list)  # the day's hourly run records (runs/date=D/hour=HH/...)
    raw_keys: list[str] = field(default_factory=list)
    archived: list[dict[str, Any]] = field(default_factory=list)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # upstream day run records, by stage
    ingest: dict[datetime, dict[str, Any]] = field(default_factory=dict)  # hourly ingest records, by interval
    counts: dict[str, int] = field(default_factory=dict)
    hour_counts: dict[str, list[int]] = field(default_factory=dict)
    manifest: tuple[bytes, dict[str, Any]] | None = None
    error: PipelineError | None = None
    finished: StageResult | None = None

    @property
    def day(self) -> date:
        assert self.ctx.day is not None
        return self.ctx.day

    @property
    def starts(self) -> list[datetime]:
        return [iv.start for iv in layout.day_intervals(self.day)]


def run_days(
    settings: Settings, days: list[date], log: logging.Logger, *, chunk_days: int = CHUNK_DAYS
) -> list[StageResult]:
    """One StageResult per day, in order (see the module docstring)."""
    stores = open_stores(settings.storage)
    url = settings.warehouse.url.get_secret_value()
    engine = create_engine(url)
    results: list[StageResult] = []
    try:
        try:
            with warehouse_errors(url, "schema migration"):
                revision = migrate(engine)
        except PipelineError as exc:  # nothing can load: every day fails with the warehouse's error
            return [_finish(_Day(new_day_context(STAGE, settings, d, stores, log)), exc) for d in days]
        run = ChunkRun(settings, stores, engine, url, revision, log)
        chunks = [days[first : first + chunk_days] for first in range(0, len(days), chunk_days)]
        # The next chunk's inputs are read and its raw archived while this chunk's warehouse load runs (that load
        # spends its time in SQLite/Arrow/the server, outside the GIL): the object work hides behind it.
        with ThreadPoolExecutor(1, thread_name_prefix="archive-ahead") as ahead:
            upcoming = ahead.submit(_prepare, run, chunks[0]) if chunks else None
            for n in range(len(chunks)):
                assert upcoming is not None
                items = upcoming.result()
                if n + 1 < len(chunks):
                    upcoming = ahead.submit(_prepare, run, chunks[n + 1])
                results.extend(_complete(run, items, retention=days if n + 1 == len(chunks) else None))
    finally:
        engine.dispose()
    return results


def _finish(item: _Day, error: PipelineError | None = None) -> StageResult:
    if item.finished is None:
        item.finished = finish_stage(item.ctx, time.perf_counter() - item.clock, error)
    return item.finished


def _guarded(items: list[_Day], work: Callable[[], None]) -> None:
    """Run ``work``; a bug (any other exception) is recorded in every unfinished day's run record, then raised."""
    try:
        work()
    except Exception as exc:
        for item in items:
            if item.finished is None:
                item.finished = finish_stage(item.ctx, time.perf_counter() - item.clock, exc)
        raise


def _prepare(run: ChunkRun, days: list[date]) -> list[_Day]:
    """The chunk's inputs read and its raw archived: everything before the warehouse."""
    items = [_Day(new_day_context(STAGE, run.settings, d, run.stores, run.log)) for d in days]

    def work() -> None:
        each(items, _read_inputs)
        _archive_raw(items)

    _guarded(items, work)
    return items


def _complete(run: ChunkRun, items: list[_Day], *, retention: list[date] | None) -> list[StageResult]:
    _guarded(items, lambda: _load_and_record(run, items, retention))
    return [_finish(item, item.error) for item in items]


def _load_and_record(run: ChunkRun, items: list[_Day], retention: list[date] | None) -> None:
    healthy = [item for item in items if item.error is None]
    load_seconds = 0.0
    if healthy:
        clock = time.perf_counter()
        try:
            first, last = healthy[0].day, healthy[-1].day
            with warehouse_errors(run.url, f"load of days {first}..{last}"), run.engine.begin() as conn:
                _load_warehouse(conn, healthy)
        except PipelineError as exc:
            for item in healthy:
                item.error = exc
        load_seconds = time.perf_counter() - clock
    loaded = [item for item in items if item.error is None]
    for item in loaded:
        item.ctx.log.info("warehouse loaded", extra={"day": str(item.day), "rows": item.counts})
    each(loaded, lambda item: _write_manifest(run, item, load_seconds / len(loaded)))
    done = [item for item in items if item.error is None]
    if retention is not None and done:
        intervals = [iv for d in retention for iv in layout.day_intervals(d)]
        deleted = apply_retention_range(done[0].ctx.store, intervals, run.settings.retention.working_days)
        done[-1].ctx.result.metrics["retention_deleted"] = deleted
    if done:
        try:
            with warehouse_errors(run.url, "manifest record"), run.engine.begin() as conn:
                _record_manifests(conn, done)
        except PipelineError as exc:
            for item in done:
                item.error = exc


# --- inputs -----------------------------------------------------------------------------------------------------


def _missing(item: _Day, key: str) -> MissingInputError:
    day = item.day
    nxt = day + timedelta(days=1)
    return MissingInputError(
        f"archive {day} (hours 00-23): {item.ctx.store.url(key)} is missing: archive needs the day's objects that "
        f"validate and transform write in the daily layout. Rerun the day: cryptopipe run --start {day}T00:00:00Z "
        f"--end {nxt}T00:00:00Z --stages validate,transform,archive --batch --daily (if the day is not sealed by a "
        f"daily validate, `cryptopipe run --batch` without --daily over that day gets its good hours through)",
        key=key,
    )


def _get(item: _Day, key: str) -> bytes:
    try:
        data = item.ctx.get(key)
    except ObjectNotFoundError:
        raise _missing(item, key) from None
    item.read[key] = data
    return data


def _day_json(item: _Day, key: str) -> list[dict[str, Any]]:
    """A day-level JSON object's ``intervals``: the 24 hourly dicts, in hour order."""
    where = item.ctx.store.url(key)
    try:
        parsed = json.loads(_get(item, key))
    except json.JSONDecodeError as exc:
        raise StorageError(f"{where} is not valid JSON: {exc.msg}") from exc
    hours = parsed.get("intervals") if isinstance(parsed, dict) else None
    if not isinstance(hours, list) or len(hours) != HOURS or not all(isinstance(h, dict) for h in hours):
        raise StorageError(f"{where}: expected a day object with 24 hourly entries under 'intervals'")
    for start, hour in zip(item.starts, hours, strict=True):
        # alerts documents say "interval_start", quality reports {"interval": {"start": ...}}
        stated = hour.get("interval_start") or (hour.get("interval") or {}).get("start")
        if stated is not None and _instant(stated) != start:
            raise StorageError(f"{where}: the entry for {start.isoformat()} is for {stated} (hours out of order)")
    if key == layout.quality_daily_report_key(item.day):
        item.quality = parsed
    return hours


def _instant(text: object) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None


def _table(item: _Day, key: str) -> pa.Table:
    return from_parquet_bytes(_get(item, key), item.ctx.store.url(key))


def _read_inputs(item: _Day) -> None:
    """Every input of the day, before anything is written: a day that lacks one writes nothing."""
    day, store = item.day, item.ctx.store
    validated_key, indicators_key = layout.validated_daily_key(day), layout.indicators_daily_key(day)
    snapshots = _with_start(item, validated_key, _table(item, validated_key))
    item.snapshots = snapshots.select(
        [c for c in stage.SNAPSHOT_COLUMNS if c in snapshots.column_names] + ["interval_start"]
    )
    indicators = _table(item, indicators_key)
    missing = [c for c in stage.INDICATOR_COLUMNS if c not in indicators.column_names]
    if missing:
        raise StorageError(
            f"{store.url(indicators_key)} lacks columns {missing}: transform and archive versions disagree"
        )
    item.indicators = _with_start(item, indicators_key, indicators.select(stage.INDICATOR_COLUMNS))
    alerts = _day_json(item, layout.alerts_daily_key(day))
    rows = [row for start, hour in zip(item.starts, alerts, strict=True) for row in stage.anomaly_rows(hour, start)]
    item.anomalies = pa.Table.from_pylist(rows, schema=ANOMALY_SCHEMA)
    for name in UPSTREAM:
        key = day_run_record_key(day, name)
        record = json.loads(_get(item, key))
        # validate "skipped": history that `cryptopipe backfill` wrote straight into validated (no staging, no report)
        if record.get("status") not in (("success", "skipped") if name == "validate" else ("success",)):
            raise MissingInputError(f"archive {day}: {store.url(key)} says {name} did not succeed on the day")
        item.records[name] = record
    recorded = day_hour_quality(item.records["validate"])
    if item.records["validate"].get("status") == "skipped":
        item.hour_quality = [None] * HOURS  # as the hourly archive of a backfilled hour: no quality report
    elif recorded is not None and [_instant(h["interval_start"]) for h in recorded] == item.starts:
        # the figures validate's day record carries (the day report's, without parsing its ~0.7 MB)
        item.hour_quality = [float(hour["quality_score"]) for hour in recorded]
    else:  # a record written before it carried them
        item.hour_quality = [quality_score(hour) for hour in _day_json(item, layout.quality_daily_report_key(day))]
    item.run_keys = store.list(f"{RUNS}/date={day:%Y-%m-%d}/")
    for key in item.run_keys:
        if key.endswith("/ingest.json"):
            record = json.loads(_get(item, key))
            item.ingest[datetime.fromisoformat(record["interval_start"])] = record
    item.raw_keys = store.list(f"{layout.RAW_MARKETS}/date={day:%Y-%m-%d}/")
    for name in WAREHOUSE_TABLES:
        table = _warehouse_table(item, name)
        item.hour_counts[name] = _hour_counts(table, item.starts)
        item.counts[name] = table.num_rows


def _warehouse_table(item: _Day, name: str) -> pa.Table:
    table = {"market_snapshots": item.snapshots, "indicators": item.indicators, "anomalies": item.anomalies}[name]
    assert table is not None
    return table


def _with_start(item: _Day, key: str, table: pa.Table) -> pa.Table:
    """The table with ``interval_start`` = ``snapshot_time`` - 1 h per row; every row must be an hour of the day."""
    times = table.column("snapshot_time").cast(TS)
    starts = pc.subtract(times, pa.scalar(HOUR, pa.duration("us")))
    micros = starts.cast(pa.int64())
    lo = int(layout.day_start(item.day).timestamp()) * 1_000_000
    hour_us = 3_600_000_000
    outside = pc.or_(
        pc.or_(pc.less(micros, lo), pc.greater_equal(micros, lo + HOURS * hour_us)),
        pc.not_equal(pc.subtract(micros, pc.multiply(pc.divide(micros, hour_us), hour_us)), 0),
    )
    bad = pc.sum(pc.cast(outside, pa.int64())).as_py() or 0
    if bad or times.null_count:
        raise StorageError(
            f"{item.ctx.store.url(key)}: {bad + times.null_count} rows have a snapshot_time that is not the end of "
            f"an hour of {item.day}"
        )
    return table.append_column("interval_start", starts.cast(TS))


def _archive_raw(items: list[_Day]) -> None:
    """The raw objects of every healthy day to the archive, write-once and verified, in threads across days."""
    tasks = [(item, key) for item in items if item.error is None for key in item.raw_keys]

    def copy(task: tuple[_Day, str]) -> tuple[_Day, dict[str, Any] | PipelineError]:
        item, key = task
        try:
            return item, stage.copy_raw(item.ctx, key)
        except PipelineError as exc:
            return item, exc

    with ThreadPoolExecutor(IO_THREADS) as pool:
        for item, outcome in pool.map(copy, tasks):
            if isinstance(outcome, PipelineError):
                item.error = item.error or outcome
            else:
                item.archived.append(outcome)


# --- the warehouse ----------------------------------------------------------------------------------------------


def _hour_counts(table: pa.Table, starts: list[datetime]) -> list[int]:
    if table.num_rows == 0:
        return [0] * len(starts)
    grouped = table.group_by("interval_start").aggregate([("interval_start", "count")])
    by_start = dict(zip(grouped.column("interval_start").to_pylist(), grouped.column(1).to_pylist(), strict=True))
    return [int(by_start.get(start, 0)) for start in starts]


def _load_warehouse(conn: Connection, items: list[_Day]) -> None:
    data = {
        name: pa.concat_tables([_warehouse_table(item, name) for item in items], promote_options="permissive")
        for name in WAREHOUSE_TABLES
    }
    # Takes the per-interval advisory locks (PostgreSQL), deletes the intervals' rows, loads the tables in bulk.
    bulk.replace_intervals(conn, data, [start for item in items for start in item.starts])
    runs: list[dict[str, Any]] = []
    for item in items:
        item_runs = _upstream_rows(item)
        item.counts["pipeline_runs"] = len(item_runs)
        runs.extend(item_runs)
    upsert(conn, models.pipeline_runs, runs)


def _upstream_rows(item: _Day) -> list[dict[str, Any]]:
    """One pipeline_runs row per stage and interval, as hourly mode has: the day records of validate and transform
    give each hour its own row (the hour's rows, its share of the day's duration), ingest its hourly records."""
    rows = []
    hour_rows = {"validate": item.hour_counts["market_snapshots"], "transform": item.hour_counts["indicators"]}
    for h, start in enumerate(item.starts):
        if start in item.ingest:
            rows.append(stage.run_row(item.ingest[start], start))
        for name, record in item.records.items():
            share = round((record.get("duration_seconds") or 0.0) / HOURS, 3)
            rows.append(stage.run_row(record, start, rows_out=hour_rows[name][h], duration_seconds=share))
    return rows


# --- the day manifest -------------------------------------------------------------------------------------------


def _day_prefixes(day: date) -> list[str]:
    """Where the day's objects are: the day-level datasets, and the hours' raw and staging partitions."""
    day_keys = (
        layout.validated_daily_key(day),
        layout.quarantine_daily_key(day),
        layout.quality_daily_report_key(day),
        layout.indicators_daily_key(day),
        layout.alerts_daily_key(day),
    )
    return [
        *(key.rsplit("/", 1)[0] + "/" for key in day_keys),
        layout.report_daily_prefix(day),
        f"{layout.STAGING}/date={day:%Y-%m-%d}/",
    ]


def _describe(item: _Day) -> list[dict[str, Any]]:
    """Every object of the day with sha256, bytes and Parquet rows; what was read already is neither read nor
    hashed again (its input record holds the digest of those same bytes)."""
    store = item.ctx.store
    objects = [{"key": a["source"], "sha256": a["sha256"], "bytes": a["bytes"], "rows": None} for a in item.archived]
    digests = {ref.key: ref.sha256 for ref in item.ctx.result.inputs if ref.sha256}
    for prefix in _day_prefixes(item.day):
        for key in store.list(prefix):
            data = item.read.get(key)
            digest = digests.get(key) if data is not None else None  # the digest of the bytes in item.read
            if data is None:
                data = store.get(key)
            rows = parquet_rows(key, data)
            objects.append({"key": key, "sha256": digest or sha256(data), "bytes": len(data), "rows": rows})
    return sorted(objects, key=lambda o: o["key"])


def _write_manifest(run: ChunkRun, item: _Day, warehouse_seconds: float) -> None:
    ctx, day = item.ctx, item.day
    hours = [
        {
            "interval_start": start.isoformat(),
            "quality_score": item.hour_quality[h],
            "rows": {name: item.hour_counts[name][h] for name in WAREHOUSE_TABLES},
            "ingest": item.ingest[start]["status"] if start in item.ingest else None,
        }
        for h, start in enumerate(item.starts)
    ]
    scores = [s for s in item.hour_quality if s is not None]
    day_score = quality_score(item.quality)
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "layout": "daily",
        "day": str(day),
        "interval_start": item.starts[0].isoformat(),
        "interval_end": (item.starts[-1] + HOUR).isoformat(),
        "storage_uri": ctx.store.uri,
        "archive_uri": ctx.archive_store.uri,
        "code_version": __version__,
        "config_fingerprint": ctx.settings.fingerprint(),
        # the day's own score if its report has one, else its worst hour's: a day is as good as its worst hour
        "quality_score": day_score if day_score is not None else (min(scores) if scores else None),
        "stages": {name: stage_entry(record) for name, record in item.records.items()},
        "intervals": hours,
        "objects": _describe(item),
        "archive": sorted(item.archived, key=lambda a: a["key"]),
        "warehouse": {"url": safe_url(run.url), "revision": run.revision, "rows": item.counts},
        "run_records": sorted(
            [day_run_record_key(day, name) for name in item.records]
            + [key for key in item.run_keys if key.endswith("/ingest.json")]
        ),
        "runs_prefix": f"{RUNS}/{layout.DAILY}/date={day:%Y-%m-%d}/",
    }
    data = json_bytes(manifest)
    key = layout.manifest_daily_key(day)
    ctx.put(key, data, "application/json")
    item.manifest = (data, manifest)
    ctx.result.metrics.update(
        {
            "archived_objects": len(item.archived),
            "warehouse_rows": item.counts["market_snapshots"],
            "indicator_rows": item.counts["indicators"],
            "anomaly_rows": item.counts["anomalies"],
            "retention_deleted": 0,
            "warehouse_seconds": round(warehouse_seconds, 3),  # the day's share of its chunk's transaction
            "manifest_uri": ctx.store.url(key),
            "warehouse_uri": safe_url(run.url),
        }
    )


def _record_manifests(conn: Connection, items: list[_Day]) -> None:
    """This run's own pipeline_runs rows (one per interval) and one interval_manifests row per interval."""
    own_runs, records = [], []
    archived_at = datetime.now(UTC)
    for item in items:
        assert item.manifest is not None
        data, manifest = item.manifest
        uri = item.ctx.store.url(layout.manifest_daily_key(item.day))
        row = stage.own_run_row(item.ctx)
        share = round(row["duration_seconds"] / HOURS, 3)
        for h, start in enumerate(item.starts):
            rows_out = item.hour_counts["market_snapshots"][h]
            own_runs.append({**row, "interval_start": start, "duration_seconds": share, "rows_out": rows_out})
            records.append(
                {
                    "interval_start": start,
                    "manifest_uri": uri,
                    "manifest_sha256": sha256(data),
                    "objects": len(manifest["objects"]),
                    "quality_score": item.hour_quality[h],
                    "archived_at": archived_at,
                }
            )
    upsert(conn, models.pipeline_runs, own_runs)
    upsert(conn, models.interval_manifests, records)

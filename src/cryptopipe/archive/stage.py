"""Archive stage: (a) copy raw to the archive write-once and verify, (b) load the warehouse, (c) write the lineage
manifest, (d) apply retention to the working areas (never to the archive), (e) record per-stage run metrics.

The order matters: the manifest is written only after the archive copy is verified and the warehouse load has
committed, so a manifest always describes an interval that is fully archived.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import UTC, date, datetime
from typing import Any

import pyarrow as pa

from cryptopipe.archive import models
from cryptopipe.archive.lineage import build_manifest, read_run_records
from cryptopipe.archive.retention import apply_retention
from cryptopipe.archive.warehouse import (
    create_engine,
    lock_interval,
    migrate,
    replace_interval,
    safe_url,
    upsert,
    warehouse_errors,
)
from cryptopipe.core import layout
from cryptopipe.core.config import Settings
from cryptopipe.core.errors import StorageError
from cryptopipe.core.stage import StageContext, StageResult, json_bytes, sha256

SNAPSHOT_COLUMNS = [c.name for c in models.market_snapshots.columns if c.name != "interval_start"]
KEY_COLUMNS = ("coin_id", "vs_currency", "snapshot_time")


def run(ctx: StageContext) -> None:
    interval = ctx.interval
    validated = ctx.read_table(layout.validated_key(interval), required_by="archive")
    indicators = ctx.read_table(layout.indicators_key(interval), required_by="archive")
    alerts = _read_json(ctx, layout.alerts_key(interval))
    quality = _read_json(ctx, layout.quality_report_key(interval))

    archived = archive_raw(ctx)
    url = ctx.settings.warehouse.url.get_secret_value()
    loaded = load_warehouse(ctx, url, validated, indicators, alerts)

    manifest = build_manifest(ctx, archived=archived, warehouse={"url": safe_url(url), **loaded}, quality=quality)
    manifest_bytes = json_bytes(manifest)
    ctx.put(layout.manifest_key(interval), manifest_bytes, "application/json")
    deleted = apply_retention(ctx.store, interval, ctx.settings.retention.working_days)
    ctx.result.metrics.update(
        {
            "archived_objects": len(archived),
            "warehouse_rows": loaded["rows"]["market_snapshots"],
            "indicator_rows": loaded["rows"]["indicators"],
            "retention_deleted": deleted,
            "manifest_uri": ctx.store.url(layout.manifest_key(interval)),
            "warehouse_uri": safe_url(url),
        }
    )
    # Last: the manifest row and this archive run's own pipeline_runs row (its run record is written only after
    # the stage returns; the same started_at makes a later load of that record update this row, not add one).
    record_manifest(
        url,
        interval.start,
        ctx.store.url(layout.manifest_key(interval)),
        manifest_bytes,
        manifest,
        own_run=own_run_row(ctx),
    )


def _read_json(ctx: StageContext, key: str) -> dict[str, Any] | None:
    data = ctx.store.get_or_none(key)
    if data is None:
        return None
    try:
        parsed = json.loads(data)
    except json.JSONDecodeError as exc:
        raise StorageError(f"{ctx.store.url(key)} is not valid JSON: {exc.msg}") from exc
    return parsed if isinstance(parsed, dict) else None


def archive_raw(ctx: StageContext) -> list[dict[str, Any]]:
    """Copy every raw object of the interval to the archive, write-once, and verify it by reading it back."""
    return [copy_raw(ctx, key) for key in ctx.store.list(layout.raw_prefix(ctx.interval))]


def copy_raw(ctx: StageContext, key: str) -> dict[str, Any]:
    """One raw object to the archive, write-once, verified by reading the copy back."""
    data = ctx.store.get(key)
    digest = sha256(data)
    target = layout.archive_key(key)
    ctx.archive_store.put_once(target, data)
    if sha256(ctx.archive_store.get(target)) != digest:
        raise StorageError(f"archive copy {ctx.archive_store.url(target)} does not match its source checksum")
    return {"key": target, "source": key, "sha256": digest, "bytes": len(data)}


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def snapshot_rows(table: pa.Table, interval_start: datetime) -> list[dict[str, Any]]:
    present = [c for c in SNAPSHOT_COLUMNS if c in table.column_names]
    return [{**row, "interval_start": interval_start} for row in table.select(present).to_pylist()]


INDICATOR_COLUMNS = [c.name for c in models.indicators.columns if c.name != "interval_start"]


def indicator_rows(table: pa.Table, interval_start: datetime) -> list[dict[str, Any]]:
    missing = [c for c in INDICATOR_COLUMNS if c not in table.column_names]
    if missing:
        raise StorageError(f"indicators table lacks columns {missing}: transform and archive versions disagree")
    return [{**row, "interval_start": interval_start} for row in table.select(INDICATOR_COLUMNS).to_pylist()]


def anomaly_rows(alerts: dict[str, Any] | None, interval_start: datetime) -> list[dict[str, Any]]:
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for item in (alerts or {}).get("anomalies", []):
        row = {
            "interval_start": interval_start,
            "coin_id": str(item["coin_id"]),
            "vs_currency": str(item.get("vs_currency", "usd")),
            "metric": str(item["metric"]),
            "value": item.get("value"),
            "threshold": item.get("threshold"),
            "window": None if item.get("window") is None else str(item["window"]),
            "z": item.get("z"),
        }
        rows[(row["coin_id"], row["vs_currency"], row["metric"])] = row
    return list(rows.values())


def run_rows(ctx: StageContext) -> list[dict[str, Any]]:
    return [run_row(record, ctx.interval.start) for record in read_run_records(ctx.store, ctx.interval)]


def run_row(
    record: dict[str, Any],
    interval_start: datetime,
    *,
    rows_out: int | None = None,
    duration_seconds: float | None = None,
) -> dict[str, Any]:
    """The pipeline_runs row of one stage run record for one interval. A day record (daily layout) gives one row
    per interval: the caller passes the interval's own rows and its share of the day's duration."""
    return {
        "interval_start": interval_start,
        "stage": record["stage"],
        "started_at": datetime.fromisoformat(record["started_at"]),
        "finished_at": datetime.fromisoformat(record["finished_at"]) if record.get("finished_at") else None,
        "status": record["status"],
        "exit_code": int(record["exit_code"]),
        "duration_seconds": record.get("duration_seconds") if duration_seconds is None else duration_seconds,
        "rows_out": sum(o.get("rows") or 0 for o in record.get("outputs", [])) if rows_out is None else rows_out,
        "code_version": record.get("code_version"),
        "config_fingerprint": record.get("config_fingerprint"),
        "message": record.get("message") or None,
        "metrics": {k: _json_safe(v) for k, v in (record.get("metrics") or {}).items()},
    }


def load_warehouse(
    ctx: StageContext, url: str, validated: pa.Table, indicators: pa.Table, alerts: dict[str, Any] | None
) -> dict[str, Any]:
    start = ctx.interval.start
    engine = create_engine(url)
    try:
        with warehouse_errors(url, "schema migration"):
            revision = migrate(engine)
        with warehouse_errors(url, f"load of interval {ctx.interval}"), engine.begin() as conn:
            lock_interval(conn, start)
            counts = {
                "market_snapshots": replace_interval(
                    conn, models.market_snapshots, "interval_start", start, snapshot_rows(validated, start)
                ),
                "indicators": replace_interval(
                    conn, models.indicators, "interval_start", start, indicator_rows(indicators, start)
                ),
                "anomalies": replace_interval(
                    conn, models.anomalies, "interval_start", start, anomaly_rows(alerts, start)
                ),
                "pipeline_runs": upsert(conn, models.pipeline_runs, run_rows(ctx)),
            }
    finally:
        engine.dispose()
    ctx.log.info("warehouse loaded", extra={"rows": counts, "revision": revision})
    return {"revision": revision, "rows": counts}


def own_run_row(ctx: StageContext) -> dict[str, Any]:
    started = datetime.fromisoformat(ctx.result.started_at)
    finished = datetime.now(UTC)
    return {
        "interval_start": ctx.interval.start,
        "stage": ctx.stage,
        "started_at": started,
        "finished_at": finished,
        "status": "success",
        "exit_code": 0,
        "duration_seconds": round((finished - started).total_seconds(), 3),
        "rows_out": sum(o.rows or 0 for o in ctx.result.outputs),
        "code_version": ctx.result.code_version,
        "config_fingerprint": ctx.result.config_fingerprint,
        "message": None,
        "metrics": {k: _json_safe(v) for k, v in ctx.result.metrics.items()},
    }


def record_manifest(
    url: str, interval_start: datetime, uri: str, data: bytes, manifest: dict[str, Any], *, own_run: dict[str, Any]
) -> None:
    engine = create_engine(url)
    try:
        with warehouse_errors(url, "manifest record"), engine.begin() as conn:
            upsert(conn, models.pipeline_runs, [own_run])
            upsert(
                conn,
                models.interval_manifests,
                [
                    {
                        "interval_start": interval_start,
                        "manifest_uri": uri,
                        "manifest_sha256": sha256(data),
                        "objects": len(manifest["objects"]),
                        "quality_score": manifest.get("quality_score"),
                        "archived_at": datetime.now(UTC),
                    }
                ],
            )
    finally:
        engine.dispose()


def run_range(settings: Settings, intervals: list[layout.Interval], log: logging.Logger) -> list[StageResult]:
    """Range mode (``cryptopipe run --batch``): a day of intervals per warehouse transaction; see batch.py."""
    from cryptopipe.archive.batch import run_range as run_range_impl

    return run_range_impl(settings, intervals, log)


def run_days(settings: Settings, days: list[date], log: logging.Logger) -> list[StageResult]:
    """Daily layout (``cryptopipe run --batch --daily``): one manifest and one run record per UTC day; see daily.py."""
    from cryptopipe.archive.daily import run_days as run_days_impl

    return run_days_impl(settings, days, log)

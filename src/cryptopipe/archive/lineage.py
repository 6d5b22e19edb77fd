"""The interval's lineage manifest: every object with sha256 and rows, stage runs, code and config versions."""

from __future__ import annotations

import io
import json
from typing import Any

import pyarrow.parquet as pq

from cryptopipe import __version__
from cryptopipe.core import layout
from cryptopipe.core.layout import Interval
from cryptopipe.core.stage import RUNS, StageContext, run_record_key, sha256
from cryptopipe.core.storage import ObjectStore

MANIFEST_VERSION = 1
PIPELINE_STAGES = ("ingest", "validate", "transform", "archive")
# Every working dataset that is partitioned by the interval (the manifest lists what exists of each).
INTERVAL_PREFIXES = (
    layout.RAW_MARKETS,
    layout.STAGING,
    layout.VALIDATED,
    layout.QUARANTINE,
    layout.QUALITY,
    layout.INDICATORS,
    layout.ALERTS,
    layout.REPORTS,
)


def read_run_records(store: ObjectStore, interval: Interval) -> list[dict[str, Any]]:
    records = []
    for stage in PIPELINE_STAGES:
        data = store.get_or_none(run_record_key(interval, stage))
        if data is not None:
            records.append(json.loads(data))
    return records


def parquet_rows(key: str, data: bytes) -> int | None:
    """The row count of a Parquet object from its footer; None for any other object."""
    if not key.endswith(".parquet"):
        return None
    return int(pq.ParquetFile(io.BytesIO(data)).metadata.num_rows)


def describe_objects(store: ObjectStore, interval: Interval) -> list[dict[str, Any]]:
    objects = []
    for prefix in INTERVAL_PREFIXES:
        for key in store.list(f"{prefix}/{interval.partition}/"):
            data = store.get(key)
            objects.append({"key": key, "sha256": sha256(data), "bytes": len(data), "rows": parquet_rows(key, data)})
    return sorted(objects, key=lambda o: o["key"])


def quality_score(report: dict[str, Any] | None) -> float | None:
    """The validate report's score: ``{"quality_score": {"value": 0.97, "definition": ...}}``."""
    score = (report or {}).get("quality_score")
    if isinstance(score, dict):
        score = score.get("value")
    return float(score) if isinstance(score, (int, float)) else None


def stage_entry(record: dict[str, Any]) -> dict[str, Any]:
    """A run record as the manifest's ``stages`` section lists it."""
    return {
        "status": record["status"],
        "exit_code": record["exit_code"],
        "started_at": record["started_at"],
        "finished_at": record["finished_at"],
        "duration_seconds": record["duration_seconds"],
        "code_version": record.get("code_version"),
        "config_fingerprint": record.get("config_fingerprint"),
        "metrics": record.get("metrics", {}),
    }


def build_manifest(
    ctx: StageContext, *, archived: list[dict[str, Any]], warehouse: dict[str, Any], quality: dict[str, Any] | None
) -> dict[str, Any]:
    records = read_run_records(ctx.store, ctx.interval)
    stages = {r["stage"]: stage_entry(r) for r in records}
    return {
        "manifest_version": MANIFEST_VERSION,
        "interval_start": ctx.interval.start.isoformat(),
        "interval_end": ctx.interval.end.isoformat(),
        "storage_uri": ctx.store.uri,
        "archive_uri": ctx.archive_store.uri,
        "code_version": __version__,
        "config_fingerprint": ctx.settings.fingerprint(),
        "quality_score": quality_score(quality),
        "stages": stages,
        "objects": describe_objects(ctx.store, ctx.interval),
        "archive": archived,
        "warehouse": warehouse,
        "run_records": sorted(run_record_key(ctx.interval, s) for s in stages),
        "runs_prefix": f"{RUNS}/{ctx.interval.partition}/",
    }

"""Benchmark 4: bytes of validated + analytics data as Parquet (zstd, as the stages write it) vs the same as CSV.

Objects measured (the real stages' outputs where the stages wrote them):
- validated hourly partitions and the analytics indicator partitions written by the validate and transform
  stages in the backfill benchmark (its work store; run backfill first, or this benchmark runs a short sample);
- validated daily compactions of the generated history (the layout transform reads), ``COMPACTION_DAYS`` days.
The CSV side is each of the same tables written with pyarrow's CSV writer (header + rows, the plain CSV the old
pipelines append to), so both sides hold exactly the same rows and columns.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from bench.baseline import csv_bytes
from bench.common import BenchConfig, Result, Target
from bench.datagen import Spec, cached_dataset

TARGET_SAVING = 0.90
COMPACTION_DAYS = 30
DATASETS = {
    "validated hourly partitions": "validated/market_snapshots",
    "analytics indicators": "analytics/indicators",
    "validated daily compactions": "validated/market_snapshots_daily",
}


def _measure(files: list[Path]) -> tuple[int, int, int]:
    parquet = csv = rows = 0
    for path in files:
        table = pq.read_table(path)
        parquet += path.stat().st_size
        csv += csv_bytes(table)
        rows += table.num_rows
    return parquet, csv, rows


def run(cfg: BenchConfig) -> Result:
    result = Result("storage", "Storage: validated + analytics as Parquet (zstd) vs the same tables as CSV")
    work = cfg.work / "backfill"
    if not (work / DATASETS["analytics indicators"]).exists():
        from bench import backfill

        backfill.run(cfg)  # produces real validate/transform outputs in the work store
    history = cached_dataset(Spec(seed=cfg.seed, coins=cfg.coins, days=14 if cfg.smoke else 182), cfg.cache)
    sources = {
        "validated hourly partitions": sorted((work / DATASETS["validated hourly partitions"]).rglob("*.parquet")),
        "analytics indicators": sorted((work / DATASETS["analytics indicators"]).rglob("*.parquet")),
        "validated daily compactions": sorted(
            (history.root / DATASETS["validated daily compactions"]).rglob("*.parquet")
        )[-(3 if cfg.smoke else COMPACTION_DAYS) :],
    }
    rows_out = []
    total_parquet = total_csv = 0
    for name, files in sources.items():
        parquet, csv, rows = _measure(files)
        total_parquet += parquet
        total_csv += csv
        rows_out.append(
            {
                "dataset": name,
                "objects": len(files),
                "rows": rows,
                "parquet_bytes": parquet,
                "csv_bytes": csv,
                "saving_pct": round(100 * (1 - parquet / csv), 1) if csv else None,
            }
        )
    saving = 1 - total_parquet / total_csv if total_csv else 0.0
    rows_out.append(
        {
            "dataset": "total",
            "objects": sum(r["objects"] for r in rows_out),
            "rows": sum(r["rows"] for r in rows_out),
            "parquet_bytes": total_parquet,
            "csv_bytes": total_csv,
            "saving_pct": round(100 * saving, 1),
        }
    )
    result.tables["Parquet (zstd) vs CSV, same tables"] = rows_out
    result.runs = 1
    result.data = {"coins": cfg.coins, "compaction_days": COMPACTION_DAYS}
    result.targets = [
        Target(
            "validated + analytics, Parquet smaller than CSV by",
            f">= {TARGET_SAVING * 100:.0f} %",
            round(100 * saving, 1),
            "%",
            saving >= TARGET_SAVING,
            baseline=float(total_csv),
            note=f"{total_parquet / 1e6:.1f} MB Parquet vs {total_csv / 1e6:.1f} MB CSV",
        )
    ]
    result.notes.append(
        "Sizes are deterministic for a given seed (no timing involved). Hourly partitions are small objects "
        "(~250 rows): Parquet's per-file footer weighs more there than in daily compactions."
    )
    return result

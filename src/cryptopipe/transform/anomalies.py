"""Anomalies at the snapshot and the interval's alerts record (read by the DAG's notify task; format is fixed).

An anomaly is one (coin, quote currency, metric) whose value crosses its threshold:
- ``zscore_1h``: |z of the hourly return| > alerts.zscore_threshold (window alerts.zscore_window_hours);
- ``move_1h_pct``: |1h price change, percent| > alerts.move_1h_pct;
- ``move_24h_pct``: |24h price change, percent| > alerts.move_24h_pct.
The moves use CoinGecko's own price_change_pct_1h / _24h of the snapshot row when present, else the change
computed from the hourly series.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from cryptopipe.core.config import AlertSettings
from cryptopipe.core.layout import Interval

METRIC_ORDER = ("zscore_1h", "move_1h_pct", "move_24h_pct")


def iso_z(moment: Any) -> str:
    return f"{moment:%Y-%m-%dT%H:%M:%SZ}"


def _finite_values(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """float64 values, NaN for null (a value counts only where it is finite)."""
    values = column.to_numpy(zero_copy_only=False) if len(column) else np.zeros(0)
    return np.asarray(values, dtype=np.float64)


def _source_moves(indicators: pa.Table, current: pa.Table, rows: pa.Array | None) -> tuple[np.ndarray, np.ndarray]:
    """CoinGecko's 1h and 24h change of each indicator row's series in the snapshot rows (NaN: none).

    ``rows``: ``indicators.matching_rows(indicators, current)`` when the caller has it already."""
    from cryptopipe.transform.indicators import matching_rows

    rows = matching_rows(indicators, current) if rows is None else rows
    names = ["price_change_pct_1h", "price_change_pct_24h"]
    if not current.num_rows:
        return np.full(len(rows), np.nan), np.full(len(rows), np.nan)
    taken = current.select(names).take(rows)
    return _finite_values(taken.column(names[0])), _finite_values(taken.column(names[1]))


def detect_anomalies(
    indicators: pa.Table, current: pa.Table, alerts: AlertSettings, rows: pa.Array | None = None
) -> list[dict[str, Any]]:
    """Anomaly records sorted by (coin_id, vs_currency, metric order)."""
    return sort_anomalies([record for _, record in anomaly_records(indicators, current, alerts, rows)])


def sort_anomalies(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(found, key=lambda a: (a["coin_id"], a["vs_currency"], METRIC_ORDER.index(a["metric"])))


def anomaly_records(
    indicators: pa.Table, current: pa.Table, alerts: AlertSettings, rows: pa.Array | None = None
) -> list[tuple[int, dict[str, Any]]]:
    """(indicator row, anomaly record) of every threshold crossed, in row order (the daily layout groups a day's
    rows by hour; ``detect_anomalies`` sorts one interval's)."""
    source_1h, source_24h = _source_moves(indicators, current, rows)
    z = _finite_values(indicators.column("zscore_1h"))
    with np.errstate(invalid="ignore"):
        move_1h = np.where(np.isfinite(source_1h), source_1h, _finite_values(indicators.column("return_1h_pct")))
        move_24h = np.where(np.isfinite(source_24h), source_24h, _finite_values(indicators.column("return_24h_pct")))
        checks = (
            ("zscore_1h", z, alerts.zscore_threshold, f"{alerts.zscore_window_hours}h"),
            ("move_1h_pct", move_1h, alerts.move_1h_pct, "1h"),
            ("move_24h_pct", move_24h, alerts.move_24h_pct, "24h"),
        )
        over = [np.isfinite(values) & (np.abs(values) > threshold) for _, values, threshold, _ in checks]
    # (row, metric) of every crossing, in row order then METRIC_ORDER, gathered column-wise: a day of the daily
    # layout has ~1,300 of them and per-element numpy indexing was most of the cost.
    hits = np.sort(np.concatenate([np.flatnonzero(hit) * len(checks) + m for m, hit in enumerate(over)]))
    row, metric = np.divmod(hits, len(checks))
    taken = pa.array(row, pa.int64())
    coins = indicators.column("coin_id").take(taken).to_pylist()
    currencies = indicators.column("vs_currency").take(taken).to_pylist()
    values = np.stack([values for _, values, _, _ in checks])[metric, row].tolist()
    z_at = z[row]
    z_values = [v if ok else None for v, ok in zip(z_at.tolist(), np.isfinite(z_at).tolist(), strict=True)]
    return [
        (
            i,
            {
                "coin_id": coin,
                "vs_currency": currency,
                "metric": checks[m][0],
                "value": value,
                "threshold": checks[m][2],
                "window": checks[m][3],
                "z": z_value,
            },
        )
        for i, m, coin, currency, value, z_value in zip(
            row.tolist(), metric.tolist(), coins, currencies, values, z_values, strict=True
        )
    ]


def _number(mapping: Mapping[str, Any], *names: str) -> float | None:
    for name in names:
        value = mapping.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return value
    return None


def quality_summary(report_bytes: bytes | None) -> dict[str, Any]:
    """Score, warning count and quarantined rows from validate's quality report; nulls when it is absent.

    validate writes ``{"quality_score": {"value": s}, "summary": {"warning_failures": n, "rows_quarantined": m}}``
    (src/cryptopipe/validate/report.py): ``warnings`` is the number of warning expectations that failed.
    """
    if report_bytes is None:
        return quality_summary_of(None)
    try:
        report = json.loads(report_bytes)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return quality_summary_of(None)
    return quality_summary_of(report)


def quality_summary_of(report: Any) -> dict[str, Any]:
    """``quality_summary`` of a parsed report (the daily layout's day report holds the hours' reports parsed)."""
    empty: dict[str, Any] = {"score": None, "warnings": None, "quarantined_rows": None}
    if not isinstance(report, dict):
        return empty
    summary = report.get("summary") if isinstance(report.get("summary"), dict) else {}
    score_field = report.get("quality_score")
    score = _number(score_field, "value") if isinstance(score_field, dict) else _number(report, "quality_score")
    warnings = _number(summary, "warning_failures", "warnings")
    quarantined = _number(summary, "rows_quarantined", "quarantined_rows")
    return {
        "score": None if score is None else float(score),
        "warnings": None if warnings is None else int(warnings),
        "quarantined_rows": None if quarantined is None else int(quarantined),
    }


def alerts_document(
    interval: Interval, anomalies: list[dict[str, Any]], quality: dict[str, Any], report_uri: str
) -> dict[str, Any]:
    return {
        "interval_start": iso_z(interval.start),
        "interval_end": iso_z(interval.end),
        "anomalies": anomalies,
        "quality": quality,
        "report_uri": report_uri,
    }

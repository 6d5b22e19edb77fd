"""From GX outcomes to a verdict (critical failures, quarantined rows with reasons), a score and the report.

The report is canonical JSON without wall-clock values: a rerun of the interval writes the same bytes.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import pyarrow as pa

from cryptopipe.core.layout import Interval
from cryptopipe.validate.gx_runner import Outcome
from cryptopipe.validate.suite import QUARANTINE_SHARE_CHECK, SUITE_NAME, SUITE_VERSION, Check, Severity

# Severity weights of the quality score: a critical check counts three times a warning check.
WEIGHTS = {Severity.CRITICAL: 3.0, Severity.WARNING: 1.0}
SCORE_DEFINITION = (
    "weighted mean over all checks of the share of checked rows that passed (a table-level check counts "
    "1 if it passed, 0 if not; a check that could not be evaluated counts 0), weights critical 3, warning 1; "
    "1.0 is perfect"
)
EXAMPLES = 5


@dataclass
class Verdict:
    rows_in: int
    row_reasons: dict[int, list[str]]  # row position -> failed warning checks, in suite order
    critical_failures: list[str]
    warning_failures: list[str]
    quarantine_share: float
    max_quarantine_share: float

    @property
    def passed(self) -> bool:
        return not self.critical_failures

    @property
    def quarantined_rows(self) -> list[int]:
        return sorted(self.row_reasons)


def _consistent(check: Check, outcome: Outcome) -> None:
    """GX's row list must account for every row it counted: the quarantine is built from that list."""
    counted, listed = outcome.unexpected_count, len(outcome.unexpected_index)
    if outcome.exception is None and counted is not None and counted != listed:
        raise RuntimeError(
            f"check {check.name}: Great Expectations counted {counted} unexpected rows but listed {listed}"
        )


def judge(checks: list[Check], outcomes: dict[str, Outcome], rows_in: int, max_quarantine_share: float) -> Verdict:
    reasons: dict[int, list[str]] = {}
    critical, warning = [], []
    for check in checks:
        outcome = outcomes[check.name]
        if outcome.success:
            continue
        # A warning that could not be evaluated names no rows: it cannot quarantine, so it must stop the gate.
        if check.severity is Severity.CRITICAL or outcome.exception is not None or not check.row_level:
            critical.append(check.name)
            continue
        _consistent(check, outcome)
        warning.append(check.name)
        for row in outcome.unexpected_index:
            reasons.setdefault(row, []).append(check.name)
    share = len(reasons) / rows_in if rows_in else 0.0
    if share > max_quarantine_share:
        critical.append(QUARANTINE_SHARE_CHECK)
    return Verdict(rows_in, reasons, critical, warning, share, max_quarantine_share)


def pass_ratio(check: Check, outcome: Outcome) -> float:
    if outcome.exception is not None:
        return 0.0
    if check.row_level and outcome.element_count and outcome.unexpected_count is not None:
        return 1.0 - outcome.unexpected_count / outcome.element_count
    return 1.0 if outcome.success else 0.0


def quality_score(checks: list[Check], outcomes: dict[str, Outcome], verdict: Verdict) -> float:
    weighted = [(WEIGHTS[c.severity], pass_ratio(c, outcomes[c.name])) for c in checks]
    weighted.append((WEIGHTS[Severity.CRITICAL], 0.0 if QUARANTINE_SHARE_CHECK in verdict.critical_failures else 1.0))
    total = sum(w for w, _ in weighted)
    return round(sum(w * r for w, r in weighted) / total, 6)


def jsonable(value: Any) -> Any:
    """Numpy scalars, timestamps and NaN made JSON-safe, recursively."""
    kind = type(value)  # the common plain values first (a day report asks ~40k): exact types, subclasses go below
    if value is None or kind is str or kind is int or kind is bool:
        return value
    if kind is float:
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        items = [jsonable(v) for v in value]
        return sorted(items, key=str) if isinstance(value, set) else items
    if hasattr(value, "item") and callable(value.item) and not isinstance(value, (str, bytes)):
        try:
            value = value.item()
        except (TypeError, ValueError):
            return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


@functools.cache  # a few dozen class names, asked once per check per hour
def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _examples(table: pa.Table, rows: list[int]) -> list[str]:
    if not rows or "coin_id" not in table.column_names:
        return []
    ids = table["coin_id"].take(rows[: EXAMPLES * 20]).to_pylist()
    return sorted({str(i) for i in ids if i is not None})[:EXAMPLES]


def _entry(check: Check, outcome: Outcome, table: pa.Table) -> dict[str, Any]:
    pct = outcome.unexpected_percent
    return {
        "name": check.name,
        "expectation_type": _snake(check.gx_type),
        "engine": "great_expectations",
        "columns": list(check.columns),
        "severity": check.severity.value,
        "description": check.description,
        "threshold_key": check.threshold_key,
        "threshold": jsonable(check.threshold),
        "success": outcome.success,
        "observed_value": jsonable(outcome.observed_value),
        "element_count": outcome.element_count,
        "missing_count": outcome.missing_count,
        "unexpected_count": outcome.unexpected_count,
        "unexpected_percent": None if pct is None else round(float(pct), 6),
        "example_coin_ids": _examples(table, outcome.unexpected_index),
        "exception": outcome.exception,
        **{k: jsonable(v) for k, v in check.extra.items()},
    }


def _quarantine_entry(verdict: Verdict) -> dict[str, Any]:
    failed = QUARANTINE_SHARE_CHECK in verdict.critical_failures
    return {
        "name": QUARANTINE_SHARE_CHECK,
        "expectation_type": "quarantine_share_at_most",
        "engine": "cryptopipe",
        "columns": [],
        "severity": Severity.CRITICAL.value,
        "description": "share of rows quarantined by warning checks <= quality.max_quarantine_share",
        "threshold_key": "quality.max_quarantine_share",
        "threshold": verdict.max_quarantine_share,
        "success": not failed,
        "observed_value": round(verdict.quarantine_share, 6),
        "element_count": verdict.rows_in,
        "missing_count": 0,
        "unexpected_count": len(verdict.row_reasons),
        "unexpected_percent": round(100 * verdict.quarantine_share, 6),
        "example_coin_ids": [],
        "exception": None,
    }


def build_report(
    *,
    interval: Interval,
    checks: list[Check],
    outcomes: dict[str, Outcome],
    verdict: Verdict,
    table: pa.Table,
    score: float,
    gx_version: str,
    objects: dict[str, str | None],
) -> dict[str, Any]:
    passed = verdict.passed
    quarantined = len(verdict.row_reasons) if passed else 0
    expectations = [_entry(c, outcomes[c.name], table) for c in checks]
    for entry, check in zip(expectations, checks, strict=True):  # examples of quarantined rows by reason
        entry["quarantines_rows"] = check.severity is Severity.WARNING and check.row_level
    expectations.append(_quarantine_entry(verdict))
    gate = "failed" if not passed else ("passed_with_warnings" if verdict.warning_failures else "passed")
    return {
        "interval": {
            "start": interval.start.isoformat(),
            "end": interval.end.isoformat(),
            "partition": interval.partition,
        },
        "suite": {"name": SUITE_NAME, "version": SUITE_VERSION},
        "engine": {"great_expectations": gx_version},
        "summary": {
            "gate": gate,
            "rows_in": verdict.rows_in,
            "rows_validated": verdict.rows_in - quarantined if passed else 0,
            "rows_quarantined": quarantined,
            "rows_with_warnings": len(verdict.row_reasons),
            "quarantine_share": round(verdict.quarantine_share, 6),
            "critical_failures": len(verdict.critical_failures),
            "warning_failures": len(verdict.warning_failures),
            "failed_critical": verdict.critical_failures,
            "failed_warning": verdict.warning_failures,
        },
        "quality_score": {"value": score, "definition": SCORE_DEFINITION},
        "objects": objects,
        "expectations": expectations,
    }

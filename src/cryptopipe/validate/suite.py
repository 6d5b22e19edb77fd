"""The expectation suite, in code and versioned: what a staging snapshot table must satisfy.

Each check is declarative (a Great Expectations expectation class name and its keyword arguments) plus our own
metadata: a unique name, a severity and the configuration key of its threshold. ``gx_runner`` turns the checks
into GX expectations; nothing here imports GX, so building the suite is cheap and testable on its own.

Bump ``SUITE_VERSION`` whenever a check is added, removed or changes meaning: the version is recorded in every
quality report, so a change in quality scores can be traced to a change in the rules.
"""

from __future__ import annotations

import functools
import math
import sys
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from cryptopipe.core.config import Settings
from cryptopipe.core.layout import Interval
from cryptopipe.core.schema import SNAPSHOT_KEY, SNAPSHOT_SCHEMA

SUITE_NAME = "market_snapshots"
SUITE_VERSION = "1.0.0"

# Largest finite float: "<= FLOAT_MAX" is how a bound also rejects +inf (NaN is a null to pandas and GX).
FLOAT_MAX = sys.float_info.max

# Helper columns computed next to the data for the cross-field checks (dropped before anything is written).
LOW_BOUND = "_dq_low_bound"
HIGH_BOUND = "_dq_high_bound"
MCAP_DEVIATION = "_dq_market_cap_rel_dev"
HELPER_COLUMNS = (LOW_BOUND, HIGH_BOUND, MCAP_DEVIATION)


class Severity(StrEnum):
    CRITICAL = "critical"  # the interval stops: report written, no validated data, exit 3
    WARNING = "warning"  # the offending rows are quarantined, the rest passes


@dataclass(frozen=True)
class Check:
    """One expectation of the suite."""

    name: str
    severity: Severity
    gx_type: str  # class name in great_expectations.expectations
    kwargs: dict[str, Any]
    columns: tuple[str, ...]
    description: str
    threshold_key: str | None = None  # config key of the threshold, e.g. quality.price_max
    threshold: Any = None
    row_level: bool = True  # False: a table-level check (no offending rows)
    row_condition: tuple[str, str] | None = None  # (column, value): evaluate on rows where column == value
    extra: dict[str, Any] = field(default_factory=dict)  # other facts worth reporting (e.g. coins asked)


def pandas_type(arrow_type: pa.DataType) -> str:
    """The ``type_`` GX's ExpectColumnValuesToBeOfType must see for an Arrow column converted by ``to_frame``.

    GX compares ``dtype.type``: pandas 3 strings are ``str`` (not ``object``), tz-aware timestamps are
    ``Timestamp``, and int32 is read as the nullable ``Int32`` dtype whose ``.type`` is ``int32``.
    """
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "str"
    if pa.types.is_timestamp(arrow_type):
        return "Timestamp"
    return str(arrow_type.to_pandas_dtype().__name__)  # float64, int32


def coins_asked(settings: Settings, table: pa.Table, currency: str) -> int:
    """Distinct coins asked for in one quote currency: the top N, plus the explicit ids outside the top N.

    An explicit id that the data shows inside the top N (market_cap_rank <= top_n) is the same coin as one of
    the top N and is counted once; an explicit id that is absent counts as asked (and missing).
    """
    top_n = settings.coins.top_n
    if not settings.coins.ids:  # nothing explicit to de-duplicate against the top N (the common case: no scan)
        return top_n
    in_top: set[str] = set()
    if top_n and {"coin_id", "vs_currency", "market_cap_rank"} <= set(table.column_names):
        try:
            mask = pc.and_(pc.equal(table["vs_currency"], currency), pc.less_equal(table["market_cap_rank"], top_n))
            in_top = {str(c) for c in table.filter(pc.fill_null(mask, False))["coin_id"].to_pylist()}
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):  # mistyped columns: the type checks report it
            in_top = set()
    return top_n + sum(1 for coin in settings.coins.ids if coin not in in_top)


def min_rows(share: float, asked: int) -> int:
    # The small epsilon keeps 0.9 * 10 = 9.000000000000002 from demanding 10 rows.
    return max(1, math.ceil(share * asked - 1e-9))


@functools.cache
def _schema_checks() -> tuple[Check, ...]:
    """The schema's checks, built once: they depend only on SNAPSHOT_SCHEMA, and range mode builds a suite per hour
    (the checks are frozen and nothing changes their kwargs)."""
    names = tuple(SNAPSHOT_SCHEMA.names)
    checks = [
        Check(
            "columns_present",
            Severity.CRITICAL,
            "ExpectTableColumnsToMatchSet",
            {"column_set": list(names), "exact_match": False},
            names,
            "every column of the snapshot schema is present (extra columns are allowed and dropped)",
            row_level=False,
        )
    ]
    for fld in SNAPSHOT_SCHEMA:
        expected = pandas_type(fld.type)
        checks.append(
            Check(
                f"type_{fld.name}",
                Severity.CRITICAL,
                "ExpectColumnValuesToBeOfType",
                {"column": fld.name, "type_": expected},
                (fld.name,),
                f"{fld.name} has the schema type {fld.type} (pandas {expected})",
                row_level=False,
            )
        )
    return tuple(checks)


def _key_checks(interval: Interval) -> list[Check]:
    checks = [
        Check(
            f"{col}_not_null",
            Severity.CRITICAL,
            "ExpectColumnValuesToNotBeNull",
            {"column": col},
            (col,),
            f"key column {col} is never null",
        )
        for col in SNAPSHOT_KEY
    ]
    checks.append(
        Check(
            "key_unique",
            Severity.CRITICAL,
            "ExpectCompoundColumnsToBeUnique",
            {"column_list": list(SNAPSHOT_KEY)},
            SNAPSHOT_KEY,
            "one row per (coin_id, vs_currency, snapshot_time)",
        )
    )
    checks.append(
        Check(
            "snapshot_time_is_interval_end",
            Severity.CRITICAL,
            "ExpectColumnValuesToBeBetween",
            {"column": "snapshot_time", "min_value": interval.end, "max_value": interval.end},
            ("snapshot_time",),
            "every row is the snapshot of this interval (snapshot_time = interval end)",
            threshold=interval.end.isoformat(),
        )
    )
    return checks


def _price_checks(settings: Settings) -> list[Check]:
    q = settings.quality
    return [
        Check(
            "price_not_null",
            Severity.CRITICAL,
            "ExpectColumnValuesToNotBeNull",
            {"column": "price"},
            ("price",),
            "price is present and not NaN",
        ),
        Check(
            "price_positive_finite",
            Severity.CRITICAL,
            "ExpectColumnValuesToBeBetween",
            {"column": "price", "min_value": q.price_min, "strict_min": True, "max_value": FLOAT_MAX},
            ("price",),
            "price > quality.price_min and finite (no fixed floor: real prices go down to 5.7e-11)",
            "quality.price_min",
            q.price_min,
        ),
        Check(
            "price_max",
            Severity.WARNING,
            "ExpectColumnValuesToBeBetween",
            {"column": "price", "max_value": q.price_max},
            ("price",),
            "price <= quality.price_max",
            "quality.price_max",
            q.price_max,
        ),
    ]


def _row_count_checks(settings: Settings, table: pa.Table) -> list[Check]:
    share = settings.quality.min_row_share
    checks = []
    for cur in settings.quote_currencies:
        asked = coins_asked(settings, table, cur)
        needed = min_rows(share, asked)
        checks.append(
            Check(
                f"row_count_{cur}",
                Severity.CRITICAL,
                "ExpectTableRowCountToBeBetween",
                {"min_value": needed},
                ("vs_currency",),
                f"rows quoted in {cur} >= quality.min_row_share x coins asked for ({needed} of {asked})",
                "quality.min_row_share",
                share,
                row_level=False,
                row_condition=("vs_currency", cur),
                extra={"coins_asked": asked, "min_rows": needed},
            )
        )
    return checks


def _market_checks(settings: Settings, interval: Interval) -> list[Check]:
    q = settings.quality
    fresh_from = interval.end - timedelta(minutes=q.freshness_minutes)
    return [
        Check(
            "vs_currency_configured",
            Severity.WARNING,
            "ExpectColumnValuesToBeInSet",
            {"column": "vs_currency", "value_set": list(settings.quote_currencies)},
            ("vs_currency",),
            "vs_currency is one of the configured quote_currencies",
            "quote_currencies",
            list(settings.quote_currencies),
        ),
        Check(
            "market_cap_non_negative",
            Severity.WARNING,
            "ExpectColumnValuesToBeBetween",
            {"column": "market_cap", "min_value": 0.0, "max_value": FLOAT_MAX},
            ("market_cap",),
            "market_cap >= 0 and finite when present (0 and missing occur in real data and pass)",
        ),
        Check(
            "total_volume_non_negative",
            Severity.WARNING,
            "ExpectColumnValuesToBeBetween",
            {"column": "total_volume", "min_value": 0.0, "max_value": FLOAT_MAX},
            ("total_volume",),
            "total_volume >= 0 and finite when present (0 and missing occur in real data and pass)",
        ),
        Check(
            "last_updated_present",
            Severity.WARNING,
            "ExpectColumnValuesToNotBeNull",
            {"column": "last_updated"},
            ("last_updated",),
            "last_updated is present (without it freshness cannot be judged)",
        ),
        Check(
            "last_updated_fresh",
            Severity.WARNING,
            "ExpectColumnValuesToBeBetween",
            {"column": "last_updated", "min_value": fresh_from},
            ("last_updated",),
            "last_updated >= interval end - quality.freshness_minutes (newer than the end is fine: a late run)",
            "quality.freshness_minutes",
            q.freshness_minutes,
            extra={"fresh_from": fresh_from.isoformat()},
        ),
        Check(
            "change_24h_bounded",
            Severity.WARNING,
            "ExpectColumnValuesToBeBetween",
            {
                "column": "price_change_pct_24h",
                "min_value": -q.max_abs_change_24h_pct,
                "max_value": q.max_abs_change_24h_pct,
            },
            ("price_change_pct_24h",),
            "|price_change_pct_24h| <= quality.max_abs_change_24h_pct when present",
            "quality.max_abs_change_24h_pct",
            q.max_abs_change_24h_pct,
        ),
    ]


def _cross_field_checks(settings: Settings) -> list[Check]:
    q = settings.quality
    return [
        Check(
            "price_above_low_24h",
            Severity.WARNING,
            "ExpectColumnPairValuesAToBeGreaterThanB",
            {"column_A": "price", "column_B": LOW_BOUND, "or_equal": True, "ignore_row_if": "either_value_is_missing"},
            ("price", "low_24h", "high_24h"),
            "price >= low_24h x (1 - quality.high_low_tolerance), when low_24h and high_24h are both present and > 0",
            "quality.high_low_tolerance",
            q.high_low_tolerance,
        ),
        Check(
            "price_below_high_24h",
            Severity.WARNING,
            "ExpectColumnPairValuesAToBeGreaterThanB",
            {"column_A": HIGH_BOUND, "column_B": "price", "or_equal": True, "ignore_row_if": "either_value_is_missing"},
            ("price", "low_24h", "high_24h"),
            "price <= high_24h x (1 + quality.high_low_tolerance), when low_24h and high_24h are both present and > 0",
            "quality.high_low_tolerance",
            q.high_low_tolerance,
        ),
        Check(
            "market_cap_consistent",
            Severity.WARNING,
            "ExpectColumnValuesToBeBetween",
            {"column": MCAP_DEVIATION, "max_value": q.market_cap_tolerance},
            ("market_cap", "price", "circulating_supply"),
            "|market_cap / (price x circulating_supply) - 1| <= quality.market_cap_tolerance, "
            "when all three are present and > 0",
            "quality.market_cap_tolerance",
            q.market_cap_tolerance,
        ),
    ]


def build_suite(settings: Settings, interval: Interval, table: pa.Table) -> list[Check]:
    """The checks for one interval; the table is only consulted to count the coins asked for."""
    price, cross_field = _settings_checks(settings)
    checks = [
        *_schema_checks(),
        *_key_checks(interval),
        *price,
        *_row_count_checks(settings, table),
        *_market_checks(settings, interval),
        *cross_field,
    ]
    names = [c.name for c in checks]
    if len(set(names)) != len(names):  # names key the results; a duplicate would hide one
        raise ValueError(f"duplicate check names in the suite: {sorted(n for n in names if names.count(n) > 1)}")
    return checks


_SETTINGS_CHECKS: dict[int, tuple[Settings, tuple[Check, ...], tuple[Check, ...]]] = {}


def _settings_checks(settings: Settings) -> tuple[tuple[Check, ...], tuple[Check, ...]]:
    """The price and cross-field checks, which depend on the settings only: built once per settings object, not
    once per interval (a year's backfill builds 8,760 suites). Settings and checks are frozen (batch.py derives new
    checks with ``replace``); the settings object is kept so its id cannot be reused by another."""
    held = _SETTINGS_CHECKS.get(id(settings))
    if held is None or held[0] is not settings:
        _SETTINGS_CHECKS.clear()  # one settings object per run: keep only the latest
        held = (settings, tuple(_price_checks(settings)), tuple(_cross_field_checks(settings)))
        _SETTINGS_CHECKS[id(settings)] = held
    return held[1], held[2]


# The quarantine share is judged after the warning checks, by the stage itself (not a GX expectation).
QUARANTINE_SHARE_CHECK = "quarantine_share"

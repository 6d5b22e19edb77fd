"""What CoinGecko answers, understood: response classification and the parsers ingest and backfill share.

``classify_response`` turns every body into decoded JSON or a typed error. CoinGecko error bodies come in
(at least) three shapes, all recognised:

- ``{"status": {"error_code": 10002, "error_message": "..."}}`` (key problems, 429)
- ``{"error": "Could not find coin with the given id"}``
- ``{"error": {"status": {"error_code": 10012, "error_message": "..."}}}`` (history limit)

and an HTML page (Cloudflare) can arrive with status 200 or 403. Bodies that may be transient (HTML or
truncated JSON with a 2xx status, an in-body 429) are ``RetryableError``; the rest is ``SourceInvalidError``.

``parse_markets_page`` maps one ``/coins/markets`` page to SNAPSHOT_SCHEMA rows with an explicit field
mapping; ``chart_rows`` aligns a ``/market_chart/range`` response to hourly snapshots.
"""

from __future__ import annotations

import bisect
import json
import math
import re
import reprlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from cryptopipe.core.errors import SourceInvalidError
from cryptopipe.core.http import RetryableError
from cryptopipe.core.schema import SNAPSHOT_SCHEMA

SOURCE_MARKETS = "coins_markets"
SOURCE_CHART = "market_chart_range"

KEY_ERROR_CODES = frozenset({10002, 10010, 10011})  # key missing / invalid / sent to the wrong host
HISTORY_LIMIT_CODE = 10012
HISTORY_LIMIT_MESSAGE = (
    "CoinGecko refused the time range (error 10012): keyless and Demo plans can only query the past 365 days "
    "of history. Start the backfill within the last 365 days, or use a paid plan "
    "(CRYPTOPIPE_API__PLAN=pro with CRYPTOPIPE_API__KEY)."
)
_MAX_MESSAGE = 300
_INT32_MAX = 2**31 - 1
_INT64_MAX = 2**63 - 1
# Values quoted in error messages: bounded in length and depth, whatever the source sent.
_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxlevel = 80, 80, 3


def _show(value: Any) -> str:
    """A short, printable quote of a source value for an error message."""
    return _printable(_REPR.repr(value))


def _printable(text: str) -> str:
    """Lone surrogates (``"\\ud800"`` in JSON) cannot be encoded as UTF-8: escape them so logs never fail."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


# --- classification ---


@dataclass(frozen=True)
class ApiError:
    code: int | None
    message: str
    shape: str  # "status", "error" or "error.status"


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an Infinity error code
        return None


def find_api_error(payload: Any) -> ApiError | None:
    """The error a body reports, in any of CoinGecko's three shapes; None for a data body."""
    if not isinstance(payload, dict):
        return None
    status = payload.get("status")
    if isinstance(status, dict) and ("error_code" in status or "error_message" in status):
        return ApiError(_as_int(status.get("error_code")), str(status.get("error_message") or ""), "status")
    error = payload.get("error")
    if isinstance(error, str):
        return ApiError(None, error, "error")
    if isinstance(error, dict):
        inner = error.get("status") if isinstance(error.get("status"), dict) else error
        message = inner.get("error_message") or inner.get("message") or _show(error)
        return ApiError(_as_int(inner.get("error_code")), str(message), "error.status")
    return None


def _short(text: str) -> str:
    text = _printable(" ".join(text.split()))
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def error_for(api_error: ApiError, status: int, where: str) -> Exception:
    """The typed error (or retryable condition) an API error body stands for."""
    code, message = api_error.code, _short(api_error.message)
    label = f"error {code}: {message}" if code is not None else message
    if code == 429 or status == 429:
        return RetryableError(f"rate limited ({label})")
    if code == HISTORY_LIMIT_CODE:
        return SourceInvalidError(f"{where}: {HISTORY_LIMIT_MESSAGE}", code=code)
    if code in KEY_ERROR_CODES or status in (401, 403):
        return SourceInvalidError(
            f"{where}: CoinGecko rejected the API key ({label}). Check that CRYPTOPIPE_API__PLAN "
            "(keyless, demo or pro) matches the key in CRYPTOPIPE_API__KEY; a key sent to the wrong host "
            "is refused. Not retried.",
            code=code,
        )
    if "could not find coin" in message.lower():
        return SourceInvalidError(f"{where}: {message} (an unknown or delisted id in coins.ids?)", code=code)
    return SourceInvalidError(f"{where}: CoinGecko answered with an error body ({label})", code=code)


_TITLE_RE = re.compile(rb"<title>(.*?)</title>", re.IGNORECASE | re.DOTALL)


def _looks_like_html(headers: Mapping[str, str], body: bytes) -> bool:
    content_type = str(headers.get("Content-Type") or headers.get("content-type") or "").lower()
    return "html" in content_type or body.lstrip()[:1] == b"<"


def _html_title(body: bytes) -> str:
    match = _TITLE_RE.search(body[:65536])
    return _short(match.group(1).decode("utf-8", "replace")) if match else "no title"


def classify_response(status: int, headers: Mapping[str, str], body: bytes, where: str) -> Any:
    """Decoded JSON of a data body, or a typed error naming what came back and where."""
    ok = 200 <= status < 300
    if 300 <= status < 400:
        location = headers.get("Location") or headers.get("location") or "?"
        raise SourceInvalidError(f"{where}: redirect to {location} not followed (check api.base_url)")
    if _looks_like_html(headers, body):
        title = _html_title(body)
        message = f"{where}: an HTML page instead of JSON ({title!r}; Cloudflare or a proxy answered)"
        if ok:
            raise RetryableError(message, invalid=True)
        raise SourceInvalidError(message + "; not retried")
    try:
        payload = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        problem = f"{where}: body is not UTF-8 text (byte {exc.start} of {len(body)})"
        if ok:
            raise RetryableError(problem, invalid=True) from None
        raise SourceInvalidError(problem) from None
    except json.JSONDecodeError as exc:
        problem = f"{where}: truncated or invalid JSON ({exc.msg} at char {exc.pos} of {len(body)} bytes)"
        if ok:
            raise RetryableError(problem, invalid=True) from None
        raise SourceInvalidError(problem) from None
    except RecursionError:  # not transient: the same body would come back
        raise SourceInvalidError(f"{where}: JSON nested too deeply to be market data ({len(body)} bytes)") from None
    except ValueError as exc:  # an integer literal beyond Python's digit limit
        raise SourceInvalidError(f"{where}: JSON with an unreadable number ({_short(str(exc))})") from None
    api_error = find_api_error(payload)
    if api_error is not None:
        raise error_for(api_error, status, where)
    if not ok:
        raise SourceInvalidError(
            f"{where}: unexpected HTTP status {status} ({_short(body.decode('utf-8', 'replace'))})"
        )
    return payload


# --- value conversion, tolerant of the source's habits (ints, floats, 1e-05, numbers as strings) ---


class _FieldError(Exception):
    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field_name = field_name


def to_float(value: Any, name: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise _FieldError(name, f"is a boolean ({value!r}), not a number")
    if isinstance(value, (int, float)):
        try:
            number = float(value)
        except OverflowError:  # an integer beyond float range
            raise _FieldError(name, f"is {_show(value)}, beyond the range of a number") from None
    elif isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            number = float(text)  # drift: numbers as strings, "1.2e-05" included
        except ValueError:
            raise _FieldError(name, f"is {_show(value)}, which is not a number") from None
    else:
        raise _FieldError(name, f"is a {type(value).__name__}, not a number")
    if not math.isfinite(number):  # NaN/Infinity (or "nan"/"1e999" as text): not a market value
        raise _FieldError(name, f"is {_show(value)}, not a finite number")
    return number


def to_int(value: Any, name: str, maximum: int = _INT64_MAX) -> int | None:
    number = to_float(value, name)
    if number is None:
        return None
    if number != int(number):
        raise _FieldError(name, f"is {_show(value)}, not a whole number")
    if not -maximum - 1 <= int(number) <= maximum:  # the table column could not hold it
        raise _FieldError(name, f"is {_show(value)}, out of range")
    return int(number)


def to_int32(value: Any, name: str) -> int | None:
    return to_int(value, name, _INT32_MAX)


def to_text(value: Any, name: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        if _printable(value) != value:  # a lone surrogate: no UTF-8 for Parquet or object keys
            raise _FieldError(name, f"is {_show(value)}, not valid Unicode text")
        return value
    raise _FieldError(name, f"is a {type(value).__name__} ({_show(value)}), not a string")


def to_timestamp(value: Any, name: str) -> datetime | None:
    """ISO-8601 (``2025-12-27T10:46:21.358Z``) to an aware UTC datetime at millisecond precision."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise _FieldError(name, f"is a {type(value).__name__} ({_show(value)}), not an ISO-8601 timestamp")
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        parsed = parsed.astimezone(UTC)  # OverflowError at the ends of the calendar (9999-12-31T23:00-05:00)
    except (ValueError, OverflowError):
        raise _FieldError(name, f"is {_show(value)}, not an ISO-8601 timestamp in range") from None
    return parsed.replace(microsecond=parsed.microsecond // 1000 * 1000)


# --- /coins/markets ---

# column -> (JSON field, converter). Every SNAPSHOT_SCHEMA market column has exactly one source field.
MARKETS_MAPPING: dict[str, tuple[str, Any]] = {
    "coin_id": ("id", to_text),
    "symbol": ("symbol", to_text),
    "name": ("name", to_text),
    "price": ("current_price", to_float),
    "market_cap": ("market_cap", to_float),
    "market_cap_rank": ("market_cap_rank", to_int32),
    "fully_diluted_valuation": ("fully_diluted_valuation", to_float),
    "total_volume": ("total_volume", to_float),
    "high_24h": ("high_24h", to_float),
    "low_24h": ("low_24h", to_float),
    "price_change_24h": ("price_change_24h", to_float),
    "price_change_pct_1h": ("price_change_percentage_1h_in_currency", to_float),
    "price_change_pct_24h": ("price_change_percentage_24h", to_float),
    "price_change_pct_7d": ("price_change_percentage_7d_in_currency", to_float),
    "market_cap_change_24h": ("market_cap_change_24h", to_float),
    "market_cap_change_pct_24h": ("market_cap_change_percentage_24h", to_float),
    "circulating_supply": ("circulating_supply", to_float),
    "total_supply": ("total_supply", to_float),
    "max_supply": ("max_supply", to_float),
    "ath": ("ath", to_float),
    "ath_change_pct": ("ath_change_percentage", to_float),
    "ath_date": ("ath_date", to_timestamp),
    "atl": ("atl", to_float),
    "atl_change_pct": ("atl_change_percentage", to_float),
    "atl_date": ("atl_date", to_timestamp),
    "last_updated": ("last_updated", to_timestamp),
}
# Must be present in every coin object (a rename in the source is an error, not silent nulls).
REQUIRED_FIELDS = ("id", "symbol", "name", "current_price", "market_cap", "total_volume", "last_updated")
# Must also be non-null: they identify the row.
NON_NULL_FIELDS = ("id", "symbol")
# Fields the API documents that we deliberately do not map; they stay in raw and are not "unknown".
KNOWN_UNMAPPED = frozenset(
    {
        "image",
        "sparkline_in_7d",
        "price_change_percentage_24h_in_currency",  # same as price_change_percentage_24h, more digits
        "price_change_percentage_14d_in_currency",
        "price_change_percentage_30d_in_currency",
        "price_change_percentage_200d_in_currency",
        "price_change_percentage_1y_in_currency",
    }
)
KNOWN_FIELDS = frozenset(src for src, _ in MARKETS_MAPPING.values()) | {"roi"} | KNOWN_UNMAPPED


@dataclass
class ParsedPage:
    rows: list[dict[str, Any]]
    unknown_fields: set[str] = field(default_factory=set)
    missing_optional_fields: set[str] = field(default_factory=set)


def _roi(value: Any) -> tuple[float | None, str | None, float | None]:
    if value is None:
        return None, None, None
    if not isinstance(value, dict):
        raise _FieldError("roi", f"is a {type(value).__name__} ({_show(value)}), not an object or null")
    return (
        to_float(value.get("times"), "roi.times"),
        to_text(value.get("currency"), "roi.currency"),
        to_float(value.get("percentage"), "roi.percentage"),
    )


def _coin_row(
    item: Any, index: int, *, vs_currency: str, snapshot_time: datetime, source_key: str, where: str
) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise SourceInvalidError(f"{where}: element {index} is a {type(item).__name__}, not a coin object")
    label = f"{where}: coin #{index} ({_show(item.get('id'))})"
    missing = [name for name in REQUIRED_FIELDS if name not in item]
    if missing:
        raise SourceInvalidError(f"{label}: required field(s) {', '.join(missing)} missing", fields=missing)
    row: dict[str, Any] = {"vs_currency": vs_currency, "snapshot_time": snapshot_time}
    try:
        for column, (source, convert) in MARKETS_MAPPING.items():
            row[column] = convert(item.get(source), source)
        row["roi_times"], row["roi_currency"], row["roi_percentage"] = _roi(item.get("roi"))
    except _FieldError as exc:
        raise SourceInvalidError(f"{label}: field {exc.field_name!r} {exc}", field=exc.field_name) from None
    empty = [name for name in NON_NULL_FIELDS if not item.get(name)]
    if empty:
        raise SourceInvalidError(f"{label}: required field(s) {', '.join(empty)} null or empty", fields=empty)
    row["source"] = SOURCE_MARKETS
    row["source_key"] = source_key
    return row


def parse_markets_page(
    payload: Any, *, vs_currency: str, snapshot_time: datetime, source_key: str, where: str | None = None
) -> ParsedPage:
    """One ``/coins/markets`` page (a JSON list of coin objects) to SNAPSHOT_SCHEMA rows, in page order."""
    where = where or source_key
    if not isinstance(payload, list):
        raise SourceInvalidError(f"{where}: expected a JSON list of coins, got a {type(payload).__name__}")
    parsed = ParsedPage(rows=[])
    optional = {src for src, _ in MARKETS_MAPPING.values()} - set(REQUIRED_FIELDS)
    for index, item in enumerate(payload):
        parsed.rows.append(
            _coin_row(
                item, index, vs_currency=vs_currency, snapshot_time=snapshot_time, source_key=source_key, where=where
            )
        )
        parsed.unknown_fields |= set(item) - KNOWN_FIELDS
        parsed.missing_optional_fields |= (optional | {"roi"}) - set(item) - _REQUESTED_ONLY
    return parsed


# 1h and 7d changes only appear when price_change_percentage asks for them; their absence is not drift.
_REQUESTED_ONLY = frozenset({"price_change_percentage_1h_in_currency", "price_change_percentage_7d_in_currency"})


def rows_to_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=SNAPSHOT_SCHEMA)


# --- /coins/{id}/market_chart/range ---

ALIGN_TOLERANCE = timedelta(minutes=30)
CHART_SERIES = {"prices": "price", "market_caps": "market_cap", "total_volumes": "total_volume"}


@dataclass
class ChartSeries:
    """Each series as (epoch ms, value) points, sorted by time."""

    points: dict[str, list[tuple[int, float | None]]]

    def __len__(self) -> int:
        return len(self.points.get("price", []))


def parse_market_chart(payload: Any, where: str) -> ChartSeries:
    """``{"prices": [[ms, v], ...], "market_caps": [...], "total_volumes": [...]}``, checked point by point."""
    if not isinstance(payload, dict):
        raise SourceInvalidError(f"{where}: expected a JSON object with prices/market_caps/total_volumes")
    missing = [name for name in CHART_SERIES if name not in payload]
    if missing:
        raise SourceInvalidError(f"{where}: required field(s) {', '.join(missing)} missing", fields=missing)
    series: dict[str, list[tuple[int, float | None]]] = {}
    for source, column in CHART_SERIES.items():
        values = payload[source]
        if not isinstance(values, list):
            raise SourceInvalidError(f"{where}: {source} is a {type(values).__name__}, not a list")
        points = []
        for index, point in enumerate(values):
            if not (isinstance(point, list) and len(point) == 2):
                raise SourceInvalidError(f"{where}: {source}[{index}] is {_show(point)}, not a [timestamp, value] pair")
            try:
                stamp = to_int(point[0], f"{source}[{index}] timestamp")
                value = to_float(point[1], f"{source}[{index}] value")
            except _FieldError as exc:
                raise SourceInvalidError(f"{where}: {exc.field_name} {exc}") from None
            if stamp is None:
                raise SourceInvalidError(f"{where}: {source}[{index}] has a null timestamp")
            points.append((stamp, value))
        series[column] = sorted(points, key=lambda p: p[0])
    return ChartSeries(series)


def _nearest(
    points: list[tuple[int, float | None]], stamps: list[int], target_ms: int, tolerance_ms: int
) -> tuple[bool, float | None]:
    """The value of the point nearest ``target_ms`` within the tolerance (ties go to the earlier point)."""
    index = bisect.bisect_left(stamps, target_ms)
    candidates = [i for i in (index - 1, index) if 0 <= i < len(points)]
    best = min(candidates, key=lambda i: (abs(stamps[i] - target_ms), stamps[i]), default=None)
    if best is None or abs(stamps[best] - target_ms) > tolerance_ms:
        return False, None
    return True, points[best][1]


def chart_rows(
    series: ChartSeries,
    *,
    coin_id: str,
    vs_currency: str,
    snapshot_times: Iterable[datetime],
    source_key: str,
    tolerance: timedelta = ALIGN_TOLERANCE,
) -> list[dict[str, Any]]:
    """One row per snapshot time that has a price point within the tolerance; other hours are gaps."""
    tolerance_ms = int(tolerance.total_seconds() * 1000)
    stamps = {column: [p[0] for p in points] for column, points in series.points.items()}
    rows = []
    for when in snapshot_times:
        target = int(when.timestamp() * 1000)
        values: dict[str, float | None] = {}
        found_price = False
        for column, points in series.points.items():
            found, value = _nearest(points, stamps[column], target, tolerance_ms)
            values[column] = value
            found_price = found_price or (column == "price" and found)
        if not found_price:
            continue
        rows.append(
            {
                "coin_id": coin_id,
                "vs_currency": vs_currency,
                "snapshot_time": when,
                **values,
                "source": SOURCE_CHART,
                "source_key": source_key,
            }
        )
    return rows

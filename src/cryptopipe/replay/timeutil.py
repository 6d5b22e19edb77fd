"""Time helpers: epoch milliseconds, ISO-8601 in CoinGecko's formats, parsing of client input."""

from __future__ import annotations

import datetime as dt

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
MINUTE_MS = 60_000

# The replay server serves market states from SERVED_START to SERVED_END (inclusive, UTC days).
SERVED_START = dt.date(2013, 1, 1)
SERVED_END = dt.date(2035, 12, 31)
_EPOCH = dt.date(1970, 1, 1)


def epoch_day(day: dt.date) -> int:
    """Days since 1970-01-01."""
    return (day - _EPOCH).days


SERVED_START_DAY = epoch_day(SERVED_START)
SERVED_END_DAY = epoch_day(SERVED_END)
SERVED_START_MS = SERVED_START_DAY * DAY_MS
# The last served instant: the end of SERVED_END.
SERVED_END_MS = (SERVED_END_DAY + 1) * DAY_MS - 1


def iso_ms_z(ms: int) -> str:
    """`2025-12-27T10:46:21.358Z`: the format of `last_updated`, `ath_date`, `atl_date`."""
    when = dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def iso_ms_offset(ms: int) -> str:
    """`2024-04-20T22:00:05.123+00:00`: the format of `timestamp` in CoinGecko error bodies."""
    return iso_ms_z(ms)[:-1] + "+00:00"


def to_ms(when: dt.datetime) -> int:
    """Epoch milliseconds of an aware datetime (a naive one is taken as UTC)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return round(when.timestamp() * 1000)


def parse_iso(text: str, what: str = "time") -> dt.datetime:
    """Parse `2026-11-22T13:00:00Z`, `2026-11-22 13:00`, `2026-11-22`; naive means UTC."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"{what}: {text!r} is not an ISO-8601 date or time") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


def parse_time_param(text: str, what: str) -> int:
    """A `from`/`to` query value: UNIX seconds (int or float) or an ISO date/time, as epoch ms."""
    value = text.strip()
    try:
        return round(float(value) * 1000)
    except ValueError:
        return to_ms(parse_iso(value, what))


def check_served(ms: int, what: str) -> int:
    """Reject a clock outside the served range, naming it."""
    if not SERVED_START_MS <= ms <= SERVED_END_MS:
        raise ValueError(
            f"{what}: {iso_ms_z(ms)} is outside the served range "
            f"{SERVED_START.isoformat()} .. {SERVED_END.isoformat()} (UTC)"
        )
    return ms

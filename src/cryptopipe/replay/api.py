"""CoinGecko API v3 endpoints over the replay dataset: pure functions of (query, clock), no HTTP."""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .dataset import Coin, Dataset, mix64
from .timeutil import (
    DAY_MS,
    HOUR_MS,
    SERVED_END_MS,
    SERVED_START_MS,
    iso_ms_offset,
    iso_ms_z,
    parse_time_param,
)

JSON_TYPE = "application/json; charset=utf-8"
COIN_NOT_FOUND = {"error": "Could not find coin with the given id"}
ERROR_10012_MESSAGE = (
    "Your request exceeds the allowed time range. Public API users are limited to querying historical data "
    "within the past 365 days. Upgrade to a paid plan to enjoy full historical data access: "
    "https://www.coingecko.com/en/api/pricing. "
)
# Fixed conversion rates for fiat quotes (units per USD); crypto quotes follow the coin's own series.
FIAT_PER_USD = {
    "usd": 1.0, "eur": 0.92, "gbp": 0.79, "jpy": 151.0, "chf": 0.88, "cad": 1.37, "aud": 1.52,
    "cny": 7.2, "inr": 83.5, "krw": 1380.0, "brl": 5.1, "sgd": 1.35,
}  # fmt: skip
CRYPTO_QUOTES = {"btc": ("bitcoin", 1.0), "eth": ("ethereum", 1.0), "sats": ("bitcoin", 1e8)}
SUPPORTED_VS = [*CRYPTO_QUOTES, *FIAT_PER_USD]
PERIODS_MS = {
    "1h": HOUR_MS, "24h": DAY_MS, "7d": 7 * DAY_MS, "14d": 14 * DAY_MS, "30d": 30 * DAY_MS,
    "200d": 200 * DAY_MS, "1y": 365 * DAY_MS,
}  # fmt: skip
ORDERS = ("market_cap_desc", "market_cap_asc", "volume_desc", "volume_asc", "id_asc", "id_desc")
HISTORY_LIMIT_MS = 365 * DAY_MS


@dataclass
class Reply:
    """An HTTP answer before faults: a JSON-able body, or raw text with its content type."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = JSON_TYPE


class BadRequestError(Exception):
    """A client error: becomes a 4xx with a CoinGecko-shaped body."""

    def __init__(self, body: Any, status: int = 400) -> None:
        super().__init__(str(body))
        self.reply = Reply(status, body)


def error_status_body(code: int, message: str, now_ms: int) -> dict[str, Any]:
    """`{"status": {"timestamp", "error_code", "error_message"}}` (key errors, 10002...)."""
    return {"status": {"timestamp": iso_ms_offset(now_ms), "error_code": code, "error_message": message}}


def error_10012(now_ms: int) -> dict[str, Any]:
    return {"error": error_status_body(10012, ERROR_10012_MESSAGE, now_ms)}


# --- numbers as CoinGecko formats them ------------------------------------------------------------------


def _finite(v: float | None) -> float | None:
    return None if v is None or math.isnan(v) or math.isinf(v) else v


def default_price(v: float | None) -> float | int | None:
    """CoinGecko's default price rounding: integers from 10 000, 2 decimals from 1, else 6 significant."""
    v = _finite(v)
    if v is None:
        return None
    a = abs(v)
    if a >= 10_000:
        return round(v)
    if a >= 1:
        return round(v, 2)
    return float(f"{v:.6g}") if a > 0 else 0.0


def price_formatter(precision: str | None) -> Any:
    """The price formatter for a `precision` parameter (`full`, 0-18, or absent)."""
    if precision is None or precision == "":
        return default_price
    if precision == "full":
        return _finite
    if not precision.isdigit() or not 0 <= int(precision) <= 18:
        raise BadRequestError({"error": f"invalid precision {precision!r}: expected full or 0-18"})
    digits = int(precision)
    return lambda v: None if _finite(v) is None else round(v, digits)


def _int(v: float | None) -> int | None:
    v = _finite(v)
    return None if v is None else round(v)


def _pct(new: float | None, old: float | None) -> float | None:
    if new is None or old is None or not old or math.isnan(new) or math.isnan(old):
        return None
    return (new / old - 1.0) * 100.0


def _r5(v: float | None) -> float | None:
    v = _finite(v)
    return None if v is None else round(v, 5)


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else _finite(a - b)


# --- query parsing ---------------------------------------------------------------------------------------


def _one(query: Mapping[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def _required(query: Mapping[str, list[str]], name: str) -> str:
    value = _one(query, name)
    if value is None or value.strip() == "":
        raise BadRequestError({"error": f"Missing parameter {name}"})
    return value.strip()


def _flag(query: Mapping[str, list[str]], name: str) -> bool:
    return (_one(query, name) or "").strip().lower() == "true"


def _csv(text: str | None) -> list[str]:
    out: list[str] = []
    for part in (text or "").split(","):
        item = part.strip().lower()
        if item and item not in out:
            out.append(item)
    return out


def _int_param(query: Mapping[str, list[str]], name: str, default: int, low: int) -> int:
    raw = _one(query, name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequestError({"error": f"invalid {name} {raw!r}: expected an integer"}) from None
    if value < low:
        raise BadRequestError({"error": f"invalid {name} {raw!r}: must be at least {low}"})
    return value


# --- the market model ------------------------------------------------------------------------------------


class Market:
    """Market states of the dataset as of a clock time, in any supported quote currency."""

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds
        self.ranks = functools.lru_cache(maxsize=64)(self._ranks)
        self.cached_row = functools.lru_cache(maxsize=4096)(self._cached_row)

    def _cached_row(
        self, cid: str, vs: str, now: int, periods: tuple[str, ...], *, sparkline: bool, precision: str | None
    ) -> dict[str, Any]:
        fmt = price_formatter(precision)
        return self.coin_row(self.ds.by_id[cid], vs, now, list(periods), sparkline=sparkline, fmt=fmt)

    def row(
        self, cid: str, vs: str, now: int, periods: tuple[str, ...], *, sparkline: bool, precision: str | None
    ) -> dict[str, Any]:
        """A `/coins/markets` element, cached per (coin, query, clock); a copy faults may mutate."""
        row = dict(self.cached_row(cid, vs, now, periods, sparkline=sparkline, precision=precision))
        for key in ("roi", "sparkline_in_7d"):
            if isinstance(row.get(key), dict):
                row[key] = {k: list(v) if isinstance(v, list) else v for k, v in row[key].items()}
        return row

    def vs_check(self, vs: str) -> str:
        vs = vs.strip().lower()
        if vs not in FIAT_PER_USD and vs not in CRYPTO_QUOTES:
            raise BadRequestError({"error": "invalid vs_currency"})
        return vs

    def log_rate(self, vs: str, t: int) -> float:
        """log(quote units per USD) at time t."""
        if vs in FIAT_PER_USD:
            return math.log(FIAT_PER_USD[vs])
        base, mult = CRYPTO_QUOTES[vs]
        return math.log(mult) - self.ds.log_price_at(self.ds.by_id[base].index, t)

    def updated_ms(self, coin: Coin, now: int) -> int:
        """`last_updated`: 2-60 s before the clock, fixed per (coin, second)."""
        return now - 2000 - mix64(coin.seed ^ (now // 1000) * 0x2545F491) % 58_000

    def price(self, coin: Coin, vs: str, t: int) -> float:
        return math.exp(self.ds.log_price_at(coin.index, t) + self.log_rate(vs, t))

    def market_cap(self, coin: Coin, price: float, t: int) -> float:
        return self.ds.supply_at(coin.index, t) * price  # NaN when the source had no market cap

    def _ranks(self, now: int) -> tuple[dict[str, int | None], list[tuple[str, float, float]]]:
        """Market-cap ranks at `now` (USD) and (id, market cap, volume) for sorting."""
        rows = []
        for coin in self.ds.coins:
            t = self.updated_ms(coin, now)
            mcap = self.market_cap(coin, math.exp(self.ds.log_price_at(coin.index, t)), t)
            rows.append((coin.meta.id, 0.0 if math.isnan(mcap) else mcap, self.ds.volume_at(coin.index, t)))
        ordered = sorted(rows, key=lambda r: (-r[1], r[0]))
        ranks: dict[str, int | None] = {cid: (n if mcap > 0 else None) for n, (cid, mcap, _) in
                                        enumerate(ordered, start=1)}  # fmt: skip
        return ranks, rows

    def ordered_ids(self, now: int, order: str) -> list[str]:
        _, rows = self.ranks(now)
        keys = {
            "market_cap_desc": lambda r: (-r[1], r[0]),
            "market_cap_asc": lambda r: (r[1] <= 0, r[1], r[0]),
            "volume_desc": lambda r: (-r[2], r[0]),
            "volume_asc": lambda r: (r[2], r[0]),
            "id_asc": lambda r: r[0],
        }
        if order == "id_desc":
            return sorted((r[0] for r in rows), reverse=True)
        return [r[0] for r in sorted(rows, key=keys[order])]

    def hour_nodes(self, coin: Coin, start: int, end: int) -> list[tuple[int, float]]:
        """(time, log USD price) of the hourly nodes in (start, end]."""
        out = []
        for hour in range(start // HOUR_MS - 1, end // HOUR_MS + 1):
            t = self.ds.node_ms(coin, hour)
            if start < t <= end:
                out.append((t, self.ds.hour_log(coin.index, hour)))
        return out

    def extremes(self, coin: Coin, vs: str, t: int, window: list[tuple[int, float]], price: float) -> tuple:
        """(ath, ath ms, atl, atl ms) in vs: daily closes since 2013-01-01, the last 24 h nodes, now."""
        if vs in FIAT_PER_USD:
            base, shift = -1, math.log(FIAT_PER_USD[vs])
        else:
            quote, mult = CRYPTO_QUOTES[vs]
            base, shift = self.ds.by_id[quote].index, math.log(mult)
        hi, hi_day, lo, lo_day = self.ds.extremes(coin.index, base, t // DAY_MS)
        cands = [(math.exp(hi + shift), hi_day * DAY_MS), (math.exp(lo + shift), lo_day * DAY_MS), (price, t)]
        cands += [(math.exp(lp + self.log_rate(vs, nt)), nt) for nt, lp in window]
        ath = max(cands, key=lambda c: (c[0], -c[1]))
        atl = min(cands, key=lambda c: (c[0], c[1]))
        return ath[0], ath[1], atl[0], atl[1]

    def total_supply(self, coin: Coin, circulating: float) -> float | None:
        meta = coin.meta
        if meta.total_supply is not None:
            return meta.total_supply
        if meta.total_factor is not None and circulating > 0:
            return circulating * meta.total_factor
        return None

    def coin_row(
        self, coin: Coin, vs: str, now: int, periods: list[str], *, sparkline: bool, fmt: Any
    ) -> dict[str, Any]:
        """One `/coins/markets` element, keys in the real API's order."""
        ds = self.ds
        t = self.updated_ms(coin, now)
        price = self.price(coin, vs, t)
        circulating = ds.supply_at(coin.index, t)
        mcap = circulating * price
        t24 = t - DAY_MS
        price24 = self.price(coin, vs, t24)
        mcap24 = ds.supply_at(coin.index, t24) * price24
        window = self.hour_nodes(coin, t24, t)
        in_vs = [math.exp(lp + self.log_rate(vs, nt)) for nt, lp in window]
        high, low = max([*in_vs, price]), min([*in_vs, price])
        ath, ath_ms, atl, atl_ms = self.extremes(coin, vs, t, window, price)
        total = self.total_supply(coin, circulating)
        usd_price = math.exp(ds.log_price_at(coin.index, t))
        roi = None
        if coin.meta.roi_base:
            times = usd_price / coin.meta.roi_base - 1.0
            roi = {"times": times, "currency": "usd", "percentage": times * 100.0}
        ranks, _ = self.ranks(now)
        row: dict[str, Any] = {
            "id": coin.meta.id,
            "symbol": coin.meta.symbol,
            "name": coin.meta.name,
            "image": coin.meta.image,
            "current_price": fmt(price),
            "market_cap": _int(mcap),
            "market_cap_rank": ranks[coin.meta.id],
            "fully_diluted_valuation": _int(price * total) if total else None,
            "total_volume": _int(ds.volume_at(coin.index, t) * math.exp(self.log_rate(vs, t))),
            "high_24h": fmt(high),
            "low_24h": fmt(low),
            "price_change_24h": _finite(price - price24) if fmt is default_price else fmt(price - price24),
            "price_change_percentage_24h": _r5(_pct(price, price24)),
            "market_cap_change_24h": _diff(_finite(mcap), _finite(mcap24)),
            "market_cap_change_percentage_24h": _r5(_pct(mcap, mcap24)),
            "circulating_supply": 0.0 if math.isnan(circulating) else float(circulating),
            "total_supply": None if total is None else float(total),
            "max_supply": coin.meta.max_supply,
            "ath": fmt(ath),
            "ath_change_percentage": _r5(_pct(price, ath)),
            "ath_date": iso_ms_z(ath_ms),
            "atl": fmt(atl),
            "atl_change_percentage": _r5(_pct(price, atl)),
            "atl_date": iso_ms_z(atl_ms),
            "roi": roi,
            "last_updated": iso_ms_z(t),
        }
        if sparkline:
            nodes = self.hour_nodes(coin, t - 7 * DAY_MS, t)
            row["sparkline_in_7d"] = {"price": [math.exp(lp + self.log_rate(vs, nt)) for nt, lp in nodes]}
        for period in sorted(periods):  # the real API emits them sorted as strings: 1h, 24h, 30d, 7d
            then = t - PERIODS_MS[period]
            row[f"price_change_percentage_{period}_in_currency"] = _pct(price, self.price(coin, vs, then))
        return row


# --- endpoints -------------------------------------------------------------------------------------------


def ping() -> Reply:
    return Reply(200, {"gecko_says": "(V3) To the Moon!"})


def supported_vs_currencies() -> Reply:
    return Reply(200, list(SUPPORTED_VS))


def coins_list(market: Market, query: Mapping[str, list[str]]) -> Reply:
    platforms = _flag(query, "include_platform")
    rows = []
    for coin in sorted(market.ds.coins, key=lambda c: c.meta.id):
        row: dict[str, Any] = {"id": coin.meta.id, "symbol": coin.meta.symbol, "name": coin.meta.name}
        if platforms:
            row["platforms"] = {}
        rows.append(row)
    return Reply(200, rows)


def coins_markets(market: Market, query: Mapping[str, list[str]], now: int) -> Reply:
    vs = market.vs_check(_required(query, "vs_currency"))
    order = (_one(query, "order") or "market_cap_desc").strip()
    if order not in ORDERS:
        raise BadRequestError({"error": f"invalid order {order!r}: expected one of {', '.join(ORDERS)}"})
    per_page = min(_int_param(query, "per_page", 100, 1), 250)  # the real API caps per_page at 250
    page = _int_param(query, "page", 1, 1)
    periods = [p for p in _csv(_one(query, "price_change_percentage")) if p in PERIODS_MS]
    precision = _one(query, "precision")
    price_formatter(precision)  # reject a bad precision before any work
    ids = _csv(_one(query, "ids"))
    ordered = market.ordered_ids(now, order)
    if ids:  # unknown ids are silently left out, as the real API does
        wanted = set(ids)
        ordered = [cid for cid in ordered if cid in wanted]
    chosen = ordered[(page - 1) * per_page : page * per_page]
    sparkline = _flag(query, "sparkline")
    rows = [market.row(cid, vs, now, tuple(periods), sparkline=sparkline, precision=precision) for cid in chosen]
    return Reply(200, rows)


def simple_price(market: Market, query: Mapping[str, list[str]], now: int) -> Reply:
    ids = _csv(_required(query, "ids"))
    currencies = [v for v in _csv(_required(query, "vs_currencies")) if v in FIAT_PER_USD or v in CRYPTO_QUOTES]
    fmt = price_formatter(_one(query, "precision"))
    flags = {name: _flag(query, f"include_{name}") for name in ("market_cap", "24hr_vol", "24hr_change")}
    out: dict[str, Any] = {}
    for cid in ids:
        coin = market.ds.by_id.get(cid)
        if coin is None:
            continue
        t = market.updated_ms(coin, now)
        entry: dict[str, Any] = {}
        for vs in currencies:
            price = market.price(coin, vs, t)
            entry[vs] = fmt(price)
            if flags["market_cap"]:
                entry[f"{vs}_market_cap"] = _finite(market.market_cap(coin, price, t))
            if flags["24hr_vol"]:
                entry[f"{vs}_24h_vol"] = market.ds.volume_at(coin.index, t) * math.exp(market.log_rate(vs, t))
            if flags["24hr_change"]:
                entry[f"{vs}_24h_change"] = _pct(price, market.price(coin, vs, t - DAY_MS))
        if _flag(query, "include_last_updated_at"):
            entry["last_updated_at"] = t // 1000
        out[cid] = entry
    return Reply(200, out)


def chart_granularity(span_ms: int) -> str:
    """The real API's automatic granularity: <= 1 day 5-minutely, <= 90 days hourly, else daily."""
    if span_ms <= DAY_MS:
        return "5m"
    if span_ms <= 90 * DAY_MS:
        return "1h"
    return "1d"


def market_chart_range(
    market: Market, coin_id: str, query: Mapping[str, list[str]], now: int, history_limited: bool
) -> Reply:
    ds = market.ds
    coin = ds.by_id.get(coin_id.lower())
    if coin is None:
        return Reply(404, dict(COIN_NOT_FOUND))
    vs = market.vs_check(_required(query, "vs_currency"))
    try:
        start = parse_time_param(_required(query, "from"), "from")
        end = parse_time_param(_required(query, "to"), "to")
    except ValueError as exc:
        raise BadRequestError({"error": str(exc)}) from None
    if history_limited and start < now - HISTORY_LIMIT_MS:
        return Reply(401, error_10012(now))
    fmt = price_formatter(_one(query, "precision")) if _one(query, "precision") else _finite
    granularity = chart_granularity(end - start)
    lo, hi = max(start, SERVED_START_MS), min(end, now, SERVED_END_MS)  # no data from the future
    points: list[tuple[int, float]] = []  # (ms, log USD price)
    if lo <= hi and granularity == "1d":
        for day in range(-(-lo // DAY_MS), hi // DAY_MS + 1):
            points.append((day * DAY_MS, coin.logp[ds.day_index(day)]))
        if end >= now:  # like the real API, the last point is the latest price
            t = market.updated_ms(coin, now)
            if t > lo and (not points or t > points[-1][0]):
                points.append((t, ds.log_price_at(coin.index, t)))
    elif lo <= hi:
        for hour in range(lo // HOUR_MS - 1, hi // HOUR_MS + 1):
            if granularity == "1h":
                steps = [(ds.node_ms(coin, hour), ds.hour_log(coin.index, hour))]
            else:
                sub = ds.sub_nodes(coin.index, hour)
                steps = [(ds.five_min_ms(coin, hour, j), sub[j]) for j in range(12)]
            points += [(t, lp) for t, lp in steps if lo <= t <= hi]
    prices, caps, volumes = [], [], []
    for t, lp in points:
        rate = market.log_rate(vs, t)
        price = math.exp(lp + rate)
        prices.append([t, fmt(price)])
        caps.append([t, _finite(ds.supply_at(coin.index, t) * price)])
        volumes.append([t, ds.volume_at(coin.index, t) * math.exp(rate)])
    return Reply(200, {"prices": prices, "market_caps": caps, "total_volumes": volumes})

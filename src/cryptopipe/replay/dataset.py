"""The replay dataset: 250 coins, every instant from 2013-01-01 to 2035-12-31, deterministic.

Three layers, each passing exactly through the one above (see docs/replay-server.md):

1. daily closes (00:00 UTC) for every served day: the 12 real coins from the embedded CoinGecko export,
   shifted by HISTORY_SHIFT_DAYS and mirrored in time beyond both ends of their history; 238 synthetic
   coins generated from a fixed seed;
2. 24 hourly nodes per day: a Brownian bridge in log-price between two daily closes, seeded by (coin, day);
3. 12 five-minute nodes per hour: a Brownian bridge between two hourly nodes, seeded by (coin, hour).

Node times are jittered by 1-120 s after the hour like the real API's; a value between nodes is
log-linearly interpolated. Volumes and supplies are linear between daily values; market cap is
supply x price. Everything is stdlib: the dataset also runs in the light ingest image.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import gzip
import hashlib
import io
import math
import operator
import random
import statistics
import sys
import threading
from array import array
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from itertools import accumulate, pairwise, repeat

from .timeutil import DAY_MS, HOUR_MS, SERVED_END_DAY, SERVED_START_DAY, epoch_day

# Real history ends 2021-10-17; shifted by 5 years (1826 days) it ends 2026-10-17.
HISTORY_SHIFT_DAYS = 1826
# Served daily closes: SERVED_START .. SERVED_END, plus the close that ends the last served day.
N_DAYS = SERVED_END_DAY - SERVED_START_DAY + 2
PIVOT_DAY = epoch_day(dt.date(2021, 10, 17)) + HISTORY_SHIFT_DAYS
SYNTHETIC_SEED = "cryptopipe-replay/synthetic/v1"
N_COINS = 250
_MASK64 = (1 << 64) - 1
_NAN = math.nan


@dataclass(frozen=True, slots=True)
class CoinMeta:
    """Static facts of a coin. total_supply is fixed, or circulating x total_factor, or unknown."""

    id: str
    symbol: str
    name: str
    image: str
    max_supply: float | None
    total_supply: float | None
    total_factor: float | None
    roi_base: float | None  # the USD price `roi` is measured from; None -> `roi: null`
    real: bool


@dataclass(slots=True)
class Coin:
    """A coin's metadata and its served daily arrays (index 0 = SERVED_START)."""

    meta: CoinMeta
    index: int
    seed: int
    sigma_day: float  # daily log-return volatility used by the intraday bridges
    logp: array  # log USD price at 00:00 UTC
    volume: array  # 24h volume, USD
    supply: array  # circulating supply (0 = market cap reported 0, NaN = market cap missing)


# --- deterministic helpers ---------------------------------------------------------------------


def stable_seed(*parts: object) -> int:
    """A 64-bit seed from text parts, identical in every process (unlike hash())."""
    text = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "big")


def mix64(x: int) -> int:
    """splitmix64 finaliser: a cheap, well-spread integer hash."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def _mirror(i: int, n: int) -> int:
    """Index into a series of n points extended by reflection in time (a continuous triangle wave)."""
    if n == 1:
        return 0
    period = 2 * (n - 1)
    m = i % period
    return m if m < n else period - m


def _bridge(rng: random.Random, start: float, end: float, steps: int, sigma_step: float) -> tuple[float, ...]:
    """Brownian bridge from start to end in `steps` steps (both ends exact)."""
    walk = [0.0, *accumulate(rng.gauss(0.0, sigma_step) for _ in range(steps))]
    drift = walk[-1]
    slope = (end - start) / steps
    return tuple(start + slope * k + w - drift * k / steps for k, w in enumerate(walk))


_NORMAL = [statistics.NormalDist().inv_cdf((k + 0.5) / 4096) for k in range(4096)]


def _shock_table() -> list[float]:
    """Unit-variance fat-tailed shocks (a scale mixture of normals), sampled with rng.choices."""
    mix = [(2.0 if k % 5 == 0 else 0.8) * z for k, z in enumerate(_NORMAL)]
    scale = math.sqrt(sum(v * v for v in mix) / len(mix))
    return [v / scale for v in mix]


# 65536-entry lookup tables (each quantile repeated 16 times) so a 16-bit random index picks a draw.
_SHOCKS = [v for v in _shock_table() for _ in range(16)]
_NORMAL16 = [v for v in _NORMAL for _ in range(16)]

# --- the 12 real coins -----------------------------------------------------------------------------

_IMG = "https://coin-images.coingecko.com/coins/images/"
# file, id, symbol, name, image, max_supply, total_supply, total_factor, roi_base
_REAL: tuple[tuple[str, str, str, str, str, float | None, float | None, float | None, float | None], ...] = (
    ("btc", "bitcoin", "btc", "Bitcoin", "1/large/bitcoin.png?1696501400", 21e6, None, 1.0, None),
    ("eth", "ethereum", "eth", "Ethereum", "279/large/ethereum.png?1696501628", None, None, 1.0, 0.311),
    ("ltc", "litecoin", "ltc", "Litecoin", "2/large/litecoin.png?1696501400", 84e6, 84e6, None, None),
    ("xrp", "ripple", "xrp", "XRP", "44/large/xrp-symbol-white-128.png?1696501442", 1e11, 99.9857e9, None, None),
    ("doge", "dogecoin", "doge", "Dogecoin", "5/large/dogecoin.png?1696501409", None, None, 1.0, None),
    ("bnb", "binancecoin", "bnb", "BNB", "825/large/bnb-icon2_2x.png?1696501970", 2e8, None, 1.0, None),
    ("ada", "cardano", "ada", "Cardano", "975/large/cardano.png?1696502090", 45e9, 45e9, None, 0.0024),
    ("link", "chainlink", "link", "Chainlink", "877/large/chainlink-new-logo.png?1696502009", 1e9, 1e9, None, 0.11),
    ("matic", "matic-network", "matic", "Polygon", "4713/large/polygon.png?1698233745", 1e10, 1e10, None, 0.00263),
    ("luna", "terra-luna", "luna", "Terra Luna Classic", "8284/large/01_LunaClassic_color.png?1696508486",
     None, None, 1.4, None),
    ("sol", "solana", "sol", "Solana", "4128/large/solana.png?1718769756", None, None, 1.08, 0.22),
    ("shib", "shiba-inu", "shib", "Shiba Inu", "11939/large/shiba.png?1696511800", None, None, 1.0, None),
)  # fmt: skip


def _read_real_csv(name: str) -> list[tuple[int, float, float, float]]:
    """(epoch day, price, market cap or NaN, volume) rows of an embedded export, in date order."""
    blob = resources.files(__package__).joinpath("data").joinpath(f"{name}-usd-max.csv.gz").read_bytes()
    rows = []
    text = io.StringIO(gzip.decompress(blob).decode("utf-8"))
    for lineno, rec in enumerate(csv.DictReader(text), start=2):
        try:
            day = epoch_day(dt.date.fromisoformat(rec["snapped_at"][:10]))
            mcap = float(rec["market_cap"]) if rec["market_cap"] else _NAN
            vol = float(rec["total_volume"]) if rec["total_volume"] else 0.0
            rows.append((day, float(rec["price"]), mcap, vol))
        except (KeyError, ValueError) as exc:
            raise ValueError(f"replay data {name}-usd-max.csv.gz line {lineno}: {exc}") from exc
    return sorted(rows)


def _dense_history(rows: list[tuple[int, float, float, float]]) -> tuple[list[float], list[float], list[float]]:
    """Daily (log price, volume, supply) with missing days filled: log-linear price, linear volume,
    supply linear when both ends are known and positive, else carried forward."""
    logp: list[float] = []
    vol: list[float] = []
    sup: list[float] = []
    for (d0, p0, m0, v0), (d1, p1, m1, v1) in zip(rows, [*rows[1:], rows[-1]], strict=True):
        s0, s1 = m0 / p0, m1 / p1
        span = max(d1 - d0, 1)
        for k in range(span):
            f = k / span
            logp.append(math.log(p0) + (math.log(p1) - math.log(p0)) * f)
            vol.append(v0 + (v1 - v0) * f)
            both = s0 > 0 and s1 > 0  # False for NaN too
            sup.append(s0 + (s1 - s0) * f if both else s0)
    return logp, vol, sup


def _real_coin(index: int, spec: tuple) -> Coin:  # type: ignore[type-arg]
    name, cid, symbol, title, image, max_supply, total_supply, total_factor, roi_base = spec
    rows = _read_real_csv(name)
    logp, vol, sup = _dense_history(rows)
    n = len(logp)
    start = rows[0][0] + HISTORY_SHIFT_DAYS
    idx = [_mirror(SERVED_START_DAY + i - start, n) for i in range(N_DAYS)]
    rets = [abs(b - a) for a, b in pairwise(logp) if b != a]
    sigma = min(max(statistics.median(rets) * 1.4826, 0.01), 0.2) if rets else 0.03
    meta = CoinMeta(cid, symbol, title, _IMG + image, max_supply, total_supply, total_factor, roi_base, True)
    pick = operator.itemgetter(*idx)
    return Coin(meta, index, stable_seed("coin", cid), sigma, array("d", pick(logp)), array("d", pick(vol)),
                array("d", pick(sup)))  # fmt: skip


# --- the 238 synthetic coins --------------------------------------------------------------------------

_SYLLABLES = (
    "ar", "ba", "ce", "do", "el", "fi", "ga", "hu", "io", "ja", "ka", "lu", "mo", "nex", "or", "pi", "qua",
    "ra", "so", "ta", "ul", "ve", "wa", "xo", "yu", "ze", "tron", "lix", "vor", "dex", "nia", "rum", "sol",
    "tex", "mi", "ko", "zen", "fy", "ly", "ion",
)  # fmt: skip
_SUFFIXES = ("", "", "", " Protocol", " Network", " Finance", " Chain", " Token", " Coin", " DAO", " AI", " Swap")
_STABLES = (("tether", "usdt", "Tether", 1.2e11), ("usd-coin", "usdc", "USDC", 6.0e10), ("dai", "dai", "Dai", 5.0e9))
_CYCLE_ORIGIN = epoch_day(dt.date(2013, 12, 1))


def _synthetic_names(rng: random.Random, taken: set[str], count: int) -> list[tuple[str, str, str]]:
    names: list[tuple[str, str, str]] = []
    while len(names) < count:
        base = "".join(rng.choice(_SYLLABLES) for _ in range(rng.choice((2, 2, 3))))
        title = base.capitalize() + rng.choice(_SUFFIXES)
        cid = title.lower().replace(" ", "-")
        if cid in taken:
            continue
        taken.add(cid)
        consonants = [ch for ch in base if ch not in "aeiou"] or list(base)
        symbol = (base[0] + "".join(consonants[1:]))[: rng.choice((3, 3, 4))]
        names.append((cid, symbol, title))
    return names


def _synthetic_metas(taken: set[str]) -> list[tuple[CoinMeta, dict[str, float | str]]]:
    """Metadata and generation parameters of the synthetic coins, from one master seed."""
    rng = random.Random(stable_seed(SYNTHETIC_SEED, "meta"))  # noqa: S311 - reproducible market data, not secrets
    out: list[tuple[CoinMeta, dict[str, float | str]]] = []
    for k, (cid, symbol, title, mcap) in enumerate(_STABLES):
        taken.add(cid)
        meta = CoinMeta(cid, symbol, title, f"{_IMG}{9000 + k}/large/{cid}.png?1696506694", None, None,
                        rng.uniform(1.0, 1.03), None, False)  # fmt: skip
        out.append((meta, {"kind": "stable", "mcap": mcap, "level": 1.0, "sigma": 0.0015}))
    count = N_COINS - len(_REAL) - len(_STABLES)
    for k, (cid, symbol, title) in enumerate(_synthetic_names(rng, taken, count), start=1):
        mcap = 3.0e10 * k**-1.25 * math.exp(rng.gauss(0, 0.35))
        # log10 price level: lognormal spread, a few meme coins at micro prices.
        level = 10 ** (rng.uniform(-10, -5) if k % 29 == 7 else min(max(rng.gauss(-0.3, 2.0), -8.0), 5.0))
        max_supply: float | None = None
        roll = rng.random()
        factor: float | None = 1.0 if roll < 0.6 else (rng.uniform(1.05, 3.0) if roll < 0.92 else None)
        mode = "always" if k in (201, 214, 222, 229, 233) else ("sometimes" if k in (190, 207, 218, 226, 231) else "")
        total = None
        if mode:  # a coin whose circulating supply is unverified still has a known total supply
            total = mcap / level * rng.uniform(1.0, 2.0)
            factor = None
        if rng.random() < 0.55:
            base_total = total or mcap / level * (factor or 1.0)
            max_supply = float(10 ** math.ceil(math.log10(base_total * 1.05)))
        roi = level * math.exp(rng.gauss(-2.0, 1.5)) if rng.random() < 0.12 else None
        meta = CoinMeta(cid, symbol, title, f"{_IMG}{10000 + 37 * k}/large/{cid}.png?{1696500000 + k * 977}",
                        max_supply, total, factor, roi, False)  # fmt: skip
        params: dict[str, float | str] = {
            "kind": mode or "crypto",
            "mcap": mcap,
            "level": level,
            "sigma": min(max(math.exp(rng.gauss(math.log(0.05), 0.3)), 0.02), 0.15),
            "beta": rng.uniform(0.3, 1.4),
            "turnover": math.exp(rng.gauss(math.log(0.04), 0.6)),
            "growth": rng.uniform(0.0, 0.08),
            "zero_volume": 0.04 if k > 180 and k % 4 == 0 else 0.0,
        }
        out.append((meta, params))
    # Symbols are not unique on CoinGecko: a few synthetic coins reuse a real coin's symbol.
    for pos, symbol in ((40, "eth"), (90, "sol"), (150, "link"), (200, "usdt")):
        meta = out[pos][0]
        out[pos] = (CoinMeta(meta.id, symbol, meta.name, meta.image, meta.max_supply, meta.total_supply,
                             meta.total_factor, meta.roi_base, False), out[pos][1])  # fmt: skip
    return out


def _draw(rng: random.Random, table: list[float], k: int) -> tuple[float, ...]:
    """k draws from a 65536-entry table, at C speed (rng.choices loops in Python)."""
    idx = array("H", rng.randbytes(2 * k))
    if sys.byteorder == "big":  # the same draws on every platform
        idx.byteswap()
    return operator.itemgetter(*idx)(table)


# Shared per-day vectors of the synthetic generator (index 0 = SERVED_START).
_W = 182  # half-window of the centred moving average, days
_HI = operator.itemgetter(*(min(N_DAYS, i + _W + 1) for i in range(N_DAYS)))
_LO = operator.itemgetter(*(max(0, i - _W) for i in range(N_DAYS)))
_INV_COUNT = [1 / (min(N_DAYS, i + _W + 1) - max(0, i - _W)) for i in range(N_DAYS)]
_CYCLE = [0.9 * math.sin(2 * math.pi * (SERVED_START_DAY + i - _CYCLE_ORIGIN) / 1461) for i in range(N_DAYS)]
_YEARS_FROM_PIVOT = [(i - (PIVOT_DAY - SERVED_START_DAY)) / 365 for i in range(N_DAYS)]


def _scaled(values: Iterable[float], factor: float) -> map:  # type: ignore[type-arg]
    return map(operator.mul, values, repeat(factor))


def _synthetic_coin(index: int, meta: CoinMeta, params: dict[str, float | str]) -> Coin:
    rng = random.Random(stable_seed(SYNTHETIC_SEED, "series", meta.id))  # noqa: S311 - reproducible market data, not secrets
    sigma = float(params["sigma"])
    level = float(params["level"])
    eps = _draw(rng, _SHOCKS, N_DAYS)
    pivot = PIVOT_DAY - SERVED_START_DAY
    if params["kind"] == "stable":
        x = list(_scaled(eps, sigma))
    else:
        # Volatility regimes of 20 days, a random walk, minus its centred one-year moving average
        # (keeps levels within a few x of the anchor), plus a shared four-year market cycle.
        regime = [math.exp(0.35 * g) for g in _draw(rng, _NORMAL16, N_DAYS // 20 + 2)]
        vol = [regime[i // 20] * sigma for i in range(N_DAYS)]
        walk = list(accumulate(map(operator.mul, vol, eps)))
        pre = [0.0, *accumulate(walk)]
        moving_avg = map(operator.mul, map(operator.sub, _HI(pre), _LO(pre)), _INV_COUNT)
        x = list(map(operator.add, map(operator.sub, walk, moving_avg), _scaled(_CYCLE, float(params["beta"]))))
    logp = array("d", _scaled(x, 1.0))
    shift = math.log(level) - logp[pivot]
    logp = array("d", map(operator.add, logp, repeat(shift)))
    log_s0 = math.log(float(params["mcap"]) / level)
    log_supply = list(map(operator.add, _scaled(_YEARS_FROM_PIVOT, float(params.get("growth", 0.0))), repeat(log_s0)))
    base_supply = list(map(math.exp, log_supply))
    # log volume = log market cap + log turnover + bigger on big moves + noise
    noise = _draw(rng, _NORMAL16, N_DAYS)
    log_turnover = math.log(float(params.get("turnover", 0.08)))
    log_volume = map(
        operator.add,
        map(operator.add, log_supply, logp),
        map(operator.add, _scaled(map(abs, eps), 0.6), map(operator.add, _scaled(noise, 0.35), repeat(log_turnover))),
    )
    volume = array("d", map(math.exp, log_volume))
    zero_volume = float(params.get("zero_volume", 0.0))
    if zero_volume:  # thinly traded coins report zero volume on some days
        for i in range(N_DAYS):
            if mix64(index * 100_003 + i) % 1000 < zero_volume * 1000:
                volume[i] = 0.0
    supply = array("d", base_supply)
    kind = params["kind"]
    if kind in ("always", "sometimes"):  # market cap reported 0: always, or on about one day in six
        for i in range(N_DAYS):
            if kind == "always" or mix64(index * 7919 + i) % 6 == 0:
                supply[i] = 0.0
    return Coin(meta, index, stable_seed("coin", meta.id), sigma, logp, volume, supply)


# --- the dataset ---------------------------------------------------------------------------------------


class Dataset:
    """All coins, their daily arrays, and cached intraday nodes. Thread-safe, read-only after build."""

    def __init__(self) -> None:
        self.coins: list[Coin] = [_real_coin(i, spec) for i, spec in enumerate(_REAL)]
        taken = {c.meta.id for c in self.coins}
        for meta, params in _synthetic_metas(taken):
            self.coins.append(_synthetic_coin(len(self.coins), meta, params))
        self.by_id: dict[str, Coin] = {c.meta.id: c for c in self.coins}
        self.day_nodes = functools.lru_cache(maxsize=400_000)(self._day_nodes)
        self.sub_nodes = functools.lru_cache(maxsize=200_000)(self._sub_nodes)
        self.extremes = functools.lru_cache(maxsize=50_000)(self._extremes)
        self._ratio_lock = threading.Lock()
        self._ratio: dict[tuple[int, int], array] = {}

    # nodes and values ---------------------------------------------------------------------------

    @staticmethod
    def day_index(day: int) -> int:
        """Array index of an epoch day, clamped to the served arrays."""
        return min(max(day - SERVED_START_DAY, 0), N_DAYS - 2)

    def node_ms(self, coin: Coin, hour: int) -> int:
        """Time of the hourly node of epoch hour `hour`: 1-120 s after the hour."""
        return hour * HOUR_MS + 1000 + mix64(coin.seed ^ hour) % 119_000

    def _day_nodes(self, ci: int, day: int) -> tuple[float, ...]:
        """25 hourly log prices of an epoch day: the bridge between its close and the next."""
        coin = self.coins[ci]
        d = self.day_index(day)
        rng = random.Random(mix64(coin.seed ^ (day * 0x100000001B3)))  # noqa: S311 - reproducible market data, not secrets
        return _bridge(rng, coin.logp[d], coin.logp[d + 1], 24, coin.sigma_day / math.sqrt(24))

    def hour_log(self, ci: int, hour: int) -> float:
        day, h = divmod(hour, 24)
        return self.day_nodes(ci, day)[h]

    def _sub_nodes(self, ci: int, hour: int) -> tuple[float, ...]:
        """13 five-minute log prices between the nodes of `hour` and `hour + 1`."""
        coin = self.coins[ci]
        rng = random.Random(mix64(coin.seed ^ (hour * 0x9E3779B1 + 0x5F5E100)))  # noqa: S311 - reproducible market data, not secrets
        start, end = self.hour_log(ci, hour), self.hour_log(ci, hour + 1)
        return _bridge(rng, start, end, 12, coin.sigma_day / math.sqrt(288))

    def five_min_ms(self, coin: Coin, hour: int, j: int) -> int:
        t0 = self.node_ms(coin, hour)
        return t0 + (self.node_ms(coin, hour + 1) - t0) * j // 12

    def log_price_at(self, ci: int, t: int) -> float:
        """Log USD price at epoch ms t: log-linear between five-minute nodes."""
        coin = self.coins[ci]
        hour = t // HOUR_MS
        t0 = self.node_ms(coin, hour)
        if t < t0:
            hour -= 1
            t0 = self.node_ms(coin, hour)
        t1 = self.node_ms(coin, hour + 1)
        pos = (t - t0) * 12 / (t1 - t0)
        j = min(int(pos), 11)
        sub = self.sub_nodes(ci, hour)
        return sub[j] + (sub[j + 1] - sub[j]) * (pos - j)

    def _daily_pair(self, t: int) -> tuple[int, float]:
        f = t / DAY_MS - SERVED_START_DAY
        i = min(max(math.floor(f), 0), N_DAYS - 2)
        return i, min(max(f - i, 0.0), 1.0)

    def volume_at(self, ci: int, t: int) -> float:
        vol = self.coins[ci].volume
        i, f = self._daily_pair(t)
        return vol[i] + (vol[i + 1] - vol[i]) * f

    def supply_at(self, ci: int, t: int) -> float:
        """Circulating supply: linear between known positive daily values, else the day's value."""
        sup = self.coins[ci].supply
        i, f = self._daily_pair(t)
        s0, s1 = sup[i], sup[i + 1]
        return s0 + (s1 - s0) * f if s0 > 0 and s1 > 0 else s0

    # history extremes ---------------------------------------------------------------------------

    def ratio_series(self, ci: int, base: int) -> array:
        """Daily log price of coin ci in units of coin `base` (for btc/eth quotes)."""
        key = (ci, base)
        with self._ratio_lock:
            if key not in self._ratio:
                a, b = self.coins[ci].logp, self.coins[base].logp
                self._ratio[key] = array("d", (x - y for x, y in zip(a, b, strict=True)))
            return self._ratio[key]

    def _extremes(self, ci: int, base: int, upto: int) -> tuple[float, int, float, int]:
        """(max, its epoch day, min, its epoch day) of daily closes from SERVED_START to epoch day upto.

        base = -1 for USD, else the index of the quote coin."""
        series = self.coins[ci].logp if base < 0 else self.ratio_series(ci, base)
        seg = series[: self.day_index(upto) + 1]
        hi, lo = max(seg), min(seg)
        return hi, seg.index(hi) + SERVED_START_DAY, lo, seg.index(lo) + SERVED_START_DAY


_DATASET: Dataset | None = None
_DATASET_LOCK = threading.Lock()


def get_dataset() -> Dataset:
    """The process-wide dataset (built once, ~1 s; every server in the process shares it)."""
    global _DATASET  # noqa: PLW0603
    with _DATASET_LOCK:
        if _DATASET is None:
            _DATASET = Dataset()
        return _DATASET

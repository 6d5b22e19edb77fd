"""Ingest: CoinGecko ``/coins/markets`` → write-once raw pages (+ sidecars, + a completion marker) → staging.

The idempotency rule (docs/ingest.md has the reasoning):

1. The interval's request plan (pages per quote currency) is a pure function of the configuration.
2. If the interval's marker ``raw/coins_markets/P/_SUCCESS.json`` exists, the raw is complete: nothing is
   fetched, the stored pages are re-parsed (a rerun writes the same staging bytes).
3. Otherwise pages already stored by a run that died while writing are adopted as they are (write-once: never
   overwritten), the missing ones are fetched, ALL pages are parsed in memory, and only if every page is
   good are the new pages written, then the marker (listing every page and its sha256), then staging.
   A failed fetch or parse writes nothing.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from cryptopipe.core.coingecko import ParsedPage, classify_response, parse_markets_page, rows_to_table
from cryptopipe.core.config import Settings
from cryptopipe.core.errors import StorageError, WriteConflictError
from cryptopipe.core.http import Fetched, HttpClient, RetryableError
from cryptopipe.core.layout import Interval, raw_page_key, raw_prefix, sidecar_key, staging_key
from cryptopipe.core.schema import SNAPSHOT_SCHEMA
from cryptopipe.core.stage import ObjectRef, StageContext, json_bytes, sha256

MARKETS_PATH = "/coins/markets"
PER_PAGE_MAX = 250
IDS_PER_REQUEST = 100  # keeps request URLs well under common 8 KiB limits
PRICE_CHANGE_WINDOWS = "1h,24h,7d"
GZIP_CONTENT_TYPE = "application/gzip"
JSON_CONTENT_TYPE = "application/json"


def marker_key(interval: Interval) -> str:
    """Written last, after every page: its presence means the interval's raw set is complete."""
    return f"{raw_prefix(interval)}_SUCCESS.json"


def gzip_bytes(data: bytes) -> bytes:
    """Deterministic gzip: no timestamp, no file name, fixed level."""
    return gzip.compress(data, compresslevel=9, mtime=0)


# --- the request plan ---


@dataclass(frozen=True)
class PageRequest:
    vs_currency: str
    page: int  # raw page number within the currency (1-based)
    kind: str  # "top" or "ids"
    params: dict[str, str]
    ids: tuple[str, ...] = ()

    @property
    def ident(self) -> tuple[str, int]:
        return (self.vs_currency, self.page)

    def key(self, interval: Interval) -> str:
        return raw_page_key(interval, self.vs_currency, self.page)


def _base_params(vs_currency: str) -> dict[str, str]:
    return {
        "vs_currency": vs_currency,
        "order": "market_cap_desc",
        "price_change_percentage": PRICE_CHANGE_WINDOWS,
        "precision": "full",
        "sparkline": "false",
    }


def top_pages(top_n: int) -> tuple[int, int]:
    """(pages, per_page) for the top N with the fewest pages and the least over-fetch."""
    pages = math.ceil(top_n / PER_PAGE_MAX)
    return pages, math.ceil(top_n / pages)


def plan_requests(settings: Settings) -> list[PageRequest]:
    """Every page the interval needs, in a fixed order: per currency, the top-N pages, then id chunks."""
    plan: list[PageRequest] = []
    ids = settings.coins.ids
    for vs in settings.quote_currencies:
        number = 0
        if settings.coins.top_n:
            pages, per_page = top_pages(settings.coins.top_n)
            for api_page in range(1, pages + 1):
                number += 1
                params = _base_params(vs) | {"per_page": str(per_page), "page": str(api_page)}
                plan.append(PageRequest(vs, number, "top", params))
        for start in range(0, len(ids), IDS_PER_REQUEST):
            chunk = tuple(ids[start : start + IDS_PER_REQUEST])
            number += 1
            params = _base_params(vs) | {"ids": ",".join(chunk), "per_page": str(PER_PAGE_MAX), "page": "1"}
            plan.append(PageRequest(vs, number, "ids", params, chunk))
    return plan


# --- pages: stored, fetched, parsed ---


@dataclass
class Page:
    request: PageRequest
    key: str
    stored: bytes  # the gzip object, as stored or about to be
    payload: Any
    fetched: Fetched | None = None  # None when adopted from storage
    parsed: ParsedPage | None = None

    @property
    def sidecar(self) -> str:
        return sidecar_key(self.key)


def _decode_stored(key: str, data: bytes, where: str) -> Any:
    try:
        return json.loads(gzip.decompress(data).decode("utf-8"))
    except (OSError, EOFError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StorageError(f"{where}: raw object {key} is not gzip'ed JSON ({exc}); it was never valid") from exc


def _sidecar(page: Page, interval: Interval) -> dict[str, Any]:
    body = gzip.decompress(page.stored)
    meta: dict[str, Any] = {
        "interval_start": interval.start.isoformat(),
        "interval_end": interval.end.isoformat(),
        "raw_key": page.key,
        "request": {"method": "GET", "path": MARKETS_PATH, "params": page.request.params},
        "body": {"sha256": sha256(body), "bytes": len(body)},
        "object": {"sha256": sha256(page.stored), "bytes": len(page.stored), "encoding": "gzip"},
    }
    if page.fetched is None:  # a page whose sidecar was lost with a crashed run: say so, invent nothing
        meta |= {"recovered": True, "response": None, "fetched_at": None}
    else:
        meta["request"]["url"] = page.fetched.url
        meta["response"] = {"status": page.fetched.status, "headers": page.fetched.headers}
        meta["fetched_at"] = page.fetched.fetched_at.isoformat()
        meta["attempts"] = page.fetched.attempts
    return meta


def _marker(interval: Interval, pages: list[Page]) -> dict[str, Any]:
    """A pure function of the settled pages, so concurrent or repeated runs write the same bytes."""
    return {
        "interval_start": interval.start.isoformat(),
        "interval_end": interval.end.isoformat(),
        "pages": [
            {
                "key": p.key,
                "vs_currency": p.request.vs_currency,
                "page": p.request.page,
                "params": p.request.params,
                "sha256": sha256(p.stored),
                "bytes": len(p.stored),
            }
            for p in pages
        ],
    }


def _check_plan(marker: dict[str, Any], plan: list[PageRequest], interval: Interval, where: str) -> None:
    stored = [(p["key"], p["params"]) for p in marker.get("pages", [])]
    wanted = [(r.key(interval), r.params) for r in plan]
    if stored != wanted:
        raise WriteConflictError(
            f"{where} lists {len(stored)} page(s) fetched with a different request plan than the configuration "
            f"now asks for ({len(wanted)} page(s)): coins or quote currencies changed since this interval was "
            "ingested. Raw data is write-once: restore the configuration, or delete "
            f"{raw_prefix(interval)} to fetch the interval anew."
        )


def _pages_from_marker(ctx: StageContext, data: bytes, plan: list[PageRequest]) -> list[Page]:
    key = marker_key(ctx.interval)
    where = ctx.store.url(key)
    try:
        marker = json.loads(data)
    except json.JSONDecodeError as exc:
        raise StorageError(f"{where} is not valid JSON ({exc.msg})") from exc
    _check_plan(marker, plan, ctx.interval, where)
    pages = []
    for request, entry in zip(plan, marker["pages"], strict=True):
        stored = ctx.store.get(entry["key"])
        if sha256(stored) != entry["sha256"]:
            raise StorageError(f"{ctx.store.url(entry['key'])} does not match the sha256 in {where}: raw was altered")
        pages.append(Page(request, entry["key"], stored, _decode_stored(entry["key"], stored, where)))
    return pages


def _adopt(ctx: StageContext, request: PageRequest, key: str) -> Page | None:
    """A page left by a run that died before its marker; None if there is none."""
    stored = ctx.store.get_or_none(key)
    if stored is None:
        return None
    side = ctx.store.get_or_none(sidecar_key(key))
    if side is not None:
        try:
            params = json.loads(side).get("request", {}).get("params")
        except (json.JSONDecodeError, AttributeError) as exc:
            raise StorageError(f"{ctx.store.url(sidecar_key(key))} is not a valid sidecar ({exc})") from exc
        if params != request.params:
            raise WriteConflictError(
                f"{ctx.store.url(key)} was fetched with other parameters ({params}) than the configuration now "
                f"asks for ({request.params}); raw data is write-once: restore the configuration or delete "
                f"{raw_prefix(ctx.interval)} to fetch the interval anew"
            )
    return Page(request, key, stored, _decode_stored(key, stored, ctx.store.url(key)))


def _not_empty_ranking(payload: Any) -> None:
    """Page 1 of the top N is never legitimately empty: CoinGecko glitch, retry (then exit 7, nothing written)."""
    if payload == []:
        raise RetryableError("page 1 of the market-cap ranking came back empty", invalid=True)


def _fetch(client: HttpClient, request: PageRequest, key: str) -> Page:
    first_top_page = request.kind == "top" and request.params["page"] == "1"
    fetched = client.get(MARKETS_PATH, request.params, check=_not_empty_ranking if first_top_page else None)
    return Page(request, key, gzip_bytes(fetched.body), fetched.payload, fetched)


def _parse(page: Page, interval: Interval) -> None:
    page.parsed = parse_markets_page(
        page.payload,
        vs_currency=page.request.vs_currency,
        snapshot_time=interval.snapshot_time,
        source_key=page.key,
        where=f"{page.key} (GET {MARKETS_PATH} {page.request.params})",
    )


def _record(ctx: StageContext, key: str, data: bytes) -> None:
    ctx.result.outputs.append(ObjectRef(key, sha256(data), len(data)))


def _write_page(ctx: StageContext, page: Page) -> None:
    """Write a fetched page write-once; if a concurrent run stored it first, adopt theirs."""
    if page.fetched is not None:
        try:
            ctx.store.put_once(page.key, page.stored, GZIP_CONTENT_TYPE)
        except WriteConflictError:
            ctx.log.warning("page stored meanwhile by another run; adopting it", extra={"key": page.key})
            page.stored = ctx.store.get(page.key)
            page.payload = _decode_stored(page.key, page.stored, ctx.store.url(page.key))
            page.fetched = None
            _parse(page, ctx.interval)
    _record(ctx, page.key, page.stored)
    side = ctx.store.get_or_none(page.sidecar)
    if side is None:
        side = json_bytes(_sidecar(page, ctx.interval))
        try:
            ctx.store.put_once(page.sidecar, side, JSON_CONTENT_TYPE)
        except WriteConflictError:
            side = ctx.store.get(page.sidecar)
    _record(ctx, page.sidecar, side)


# --- the stage ---


@dataclass
class IngestOutcome:
    pages: list[Page]
    fetched: int = 0
    adopted: int = 0
    from_marker: bool = False
    requests: int = 0
    retries: int = 0
    notes: dict[str, Any] = field(default_factory=dict)


def settle_raw(ctx: StageContext, plan: list[PageRequest], client: HttpClient | None = None) -> IngestOutcome:
    """Make the interval's raw complete (or fail writing nothing); return every page, parsed."""
    key = marker_key(ctx.interval)
    marker = ctx.store.get_or_none(key)
    if marker is not None:
        pages = _pages_from_marker(ctx, marker, plan)
        for page in pages:
            _parse(page, ctx.interval)
            _record(ctx, page.key, page.stored)
            _record(ctx, page.sidecar, ctx.store.get(page.sidecar))
        _record(ctx, key, marker)
        return IngestOutcome(pages, from_marker=True)

    adopted: dict[tuple[str, int], Page] = {}
    for request in plan:
        page = _adopt(ctx, request, request.key(ctx.interval))
        if page is not None:
            adopted[request.ident] = page
    missing = [r for r in plan if r.ident not in adopted]
    outcome = IngestOutcome([], adopted=len(adopted))
    fetched: dict[tuple[str, int], Page] = {}
    if missing:
        own_client = client is None
        client = client or make_client(ctx.settings)
        try:
            for request in missing:  # everything into memory first: a failure here writes nothing
                fetched[request.ident] = _fetch(client, request, request.key(ctx.interval))
        finally:
            outcome.requests, outcome.retries = client.stats.requests, client.stats.retries
            if own_client:
                client.close()
    outcome.pages = [fetched.get(r.ident) or adopted[r.ident] for r in plan]
    for page in outcome.pages:  # parse all before writing any: a bad page leaves no trace
        _parse(page, ctx.interval)
    for page in outcome.pages:
        _write_page(ctx, page)
    data = json_bytes(_marker(ctx.interval, outcome.pages))
    ctx.store.put_once(key, data, JSON_CONTENT_TYPE)
    _record(ctx, key, data)
    outcome.fetched = len(fetched)
    return outcome


def make_client(settings: Settings) -> HttpClient:
    return HttpClient(settings.api, classify_response)


@dataclass
class Assembled:
    rows: list[dict[str, Any]]
    duplicates_dropped: int = 0
    ids_in_top: int = 0
    missing_ids: list[str] = field(default_factory=list)
    unknown_fields: set[str] = field(default_factory=set)
    missing_optional_fields: set[str] = field(default_factory=set)


def _rows_in_order(pages: list[Page], kind: str, vs: str) -> Iterator[dict[str, Any]]:
    for page in pages:
        if page.request.kind == kind and page.request.vs_currency == vs and page.parsed is not None:
            yield from page.parsed.rows


def assemble(pages: list[Page], settings: Settings) -> Assembled:
    """Rows in plan order, one per (coin_id, vs_currency): the first occurrence wins."""
    out = Assembled(rows=[])
    for page in pages:
        assert page.parsed is not None
        out.unknown_fields |= page.parsed.unknown_fields
        out.missing_optional_fields |= page.parsed.missing_optional_fields
    for vs in settings.quote_currencies:
        seen: set[str] = set()
        for row in _rows_in_order(pages, "top", vs):
            if row["coin_id"] in seen:
                out.duplicates_dropped += 1  # ranks moved between page requests
            elif len(seen) < settings.coins.top_n:
                seen.add(row["coin_id"])
                out.rows.append(row)
        top = set(seen)
        for row in _rows_in_order(pages, "ids", vs):
            if row["coin_id"] in top:
                out.ids_in_top += 1
            elif row["coin_id"] in seen:
                out.duplicates_dropped += 1
            else:
                seen.add(row["coin_id"])
                out.rows.append(row)
        asked = [
            coin for p in pages if p.request.kind == "ids" and p.request.vs_currency == vs for coin in p.request.ids
        ]
        out.missing_ids.extend(f"{coin}/{vs}" for coin in asked if coin not in seen)
    return out


def run(ctx: StageContext, client: HttpClient | None = None) -> None:
    plan = plan_requests(ctx.settings)
    outcome = settle_raw(ctx, plan, client)
    result = assemble(outcome.pages, ctx.settings)
    if result.unknown_fields:
        ctx.log.warning(
            "unknown fields in /coins/markets (kept in raw, not mapped)",
            extra={"unknown_fields": sorted(result.unknown_fields)},
        )
    if result.missing_optional_fields:
        ctx.log.warning(
            "optional fields absent from /coins/markets (stored as null)",
            extra={"missing_fields": sorted(result.missing_optional_fields)},
        )
    if result.missing_ids:
        ctx.log.warning("coins asked for by id are absent from the response", extra={"missing_ids": result.missing_ids})
    table = rows_to_table(result.rows).sort_by([("coin_id", "ascending"), ("vs_currency", "ascending")])
    ctx.write_table(staging_key(ctx.interval), table, SNAPSHOT_SCHEMA)
    ctx.result.metrics.update(
        {
            "rows": table.num_rows,
            "pages": len(outcome.pages),
            "pages_fetched": outcome.fetched,
            "pages_adopted": outcome.adopted,
            "raw_reused": outcome.from_marker,
            "requests": outcome.requests,
            "retries": outcome.retries,
            "unknown_fields": len(result.unknown_fields),
            "unknown_field_names": sorted(result.unknown_fields),
            "duplicates_dropped": result.duplicates_dropped,
            "ids_in_top": result.ids_in_top,
            "missing_ids": len(result.missing_ids),
            "missing_id_list": result.missing_ids,
            "raw_uri": ctx.store.url(raw_prefix(ctx.interval)),
        }
    )

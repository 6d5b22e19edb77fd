"""The request plan and row assembly, without a server."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from cryptopipe.core.coingecko import parse_markets_page
from cryptopipe.core.config import load_settings
from cryptopipe.core.layout import Interval
from cryptopipe.ingest.stage import IDS_PER_REQUEST, Page, PageRequest, assemble, plan_requests, top_pages

INTERVAL = Interval.starting(datetime(2026, 1, 1, 12, tzinfo=UTC))


@pytest.mark.parametrize(
    ("top_n", "expected"),
    [(1, (1, 1)), (30, (1, 30)), (250, (1, 250)), (251, (2, 126)), (500, (2, 250)), (1000, (4, 250))],
)
def test_top_pages_fewest_pages_least_overfetch(top_n: int, expected: tuple[int, int]) -> None:
    pages, per_page = top_pages(top_n)
    assert (pages, per_page) == expected
    assert per_page <= 250 and pages * per_page >= top_n > (pages - 1) * per_page


def test_plan_pages_per_currency_then_id_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    ids = [f"coin-{i}" for i in range(IDS_PER_REQUEST + 5)]
    monkeypatch.setenv("CRYPTOPIPE_COINS__TOP_N", "300")
    monkeypatch.setenv("CRYPTOPIPE_COINS__IDS", ",".join(ids))
    monkeypatch.setenv("CRYPTOPIPE_QUOTE_CURRENCIES", "usd,eur")
    plan = plan_requests(load_settings())
    summary = [(r.vs_currency, r.page, r.kind, r.params.get("page"), r.params["per_page"], len(r.ids)) for r in plan]
    assert summary == [
        ("usd", 1, "top", "1", "150", 0),
        ("usd", 2, "top", "2", "150", 0),
        ("usd", 3, "ids", "1", "250", IDS_PER_REQUEST),
        ("usd", 4, "ids", "1", "250", 5),
        ("eur", 1, "top", "1", "150", 0),
        ("eur", 2, "top", "2", "150", 0),
        ("eur", 3, "ids", "1", "250", IDS_PER_REQUEST),
        ("eur", 4, "ids", "1", "250", 5),
    ]
    assert all(r.params["order"] == "market_cap_desc" and r.params["precision"] == "full" for r in plan)
    assert plan[2].params["ids"] == ",".join(ids[:IDS_PER_REQUEST])
    assert plan[0].key(INTERVAL) == "raw/coins_markets/date=2026-01-01/hour=12/vs=usd/page=0001.json.gz"


def _coin(coin_id: str, price: float) -> dict[str, Any]:
    return {
        "id": coin_id,
        "symbol": coin_id[:3],
        "name": coin_id.title(),
        "current_price": price,
        "market_cap": 1,
        "total_volume": 1,
        "last_updated": "2026-01-01T12:59:00Z",
    }


def _page(kind: str, number: int, coins: list[dict[str, Any]], ids: tuple[str, ...] = ()) -> Page:
    request = PageRequest("usd", number, kind, {"page": str(number)}, ids)
    page = Page(request, request.key(INTERVAL), b"", coins)
    page.parsed = parse_markets_page(coins, vs_currency="usd", snapshot_time=INTERVAL.end, source_key=page.key)
    return page


def test_assemble_keeps_first_of_a_repeated_coin_and_reports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRYPTOPIPE_COINS__TOP_N", "4")
    monkeypatch.setenv("CRYPTOPIPE_COINS__IDS", "b,x,gone")
    monkeypatch.setenv("CRYPTOPIPE_QUOTE_CURRENCIES", "usd")
    pages = [
        _page("top", 1, [_coin("a", 1), _coin("b", 2)]),
        _page("top", 2, [_coin("b", 99), _coin("c", 3), _coin("d", 4)]),  # b moved down a rank: a repeat
        _page("ids", 3, [_coin("b", 5), _coin("x", 6)], ("b", "x", "gone")),
    ]
    out = assemble(pages, load_settings())
    assert [(r["coin_id"], r["price"]) for r in out.rows] == [("a", 1), ("b", 2), ("c", 3), ("d", 4), ("x", 6)]
    assert out.duplicates_dropped == 1
    assert out.ids_in_top == 1
    assert out.missing_ids == ["gone/usd"]


def test_ingest_code_runs_without_numpy_or_pandas() -> None:
    """The ingest image installs neither: importing and using the parsers must not need them."""
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['numpy'] = None; sys.modules['pandas'] = None\n"
        "import cryptopipe.ingest.stage, cryptopipe.ingest.backfill\n"
        "from cryptopipe.core.coingecko import rows_to_table, parse_markets_page\n"
        "from datetime import datetime, UTC\n"
        "item = {'id': 'a', 'symbol': 'a', 'name': 'A', 'current_price': 1, 'market_cap': 1,"
        " 'total_volume': 1, 'last_updated': '2026-01-01T00:00:00Z'}\n"
        "rows = parse_markets_page([item], vs_currency='usd', snapshot_time=datetime.now(UTC), source_key='k').rows\n"
        "t = rows_to_table(rows).sort_by([('coin_id', 'ascending')])\n"
        "print(t.column('snapshot_time').cast('int64').to_pylist() and 'ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"

"""Real CoinGecko history through the gate: zeros, missing market caps, gaps and micro prices.

The fixture copy (60 rows of shib and btc) always runs; the full ../shared/market-history runs when present.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from cryptopipe.cli import main
from cryptopipe.core.layout import quarantine_key, validated_key
from tests.unit.validate.helpers import (
    INTERVAL,
    SHARED_HISTORY,
    DailyRow,
    cli_args,
    expectation,
    fixture_rows,
    from_daily,
    parse_history,
    report,
    write_staging,
)

SHIB_LOW = 5.7004142022986597e-11


def _as_coins(rows: list[DailyRow]) -> list[dict[str, Any]]:
    """Each (coin, day) as its own coin of one interval: every real value meets the checks at once.

    The 24h change is the real change from the previous day when that day exists; high/low are not in the
    daily export, so the high/low check is skipped for these rows, as it is for coins CoinGecko gives none.
    """
    previous = {(r.coin, r.day): r.price for r in rows}
    out = []
    for r in rows:
        prev = previous.get((r.coin, _day_before(r.day)))
        change = None if prev is None else 100 * (r.price / prev - 1)
        out.append(from_daily(r, f"{r.coin}-{r.day}", high_24h=None, low_24h=None, price_change_pct_24h=change))
    return out


def _day_before(day: str) -> str:
    return (date.fromisoformat(day) - timedelta(days=1)).isoformat()


def test_fixture_quirks_pass_and_micro_prices_are_kept(
    configure: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = _as_coins(fixture_rows("shib") + fixture_rows("btc"))
    ids = [r["coin_id"] for r in rows]
    root = configure(ids)
    write_staging(root, rows)

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"validate tried to open a network connection: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)  # GX must not phone home
    assert main(cli_args()) == 0

    validated = pq.read_table(root / validated_key(INTERVAL)).to_pylist()
    by_id = {r["coin_id"]: r for r in validated}
    big_moves = {r["coin_id"] for r in rows if r["price_change_pct_24h"] and abs(r["price_change_pct_24h"]) > 90}
    assert set(by_id) == set(ids) - big_moves
    assert by_id["shib-2020-12-11"]["price"] == SHIB_LOW  # a fixed floor like 1e-6 would have dropped it
    assert by_id["shib-2020-12-11"]["market_cap"] == 0.0  # zero market cap passes
    assert by_id["btc-2017-04-02"]["market_cap"] is None  # missing market cap passes, stays missing
    assert by_id["btc-2013-04-28"]["total_volume"] == 0.0  # zero volume passes

    rep = report(root)
    assert rep["summary"]["critical_failures"] == 0
    assert expectation(rep, "price_positive_finite")["unexpected_count"] == 0
    assert expectation(rep, "market_cap_non_negative")["missing_count"] == 1
    assert expectation(rep, "change_24h_bounded")["unexpected_count"] == len(big_moves)


def test_full_shared_history_through_the_gate(configure: Callable[..., Path]) -> None:
    """All 21k real daily rows of 12 coins in one table: only real > 90 % daily moves are quarantined."""
    if not SHARED_HISTORY.is_dir():
        pytest.skip(f"reference data {SHARED_HISTORY} is absent (../shared not beside the repository)")
    history = [r for path in sorted(SHARED_HISTORY.glob("*-usd-max.csv")) for r in parse_history(path)]
    rows = _as_coins(history)
    big_moves = sum(1 for r in rows if r["price_change_pct_24h"] is not None and abs(r["price_change_pct_24h"]) > 90)
    zero_caps = sum(1 for r in history if r.market_cap == 0)
    missing_caps = sum(1 for r in history if r.market_cap is None)
    assert zero_caps > 100 and missing_caps >= 4 and min(r.price for r in history) < 1e-10  # the quirks are there

    root = configure(None, coins__top_n=5000)  # row count is not the point here: 5000 asked, 21k rows
    write_staging(root, rows)
    assert main(cli_args()) == 0
    rep = report(root)
    assert rep["summary"]["rows_in"] == len(rows)
    assert rep["summary"]["rows_quarantined"] == big_moves
    assert rep["summary"]["rows_validated"] == len(rows) - big_moves
    assert rep["summary"]["failed_warning"] == (["change_24h_bounded"] if big_moves else [])
    assert expectation(rep, "market_cap_non_negative")["missing_count"] == missing_caps
    quarantined = pq.read_table(root / quarantine_key(INTERVAL))
    assert set(quarantined["reasons"].to_pylist()) <= {"change_24h_bounded"}


def _gap_days() -> list[tuple[str, list[DailyRow], int]]:
    """(day, rows of that day, coins live that day) for days where a live coin has no row."""
    history = {p.name.split("-")[0]: parse_history(p) for p in sorted(SHARED_HISTORY.glob("*-usd-max.csv"))}
    days = {coin: {r.day: r for r in rows} for coin, rows in history.items()}
    span = {coin: (min(d), max(d)) for coin, d in days.items()}
    gaps = []
    for day in sorted(set().union(*(d.keys() for d in days.values()))):
        live = [c for c in days if span[c][0] <= day <= span[c][1]]
        present = [days[c][day] for c in live if day in days[c]]
        if len(present) < len(live):
            gaps.append((day, present, len(live)))
    return gaps


def test_gaps_count_against_the_row_share(configure: Callable[..., Path]) -> None:
    """A gap in a coin's history is a missing row in that interval: fine above min_row_share, critical below."""
    if not SHARED_HISTORY.is_dir():
        pytest.skip(f"reference data {SHARED_HISTORY} is absent (../shared not beside the repository)")
    gaps = _gap_days()
    share = 0.9
    ok = max((g for g in gaps if len(g[1]) >= math.ceil(share * g[2])), key=lambda g: g[2])
    short = min((g for g in gaps if len(g[1]) < math.ceil(share * g[2])), key=lambda g: len(g[1]) / g[2])
    for (day, present, live), expected in ((ok, 0), (short, 3)):
        asked = [f"coin-{i}" for i in range(live)]  # as many coins asked for as were live that day
        rows = [from_daily(r, asked[i]) for i, r in enumerate(present)]
        root = configure(asked)
        write_staging(root, rows)
        assert main(cli_args()) == expected, f"{day}: {len(present)} of {live} coins"
        count = expectation(report(root), "row_count_usd")
        assert (count["observed_value"], count["coins_asked"], count["success"]) == (
            len(present),
            live,
            expected == 0,
        )

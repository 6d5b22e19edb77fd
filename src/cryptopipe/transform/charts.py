"""The interval's picture report: one PNG per charted coin and an index.html listing them.

Charted: every (coin, quote currency) with an anomaly at the snapshot (at most MAX_ANOMALY_CHARTS, largest
|value| / threshold first, so a market-wide crash does not turn one run into hundreds of charts), plus the top
``transform.chart_top_n`` coins by market cap in the first quote currency. Each chart: price over the lookback
with SMA 7d, SMA 30d and Bollinger bands (20, 2), hours whose z-score or 1h move crossed the thresholds marked,
the snapshot starred when it has an anomaly, RSI-14 below.

matplotlib is imported lazily (Agg canvas via the Figure API, no pyplot global state), under the default style
whatever the local matplotlibrc says, and PNGs are saved without the Software tag: same inputs, same bytes.
"""

from __future__ import annotations

import html
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from cryptopipe.core.config import AlertSettings
from cryptopipe.transform.indicators import Grid, Params, series_indicators

MAX_ANOMALY_CHARTS = 10
DPI = 80


@dataclass(frozen=True)
class ChartSpec:
    coin_id: str
    vs_currency: str
    filename: str  # relative to the report prefix, e.g. charts/bitcoin.png
    reason: str  # "anomaly" or "top N by market cap"


def choose_charts(
    indicators: list[dict[str, Any]], anomalies: list[dict[str, Any]], primary_vs: str, top_n: int
) -> list[ChartSpec]:
    def filename(coin: str, vs: str) -> str:
        return f"charts/{coin}.png" if vs == primary_vs else f"charts/{coin}.{vs}.png"

    worst: dict[tuple[str, str], float] = {}
    for a in anomalies:
        key = (a["coin_id"], a["vs_currency"])
        worst[key] = max(worst.get(key, 0.0), abs(a["value"]) / a["threshold"])
    ranked = sorted(worst, key=lambda k: (-worst[k], k))[:MAX_ANOMALY_CHARTS]
    specs = {k: ChartSpec(k[0], k[1], filename(*k), "anomaly") for k in ranked}
    caps = [
        (r["market_cap"], r["coin_id"])
        for r in indicators
        if r["vs_currency"] == primary_vs and r["market_cap"] is not None
    ]
    for _, coin in sorted(caps, key=lambda c: (-c[0], c[1]))[:top_n]:
        specs.setdefault((coin, primary_vs), ChartSpec(coin, primary_vs, filename(coin, primary_vs), f"top {top_n}"))
    return sorted(specs.values(), key=lambda c: (c.coin_id, c.vs_currency))


def _on_grid(values: np.ndarray, start: int, length: int) -> np.ndarray:
    full = np.full(length, np.nan)
    full[start:] = values
    return full


def render_chart(
    grid: Grid, s: int, params: Params, alerts: AlertSettings, title: str, *, snapshot_anomaly: bool = False
) -> bytes:
    import matplotlib as mpl
    from matplotlib.figure import Figure

    start = grid.segment_start(s)
    n = len(grid.times)
    values = series_indicators(grid.filled[start:, s], params)
    price = grid.observed[:, s]
    times = grid.times  # datetime64: matplotlib converts it natively (much faster than datetime objects)
    z = _on_grid(values["zscore_1h"], start, n)
    move = _on_grid(values["return_1h_pct"], start, n)
    with np.errstate(invalid="ignore"):
        flagged = (np.abs(z) > alerts.zscore_threshold) | (np.abs(move) > alerts.move_1h_pct)
    with mpl.rc_context(mpl.rcParamsDefault):
        fig = Figure(figsize=(10, 6), dpi=DPI)
        fig.subplots_adjust(left=0.08, right=0.98, top=0.94, bottom=0.12, hspace=0.08)
        top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
        top.plot(times, price, color="black", linewidth=0.8, label="price")
        top.plot(times, _on_grid(values["sma_7d"], start, n), color="tab:blue", linewidth=0.8, label="SMA 7d")
        top.plot(times, _on_grid(values["sma_30d"], start, n), color="tab:orange", linewidth=0.8, label="SMA 30d")
        upper, lower = _on_grid(values["bb_upper"], start, n), _on_grid(values["bb_lower"], start, n)
        top.fill_between(times, lower, upper, color="tab:gray", alpha=0.25, linewidth=0, label="Bollinger (20, 2)")
        marks = np.flatnonzero(flagged)
        top.scatter(times[marks], price[marks], color="red", s=14, zorder=3, label="|z| or 1h move over threshold")
        if snapshot_anomaly:
            top.scatter(times[-1:], price[-1:], color="red", marker="*", s=160, zorder=4, label="anomaly now")
        top.set_title(title)
        top.legend(loc="upper left", fontsize=8)
        top.grid(alpha=0.3)
        bottom.plot(times, _on_grid(values["rsi_14"], start, n), color="tab:purple", linewidth=0.8)
        bottom.axhline(70, color="red", linewidth=0.6, linestyle="--")
        bottom.axhline(30, color="green", linewidth=0.6, linestyle="--")
        bottom.set_ylim(0, 100)
        bottom.set_ylabel("RSI 14")
        bottom.grid(alpha=0.3)
        fig.autofmt_xdate()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def index_html(title: str, charts: list[ChartSpec], anomalies: list[dict[str, Any]]) -> bytes:
    esc = html.escape
    rows = "\n".join(
        f"<tr><td>{esc(a['coin_id'])}</td><td>{esc(a['vs_currency'])}</td><td>{esc(a['metric'])}</td>"
        f"<td>{a['value']:.6g}</td><td>{a['threshold']:g}</td><td>{esc(a['window'])}</td>"
        f"<td>{'' if a['z'] is None else format(a['z'], '.3g')}</td></tr>"
        for a in anomalies
    )
    figures = "\n".join(
        f'<figure><img src="{esc(c.filename)}" alt="{esc(c.coin_id)} {esc(c.vs_currency)}" width="800">'
        f"<figcaption>{esc(c.coin_id)} / {esc(c.vs_currency)} ({esc(c.reason)})</figcaption></figure>"
        for c in charts
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title></head>
<body>
<h1>{esc(title)}</h1>
<h2>Anomalies ({len(anomalies)})</h2>
<table border="1" cellpadding="3">
<tr><th>coin</th><th>vs</th><th>metric</th><th>value</th><th>threshold</th><th>window</th><th>z</th></tr>
{rows}
</table>
<h2>Charts ({len(charts)})</h2>
{figures}
</body></html>
"""
    return page.encode()


def render_charts(
    grid: Grid,
    charts: list[ChartSpec],
    params: Params,
    alerts: AlertSettings,
    *,
    snapshot: Any,
    flagged: set[tuple[str, str]],
) -> Iterator[tuple[ChartSpec, bytes]]:
    """PNG bytes of each chosen chart, on the window grid of one interval."""
    index = grid.series_index()
    for chart in charts:
        key = (chart.coin_id, chart.vs_currency)
        title = f"{chart.coin_id} / {chart.vs_currency} — {snapshot:%Y-%m-%dT%H:%M:%SZ}"
        yield chart, render_chart(grid, index[key], params, alerts, title, snapshot_anomaly=key in flagged)

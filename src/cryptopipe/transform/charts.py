"""The interval's picture report: one PNG per charted coin and an index.html listing them.

Charted: every (coin, quote currency) with an anomaly at the snapshot (at most MAX_ANOMALY_CHARTS, largest
|value| / threshold first, so a market-wide crash does not turn one run into hundreds of charts), plus the top
``transform.chart_top_n`` coins by market cap in the first quote currency. Each chart: price over the lookback
with SMA 7d, SMA 30d and Bollinger bands (20, 2), hours whose z-score or 1h move crossed the thresholds marked,
the snapshot starred when it has an anomaly, RSI-14 below.

Drawn with Pillow's primitives (lines, polygons, FreeType text with Pillow's built-in font), not matplotlib:
matplotlib's tick/text machinery cost 100-250 ms per chart, the largest part of a run (issue 7). PNGs carry no
metadata or timestamps: same inputs and the same Pillow build give the same bytes.
"""

from __future__ import annotations

import html
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from cryptopipe.core.config import AlertSettings
from cryptopipe.transform.indicators import CHART_SERIES, Grid, Params, series_indicators

MAX_ANOMALY_CHARTS = 10
_escape = lru_cache(maxsize=4096)(html.escape)


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


# Layout of a chart (pixels): price panel above, RSI panel below, labels left and under.
WIDTH, HEIGHT = 800, 480
LEFT, RIGHT = 72, 790
PRICE_TOP, PRICE_BOTTOM = 28, 330
RSI_TOP, RSI_BOTTOM = 342, 440
WHITE, BLACK, GRID, FRAME = (255, 255, 255), (0, 0, 0), (225, 225, 225), (80, 80, 80)
BLUE, ORANGE, PURPLE, RED, GREEN, BAND = (
    (31, 119, 180),
    (255, 127, 14),
    (148, 103, 189),
    (214, 39, 40),
    (44, 160, 44),
    (127, 127, 127),
)
BAND_ALPHA = 64  # Bollinger band fill: 25 % grey over the background


@lru_cache(maxsize=4)
def _font(size: int) -> Any:
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2, 2.5, 5 x 10^k steps) covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low] if math.isfinite(low) else []
    raw = (high - low) / count
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.ceil(low / step)
    return [i * step for i in range(first, math.floor(high / step) + 1)]


class _Panel:
    """Maps (row index, value) to pixels inside one panel."""

    def __init__(self, top: int, bottom: int, low: float, high: float, n: int) -> None:
        self.top, self.bottom, self.low, self.high, self.n = top, bottom, low, high, n

    def xs(self, idx: np.ndarray) -> np.ndarray:
        return LEFT + idx * ((RIGHT - LEFT) / max(self.n - 1, 1))

    def ys(self, values: np.ndarray) -> np.ndarray:
        span = (self.high - self.low) or 1.0
        return self.bottom - (values - self.low) * ((self.bottom - self.top) / span)

    def runs(self, values: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Pixel coordinates of each run of finite values (NaN gaps are not bridged)."""
        finite = np.isfinite(values)
        idx = np.flatnonzero(finite)
        if idx.size == 0:
            return []
        cuts = np.flatnonzero(np.diff(idx) > 1) + 1
        return [(self.xs(part), self.ys(values[part])) for part in np.split(idx, cuts)]

    def polyline(self, draw: Any, values: np.ndarray, color: tuple[int, int, int]) -> None:
        for x, y in self.runs(values):
            if x.size == 1:
                draw.point((float(x[0]), float(y[0])), fill=color)
            else:
                draw.line(np.column_stack([x, y]).ravel().tolist(), fill=color, width=1)


def _dashed(draw: Any, y: float, color: tuple[int, int, int]) -> None:
    for x in range(LEFT, RIGHT, 8):
        draw.line([x, y, min(x + 4, RIGHT), y], fill=color, width=1)


def _star(cx: float, cy: float, outer: float = 9.0, inner: float = 4.0) -> list[float]:
    points: list[float] = []
    for i in range(10):
        r = outer if i % 2 == 0 else inner
        angle = math.pi / 2 + i * math.pi / 5
        points += [cx + r * math.cos(angle), cy - r * math.sin(angle)]
    return points


def _axes(draw: Any, panel: _Panel, ticks: list[float], fmt: str) -> None:
    font = _font(10)
    for tick in ticks:
        y = float(panel.ys(np.array([tick]))[0])
        draw.line([LEFT, y, RIGHT, y], fill=GRID, width=1)
        draw.text((LEFT - 4, y), format(tick, fmt), fill=BLACK, font=font, anchor="rm")
    draw.rectangle([LEFT, panel.top, RIGHT, panel.bottom], outline=FRAME, width=1)


def _time_ticks(draw: Any, times: np.ndarray, panels: list[_Panel]) -> None:
    """Vertical grid lines at midnights (about 6 of them), dates under the RSI panel."""
    days = times.astype("datetime64[D]")
    midnights = np.flatnonzero(times == days.astype(times.dtype))
    if midnights.size == 0:
        return
    step = max(1, math.ceil(midnights.size / 6))
    font = _font(10)
    for i in midnights[::step]:
        for panel in panels:
            x = float(panel.xs(np.array([i]))[0])
            draw.line([x, panel.top, x, panel.bottom], fill=GRID, width=1)
        draw.text((x, RSI_BOTTOM + 4), str(days[i]), fill=BLACK, font=font, anchor="ma")


_PANEL_ROWS = np.arange(PRICE_TOP, PRICE_BOTTOM + 1, dtype=np.int16)[:, None]


def _band_mask(panel: _Panel, upper: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """Alpha of the Bollinger band over the price panel: each pixel column filled between the two bands.

    The bands are interpolated at every pixel column, so the cost depends on the panel's width, not on how many
    hours the window has (a polygon of 2 x 2400 vertices cost ~1.4 ms per chart).
    """
    mask = np.zeros((PRICE_BOTTOM - PRICE_TOP + 1, RIGHT - LEFT + 1), np.uint8)
    for (xu, yu), (_, yl) in zip(panel.runs(upper), panel.runs(lower), strict=True):
        first, last = math.ceil(xu[0]), math.floor(xu[-1])
        if last < first:
            continue
        columns = np.arange(first, last + 1)
        a, b = np.interp(columns, xu, yu), np.interp(columns, xu, yl)
        top = np.clip(np.rint(np.minimum(a, b)), -1, HEIGHT).astype(np.int16)
        bottom = np.clip(np.rint(np.maximum(a, b)), -1, HEIGHT).astype(np.int16)
        inside = (top <= _PANEL_ROWS) & (bottom >= _PANEL_ROWS)
        mask[:, first - LEFT : last - LEFT + 1] |= inside.view(np.uint8) * np.uint8(BAND_ALPHA)
    return mask


def _legend(draw: Any) -> None:
    font = _font(10)
    entries = [
        ("price", BLACK),
        ("SMA 7d", BLUE),
        ("SMA 30d", ORANGE),
        ("Bollinger (20, 2)", BAND),
        ("|z| or 1h move over threshold", RED),
    ]
    x, y = LEFT + 6, PRICE_TOP + 6
    draw.rectangle([x - 3, y - 3, x + 190, y + 13 * len(entries)], fill=WHITE, outline=GRID)
    for i, (label, color) in enumerate(entries):
        yy = y + 13 * i + 5
        draw.line([x, yy, x + 16, yy], fill=color, width=2)
        draw.text((x + 22, yy), label, fill=BLACK, font=font, anchor="lm")


def render_chart(
    grid: Grid, s: int, params: Params, alerts: AlertSettings, title: str, *, snapshot_anomaly: bool = False
) -> bytes:
    """One PNG: price, SMA 7d/30d, Bollinger band, flagged hours (red dots), snapshot star, RSI 14 below.

    Drawn with Pillow primitives (a few ms per chart; matplotlib cost ~100-250 ms per chart, which dominated a
    run). PNG bytes depend only on the inputs and the Pillow/FreeType build (no timestamps, no metadata).
    """
    from PIL import Image, ImageDraw

    start = grid.segment_start(s)
    n = len(grid.times)
    values = series_indicators(grid.filled[start:, s], params, only=CHART_SERIES)
    price = grid.observed[:, s]
    z = _on_grid(values["zscore_1h"], start, n)
    move = _on_grid(values["return_1h_pct"], start, n)
    with np.errstate(invalid="ignore"):
        flagged = (np.abs(z) > alerts.zscore_threshold) | (np.abs(move) > alerts.move_1h_pct)
    sma_7d, sma_30d = _on_grid(values["sma_7d"], start, n), _on_grid(values["sma_30d"], start, n)
    upper, lower = _on_grid(values["bb_upper"], start, n), _on_grid(values["bb_lower"], start, n)
    stacked = np.concatenate([price, sma_7d, sma_30d, upper, lower])
    finite = stacked[np.isfinite(stacked)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    pad = (high - low) * 0.05 or abs(high) * 0.05 or 1.0
    top = _Panel(PRICE_TOP, PRICE_BOTTOM, low - pad, high + pad, n)
    rsi = _Panel(RSI_TOP, RSI_BOTTOM, 0.0, 100.0, n)

    image = Image.new("RGB", (WIDTH, HEIGHT), WHITE)
    draw = ImageDraw.Draw(image)
    _axes(draw, top, _nice_ticks(top.low, top.high), ".4g")
    _axes(draw, rsi, [30.0, 70.0], ".0f")
    _time_ticks(draw, grid.times, [top, rsi])
    box = (LEFT, PRICE_TOP, RIGHT + 1, PRICE_BOTTOM + 1)
    image.paste(BAND, box, mask=Image.fromarray(_band_mask(top, upper, lower)))
    draw = ImageDraw.Draw(image)
    top.polyline(draw, sma_30d, ORANGE)
    top.polyline(draw, sma_7d, BLUE)
    top.polyline(draw, price, BLACK)
    marks = np.flatnonzero(flagged & np.isfinite(price))
    for x, y in zip(top.xs(marks), top.ys(price[marks]), strict=True):
        draw.ellipse([x - 2.5, y - 2.5, x + 2.5, y + 2.5], fill=RED)
    if snapshot_anomaly and np.isfinite(price[-1]):
        draw.polygon(_star(float(top.xs(np.array([n - 1]))[0]), float(top.ys(price[-1:])[0])), fill=RED)
    _dashed(draw, float(rsi.ys(np.array([70.0]))[0]), RED)
    _dashed(draw, float(rsi.ys(np.array([30.0]))[0]), GREEN)
    rsi.polyline(draw, _on_grid(values["rsi_14"], start, n), PURPLE)
    draw.text((LEFT - 40, (RSI_TOP + RSI_BOTTOM) / 2), "RSI", fill=BLACK, font=_font(10), anchor="mm")
    draw.text(((LEFT + RIGHT) / 2, PRICE_TOP / 2), title, fill=BLACK, font=_font(14), anchor="mm")
    _legend(draw)
    return _png(image)


def _png(image: Any) -> bytes:
    """PNG bytes; an 8-bit palette image when the chart has at most 256 colours (it has ~255), else RGB.

    The palette is exact (every pixel keeps its colour) and skips PNG's per-row filter search, which Pillow runs
    for RGB: ~2.7 ms instead of ~6 ms per chart, and ~25 % fewer bytes. Level 1: level 6 costs ~4x the time.
    """
    from PIL import Image

    buffer = io.BytesIO()
    colors = image.getcolors(256)
    if colors is None:
        image.save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()
    rgb = np.array([color for _, color in colors], dtype=np.uint32)
    lookup = np.empty(1 << 24, dtype=np.uint8)  # 24-bit colour -> index; only the chart's colours are read
    lookup[rgb[:, 0] | (rgb[:, 1] << 8) | (rgb[:, 2] << 16)] = np.arange(len(colors), dtype=np.uint8)
    pixels = np.frombuffer(image.tobytes("raw", "RGBX"), dtype="<u4") & np.uint32(0xFFFFFF)
    indexed = Image.frombytes("P", image.size, lookup[pixels].tobytes())
    indexed.putpalette(rgb.astype(np.uint8).tobytes())
    indexed.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _anomaly_rows(anomalies: list[dict[str, Any]]) -> str:
    esc = _escape  # the same few coin ids, currencies and metrics on every row of a day
    return "\n".join(
        f"<tr><td>{esc(a['coin_id'])}</td><td>{esc(a['vs_currency'])}</td><td>{esc(a['metric'])}</td>"
        f"<td>{a['value']:.6g}</td><td>{a['threshold']:g}</td><td>{esc(a['window'])}</td>"
        f"<td>{'' if a['z'] is None else format(a['z'], '.3g')}</td></tr>"
        for a in anomalies
    )


def _figures(charts: list[ChartSpec]) -> str:
    esc = html.escape
    return "\n".join(
        f'<figure><img src="{esc(c.filename)}" alt="{esc(c.coin_id)} {esc(c.vs_currency)}" width="800">'
        f"<figcaption>{esc(c.coin_id)} / {esc(c.vs_currency)} ({esc(c.reason)})</figcaption></figure>"
        for c in charts
    )


_TABLE_HEAD = (
    "<tr><th>coin</th><th>vs</th><th>metric</th><th>value</th><th>threshold</th><th>window</th><th>z</th></tr>"
)


def day_index_html(title: str, charts: list[ChartSpec], hours: list[tuple[str, list[dict[str, Any]]]]) -> bytes:
    """The daily layout's report page: each hour's anomalies (``hours``: heading and anomalies, in hour order)."""
    esc = html.escape
    tables = [
        f'<table border="1" cellpadding="3">\n{_TABLE_HEAD}\n{_anomaly_rows(anomalies)}\n</table>' if anomalies else ""
        for _, anomalies in hours
    ]
    sections = "\n".join(
        f'<h3 id="hour-{i:02d}">{esc(label)}: {len(anomalies)} anomalies</h3>\n{table}'
        for i, ((label, anomalies), table) in enumerate(zip(hours, tables, strict=True))
    )
    total = sum(len(anomalies) for _, anomalies in hours)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title></head>
<body>
<h1>{esc(title)}</h1>
<h2>Anomalies by hour ({total})</h2>
{sections}
<h2>Charts ({len(charts)})</h2>
{_figures(charts)}
</body></html>
"""
    return page.encode()


def index_html(title: str, charts: list[ChartSpec], anomalies: list[dict[str, Any]]) -> bytes:
    esc = html.escape
    rows = _anomaly_rows(anomalies)
    figures = _figures(charts)
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
        title = f"{chart.coin_id} / {chart.vs_currency} at {snapshot:%Y-%m-%dT%H:%M:%SZ}"
        yield chart, render_chart(grid, index[key], params, alerts, title, snapshot_anomaly=key in flagged)

"""The transform stage: lookback history → indicators at the snapshot → anomalies, alerts record, chart report.

Reads:  validated/market_snapshots/P/… (the lookback window, see history.py), quality/P/report.json (optional).
Writes: analytics/indicators/P/indicators.parquet, alerts/P/alerts.json, reports/P/index.html + charts/*.png,
        and validated/market_snapshots_daily/date=…/ compactions of complete past days it had to read hour by hour.
"""

from __future__ import annotations

from cryptopipe.core.layout import alerts_key, indicators_key, quality_report_key, report_prefix
from cryptopipe.core.stage import StageContext
from cryptopipe.transform.anomalies import alerts_document, detect_anomalies, iso_z, quality_summary
from cryptopipe.transform.charts import choose_charts, index_html, render_chart
from cryptopipe.transform.history import HOURS_PER_DAY, load_history
from cryptopipe.transform.indicators import Params, build_grid, indicators_table
from cryptopipe.transform.schema import INDICATORS_SCHEMA


def run(ctx: StageContext) -> None:
    settings, interval = ctx.settings, ctx.interval
    lookback = settings.transform.lookback_days
    history = load_history(ctx, lookback)
    params = Params(zscore_window=settings.alerts.zscore_window_hours)

    grid = build_grid(history.table, interval.snapshot_time, lookback * HOURS_PER_DAY)
    table = indicators_table(grid, history.current, params)
    ctx.write_table(indicators_key(interval), table, INDICATORS_SCHEMA)

    anomalies = detect_anomalies(table, history.current, settings.alerts)
    report_key = quality_report_key(interval)
    quality = quality_summary(ctx.get(report_key) if ctx.store.exists(report_key) else None)

    prefix = report_prefix(interval)
    title = f"Crypto market report {iso_z(interval.start)} → {iso_z(interval.end)}"
    charts = choose_charts(table.to_pylist(), anomalies, settings.quote_currencies[0], settings.transform.chart_top_n)
    index = grid.series_index()
    flagged = {(a["coin_id"], a["vs_currency"]) for a in anomalies}
    for chart in charts:
        key = (chart.coin_id, chart.vs_currency)
        chart_title = f"{chart.coin_id} / {chart.vs_currency} — {iso_z(interval.end)}"
        png = render_chart(grid, index[key], params, settings.alerts, chart_title, snapshot_anomaly=key in flagged)
        ctx.put(prefix + chart.filename, png, "image/png")
    ctx.put(prefix + "index.html", index_html(title, charts, anomalies), "text/html; charset=utf-8")
    report_uri = ctx.store.url(prefix + "index.html")
    ctx.put_json(alerts_key(interval), alerts_document(interval, anomalies, quality, report_uri))

    ctx.result.metrics.update(
        {
            "rows": table.num_rows,
            "coins": len(set(table.column("coin_id").to_pylist())),
            "anomalies": len(anomalies),
            "charts": len(charts),
            "rows_read": history.rows_read,
            "objects_read": history.objects_read,
            "compactions_written": len(history.compactions_written),
            "report_uri": report_uri,
        }
    )
    ctx.log.info(
        "transform done",
        extra={"rows": table.num_rows, "anomalies": len(anomalies), "rows_read": history.rows_read},
    )

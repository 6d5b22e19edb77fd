"""The lookback loader on a real S3 server (SeaweedFS): per-day listing, compaction writes, flat reruns."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from cryptopipe.core.config import load_settings
from cryptopipe.core.layout import HOUR, Interval, alerts_key, indicators_key, validated_daily_key
from cryptopipe.core.storage import S3Store
from cryptopipe.transform.history import PROJECTION_FILE
from cryptopipe.transform.stage import run
from tests.support.s3_server import S3Server
from tests.unit.transform.builders import make_ctx, random_walks, series_table, write_hours

INTERVAL = Interval.starting(datetime(2026, 3, 1, 2, tzinfo=UTC))
LOOKBACK = 8


def test_transform_on_s3(s3_server: S3Server, clean_env: pytest.MonkeyPatch) -> None:
    bucket = s3_server.new_bucket()
    for key, value in s3_server.env(bucket, "lake").items():
        clean_env.setenv(key, value)
    clean_env.setenv("CRYPTOPIPE_TRANSFORM__LOOKBACK_DAYS", str(LOOKBACK))
    clean_env.setenv("CRYPTOPIPE_TRANSFORM__CHART_TOP_N", "1")
    settings = load_settings()
    store = S3Store(bucket, "lake", endpoint_url=s3_server.endpoint)
    hours = LOOKBACK * 24 + INTERVAL.start.hour + 1
    write_hours(store, series_table(random_walks(["a", "b"], hours), INTERVAL.end - (hours - 1) * HOUR))

    first = make_ctx(store, settings, INTERVAL)
    run(first)
    past_days = LOOKBACK  # the window starts at 03:00 eight days back: 8 past days, 3 hours today
    assert first.result.metrics["compactions_written"] == past_days
    assert store.exists(validated_daily_key(INTERVAL.start.date().replace(day=28, month=2)))

    second = make_ctx(store, settings, INTERVAL)
    run(second)
    assert second.result.metrics["objects_read"] == past_days + INTERVAL.start.hour + 1
    assert second.result.metrics["rows_read"] == first.result.metrics["rows_read"]
    assert second.result.metrics["projections_written"] == past_days  # S3 vouches for a version (ETag) at once
    indicators = store.get(indicators_key(INTERVAL))  # written and readable back

    third = make_ctx(store, settings, INTERVAL)  # the past days through their projections, same bytes out
    run(third)
    assert sum(ref.key.endswith(PROJECTION_FILE) for ref in third.result.inputs) == past_days
    assert third.result.metrics["projections_written"] == 0
    assert store.get(indicators_key(INTERVAL)) == indicators
    alerts = json.loads(store.get(alerts_key(INTERVAL)))
    assert alerts["report_uri"] == f"s3://{bucket}/lake/reports/{INTERVAL.partition}/index.html"

"""pipeline_alerts: reading the interval's alerts object, the message, posting through the Slack provider."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from pipeline_alerts import (
    MAX_LISTED_ANOMALIES,
    alerts_key,
    failure_message,
    format_alert_message,
    make_failure_notifier,
    post_to_slack,
    read_alerts,
)

from tests.support.slack_receiver import SlackReceiver

START = datetime(2026, 11, 22, 13, tzinfo=UTC)


def alerts_doc(anomalies: int = 2, warnings: int = 1) -> dict[str, Any]:
    return {
        "interval_start": "2026-11-22T13:00:00+00:00",
        "interval_end": "2026-11-22T14:00:00+00:00",
        "anomalies": [
            {
                "coin_id": f"coin-{i}",
                "metric": "change_1h_pct",
                "value": -6.25 - i,
                "threshold": 5.0,
                "window": "1h",
                "z": -4.31,
            }
            for i in range(anomalies)
        ],
        "quality": {"score": 0.975, "warnings": warnings, "quarantined_rows": warnings},
        "report_uri": "s3://bucket/reports/date=2026-11-22/hour=13/index.html",
    }


def write_alerts(root: Path, doc: dict[str, Any]) -> None:
    path = root / alerts_key(START)
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(doc))


def test_alerts_key_is_partitioned_by_interval_start() -> None:
    assert alerts_key(START) == "alerts/date=2026-11-22/hour=13/alerts.json"


def test_read_alerts_from_absolute_and_relative_file_uris(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_alerts(tmp_path / "data", alerts_doc())
    assert read_alerts(f"file://{tmp_path / 'data'}", START)["quality"]["warnings"] == 1
    monkeypatch.chdir(tmp_path)
    assert len(read_alerts("file://./data", START)["anomalies"]) == 2


def test_missing_or_bad_alerts_object_names_the_object(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"alerts/date=2026-11-22/hour=13/alerts\.json"):
        read_alerts(f"file://{tmp_path}", START)
    (tmp_path / alerts_key(START)).parent.mkdir(parents=True)
    (tmp_path / alerts_key(START)).write_text("{not json")
    with pytest.raises(ValueError, match="is not valid JSON"):
        read_alerts(f"file://{tmp_path}", START)
    with pytest.raises(ValueError, match="scheme must be file:// or s3://"):
        read_alerts("gs://bucket", START)


def test_message_is_concise_and_complete() -> None:
    message = format_alert_message(alerts_doc(anomalies=MAX_LISTED_ANOMALIES + 3, warnings=2), "dag_x")
    assert message is not None
    lines = message.splitlines()
    assert lines[0].startswith(":rotating_light: *dag_x* 2026-11-22T13:00:00+00:00 → 2026-11-22T14:00:00+00:00")
    assert "13 anomalies, 2 quality warnings (score 0.975, 2 rows quarantined)" in lines[0]
    assert "• coin-0 change_1h_pct = -6.25 (threshold 5, window 1h, z -4.31)" in lines
    assert "… and 3 more" in lines
    assert lines[-1] == "Report: s3://bucket/reports/date=2026-11-22/hour=13/index.html"
    assert len(lines) == 1 + MAX_LISTED_ANOMALIES + 2


def test_anomaly_without_z_score_omits_it() -> None:
    doc = alerts_doc(anomalies=1)
    doc["anomalies"][0]["z"] = None
    message = format_alert_message(doc, "dag_x")
    assert message is not None
    assert "• coin-0 change_1h_pct = -6.25 (threshold 5, window 1h)" in message.splitlines()


def test_no_message_without_anomalies_or_warnings() -> None:
    assert format_alert_message(alerts_doc(anomalies=0, warnings=0), "dag_x") is None
    only_warnings = format_alert_message(alerts_doc(anomalies=0, warnings=1), "dag_x")
    assert only_warnings is not None and "0 anomalies, 1 quality warning " in only_warnings


class RecordingLog:
    def __init__(self) -> None:
        self.records: list[str] = []

    def _record(self, message: str, *args: Any, **_: Any) -> None:
        self.records.append(message % args)

    warning = info = exception = _record


def test_without_slack_connection_alerts_are_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline_alerts

    log = RecordingLog()
    monkeypatch.setattr(pipeline_alerts, "log", log)  # Airflow's logging setup varies with test order
    monkeypatch.delenv("AIRFLOW_CONN_SLACK_ALERTS", raising=False)
    assert post_to_slack("slack_alerts", "hello") is False
    [record] = log.records
    assert record.startswith("Slack alerts are disabled: no Airflow connection 'slack_alerts'")
    assert record.endswith("hello")


def test_posts_through_the_slack_webhook_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    with SlackReceiver() as slack:
        monkeypatch.setenv("AIRFLOW_CONN_SLACK_ALERTS", slack.connection_json())
        assert post_to_slack("slack_alerts", "hello *world*") is True
        assert slack.texts() == ["hello *world*"]


def failure_context() -> dict[str, Any]:
    ti = SimpleNamespace(
        dag_id="crypto_market_pipeline",
        task_id="archive",
        try_number=2,
        max_tries=3,
        log_url="http://airflow.example/dags/crypto_market_pipeline/runs/r1/tasks/archive?try_number=2",
    )
    return {
        "ti": ti,
        "exception": RuntimeError("stage 'archive' exited with code 6 (WAREHOUSE): down\nmore detail"),
        "data_interval_start": START,
        "data_interval_end": datetime(2026, 11, 22, 14, tzinfo=UTC),
    }


def test_failure_message_has_dag_task_interval_try_and_log_link() -> None:
    message = failure_message(failure_context())
    assert message.splitlines() == [
        ":x: *crypto_market_pipeline* task `archive` failed (try 2/4)",
        "Interval: 2026-11-22 13:00:00+00:00 → 2026-11-22 14:00:00+00:00",
        "Error: stage 'archive' exited with code 6 (WAREHOUSE): down",
        "Log: http://airflow.example/dags/crypto_market_pipeline/runs/r1/tasks/archive?try_number=2",
    ]


def test_failure_notifier_posts_and_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    with SlackReceiver() as slack:
        monkeypatch.setenv("AIRFLOW_CONN_SLACK_ALERTS", slack.connection_json())
        make_failure_notifier("slack_alerts")(failure_context())
        assert len(slack.texts()) == 1
    # The receiver is gone now: the notifier logs the error instead of raising over the task's own failure.
    import pipeline_alerts

    log = RecordingLog()
    monkeypatch.setattr(pipeline_alerts, "log", log)
    make_failure_notifier("slack_alerts")(failure_context())
    assert log.records == ["Could not send the failure notification to Slack"]


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.slack.com/services/T/B/x",
        "https://hooks.slack.com.evil.example/services/T/B/x",
        "https://evil.example/services/T/B/x",
        "https://user@hooks.slack.com/services/T/B/x",
        "https://hooks.slack.com:8443/services/T/B/x",
        "ftp://127.0.0.1/x",
    ],
)
def test_slack_connection_pointing_elsewhere_is_refused(url: str) -> None:
    from pipeline_alerts import check_webhook_url

    with pytest.raises(ValueError, match=r"only https://hooks\.slack\.com") as err:
        check_webhook_url("slack_alerts", url)
    assert "/services/T/B/x" not in str(err.value)  # the token path is never echoed


@pytest.mark.parametrize(
    "url", ["https://hooks.slack.com/services/T/B/x", "http://127.0.0.1:9000/hook", "http://[::1]:80/h"]
)
def test_slack_and_loopback_webhooks_are_allowed(url: str) -> None:
    from pipeline_alerts import check_webhook_url

    check_webhook_url("slack_alerts", url)

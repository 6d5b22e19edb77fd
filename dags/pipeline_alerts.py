"""Slack alerting for the pipeline DAG: the failure notifier and the interval's anomaly/quality message.

Imported by the DAG file at parse time: the Slack and Amazon providers (and boto3) are imported only when a
message is actually sent or an ``s3://`` object read.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

log = logging.getLogger(__name__)

MAX_LISTED_ANOMALIES = 10


def alerts_key(interval_start: datetime) -> str:
    """Storage key of an interval's alerts object, partitioned by the interval start (UTC)."""
    return f"alerts/date={interval_start:%Y-%m-%d}/hour={interval_start:%H}/alerts.json"


def read_alerts(storage_uri: str, interval_start: datetime, aws_conn_id: str = "aws_default") -> dict[str, Any]:
    """Read and decode the alerts object of an interval from ``file://PATH`` or ``s3://bucket/prefix``."""
    key = alerts_key(interval_start)
    parsed = urlparse(storage_uri)
    if parsed.scheme == "file":
        # file://./data is relative to the working directory, file:///abs/path absolute.
        root = Path(parsed.netloc + parsed.path) if parsed.netloc else Path(parsed.path)
        path = root / key
        if not path.is_file():
            raise FileNotFoundError(f"alerts object {path} does not exist (storage {storage_uri})")
        raw = path.read_text(encoding="utf-8")
        where = str(path)
    elif parsed.scheme == "s3":
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook  # boto3: only when S3 is used

        if not parsed.netloc:
            raise ValueError(f"PIPELINE_STORAGE_URI={storage_uri!r} has no bucket")
        full_key = "/".join(p for p in (parsed.path.strip("/"), key) if p)
        hook = S3Hook(aws_conn_id=aws_conn_id)
        if not hook.check_for_key(full_key, bucket_name=parsed.netloc):
            raise FileNotFoundError(f"alerts object s3://{parsed.netloc}/{full_key} does not exist")
        raw = hook.read_key(full_key, bucket_name=parsed.netloc)
        where = f"s3://{parsed.netloc}/{full_key}"
    else:
        raise ValueError(f"PIPELINE_STORAGE_URI={storage_uri!r}: scheme must be file:// or s3://")
    try:
        document = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"alerts object {where} is not valid JSON: {exc}") from exc
    if not isinstance(document, dict) or not isinstance(document.get("anomalies", []), list):
        raise ValueError(f"alerts object {where} is not an alerts record (object with an 'anomalies' list)")
    return document


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) and not isinstance(value, bool) else str(value)


def format_alert_message(alerts: dict[str, Any], dag_id: str) -> str | None:
    """One concise Slack message for an interval, or None when there is nothing to report."""
    anomalies: list[dict[str, Any]] = alerts.get("anomalies") or []
    quality: dict[str, Any] = alerts.get("quality") or {}
    warnings = int(quality.get("warnings") or 0)
    if not anomalies and warnings == 0:
        return None
    interval = f"{alerts.get('interval_start', '?')} → {alerts.get('interval_end', '?')}"
    lines = [
        f":rotating_light: *{dag_id}* {interval}: {len(anomalies)} anomal{'y' if len(anomalies) == 1 else 'ies'}, "
        f"{warnings} quality warning{'' if warnings == 1 else 's'}"
        + (
            f" (score {_number(quality['score'])}, {int(quality.get('quarantined_rows') or 0)} rows quarantined)"
            if "score" in quality
            else ""
        )
    ]
    for anomaly in anomalies[:MAX_LISTED_ANOMALIES]:
        details = [f"threshold {_number(anomaly.get('threshold'))}", f"window {anomaly.get('window', '?')}"]
        if anomaly.get("z") is not None:  # a move anomaly has no z-score
            details.append(f"z {_number(anomaly['z'])}")
        lines.append(
            f"• {anomaly.get('coin_id', '?')} {anomaly.get('metric', '?')} = {_number(anomaly.get('value'))} "
            f"({', '.join(details)})"
        )
    if len(anomalies) > MAX_LISTED_ANOMALIES:
        lines.append(f"… and {len(anomalies) - MAX_LISTED_ANOMALIES} more")
    if alerts.get("report_uri"):
        lines.append(f"Report: {alerts['report_uri']}")
    return "\n".join(lines)


def slack_connection_exists(conn_id: str) -> bool:
    from airflow.sdk import BaseHook
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        return False
    return True


SLACK_WEBHOOK_HOSTS = frozenset({"hooks.slack.com"})


def check_webhook_url(conn_id: str, url: str) -> None:
    """Alerts carry market data and log links: post them to Slack over https only (or a loopback test receiver).

    A mistyped or malicious connection must not turn the alert task into a way to send data elsewhere.
    """
    import ipaddress
    from urllib.parse import urlsplit

    parts = urlsplit(url.strip())
    host = (parts.hostname or "").lower()
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if loopback and parts.scheme in {"http", "https"}:
        return
    if parts.scheme != "https" or host not in SLACK_WEBHOOK_HOSTS or parts.username or parts.port not in {None, 443}:
        raise ValueError(
            f"Airflow connection {conn_id!r} points Slack alerts at {parts.scheme}://{host or '?'}: "
            f"only https://{'/'.join(sorted(SLACK_WEBHOOK_HOSTS))} (or a loopback test receiver) is allowed"
        )


def post_to_slack(conn_id: str, text: str) -> bool:
    """Post ``text`` through the Slack webhook connection; False (logged) when the connection is absent."""
    if not slack_connection_exists(conn_id):
        log.warning("Slack alerts are disabled: no Airflow connection %r; message was:\n%s", conn_id, text)
        return False
    from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

    hook = SlackWebhookHook(slack_webhook_conn_id=conn_id)
    check_webhook_url(conn_id, hook._get_conn_params()["url"])  # the URL the hook is about to post to
    response = hook.send_text(text)
    log.info("Posted to Slack connection %r (HTTP %s)", conn_id, getattr(response, "status_code", "?"))
    return True


def failure_message(context: Any) -> str:
    ti = context["ti"]
    exception = context.get("exception")
    first_line = str(exception).strip().splitlines()[0] if exception else "unknown error"
    max_tries = getattr(ti, "max_tries", None)
    tries = f"{ti.try_number}/{max_tries + 1}" if isinstance(max_tries, int) else f"{ti.try_number}"
    return (
        f":x: *{ti.dag_id}* task `{ti.task_id}` failed (try {tries})\n"
        f"Interval: {context.get('data_interval_start')} → {context.get('data_interval_end')}\n"
        f"Error: {first_line[:300]}\n"
        f"Log: {ti.log_url}"
    )


def make_failure_notifier(slack_conn_id: str) -> Callable[[Any], None]:
    """The task failure callback: posts DAG, task, interval, try and log link; never raises."""

    def notify_task_failure(context: Any) -> None:
        try:
            post_to_slack(slack_conn_id, failure_message(context))
        except Exception:  # a broken notifier must not hide the task's own failure
            log.exception("Could not send the failure notification to Slack")

    return notify_task_failure

"""
### crypto_market_pipeline

Hourly CoinGecko market pipeline. Each run processes one data interval `[start, end)`:

`ingest` → `validate` → `transform` → `archive`, and `notify_anomalies` after `transform`.

Each stage runs `cryptopipe <stage> --interval-start <start> --interval-end <end>` in its own pod
(`PIPELINE_RUNTIME=kubernetes`, image `<PIPELINE_IMAGE_REGISTRY>/cryptopipe-<stage>:<PIPELINE_IMAGE_TAG>`
in namespace `PIPELINE_TASK_NAMESPACE`) or as a local process (`PIPELINE_RUNTIME=local`). Stages hand data
over through the interval's storage keys only, so any task can be cleared and rerun alone.

Follow a pod: `kubectl get pods -n crypto-tasks -l dag_id=crypto_market_pipeline,task_id=<stage>`.
Backfill: `airflow backfill create --dag-id crypto_market_pipeline --from-date ... --to-date ...`
(ingest runs in the `coingecko_api` pool, so a backfill cannot exceed the API rate limit).
See docs/dag.md.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime, timedelta
from typing import Any

# Named here so the dag-processor pre-imports the provider once (parsing_pre_import_modules) instead of in
# every parse; stage_launch builds the operators.
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator  # noqa: F401

# The public names of `airflow.sdk`, imported from the modules that define them: `airflow.sdk` resolves them
# lazily on first access, which costs ~80 ms in every parse subprocess, whereas the dag-processor pre-imports the
# modules named here once in its parent (parsing_pre_import_modules). tests/dags asserts they are the same objects.
from airflow.sdk.definitions.dag import DAG
from airflow.sdk.definitions.decorators import task
from airflow.sdk.definitions.timetables.interval import CronDataIntervalTimetable
from pipeline_alerts import format_alert_message, make_failure_notifier, post_to_slack, read_alerts
from stage_launch import STAGES, DeploymentSettings, stage_task

log = logging.getLogger(__name__)

DAG_ID = "crypto_market_pipeline"
SETTINGS = DeploymentSettings.from_env()
notify_task_failure = make_failure_notifier(SETTINGS.slack_conn_id)

default_args: dict[str, Any] = {
    "owner": "data-platform",
    "retries": 3,
    "retry_delay": timedelta(minutes=1),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=15),
    "execution_timeout": timedelta(minutes=30),
    "on_failure_callback": notify_task_failure,
}

with DAG(
    dag_id=DAG_ID,
    description="CoinGecko market data: ingest, validate, transform, archive (one pod per stage)",
    # A data-interval timetable: runs at HH:00 for [HH-1:00, HH:00); `@hourly` in Airflow 3 would be a
    # trigger timetable whose interval is empty.
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=datetime.fromisoformat(os.environ.get("PIPELINE_START_DATE", "2026-01-01T00:00:00+00:00")),
    # Off by default: a fresh deployment runs the latest interval; history is loaded with `airflow backfill`.
    catchup=os.environ.get("PIPELINE_CATCHUP", "false").strip().lower() in {"1", "true", "yes"},
    max_active_runs=3,
    max_active_tasks=8,
    dagrun_timeout=timedelta(hours=3),
    default_args=default_args,
    tags=["crypto", "coingecko", "kubernetes", SETTINGS.runtime],
    doc_md=__doc__,
) as dag:
    stages = {stage: stage_task(stage, settings=SETTINGS) for stage in STAGES}

    @task(task_id="notify_anomalies", retries=2, execution_timeout=timedelta(minutes=5))
    def notify_anomalies(data_interval_start: datetime | None = None) -> int:
        """Post one Slack message when the interval has anomalies or quality warnings."""
        if data_interval_start is None:
            raise ValueError("notify_anomalies needs the run's data_interval_start")
        alerts = read_alerts(SETTINGS.storage_uri, data_interval_start.astimezone(UTC), SETTINGS.aws_conn_id)
        message = format_alert_message(alerts, DAG_ID)
        if message is None:
            log.info("No anomalies and no quality warnings for %s: nothing to post", data_interval_start)
            return 0
        post_to_slack(SETTINGS.slack_conn_id, message)
        return len(alerts.get("anomalies") or [])

    stages["ingest"] >> stages["validate"] >> stages["transform"] >> stages["archive"]
    stages["transform"] >> notify_anomalies()

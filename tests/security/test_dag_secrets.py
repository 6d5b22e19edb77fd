"""The Airflow side: a failing stage's task log and the DAG's Slack failure notification carry no secret.

The real DAG (local runtime: ``LocalStageOperator`` runs the real ``cryptopipe ingest`` as a subprocess, as
``make airflow`` does) with planted secrets in the component's environment, the API key rejected by the replay
server. What the operator logs (every stage line goes into the Airflow task log), the exception it raises, and
the message the DAG's own ``on_failure_callback`` posts to a Slack receiver are searched for the planted values.
"""

from __future__ import annotations

import json
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cryptopipe.replay.server import ReplayServer
from tests.support.slack_receiver import SlackReceiver

DAGS_TESTS = Path(__file__).resolve().parents[1] / "dags"
if str(DAGS_TESTS) not in sys.path:  # the DAG tests' helpers (they set AIRFLOW_HOME before Airflow loads)
    sys.path.insert(0, str(DAGS_TESTS))

import dagtest_support  # noqa: E402


class RecordingLog:
    """Stands in for a logger: keeps every formatted message (Airflow's log capture varies with test order)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def _record(self, message: str, *args: Any, **_: Any) -> None:
        self.lines.append(str(message) % args if args else str(message))

    debug = info = warning = error = exception = _record


@pytest.fixture
def planted(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    key, wrong = f"cg-key-{secrets.token_hex(10)}", f"cg-wrong-{secrets.token_hex(10)}"
    slack_token, password = f"slacktoken-{secrets.token_hex(10)}", f"dbpass-{secrets.token_hex(10)}"
    values = {
        "rejected api key": wrong,
        "server api key": key,
        "slack webhook token": slack_token,
        "warehouse password": password,
    }
    with ReplayServer(clock="2024-06-01T03:00:00Z", require_key=("demo", key)) as replay:
        for name in [*dagtest_support.PIPELINE_ENV_VARS, "CRYPTOPIPE_CONFIG", "CRYPTOPIPE_REPLAY_API_KEY"]:
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("PIPELINE_RUNTIME", "local")
        monkeypatch.setenv(
            "AIRFLOW_CONN_KUBERNETES_DEFAULT",
            json.dumps(
                {
                    "conn_type": "kubernetes",
                    "extra": {"kube_config": json.dumps(dagtest_support.UNREACHABLE_KUBECONFIG)},
                }
            ),
        )
        env = {
            "CRYPTOPIPE_API__PLAN": "demo",
            "CRYPTOPIPE_API__KEY": wrong,
            "CRYPTOPIPE_API__BASE_URL": replay.url,
            "CRYPTOPIPE_API__RATE_LIMIT_PER_MINUTE": "1000",
            "CRYPTOPIPE_COINS__TOP_N": "20",
            "CRYPTOPIPE_ALERTS__SLACK_WEBHOOK_URL": f"http://127.0.0.1:9/services/T0/B0/{slack_token}",
            "CRYPTOPIPE_WAREHOUSE__URL": f"postgresql+psycopg://wh:{password}@127.0.0.1:9/wh",
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        yield values


def test_failed_stage_task_log_and_slack_notification_carry_no_secret(
    planted: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CRYPTOPIPE_STORAGE__URI", f"file://{tmp_path / 'data'}")
    import pipeline_alerts
    import stage_launch
    from airflow.sdk.exceptions import AirflowException

    task_log, alerts_log = RecordingLog(), RecordingLog()
    monkeypatch.setattr(stage_launch.LocalStageOperator, "log", property(lambda _self: task_log))
    monkeypatch.setattr(pipeline_alerts, "log", alerts_log)
    bag = dagtest_support.parse_dag_folder()
    assert bag.import_errors == {}, bag.import_errors
    dag = bag.dags[dagtest_support.DAG_ID]
    task = dag.get_task("ingest")
    assert isinstance(task, stage_launch.LocalStageOperator)
    context = dagtest_support.render_context(dag, task)
    task.render_template_fields(context)

    with pytest.raises(AirflowException) as failure:
        task.execute(context)
    assert "code 7" in str(failure.value)  # the stage really ran and the source rejected the key
    assert any("rejected the API key" in line for line in task_log.lines)  # the stage's log reached the task log

    callbacks = task.on_failure_callback
    callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
    context["ti"].max_tries, context["ti"].log_url = 2, "http://airflow.local/log?try_number=1"
    context["exception"] = failure.value
    with SlackReceiver() as slack:
        monkeypatch.setenv("AIRFLOW_CONN_SLACK_ALERTS", slack.connection_json())
        for callback in callbacks:
            callback(context)
        texts = slack.texts()
    assert texts and "`ingest` failed" in texts[0]  # the DAG's notifier posted

    searched = {"task log": "\n".join(task_log.lines), "exception": str(failure.value), "slack": "\n".join(texts)}
    searched["alerts log"] = "\n".join(alerts_log.lines)
    leaks = [
        f"{what} in {where}" for where, text in searched.items() for what, value in planted.items() if value in text
    ]
    assert leaks == []

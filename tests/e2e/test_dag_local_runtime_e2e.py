"""The real DAG in the local runtime through `dag.test()`: real task runs, a fake `cryptopipe`.

What only a real task run shows: the stage's exit code decides retry or not (exit 3 fails at once, exit 5
retries), downstream tasks do not run, `notify_anomalies` reads the interval's alerts from `file://`
storage and posts one message, the failure notifier posts with the try number.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.airflow_env import AirflowTestEnv
from tests.support.slack_receiver import SlackReceiver

pytestmark = [pytest.mark.e2e]

REPO = Path(__file__).resolve().parents[2]
DAGS_DIR = REPO / "dags"
DAG_ID = "crypto_market_pipeline"
STAGES = ("ingest", "validate", "transform", "archive")

# Records each call; transform writes the interval's alerts object like the real stage does.
FAKE_CRYPTOPIPE = """#!{python}
import json, os, sys
from pathlib import Path
stage, args = sys.argv[1], sys.argv[2:]
root = Path(os.environ["CRYPTOPIPE_STORAGE__URI"].removeprefix("file://"))
with open(root / "calls.jsonl", "a") as fh:
    fh.write(json.dumps({{"stage": stage, "args": args}}) + "\\n")
start = args[args.index("--interval-start") + 1]
if stage == "transform":
    key = root / "alerts" / f"date={{start[:10]}}" / f"hour={{start[11:13]}}" / "alerts.json"
    key.parent.mkdir(parents=True, exist_ok=True)
    key.write_text(json.dumps({{
        "interval_start": start, "interval_end": args[args.index("--interval-end") + 1],
        "anomalies": [{{"coin_id": "bitcoin", "metric": "move_1h_pct", "value": 7.5, "threshold": 5.0,
                        "window": "1h", "z": None}}],
        "quality": {{"score": 1.0, "warnings": 0, "quarantined_rows": 0}},
        "report_uri": "file:///reports/index.html",
    }}))
print(json.dumps({{"level": "info", "stage": stage, "event": "fake stage done"}}))
sys.exit(int(os.environ.get("FAKE_EXIT_" + stage.upper(), "0")))
"""


@pytest.fixture
def local_pipeline(
    airflow_env: AirflowTestEnv, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> Iterator[tuple[Path, SlackReceiver]]:
    monkeypatch = clean_env  # no CRYPTOPIPE_*/PIPELINE_* from the shell
    cli = tmp_path / "cryptopipe"
    cli.write_text(FAKE_CRYPTOPIPE.format(python=sys.executable))
    cli.chmod(0o755)
    data = tmp_path / "data"
    data.mkdir()
    airflow_env.use_dags_folder(DAGS_DIR)
    monkeypatch.syspath_prepend(str(DAGS_DIR))
    monkeypatch.setenv("PIPELINE_RUNTIME", "local")
    monkeypatch.setenv("PIPELINE_CRYPTOPIPE_BIN", str(cli))
    monkeypatch.setenv("PIPELINE_STORAGE_URI", f"file://{data}")
    monkeypatch.setenv("CRYPTOPIPE_STORAGE__URI", f"file://{data}")
    from airflow.models.pool import Pool

    Pool.create_or_update_pool(name="coingecko_api", slots=1, description="e2e", include_deferred=False)
    slack = SlackReceiver().start()
    monkeypatch.setenv("AIRFLOW_CONN_SLACK_ALERTS", slack.connection_json())
    yield data, slack
    slack.stop()


def run_interval(airflow_env: AirflowTestEnv, start: datetime) -> tuple[dict[str, Any], Any]:
    dag = airflow_env.load_dag(DAGS_DIR / "crypto_market_pipeline.py", DAG_ID)
    for task in dag.tasks:
        task.retry_delay = timedelta(seconds=1)  # dag.test() really waits between tries
        task.max_retry_delay = timedelta(seconds=1)
    dag_run = dag.test(logical_date=start + timedelta(hours=1))
    assert dag_run.data_interval_start == start
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = {ti.task_id: ti for ti in dag_run.get_task_instances(session=session)}
        return {t: (str(ti.state), ti.try_number) for t, ti in tis.items()}, dag_run


def calls(data: Path) -> list[dict[str, Any]]:
    path = data / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_local_runtime_runs_every_stage_and_posts_the_alert(
    airflow_env: AirflowTestEnv, local_pipeline: tuple[Path, SlackReceiver]
) -> None:
    data, slack = local_pipeline
    start = datetime(2026, 11, 22, 13, tzinfo=UTC)
    states, _ = run_interval(airflow_env, start)
    assert states == {t: ("success", 1) for t in [*STAGES, "notify_anomalies"]}
    made = calls(data)
    assert [c["stage"] for c in made] == list(STAGES)
    assert all(
        c["args"] == ["--interval-start", "2026-11-22T13:00:00+00:00", "--interval-end", "2026-11-22T14:00:00+00:00"]
        for c in made
    )
    [message] = slack.texts()
    assert message.startswith(":rotating_light: *crypto_market_pipeline* 2026-11-22T13:00:00+00:00")
    assert "• bitcoin move_1h_pct = 7.5 (threshold 5, window 1h)" in message


@pytest.mark.parametrize(
    ("code", "expected_tries"),
    [(3, 1), (5, 4)],  # QUALITY_GATE fails at once; STORAGE is retried (retries=3)
)
def test_exit_code_decides_retry_in_a_real_task_run(
    airflow_env: AirflowTestEnv,
    local_pipeline: tuple[Path, SlackReceiver],
    monkeypatch: pytest.MonkeyPatch,
    code: int,
    expected_tries: int,
) -> None:
    data, slack = local_pipeline
    monkeypatch.setenv("FAKE_EXIT_VALIDATE", str(code))
    start = datetime(2026, 11, 22, 15 + code, tzinfo=UTC)
    states, _ = run_interval(airflow_env, start)
    assert states["ingest"] == ("success", 1)
    assert states["validate"] == ("failed", expected_tries)
    for task_id in ("transform", "archive", "notify_anomalies"):
        assert states[task_id][0] == "upstream_failed"
    assert [c["stage"] for c in calls(data)] == ["ingest"] + ["validate"] * expected_tries
    # One notification, after the last try.
    [message] = slack.texts()
    assert f"task `validate` failed (try {expected_tries}/4)" in message
    assert f"exited with code {code}" in message

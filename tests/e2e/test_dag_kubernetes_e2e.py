"""The real DAG, end to end: `dag.test()` with the real KubernetesPodOperator against the Kubernetes API double.

Everything is real except the cluster: the CoinGecko replay server, SeaweedFS S3, PostgreSQL as the warehouse,
a local Slack webhook receiver. The double "runs" each pod by starting the ENTRYPOINT of the stage's
Dockerfile (`cryptopipe <stage>`) with the pod's args and env (ConfigMap + Secret resolved like a kubelet).

One module-scoped pipeline, several intervals:
- 13:00 deferrable (the DAG as deployed): data in every layer, pods cleaned up, one Slack alert message;
- 13:00 again: a rerun changes no data object and no warehouse row;
- 14:00 with the operators in sync mode;
- 15:00 on a double whose validate image exits 3: validate fails without retry, downstream does not run,
  the failure is notified.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.airflow_env import AirflowTestEnv
from tests.support.k8s_double import DockerfileEntrypointMapping, KubeApiDouble
from tests.support.postgres import PostgresServer
from tests.support.s3_server import ACCESS_KEY, SECRET_KEY, S3Server
from tests.support.slack_receiver import SlackReceiver

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
DAGS_DIR = REPO / "dags"
DAG_ID = "crypto_market_pipeline"
NAMESPACE = "crypto-tasks"
STAGES = ("ingest", "validate", "transform", "archive")
FIRST = datetime(2026, 11, 22, 13, tzinfo=UTC)
# Data layers an interval must have after a successful run (docs/architecture.md, "Storage layout").
LAYERS = (
    "raw/coins_markets/",
    "staging/market_snapshots/",
    "validated/market_snapshots/",
    "quality/",
    "analytics/indicators/",
    "alerts/",
    "reports/",
    "manifests/",
    "archive/raw/coins_markets/",
)


def partition(start: datetime) -> str:
    return f"date={start:%Y-%m-%d}/hour={start:%H}"


@dataclass
class Pipeline:
    airflow: AirflowTestEnv
    s3: S3Server
    bucket: str
    warehouse_url: str
    replay: Any
    slack: SlackReceiver
    k8s: KubeApiDouble
    monkeypatch: pytest.MonkeyPatch
    stage_env: dict[str, str]

    def use_double(self, double: KubeApiDouble) -> None:
        double.add_configmap(NAMESPACE, "cryptopipe-config", self.stage_env)
        double.add_secret(
            NAMESPACE,
            "cryptopipe-secrets",
            {
                "CRYPTOPIPE_WAREHOUSE__URL": self.warehouse_url,
                "CRYPTOPIPE_ALERTS__SLACK_WEBHOOK_URL": self.slack.url,
                # IRSA / Pod Identity in EKS; static test credentials for SeaweedFS here.
                "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            },
        )
        self.monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", double.airflow_connection_json(NAMESPACE))
        self.k8s = double

    def load_dag(self, *, deferrable: bool = True) -> Any:
        dag = self.airflow.load_dag(DAGS_DIR / "crypto_market_pipeline.py", DAG_ID)
        for stage in STAGES:
            dag.get_task(stage).deferrable = deferrable
        for task in dag.tasks:
            # dag.test() really waits between tries: keep the retry count, shorten the wait.
            task.retry_delay = timedelta(seconds=1)
            task.max_retry_delay = timedelta(seconds=2)
        return dag

    def run(self, start: datetime, *, deferrable: bool = True) -> tuple[dict[str, str | None], float]:
        """Run the interval starting at ``start``; returns task states and wall seconds."""
        self.replay.set_clock(start + timedelta(hours=1, seconds=30))
        dag = self.load_dag(deferrable=deferrable)
        began = time.perf_counter()
        # A manual run at T covers the hourly interval that ends at T (the timetable's manual interval).
        dag_run = dag.test(logical_date=start + timedelta(hours=1))
        elapsed = time.perf_counter() - began
        assert dag_run.data_interval_start == start, (dag_run.data_interval_start, start)
        return self.airflow.task_states(dag_run), elapsed

    def objects(self, prefix: str = "") -> dict[str, str]:
        """{key: sha256} of every object under ``prefix`` in the bucket."""
        client = self.s3.client()
        found: dict[str, str] = {}
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                body = client.get_object(Bucket=self.bucket, Key=item["Key"])["Body"].read()
                found[item["Key"]] = hashlib.sha256(body).hexdigest()
        return found

    def manifest(self, start: datetime) -> dict[str, Any]:
        key = f"manifests/{partition(start)}/manifest.json"
        return json.loads(self.s3.client().get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def warehouse_rows(self) -> dict[str, list[tuple[Any, ...]]]:
        """Sorted rows of the warehouse's data tables (run-log tables reduced to what a rerun keeps)."""
        import sqlalchemy as sa

        engine = sa.create_engine(self.warehouse_url)
        try:
            with engine.connect() as conn:
                tables = sa.inspect(conn).get_table_names()
                rows = {
                    t: sorted(tuple(map(str, row)) for row in conn.execute(sa.text(f'SELECT * FROM "{t}"')))
                    for t in tables
                    if t not in {"alembic_version", "pipeline_runs"}
                }
        finally:
            engine.dispose()
        # pipeline_runs is the append-only log of stage executions (excluded); interval_manifests points at
        # the latest manifest (its checksum and load time change): one row per interval, updated in place.
        if "interval_manifests" in rows:
            rows["interval_manifests"] = [(f"{len(rows['interval_manifests'])} rows",)]
        return rows


@pytest.fixture(scope="module")
def pipeline(
    airflow_env: AirflowTestEnv,
    s3_server: S3Server,
    postgres_server: PostgresServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Pipeline]:
    from cryptopipe.replay.server import ReplayServer

    bucket = s3_server.new_bucket()
    warehouse_url = postgres_server.new_database()
    workdir = tmp_path_factory.mktemp("k8s-double")
    with (
        pytest.MonkeyPatch.context() as mp,
        ReplayServer(clock=FIRST + timedelta(hours=1)) as replay,
        SlackReceiver() as slack,
        KubeApiDouble(workdir=workdir, namespaces=("default", NAMESPACE)) as double,
    ):
        stage_env = {
            "CRYPTOPIPE_API__BASE_URL": replay.url,
            "CRYPTOPIPE_API__RATE_LIMIT_PER_MINUTE": "600",
            # A small market keeps the run short; low move thresholds make sure there are alerts to post.
            "CRYPTOPIPE_COINS__TOP_N": "10",
            "CRYPTOPIPE_TRANSFORM__LOOKBACK_DAYS": "8",
            "CRYPTOPIPE_TRANSFORM__CHART_TOP_N": "2",
            "CRYPTOPIPE_ALERTS__MOVE_1H_PCT": "0.01",
            "CRYPTOPIPE_ALERTS__MOVE_24H_PCT": "0.01",
            "CRYPTOPIPE_STORAGE__URI": f"s3://{bucket}",
            "CRYPTOPIPE_STORAGE__S3_ENDPOINT_URL": s3_server.endpoint,
            "CRYPTOPIPE_STORAGE__S3_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "GX_ANALYTICS_ENABLED": "false",
            "MPLBACKEND": "Agg",
        }
        airflow_env.use_dags_folder(DAGS_DIR)
        # Airflow puts the DAGs folder on sys.path: the DAG file imports its helper modules from there.
        mp.syspath_prepend(str(DAGS_DIR))
        for key in [k for k in os.environ if k.startswith(("PIPELINE_", "CRYPTOPIPE_"))]:
            mp.delenv(key)
        mp.setenv("PIPELINE_RUNTIME", "kubernetes")
        mp.setenv("PIPELINE_IMAGE_REGISTRY", "registry.e2e.test:5000")
        mp.setenv("PIPELINE_IMAGE_TAG", "e2e")
        mp.setenv("PIPELINE_STORAGE_URI", f"s3://{bucket}")
        mp.setenv("AIRFLOW_CONN_SLACK_ALERTS", slack.connection_json())
        mp.setenv(
            "AIRFLOW_CONN_AWS_DEFAULT",
            json.dumps(
                {
                    "conn_type": "aws",
                    "login": ACCESS_KEY,
                    "password": SECRET_KEY,
                    "extra": {
                        "endpoint_url": s3_server.endpoint,
                        "region_name": "us-east-1",
                        "config_kwargs": {"s3": {"addressing_style": "path"}},
                    },
                }
            ),
        )
        _create_pool()
        state = Pipeline(airflow_env, s3_server, bucket, warehouse_url, replay, slack, double, mp, stage_env)
        state.use_double(double)
        yield state


def lineage(manifest: dict[str, Any]) -> dict[str, Any]:
    """A manifest without its execution records (stage runs, durations, the pipeline_runs count)."""
    kept = {k: v for k, v in manifest.items() if k not in {"stages", "run_records"}}
    warehouse = dict(kept.get("warehouse") or {})
    warehouse["rows"] = {t: n for t, n in (warehouse.get("rows") or {}).items() if t != "pipeline_runs"}
    kept["warehouse"] = warehouse
    return kept


def _create_pool() -> None:
    from airflow.models.pool import Pool

    Pool.create_or_update_pool(name="coingecko_api", slots=1, description="CoinGecko API (e2e)", include_deferred=False)


def _report(capsys: pytest.CaptureFixture[str], message: str) -> None:
    with capsys.disabled():
        print(f"\n[e2e] {message}", file=sys.stderr)


@pytest.fixture(scope="module")
def first_run(pipeline: Pipeline) -> dict[str, Any]:
    states, elapsed = pipeline.run(FIRST, deferrable=True)
    return {
        "states": states,
        "elapsed": elapsed,
        "requests": pipeline.k8s.requests,
        "objects": pipeline.objects(),
        "manifest": pipeline.manifest(FIRST),
        "slack": pipeline.slack.texts(),
        "pods": pipeline.k8s.all_pods_ever(),
    }


def test_full_interval_deferrable(
    pipeline: Pipeline, first_run: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    _report(capsys, f"one full interval (5 tasks, deferrable KPO): {first_run['elapsed']:.1f} s wall time")
    assert first_run["states"] == dict.fromkeys([*STAGES, "notify_anomalies"], "success")

    # Data in every layer of the interval.
    keys = first_run["objects"]
    part = partition(FIRST)
    for layer in LAYERS:
        assert any(k.startswith(layer) and part in k for k in keys), f"no {layer} object for {part}: {sorted(keys)}"
    rows = pipeline.warehouse_rows()
    assert rows and all(rows.values()), f"empty warehouse tables: {[t for t, r in rows.items() if not r]}"

    # One pod per stage, from the stage's own image, each deleted after it finished.
    pods = first_run["pods"]
    assert len(pods) == len(STAGES)
    deleted = {p["metadata"]["name"]: p for p in pipeline.k8s.deleted_pods}
    for stage in STAGES:
        [name] = [p for p in pods if p.startswith(f"cryptopipe-{stage}-")]
        pod = deleted[name]
        assert pod["spec"]["containers"][0]["image"] == f"registry.e2e.test:5000/cryptopipe-{stage}:e2e"
        labels = pod["metadata"]["labels"]
        assert labels["dag_id"] == DAG_ID
        assert labels["task_id"] == stage
        assert labels["app.kubernetes.io/component"] == stage
        assert pod["status"]["phase"] == "Succeeded"
        assert '"stage": "' + stage + '"' in pipeline.k8s.pod_logs(name, NAMESPACE)
    # Deferrable: the trigger waited for the pods; the task read each log once on re-entry (no timestamps),
    # where the sync path streams it with timestamps while it waits.
    log_reads = [r for r in first_run["requests"] if r.path.endswith("/log")]
    assert len(log_reads) >= len(STAGES)
    assert {r.param("timestamps") for r in log_reads} == {"False"}
    # No XCom sidecar: nothing was ever exec'd.
    assert not [r for r in first_run["requests"] if "/exec" in r.path]

    # Exactly one concise alert message for the interval.
    alerts = [t for t in first_run["slack"] if t.startswith(":rotating_light:")]
    assert len(alerts) == 1, first_run["slack"]
    assert DAG_ID in alerts[0]
    assert "anomal" in alerts[0]
    assert not [t for t in first_run["slack"] if t.startswith(":x:")]


def test_rerun_of_the_interval_changes_nothing(pipeline: Pipeline, first_run: dict[str, Any]) -> None:
    assert first_run["states"]["archive"] == "success"
    before_rows = pipeline.warehouse_rows()
    pipeline.slack.clear()
    states, _ = pipeline.run(FIRST, deferrable=True)
    assert states == dict.fromkeys([*STAGES, "notify_anomalies"], "success")
    after = pipeline.objects()
    # runs/ is the per-execution log of each stage (timestamps, durations), and the lineage manifest embeds
    # those run records: every other object is data and must keep its bytes.
    run_records = ("runs/", "manifests/")
    data_before = {k: v for k, v in first_run["objects"].items() if not k.startswith(run_records)}
    data_after = {k: v for k, v in after.items() if not k.startswith(run_records)}
    assert data_after == data_before
    assert after.keys() == first_run["objects"].keys()
    # The manifest's lineage (objects, checksums, archive copies, warehouse data rows) is unchanged.
    assert lineage(pipeline.manifest(FIRST)) == lineage(first_run["manifest"])
    assert pipeline.warehouse_rows() == before_rows


def test_interval_in_sync_mode(pipeline: Pipeline) -> None:
    pipeline.k8s.clear_requests()
    start = FIRST + timedelta(hours=1)
    states, _ = pipeline.run(start, deferrable=False)
    assert states == dict.fromkeys([*STAGES, "notify_anomalies"], "success")
    requests = pipeline.k8s.requests
    # Sync mode streams each log with follow and timestamps while the pod runs; it never opens a watch.
    log_reads = [r for r in requests if r.path.endswith("/log")]
    assert log_reads and all(r.param("follow") == "True" for r in log_reads)
    assert {r.param("timestamps") for r in log_reads} == {"True"}
    assert not any(r.param("watch") == "True" for r in requests)
    assert any(partition(start) in k for k in pipeline.objects("manifests/"))


def test_failing_stage_fails_its_task_stops_downstream_and_notifies(pipeline: Pipeline, tmp_path: Path) -> None:
    real = DockerfileEntrypointMapping()
    quality_gate = [sys.executable, "-c", "import sys; print('critical expectation failed'); sys.exit(3)"]

    def mapping(image: str) -> list[str] | None:
        return quality_gate if "/cryptopipe-validate:" in image else real(image)

    start = FIRST + timedelta(hours=2)
    with KubeApiDouble(image_mapping=mapping, workdir=tmp_path, namespaces=("default", NAMESPACE)) as double:
        pipeline.use_double(double)
        pipeline.slack.clear()
        states, _ = pipeline.run(start, deferrable=True)
        validate_pods = [p for p in double.all_pods_ever() if p.startswith("cryptopipe-validate-")]
    assert states == {
        "ingest": "success",
        "validate": "failed",
        "transform": "upstream_failed",
        "archive": "upstream_failed",
        "notify_anomalies": "upstream_failed",
    }
    # Exit 3 (quality gate) is not retried: one pod, one try.
    assert len(validate_pods) == 1
    [message] = pipeline.slack.texts()
    assert message.startswith(":x:")
    assert "`validate` failed (try 1/4)" in message
    assert "exited with code 3 (QUALITY_GATE)" in message
    assert start.strftime("%Y-%m-%d") in message
    assert f"/dags/{DAG_ID}/runs/" in message and "/tasks/validate" in message
    assert not any(partition(start) in k for k in pipeline.objects("validated/"))

"""The fault-matrix harness: the real DAG through ``dag.test()`` with the real KubernetesPodOperator against the
Kubernetes API double, the replay server, SeaweedFS S3 (optionally behind a cutting proxy), PostgreSQL and a
Slack receiver; and the comparison of an interval's data with a clean reference run of the same interval.

Every scenario uses the same interval, the same bucket name (emptied first; the storage URI is part of the
alerts object) and a fresh warehouse database, so a scenario's data can be compared byte for byte with the
reference run's.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.support.airflow_env import AirflowTestEnv
from tests.support.k8s_double import DockerfileEntrypointMapping, KubeApiDouble
from tests.support.postgres import PostgresServer
from tests.support.s3_server import ACCESS_KEY, SECRET_KEY, S3Server
from tests.support.slack_receiver import SlackReceiver

from .s3_proxy import S3CuttingProxy

REPO = Path(__file__).resolve().parents[2]
DAGS_DIR = REPO / "dags"
DAG_ID = "crypto_market_pipeline"
NAMESPACE = "crypto-tasks"
STAGES = ("ingest", "validate", "transform", "archive")
TASKS = (*STAGES, "notify_anomalies")
START = datetime(2026, 11, 20, 9, tzinfo=UTC)
END = START + timedelta(hours=1)
PARTITION = f"date={START:%Y-%m-%d}/hour={START:%H}"
ALL_SUCCESS = dict.fromkeys(TASKS, "success")
# The interval's data objects that must be byte-identical to a clean run. Not compared: raw sidecars and the
# raw marker (fetch time, headers), run records and the manifest (timings of each execution), the report and
# charts (presentation).
DATA_LAYERS = {
    "raw": f"raw/coins_markets/{PARTITION}/",
    "staging": f"staging/market_snapshots/{PARTITION}/",
    "validated": f"validated/market_snapshots/{PARTITION}/",
    "quarantine": f"quarantine/market_snapshots/{PARTITION}/",
    "quality": f"quality/{PARTITION}/report.json",
    "indicators": f"analytics/indicators/{PARTITION}/",
    "alerts": f"alerts/{PARTITION}/",
    "archive": f"archive/raw/coins_markets/{PARTITION}/",
}
# Which stage writes each layer (for "nothing downstream of the failed stage exists").
LAYER_STAGE = {
    "raw": "ingest",
    "staging": "ingest",
    "validated": "validate",
    "quarantine": "validate",
    "quality": "validate",
    "indicators": "transform",
    "alerts": "transform",
    "archive": "archive",
}
KEYED_PARQUET = ("staging", "validated", "indicators")
ROW_KEY = ("coin_id", "vs_currency", "snapshot_time")
WAREHOUSE_TABLES = {
    "market_snapshots": ROW_KEY,
    "indicators": ROW_KEY,
    "anomalies": ("interval_start", "coin_id", "vs_currency", "metric"),
}
EXIT_NAMES = {
    2: "CONFIG",
    3: "QUALITY_GATE",
    4: "SOURCE_UNAVAILABLE",
    5: "STORAGE",
    6: "WAREHOUSE",
    7: "SOURCE_INVALID",
    8: "MISSING_INPUT",
    9: "CONFLICT",
}


def exit_message(stage: str, code: int) -> str:
    """The first line the DAG logs (and the notifier posts) for a stage that exited with ``code``."""
    name = EXIT_NAMES.get(code, "UNKNOWN")
    return f"stage '{stage}' exited with code {code} ({name})"


def _is_data_key(layer: str, key: str) -> bool:
    if layer in ("raw", "archive"):
        return key.endswith(".json.gz")  # page bodies; sidecars and the marker carry fetch times
    return True


@dataclass
class Snapshot:
    """An interval's data: object digests per layer, row keys of keyed tables, warehouse rows."""

    objects: dict[str, dict[str, str]]
    parquet_keys: dict[str, list[tuple[Any, ...]]]
    warehouse: dict[str, list[tuple[str, ...]]]

    def layer_present(self, layer: str) -> bool:
        return bool(self.objects.get(layer))


@dataclass
class RunResult:
    states: dict[str, str | None]
    log: str
    slack: list[str]
    pods: list[str]
    seconds: float

    @property
    def failures(self) -> list[str]:
        return [t for t in self.slack if t.startswith(":x:")]


@dataclass
class Harness:
    airflow: AirflowTestEnv
    s3: S3Server
    pg: PostgresServer
    replay: Any
    slack: SlackReceiver
    proxy: S3CuttingProxy
    bucket: str
    workdir: Path
    monkeypatch: pytest.MonkeyPatch
    warehouse_url: str = ""
    k8s: KubeApiDouble | None = None
    _doubles: list[KubeApiDouble] = field(default_factory=list)

    # -- environment ---------------------------------------------------------------------------------

    def stage_env(self, via_proxy: bool = False, **overrides: str) -> dict[str, str]:
        env = {
            "CRYPTOPIPE_API__BASE_URL": self.replay.url,
            "CRYPTOPIPE_API__RATE_LIMIT_PER_MINUTE": "1000",
            "CRYPTOPIPE_API__TIMEOUT_SECONDS": "2",
            "CRYPTOPIPE_API__RETRY__MAX_ATTEMPTS": "6",
            "CRYPTOPIPE_API__RETRY__BACKOFF_SECONDS": "0.05",
            "CRYPTOPIPE_API__RETRY__BACKOFF_MAX_SECONDS": "1",
            "CRYPTOPIPE_API__RETRY__TOTAL_TIMEOUT_SECONDS": "20",
            "CRYPTOPIPE_COINS__TOP_N": "20",
            "CRYPTOPIPE_QUOTE_CURRENCIES": "usd",
            "CRYPTOPIPE_TRANSFORM__LOOKBACK_DAYS": "8",
            "CRYPTOPIPE_TRANSFORM__CHART_TOP_N": "1",
            # Low move thresholds: the interval has anomalies, so alerts and the anomalies table have rows.
            "CRYPTOPIPE_ALERTS__MOVE_1H_PCT": "0.01",
            "CRYPTOPIPE_ALERTS__MOVE_24H_PCT": "0.01",
            "CRYPTOPIPE_STORAGE__URI": f"s3://{self.bucket}",
            "CRYPTOPIPE_STORAGE__S3_ENDPOINT_URL": self.proxy.url if via_proxy else self.s3.endpoint,
            "CRYPTOPIPE_STORAGE__S3_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
            "GX_ANALYTICS_ENABLED": "false",
            "MPLBACKEND": "Agg",
        }
        env.update(overrides)
        return env

    def secrets(self) -> dict[str, str]:
        return {
            "CRYPTOPIPE_WAREHOUSE__URL": self.warehouse_url,
            "CRYPTOPIPE_ALERTS__SLACK_WEBHOOK_URL": self.slack.url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        }

    def fresh(self, *, via_proxy: bool = False, image_mapping: Any = None, **env: str) -> KubeApiDouble:
        """A clean slate: empty bucket, new warehouse database, no faults, a new cluster double."""
        self.ensure_servers()
        self.empty_bucket()
        self.warehouse_url = self.pg.new_database()
        self.replay.set_faults(None)
        self.proxy.heal()
        self.slack.clear()
        double = KubeApiDouble(
            image_mapping=image_mapping,
            workdir=self.workdir / f"k8s-{len(self._doubles)}",
            namespaces=("default", NAMESPACE),
        ).start()
        self._doubles.append(double)
        self.use_double(double, via_proxy=via_proxy, **env)
        return double

    def use_double(self, double: KubeApiDouble, *, via_proxy: bool = False, **env: str) -> None:
        double.add_configmap(NAMESPACE, "cryptopipe-config", self.stage_env(via_proxy, **env))
        double.add_secret(NAMESPACE, "cryptopipe-secrets", self.secrets())
        self.monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", double.airflow_connection_json(NAMESPACE))
        self.k8s = double

    def reconfigure(self, *, via_proxy: bool = False, **env: str) -> None:
        """Push another ConfigMap to the current cluster (an operator changing the config)."""
        assert self.k8s is not None
        self.k8s.add_configmap(NAMESPACE, "cryptopipe-config", self.stage_env(via_proxy, **env))

    def ensure_servers(self) -> None:
        """A scenario that stopped S3 or PostgreSQL and failed half way must not break the next one."""
        if self.s3.proc is None or self.s3.proc.poll() is not None:
            self.s3.start()
        if not (self.pg.data_dir / "postmaster.pid").exists():
            self.pg.start()

    def stop_doubles(self) -> None:
        for double in self._doubles:
            double.stop()
        self._doubles.clear()

    # -- running the DAG -----------------------------------------------------------------------------

    def load_dag(
        self,
        *,
        deferrable: bool,
        retries: int,
        on_retry: dict[str, Callable[[Any], None]] | None = None,
        startup_timeout: int = 8,
    ) -> Any:
        dag = self.airflow.load_dag(DAGS_DIR / "crypto_market_pipeline.py", DAG_ID)
        for stage in STAGES:
            task = dag.get_task(stage)
            task.deferrable = deferrable
            task.poll_interval = 0.5
            # The DAG waits 900 s for a pod to be scheduled/started (node scale-up); the double starts a pod at
            # once, so a short bound shows the same behaviour without the wait.
            task.startup_timeout_seconds = startup_timeout
            task.schedule_timeout_seconds = startup_timeout
        for task in dag.tasks:
            # The DAG's retry policy (3 retries, 1..15 min) is not configurable from the environment; dag.test()
            # really waits between tries, so tests keep the mechanism and shorten the numbers.
            task.retries = retries
            task.retry_delay = timedelta(seconds=1)
            task.max_retry_delay = timedelta(seconds=2)
        for task_id, callback in (on_retry or {}).items():
            dag.get_task(task_id).on_retry_callback = [_once(callback)]  # the operator keeps a list
        return dag

    def run(
        self,
        capfd: pytest.CaptureFixture[str],
        *,
        deferrable: bool = True,
        retries: int = 1,
        on_retry: dict[str, Callable[[Any], None]] | None = None,
        startup_timeout: int = 8,
    ) -> RunResult:
        assert self.k8s is not None
        self.replay.set_clock(END + timedelta(seconds=30))
        dag = self.load_dag(deferrable=deferrable, retries=retries, on_retry=on_retry, startup_timeout=startup_timeout)
        capfd.readouterr()
        began = time.perf_counter()
        dag_run = dag.test(logical_date=END)
        seconds = time.perf_counter() - began
        out = capfd.readouterr()
        assert dag_run.data_interval_start == START, (dag_run.data_interval_start, START)
        with capfd.disabled():
            print(f"\n[faults] DAG run: {seconds:.1f} s", file=sys.stderr)
        return RunResult(
            states=self.airflow.task_states(dag_run),
            log=out.out + out.err,
            slack=self.slack.texts(),
            pods=self.k8s.all_pods_ever(),
            seconds=seconds,
        )

    def pod_log(self, prefix: str) -> str:
        assert self.k8s is not None
        names = [p for p in self.k8s.all_pods_ever() if p.startswith(prefix)]
        return "".join(self.k8s.pod_logs(n, NAMESPACE) for n in names)

    # -- storage ---------------------------------------------------------------------------------------

    def empty_bucket(self) -> None:
        client = self.s3.client()
        keys = [
            {"Key": item["Key"]}
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
            for item in page.get("Contents", [])
        ]
        for i in range(0, len(keys), 500):
            client.delete_objects(Bucket=self.bucket, Delete={"Objects": keys[i : i + 500], "Quiet": True})

    def keys(self, prefix: str = "") -> list[str]:
        client = self.s3.client()
        return sorted(
            item["Key"]
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            for item in page.get("Contents", [])
        )

    def get(self, key: str) -> bytes:
        return bytes(self.s3.client().get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def put(self, key: str, data: bytes) -> None:
        self.s3.client().put_object(Bucket=self.bucket, Key=key, Body=data)

    def delete(self, key: str) -> None:
        self.s3.client().delete_object(Bucket=self.bucket, Key=key)

    # -- the interval's data ---------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        objects: dict[str, dict[str, str]] = {}
        parquet_keys: dict[str, list[tuple[Any, ...]]] = {}
        for layer, prefix in DATA_LAYERS.items():
            found = {}
            for key in self.keys(prefix):
                if not _is_data_key(layer, key):
                    continue
                data = self.get(key)
                found[key] = hashlib.sha256(data).hexdigest()
                if layer in KEYED_PARQUET and key.endswith(".parquet"):
                    table = pq.read_table(io.BytesIO(data), columns=list(ROW_KEY))
                    parquet_keys[layer] = [tuple(map(str, r.values())) for r in table.to_pylist()]
            objects[layer] = found
        return Snapshot(objects, parquet_keys, self.warehouse_rows())

    def warehouse_rows(self) -> dict[str, list[tuple[str, ...]]]:
        import sqlalchemy as sa

        engine = sa.create_engine(self.warehouse_url)
        try:
            with engine.connect() as conn:
                present = set(sa.inspect(conn).get_table_names())
                return {
                    table: sorted(tuple(map(str, row)) for row in conn.execute(sa.text(f'SELECT * FROM "{table}"')))
                    if table in present
                    else []
                    for table in WAREHOUSE_TABLES
                }
        finally:
            engine.dispose()

    def warehouse_keys(self) -> dict[str, list[tuple[str, ...]]]:
        import sqlalchemy as sa

        engine = sa.create_engine(self.warehouse_url)
        try:
            with engine.connect() as conn:
                present = set(sa.inspect(conn).get_table_names())
                out = {}
                for table, cols in WAREHOUSE_TABLES.items():
                    if table not in present:
                        out[table] = []
                        continue
                    select = ", ".join(f'"{c}"' for c in cols)
                    out[table] = [tuple(map(str, r)) for r in conn.execute(sa.text(f'SELECT {select} FROM "{table}"'))]
                return out
        finally:
            engine.dispose()


def _once(callback: Callable[[Any], None]) -> Callable[[Any], None]:
    done = threading.Event()

    def call(context: Any) -> None:
        if not done.is_set():
            done.set()
            callback(context)

    return call


def when_pod_logs(double: KubeApiDouble, pod_glob: str, text: str, action: Callable[[], None]) -> threading.Thread:
    """Run ``action`` once, from a thread, as soon as a pod matching ``pod_glob`` has logged ``text``."""

    def watch() -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            for name in double.all_pods_ever():
                if fnmatch.fnmatchcase(name, pod_glob):
                    try:
                        if text in double.pod_logs(name, NAMESPACE):
                            action()
                            return
                    except KeyError:
                        pass
            time.sleep(0.05)

    thread = threading.Thread(target=watch, name=f"when-{pod_glob}", daemon=True)
    thread.start()
    return thread


def compare(
    reference: Snapshot,
    actual: Snapshot,
    layers: tuple[str, ...] = tuple(DATA_LAYERS),
    tables: tuple[str, ...] = tuple(WAREHOUSE_TABLES),
) -> dict[str, Any]:
    """Differences from the clean run in the compared layers/tables, and the row counts: ``lost`` = keys of the
    clean run missing; ``duplicated`` = keys present more than once (anywhere) or not in the clean run."""
    lost = duplicated = 0
    for layer in KEYED_PARQUET:
        got = actual.parquet_keys.get(layer, [])
        duplicated += len(got) - len(set(got))
        if layer in layers:
            ref = reference.parquet_keys.get(layer, [])
            lost += len(set(ref) - set(got))
            duplicated += len(set(got) - set(ref))
    for table, cols in WAREHOUSE_TABLES.items():
        got_keys = [_wkey(table, r, len(cols)) for r in actual.warehouse[table]]
        duplicated += len(got_keys) - len(set(got_keys))
        if table in tables:
            ref_keys = {_wkey(table, r, len(cols)) for r in reference.warehouse[table]}
            lost += len(ref_keys - set(got_keys))
            duplicated += len(set(got_keys) - ref_keys)
    differing = {
        layer: sorted(set(reference.objects[layer].items()) ^ set(actual.objects.get(layer, {}).items()))
        for layer in layers
        if reference.objects[layer] != actual.objects.get(layer, {})
    }
    rows_differ = [t for t in tables if reference.warehouse[t] != actual.warehouse[t]]
    return {"lost": lost, "duplicated": duplicated, "objects_differ": differing, "warehouse_differ": rows_differ}


def _wkey(table: str, row: tuple[str, ...], n: int) -> tuple[str, ...]:
    # SELECT * returns the table's columns in order; the natural key columns come first in every data table
    # except anomalies, whose key is also its first four columns.
    return row[:n]


def partial_data(reference: Snapshot, actual: Snapshot, failed_stage: str) -> list[str]:
    """What a failed run left that it must not: objects that differ from the clean run's, any layer written by a
    stage at or after the failed one that is not identical to the clean run, warehouse rows that differ."""
    problems = []
    order = {s: i for i, s in enumerate(STAGES)}
    for layer, objects in actual.objects.items():
        for key, digest in objects.items():
            if reference.objects[layer].get(key) != digest:
                problems.append(f"{key} differs from the clean run")
        if objects and order[LAYER_STAGE[layer]] > order[failed_stage]:
            problems.append(f"{layer} written although {failed_stage} failed before it")
    for table, rows in actual.warehouse.items():
        if rows and rows != reference.warehouse[table]:
            problems.append(f"warehouse {table} holds {len(rows)} rows that differ from the clean run")
    return problems


@dataclass
class ScenarioRecord:
    id: str
    category: str
    expected: str
    outcome: str = "not run"
    clear_error: bool | None = None  # None: the scenario is not a failure scenario
    rows_lost: int = 0
    rows_duplicated: int = 0
    passed: bool = False
    seconds: float = 0.0


REGISTRY: list[ScenarioRecord] = []


@dataclass
class Clock:
    began: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return time.perf_counter() - self.began


def env_without_pipeline() -> Iterator[str]:
    return (k for k in os.environ if k.startswith(("PIPELINE_", "CRYPTOPIPE_")))


def aws_connection(s3: S3Server) -> str:
    return json.dumps(
        {
            "conn_type": "aws",
            "login": ACCESS_KEY,
            "password": SECRET_KEY,
            "extra": {
                "endpoint_url": s3.endpoint,
                "region_name": "us-east-1",
                "config_kwargs": {"s3": {"addressing_style": "path"}},
            },
        }
    )


def dockerfile_mapping() -> DockerfileEntrypointMapping:
    return DockerfileEntrypointMapping()


_REFERENCE: dict[str, Snapshot] = {}


def reference_snapshot(harness: Harness, capfd: pytest.CaptureFixture[str]) -> Snapshot:
    """The clean run of the interval (computed once per session): the data every scenario must end with."""
    if "clean" not in _REFERENCE:
        harness.fresh()
        result = harness.run(capfd)
        assert result.states == ALL_SUCCESS, f"the clean reference run failed: {result.states}\n{result.log[-4000:]}"
        snap = harness.snapshot()
        for layer in ("raw", "staging", "validated", "quality", "indicators", "alerts", "archive"):
            assert snap.objects[layer], f"the clean run wrote no {layer} object"
        for table in ("market_snapshots", "indicators", "anomalies"):
            assert snap.warehouse[table], f"the clean run loaded no {table} rows"
        _REFERENCE["clean"] = snap
    return _REFERENCE["clean"]

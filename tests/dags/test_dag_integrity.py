"""DAG integrity: parses cleanly and fast, light imports, shared task policy, dependency chain."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import timedelta
from typing import Any

import pytest
from dagtest_support import DAG_ID, DAGS_DIR, parse_dag_folder

STAGES = ["ingest", "validate", "transform", "archive"]

# Budget for parsing the DAG file once Airflow and the cncf.kubernetes provider are imported (the
# dag-processor pre-imports the provider modules the file names). Measured ~60 ms cold / ~7 ms warm on the
# 2-core build machine; the budget is a loose guard against an accidental heavy import at top level.
PARSE_BUDGET_SECONDS = 0.5
HEAVY_MODULES = ("pandas", "great_expectations", "boto3", "botocore", "pyarrow", "cryptopipe", "slack_sdk")


def test_dag_folder_imports_without_errors(pipeline_env: pytest.MonkeyPatch) -> None:
    bag = parse_dag_folder()
    assert bag.import_errors == {}
    assert list(bag.dags) == [DAG_ID]
    # .airflowignore keeps the helper modules from being parsed as DAG files.
    assert {stat.file for stat in bag.dagbag_stats} == {"crypto_market_pipeline.py"}


def _run_isolated(code: str) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter (clean sys.modules) with the dags folder on sys.path."""
    prelude = f"import sys, json, time\nsys.path.insert(0, {str(DAGS_DIR)!r})\n"
    proc = subprocess.run(
        [sys.executable, "-c", prelude + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_parse_time_within_budget_and_no_heavy_imports(pipeline_env: pytest.MonkeyPatch) -> None:
    result = _run_isolated(
        f"""
        import airflow.sdk
        import airflow.providers.cncf.kubernetes.operators.pod
        from pathlib import Path
        from airflow.dag_processing.dagbag import BundleDagBag
        before = set(sys.modules)
        start = time.perf_counter()
        bag = BundleDagBag(dag_folder={str(DAGS_DIR)!r}, bundle_path=Path({str(DAGS_DIR)!r}))
        elapsed = time.perf_counter() - start
        heavy = sorted(m for m in set(sys.modules) - before if m.split(".")[0] in {HEAVY_MODULES!r})
        print(json.dumps({{"elapsed": elapsed, "errors": bag.import_errors, "dags": list(bag.dags),
                          "heavy": heavy}}))
        """
    )
    print(f"DAG parse time after Airflow import: {result['elapsed'] * 1000:.1f} ms")
    assert result["errors"] == {}
    assert result["dags"] == [DAG_ID]
    assert result["heavy"] == [], f"the DAG imported heavy modules at parse time: {result['heavy']}"
    assert result["elapsed"] < PARSE_BUDGET_SECONDS


def test_importing_the_dag_module_alone_pulls_no_heavy_modules(pipeline_env: pytest.MonkeyPatch) -> None:
    result = _run_isolated(
        f"""
        import importlib.util
        spec = importlib.util.spec_from_file_location("dagfile", {str(DAGS_DIR / "crypto_market_pipeline.py")!r})
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY_MODULES!r})
        print(json.dumps({{"heavy": heavy, "dag_id": module.dag.dag_id}}))
        """
    )
    assert result["dag_id"] == DAG_ID
    assert result["heavy"] == []


def test_dag_level_settings(dag: Any) -> None:
    from airflow.sdk import CronDataIntervalTimetable

    assert isinstance(dag.timetable, CronDataIntervalTimetable)
    assert dag.timetable.expression == "0 * * * *"
    assert 1 <= dag.max_active_runs <= 5
    assert dag.catchup is False
    assert dag.owner == "data-platform"
    assert {"crypto", "kubernetes"} <= set(dag.tags)
    assert dag.doc_md and "kubectl get pods" in dag.doc_md
    assert dag.dagrun_timeout is not None


def test_catchup_can_be_enabled_for_backfills(load_dag: Any) -> None:
    assert load_dag(PIPELINE_CATCHUP="true").catchup is True


def test_dependency_chain(dag: Any) -> None:
    downstream = {task.task_id: set(task.downstream_task_ids) for task in dag.tasks}
    assert downstream == {
        "ingest": {"validate"},
        "validate": {"transform"},
        "transform": {"archive", "notify_anomalies"},
        "archive": set(),
        "notify_anomalies": set(),
    }


def test_every_task_retries_with_backoff_timeout_and_failure_notifier(dag: Any) -> None:
    for task in dag.tasks:
        assert task.retries >= 1, task.task_id
        assert task.retry_exponential_backoff, task.task_id
        assert task.max_retry_delay is not None, task.task_id
        assert task.execution_timeout is not None, task.task_id
        assert task.execution_timeout <= timedelta(hours=1), task.task_id
        callbacks = task.on_failure_callback
        callbacks = callbacks if isinstance(callbacks, list) else [callbacks]
        assert any(getattr(cb, "__name__", "") == "notify_task_failure" for cb in callbacks), task.task_id


def test_stage_tasks_are_deferrable_pod_operators(dag: Any) -> None:
    from stage_launch import StagePodOperator

    for stage in STAGES:
        task = dag.get_task(stage)
        assert isinstance(task, StagePodOperator), stage
        assert task.deferrable is True
        assert task.do_xcom_push is False
        assert task.get_logs is True
        assert task.on_finish_action.value == "delete_pod"
        assert task.on_kill_action.value == "delete_pod"
        assert task.startup_timeout_seconds >= 300
        assert task.schedule_timeout_seconds >= 300
        assert task.namespace == "crypto-tasks"
        assert task.service_account_name == f"cryptopipe-{stage}"
        assert task.kubernetes_conn_id == "kubernetes_default"
        assert task.container_resources.requests and task.container_resources.limits
        assert task.security_context.run_as_non_root is True
        assert task.container_security_context.read_only_root_filesystem is True
        assert task.arguments == [
            "--interval-start",
            "{{ data_interval_start | ts }}",
            "--interval-end",
            "{{ data_interval_end | ts }}",
        ]


def test_pool_on_ingest_only(dag: Any) -> None:
    assert dag.get_task("ingest").pool == "coingecko_api"
    for task_id in ("validate", "transform", "archive", "notify_anomalies"):
        assert dag.get_task(task_id).pool != "coingecko_api"


def test_images_default_to_kind_registry(dag: Any) -> None:
    for stage in STAGES:
        assert dag.get_task(stage).image == f"localhost:5001/cryptopipe-{stage}:latest"


def test_images_and_names_come_from_the_environment(load_dag: Any) -> None:
    dag = load_dag(
        PIPELINE_IMAGE_REGISTRY="123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/",
        PIPELINE_IMAGE_TAG="3f2c1ab",
        PIPELINE_TASK_NAMESPACE="crypto-tasks-staging",
        PIPELINE_KUBERNETES_CONN_ID="kubernetes_tasks",
        PIPELINE_CONFIGMAP="cfg-x",
        PIPELINE_SECRET="sec-x",
    )
    for stage in STAGES:
        task = dag.get_task(stage)
        assert task.image == f"123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/cryptopipe-{stage}:3f2c1ab"
        assert task.image_pull_policy == "IfNotPresent"  # an immutable tag
        assert task.namespace == "crypto-tasks-staging"
        assert task.kubernetes_conn_id == "kubernetes_tasks"
        names = {(s.config_map_ref or s.secret_ref).name for s in task.env_from}
        assert names == {"cfg-x", "sec-x"}


def test_local_runtime_shares_everything_but_the_launcher(load_dag: Any) -> None:
    from stage_launch import LocalStageOperator

    kube = {t.task_id: t for t in load_dag().tasks}
    local = {t.task_id: t for t in load_dag(PIPELINE_RUNTIME="local").tasks}
    assert kube.keys() == local.keys()
    for stage in STAGES:
        assert isinstance(local[stage], LocalStageOperator)
        assert local[stage].arguments == kube[stage].arguments
        for attr in ("retries", "execution_timeout", "pool", "retry_exponential_backoff", "downstream_task_ids"):
            assert getattr(local[stage], attr) == getattr(kube[stage], attr), (stage, attr)


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"PIPELINE_RUNTIME": "docker"}, "PIPELINE_RUNTIME='docker'"),
        ({"PIPELINE_IMAGE_TAG": "repo:tag"}, "PIPELINE_IMAGE_TAG='repo:tag'"),
    ],
)
def test_bad_deployment_settings_give_a_clear_import_error(
    pipeline_env: pytest.MonkeyPatch, env: dict[str, str], needle: str
) -> None:
    for name, value in env.items():
        pipeline_env.setenv(name, value)
    bag = parse_dag_folder()
    assert bag.dags == {}
    [error] = bag.import_errors.values()
    assert needle in error


def test_concrete_sdk_imports_are_the_public_api(pipeline_env: pytest.MonkeyPatch) -> None:
    """The DAG imports DAG/task/timetable/BaseOperator from their defining modules (cheaper parses, see the DAG
    file); they must stay the very objects `airflow.sdk` exports, or an Airflow upgrade has moved them."""
    import airflow.sdk
    import crypto_market_pipeline
    import stage_launch

    assert crypto_market_pipeline.DAG is airflow.sdk.DAG
    assert crypto_market_pipeline.task is airflow.sdk.task
    assert crypto_market_pipeline.CronDataIntervalTimetable is airflow.sdk.CronDataIntervalTimetable
    assert stage_launch.BaseOperator is airflow.sdk.BaseOperator

"""Shared helpers of the DAG tests (imported by conftest first: sets AIRFLOW_HOME before Airflow loads)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DAGS_DIR = REPO / "dags"
DAG_ID = "crypto_market_pipeline"

# Airflow reads AIRFLOW_HOME on first import: never let the tests touch a developer's ~/airflow.
os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="airflow-home-dags-tests-"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
if str(DAGS_DIR) not in sys.path:
    sys.path.insert(0, str(DAGS_DIR))

# A kubeconfig pointing at a closed port: building a pod request reads the connection but never calls it.
UNREACHABLE_KUBECONFIG = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [{"name": "none", "cluster": {"server": "http://127.0.0.1:9"}}],
    "users": [{"name": "none", "user": {"token": "unused"}}],
    "contexts": [{"name": "none", "context": {"cluster": "none", "user": "none"}}],
    "current-context": "none",
}

PIPELINE_ENV_VARS = (
    "PIPELINE_RUNTIME",
    "PIPELINE_IMAGE_REGISTRY",
    "PIPELINE_IMAGE_TAG",
    "PIPELINE_TASK_NAMESPACE",
    "PIPELINE_CONFIGMAP",
    "PIPELINE_SECRET",
    "PIPELINE_STORAGE_URI",
    "PIPELINE_KUBERNETES_CONN_ID",
    "PIPELINE_SLACK_CONN_ID",
    "PIPELINE_AWS_CONN_ID",
    "PIPELINE_CATCHUP",
    "PIPELINE_START_DATE",
    "PIPELINE_CRYPTOPIPE_BIN",
)


def parse_dag_folder() -> Any:
    """Parse dags/ the way the dag-processor does (honours .airflowignore); returns the DagBag."""
    from airflow.dag_processing.dagbag import BundleDagBag

    return BundleDagBag(dag_folder=str(DAGS_DIR), bundle_path=DAGS_DIR)


def render_context(dag: Any, task: Any, start: Any = None, try_number: int = 1) -> dict[str, Any]:
    """The part of a task's runtime context that templates and pod labels read."""
    from types import SimpleNamespace

    import pendulum

    start = start or pendulum.datetime(2026, 11, 22, 13, tz="UTC")
    end = start.add(hours=1)  # the hourly data interval [start, end)
    ti = SimpleNamespace(dag_id=dag.dag_id, task_id=task.task_id, map_index=-1, try_number=try_number)
    run_id = f"scheduled__{start.isoformat()}"
    return {
        "ti": ti,
        "task": task,
        "dag": dag,
        "run_id": run_id,
        "data_interval_start": start,
        "data_interval_end": end,
        "logical_date": start,
    }

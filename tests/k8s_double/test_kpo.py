"""The real KubernetesPodOperator, run by ``dag.test()`` against the double, in both operator modes."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.airflow_env import AirflowTestEnv
from tests.support.k8s_double import KubeApiDouble, static_mapping

DAGS = Path(__file__).parent / "dags"
NS = "crypto-tasks"
SUCCEEDS = """
import os, sys
print("hello from the pod, args:", " ".join(sys.argv[1:]))
print("config:", os.environ["CRYPTOPIPE_STORAGE__URI"], "stage:", os.environ["STAGE_NAME"])
print("secret present:", os.environ["CRYPTOPIPE_API__KEY"] == "test-api-key")
"""
FAILS = """
import sys
print("quality gate failed for", sys.argv[2])
sys.exit(3)
"""
MAPPING = static_mapping(
    {
        "registry.test/double/succeeds:1": [sys.executable, "-c", SUCCEEDS],
        "registry.test/double/fails:1": [sys.executable, "-c", FAILS],
    }
)


@pytest.fixture
def kpo_double(
    k8s_double_factory: Callable[..., KubeApiDouble], airflow_env: AirflowTestEnv, monkeypatch: pytest.MonkeyPatch
) -> KubeApiDouble:
    double = k8s_double_factory(image_mapping=MAPPING)
    double.add_configmap(NS, "cryptopipe-config", {"CRYPTOPIPE_STORAGE__URI": "file://./data"})
    double.add_secret(NS, "cryptopipe-secrets", {"CRYPTOPIPE_API__KEY": "test-api-key"})
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", double.airflow_connection_json())
    airflow_env.use_dags_folder(DAGS)
    return double


def created_pods(double: KubeApiDouble) -> dict[str, str]:
    """``{task_id: pod name}`` from the create requests the operator sent."""
    posts = [r for r in double.requests_matching("POST", f"/api/v1/namespaces/{NS}/pods") if r.status == 201]
    return {r.body["metadata"]["labels"]["task_id"]: r.body["metadata"]["name"] for r in posts}


@pytest.mark.parametrize("mode", ["sync", "deferrable"])
def test_operator_runs_pods_on_the_double(
    mode: str,
    kpo_double: KubeApiDouble,
    airflow_env: AirflowTestEnv,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    dag = airflow_env.load_dag(DAGS / "kpo_double_dags.py", f"kpo_double_{mode}")
    run = dag.test()
    output = "".join(capfd.readouterr()) + caplog.text  # task logs on stdout, dag.test() logs via logging

    assert airflow_env.task_states(run) == {"succeeds": "success", "fails": "failed"}
    pods = created_pods(kpo_double)
    assert set(pods) == {"succeeds", "fails"}
    # The pod's log reached the task log, with the rendered args and the ConfigMap/Secret env.
    interval_start = run.data_interval_start.isoformat()
    assert f"hello from the pod, args: --interval-start {interval_start}" in output
    assert "config: file://./data stage: succeeds" in output
    assert "secret present: True" in output
    assert f"quality gate failed for {interval_start}" in output

    # Every pod was deleted afterwards; the failed one was first labelled already_checked.
    assert kpo_double.pods(NS) == []
    deleted = {p["metadata"]["labels"]["task_id"]: p for p in kpo_double.deleted_pods}
    assert set(deleted) == {"succeeds", "fails"}
    exit_codes = {t: p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] for t, p in deleted.items()}
    assert exit_codes == {"succeeds": 0, "fails": 3}
    assert deleted["fails"]["metadata"]["labels"]["already_checked"] == "True"
    assert "already_checked" not in deleted["succeeds"]["metadata"]["labels"]
    labels = deleted["succeeds"]["metadata"]["labels"]
    assert labels["dag_id"] == f"kpo_double_{mode}" and labels["app.kubernetes.io/component"] == "succeeds"
    patched = {r.path.rsplit("/", 1)[1] for r in kpo_double.requests_matching("PATCH")}
    assert patched == {pods["fails"]}

    # The log calls tell the two code paths apart: the sync operator follows with timestamps,
    # the deferrable one reads after the in-process trigger fired, without timestamps.
    log_calls = [
        r for r in kpo_double.requests_matching("GET", f"/api/v1/namespaces/{NS}/pods/*") if r.path.endswith("/log")
    ]
    assert {r.param("container") for r in log_calls} == {"base"}
    assert {r.param("timestamps") for r in log_calls} == ({"True"} if mode == "sync" else {"False"})
    if mode == "deferrable":
        assert "[DAG TEST] running trigger in line" in output


def test_unpullable_image_fails_the_task_fast(
    kpo_double: KubeApiDouble, airflow_env: AirflowTestEnv, capfd: pytest.CaptureFixture[str]
) -> None:
    kpo_double.fail_image_pull(image="*/double/succeeds:*")
    dag = airflow_env.load_dag(DAGS / "kpo_double_dags.py", "kpo_double_sync")
    run = dag.test()
    output = "".join(capfd.readouterr())
    assert airflow_env.task_states(run) == {"succeeds": "failed", "fails": "failed"}
    assert "Image cannot be pulled" in output
    assert kpo_double.pods(NS) == []  # the operator deleted the Pending pod too
    assert not any(
        "succeeds" in p["metadata"]["name"] and p["status"]["phase"] != "Pending" for p in kpo_double.deleted_pods
    )

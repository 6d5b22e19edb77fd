"""Tiny DAGs of the real KubernetesPodOperator, for the tests of the Kubernetes API test double.

Images ``double/succeeds:1`` and ``double/fails:1`` are mapped by the tests to small Python programs
(the double never pulls an image). One DAG per operator mode.
"""

from __future__ import annotations

import datetime

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk import DAG
from kubernetes.client import models as k8s

NAMESPACE = "crypto-tasks"
ENV_FROM = [
    k8s.V1EnvFromSource(config_map_ref=k8s.V1ConfigMapEnvSource(name="cryptopipe-config")),
    k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name="cryptopipe-secrets")),
]


def _pod_task(task_id: str, image: str, deferrable: bool) -> KubernetesPodOperator:
    return KubernetesPodOperator(
        task_id=task_id,
        name=f"double-{task_id}",
        namespace=NAMESPACE,
        image=image,
        arguments=["--interval-start", "{{ data_interval_start | ts }}"],
        env_vars={"STAGE_NAME": task_id},
        env_from=ENV_FROM,
        labels={"app.kubernetes.io/part-of": "crypto-pipeline", "app.kubernetes.io/component": task_id},
        kubernetes_conn_id="kubernetes_default",
        deferrable=deferrable,
        poll_interval=0.5,
        startup_check_interval_seconds=1,
        get_logs=True,
        on_finish_action="delete_pod",
        retries=0,
    )


for _mode, _deferrable in (("sync", False), ("deferrable", True)):
    with DAG(
        dag_id=f"kpo_double_{_mode}",
        schedule=None,
        start_date=datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC),
        catchup=False,
        tags=["test"],
    ) as _dag:
        _pod_task("succeeds", "registry.test/double/succeeds:1", _deferrable)
        _pod_task("fails", "registry.test/double/fails:1", _deferrable)
    globals()[_dag.dag_id] = _dag

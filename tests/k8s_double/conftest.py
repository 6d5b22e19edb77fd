"""Fixtures of the Kubernetes API test double tests (and the Airflow environment for the KPO tests)."""

from tests.support.airflow_env import airflow_env  # noqa: F401
from tests.support.k8s_double.fixtures import k8s_double, k8s_double_factory, kubernetes_connection  # noqa: F401

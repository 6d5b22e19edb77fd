"""End-to-end fixtures: the session Airflow environment (tests/support/airflow_env.py)."""

from tests.support.airflow_env import airflow_env  # noqa: F401 - a pytest fixture

"""Fixtures for the DAG tests: a clean PIPELINE_* environment and a DAG loader."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from dagtest_support import DAG_ID, PIPELINE_ENV_VARS, UNREACHABLE_KUBECONFIG, parse_dag_folder


@pytest.fixture
def pipeline_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A clean PIPELINE_* environment (the defaults of docs/architecture.md) plus a kubernetes connection."""
    for name in PIPELINE_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(
        "AIRFLOW_CONN_KUBERNETES_DEFAULT",
        json.dumps({"conn_type": "kubernetes", "extra": {"kube_config": json.dumps(UNREACHABLE_KUBECONFIG)}}),
    )
    return monkeypatch


@pytest.fixture
def load_dag(pipeline_env: pytest.MonkeyPatch) -> Callable[..., Any]:
    """Parse the DAG afresh with extra environment variables (PIPELINE_* settings are read at parse time)."""

    def _load(**env: str) -> Any:
        for name, value in env.items():
            pipeline_env.setenv(name, value)
        bag = parse_dag_folder()
        assert bag.import_errors == {}, bag.import_errors
        return bag.dags[DAG_ID]

    return _load


@pytest.fixture
def dag(load_dag: Callable[..., Any]) -> Iterator[Any]:
    yield load_dag()

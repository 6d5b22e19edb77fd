"""pytest fixtures of the Kubernetes API test double (import them into a conftest.py).

::

    from tests.support.k8s_double.fixtures import k8s_double, k8s_double_factory, kubernetes_connection  # noqa: F401

- ``k8s_double``: a started :class:`KubeApiDouble` with the default image mapping (the ENTRYPOINT of
  ``task_images/<stage>/Dockerfile`` for ``*/cryptopipe-<stage>:*``), cwd ``tmp_path/k8s-workdir``;
  stopped (all its processes killed) after the test.
- ``k8s_double_factory(**kwargs)``: start doubles with other options (``image_mapping=...``,
  ``startup_delay=...``); all stopped after the test.
- ``kubernetes_connection``: ``k8s_double`` plus ``AIRFLOW_CONN_KUBERNETES_DEFAULT`` pointing at it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .double import KubeApiDouble


@pytest.fixture
def k8s_double_factory(tmp_path: Path) -> Iterator[Callable[..., KubeApiDouble]]:
    started: list[KubeApiDouble] = []

    def start(**kwargs: Any) -> KubeApiDouble:
        kwargs.setdefault("workdir", tmp_path / f"k8s-workdir-{len(started)}")
        double = KubeApiDouble(**kwargs).start()
        started.append(double)
        return double

    yield start
    for double in started:
        double.stop()


@pytest.fixture
def k8s_double(k8s_double_factory: Callable[..., KubeApiDouble], tmp_path: Path) -> KubeApiDouble:
    return k8s_double_factory(workdir=tmp_path / "k8s-workdir")


@pytest.fixture
def kubernetes_connection(k8s_double: KubeApiDouble, monkeypatch: pytest.MonkeyPatch) -> KubeApiDouble:
    monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", k8s_double.airflow_connection_json())
    return k8s_double

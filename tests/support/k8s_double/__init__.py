"""A Kubernetes API test double for end-to-end tests of KubernetesPodOperator DAGs.

See README.md in this directory. Typical use::

    from tests.support.k8s_double import KubeApiDouble

    with KubeApiDouble(image_mapping=lambda image: [sys.executable, "-c", "print('hi')"]) as k8s:
        monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", k8s.airflow_connection_json())
        ...  # run the DAG; then assert on k8s.requests, k8s.deleted_pods, k8s.pod_logs(name)

or the pytest fixtures of :mod:`tests.support.k8s_double.fixtures`.
"""

from .double import KubeApiDouble
from .faults import Fault
from .images import DockerfileEntrypointMapping, ImageMapping, ImageMappingError, static_mapping
from .selectors import SelectorError, field_selector_matcher, label_selector_matcher
from .server import RecordedRequest

__all__ = [
    "DockerfileEntrypointMapping",
    "Fault",
    "ImageMapping",
    "ImageMappingError",
    "KubeApiDouble",
    "RecordedRequest",
    "SelectorError",
    "field_selector_matcher",
    "label_selector_matcher",
    "static_mapping",
]

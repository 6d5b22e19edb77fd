"""A Kubernetes API test double for end-to-end tests of KubernetesPodOperator DAGs.

An HTTP server on ``127.0.0.1:<ephemeral port>`` implementing what the KubernetesPodOperator (provider
cncf.kubernetes 10.25, sync and deferrable mode) calls: ``/version`` (every VersionInfo field),
discovery, namespaces; pods create/get/list (label and field selectors), watch, ``PATCH`` of labels and
annotations, ``DELETE`` (404 when missing); ``pods/{name}/log`` (follow, timestamps, sinceSeconds,
tailLines, limitBytes; a chunked stream that ends only after the container terminated); events list and
watch (newline-delimited JSON); ConfigMaps and Secrets. ``exec``/``attach``/``portforward``/``proxy`` are
always refused with 403: the double never runs an exec'd command.

A pod "runs" as host subprocesses: each container image maps (injectable ``image_mapping``; default: the
ENTRYPOINT of ``task_images/<stage>/Dockerfile`` for ``*/cryptopipe-<stage>:*``) to an argv prefix, run
with the pod's args and env (ConfigMap/Secret references resolved) in the double's work dir; stdout and
stderr form the container log; the status goes Pending (events) → Running → Succeeded/Failed with exit
codes. Faults (Pending forever, image pull failure, SIGKILL/OOMKilled, node lost) are injected from the
test; every request is recorded. See README.md in this directory. Typical use::

    from tests.support.k8s_double import KubeApiDouble, static_mapping

    mapping = static_mapping({"registry/app:1": [sys.executable, "-c", "print('hi')"]})
    with KubeApiDouble(image_mapping=mapping) as k8s:
        monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", k8s.airflow_connection_json())
        ...  # run the DAG; then assert on k8s.requests, k8s.deleted_pods, k8s.pod_logs(name, namespace)

or the pytest fixtures of :mod:`tests.support.k8s_double.fixtures` (``k8s_double``,
``k8s_double_factory``, ``kubernetes_connection``).
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

"""The :class:`KubeApiDouble` facade: start/stop, kubeconfig, fault injection, recorded requests."""

from __future__ import annotations

import base64
import copy
import json
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from .cluster import Cluster
from .faults import Fault
from .images import DockerfileEntrypointMapping, ImageMapping
from .selectors import label_selector_matcher
from .server import RecordedRequest, make_server, serve_in_thread


class KubeApiDouble:
    """A Kubernetes API server double on ``http://127.0.0.1:<ephemeral port>``.

    ``image_mapping``: image → argv prefix (the ENTRYPOINT) or ``None`` (cannot be pulled); default
    :class:`DockerfileEntrypointMapping`. ``workdir``: the cwd of every container process (a fresh
    temporary directory, removed on stop, when not given). ``startup_delay``: seconds a new pod
    stays Pending before it is scheduled. ``base_env``: the environment every container starts with
    (default: PATH, HOME=workdir, LANG, TZ=UTC, PYTHONUNBUFFERED=1), before the pod's ``env``.
    ``allow_command_override``: run a container's ``command`` instead of the image ENTRYPOINT
    (off: such a container fails with ``CreateContainerError``).
    """

    def __init__(
        self,
        image_mapping: ImageMapping | None = None,
        workdir: Path | None = None,
        *,
        startup_delay: float = 0.05,
        base_env: dict[str, str] | None = None,
        allow_command_override: bool = False,
        max_grace_seconds: float = 2.0,
        namespaces: Iterable[str] = ("default", "crypto-tasks"),
    ) -> None:
        self._own_workdir = workdir is None
        self.workdir = Path(tempfile.mkdtemp(prefix="k8s-double-")) if workdir is None else Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.cluster = Cluster(
            image_mapping or DockerfileEntrypointMapping(),
            self.workdir,
            startup_delay=startup_delay,
            base_env=base_env,
            allow_command_override=allow_command_override,
            max_grace_seconds=max_grace_seconds,
        )
        self._requests: list[RecordedRequest] = []
        self._requests_lock = threading.Lock()
        self._namespaces = set(namespaces)
        self._server = make_server(self.cluster, self._record, self._namespaces)
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> KubeApiDouble:
        if self._thread is None:
            self._thread = serve_in_thread(self._server)
        return self

    def stop(self) -> None:
        """Kill every process this double started (by PID / own process group), stop serving."""
        self.cluster.stop()
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> KubeApiDouble:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- client configuration ------------------------------------------------------------------

    def kubeconfig(self, namespace: str = "default") -> dict[str, Any]:
        """An inline kubeconfig pointing at the double (dummy bearer token)."""
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "double", "cluster": {"server": self.url}}],
            "users": [{"name": "double", "user": {"token": "k8s-double-dummy-token"}}],
            "contexts": [
                {"name": "double", "context": {"cluster": "double", "user": "double", "namespace": namespace}}
            ],
            "current-context": "double",
        }

    def airflow_connection_json(self, namespace: str = "default") -> str:
        """Value for ``AIRFLOW_CONN_KUBERNETES_DEFAULT``: inline kube_config, never in-cluster."""
        extra = {"kube_config": json.dumps(self.kubeconfig(namespace)), "in_cluster": False, "namespace": namespace}
        return json.dumps({"conn_type": "kubernetes", "extra": extra})

    # -- recorded requests ---------------------------------------------------------------------

    def _record(self, request: RecordedRequest) -> None:
        with self._requests_lock:
            self._requests.append(request)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._requests_lock:
            return list(self._requests)

    def requests_matching(self, method: str | None = None, path: str | None = None) -> list[RecordedRequest]:
        """Requests by method and path (a path ending in ``*`` matches as a prefix)."""

        def path_ok(p: str) -> bool:
            return path is None or (p.startswith(path[:-1]) if path.endswith("*") else p == path)

        return [r for r in self.requests if method in (None, r.method) and path_ok(r.path)]

    def clear_requests(self) -> None:
        with self._requests_lock:
            self._requests.clear()

    # -- state for assertions ------------------------------------------------------------------

    def pods(self, namespace: str | None = None, label_selector: str | None = None) -> list[dict[str, Any]]:
        match = label_selector_matcher(label_selector)
        return self.cluster.list_pods(namespace, lambda pod: match(pod["metadata"].get("labels") or {}))

    def pod(self, name: str, namespace: str = "default") -> dict[str, Any] | None:
        with self.cluster.cond:
            pod = self.cluster.pods.get((namespace, name))
            return pod.to_dict() if pod is not None else None

    @property
    def deleted_pods(self) -> list[dict[str, Any]]:
        """Snapshots of pods deleted through the API (not lost ones), at the time of deletion."""
        with self.cluster.cond:
            return copy.deepcopy(self.cluster.deleted_pods)

    def all_pods_ever(self) -> list[str]:
        """Names of every pod created (from the POST requests that succeeded)."""
        return [
            (r.body or {}).get("metadata", {}).get("name", "")
            for r in self.requests_matching("POST", "/api/v1/namespaces/*")
            if r.path.endswith("/pods") and r.status == 201
        ]

    def pod_logs(self, name: str, namespace: str = "default", container: str | None = None) -> str:
        """Log text of a pod's container (also of deleted or lost pods: the double keeps logs)."""
        with self.cluster.cond:
            matches = [p for p in self.cluster.history if p.name == name and p.namespace == namespace]
            if not matches:
                raise KeyError(f"no pod {namespace}/{name} was ever created on this double")
            lines = list(matches[-1].container(container).logs)
        return b"".join(line for _, line in lines).decode("utf-8", errors="replace")

    def wait_for_log(self, name: str, namespace: str, text: str, *, timeout: float = 10.0) -> str:
        """Block until the pod's log contains ``text``; return the log (TimeoutError names the log)."""
        deadline = time.monotonic() + timeout
        with self.cluster.cond:
            while True:
                log = (
                    self.pod_logs(name, namespace)
                    if any(p.name == name and p.namespace == namespace for p in self.cluster.history)
                    else ""
                )
                if text in log:
                    return log
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"pod {namespace}/{name} log lacks {text!r}; log so far: {log!r}")
                self.cluster.cond.wait(timeout=min(remaining, 0.2))

    def events(self, namespace: str | None = None, pod: str | None = None) -> list[dict[str, Any]]:
        with self.cluster.cond:
            events = copy.deepcopy(self.cluster.events)
        return [
            e
            for e in events
            if namespace in (None, e["metadata"]["namespace"]) and pod in (None, e["involvedObject"]["name"])
        ]

    @property
    def spawned_pids(self) -> list[int]:
        """PIDs of every container process this double started."""
        with self.cluster.cond:
            return [c.process.pid for c in self.cluster.started if c.process is not None]

    def wait_for_pod(
        self,
        name: str,
        namespace: str = "default",
        *,
        until: Callable[[dict[str, Any] | None], bool] | None = None,
        phase: str | None = None,
        timeout: float = 10.0,
    ) -> dict[str, Any] | None:
        """Block until ``until(pod_or_None)`` (or ``phase``) holds; raise TimeoutError naming the state."""
        check = until or (lambda pod: pod is not None and pod["status"]["phase"] == phase)
        deadline = time.monotonic() + timeout
        with self.cluster.cond:
            while True:
                current = self.pod(name, namespace)
                if check(current):
                    return current
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    state = current["status"] if current else "absent"
                    raise TimeoutError(f"pod {namespace}/{name} did not reach the expected state: {state}")
                self.cluster.cond.wait(timeout=min(remaining, 0.2))

    # -- configuration objects -----------------------------------------------------------------

    def add_configmap(self, namespace: str, name: str, data: Mapping[str, str]) -> None:
        body = {"metadata": {"name": name}, "data": dict(data)}
        self.cluster.put_config("configmaps", namespace, body, replace=True)

    def add_secret(self, namespace: str, name: str, data: Mapping[str, str]) -> None:
        """``data`` in clear text; stored base64-encoded, as the API server does."""
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        self.cluster.put_config("secrets", namespace, {"metadata": {"name": name}, "data": encoded}, replace=True)

    # -- fault injection -----------------------------------------------------------------------

    def inject(self, fault: Fault) -> Fault:
        with self.cluster.cond:
            self.cluster.faults.append(fault)
        return fault

    def keep_pending(self, *, pod: str | None = None, image: str | None = None, namespace: str | None = None,
                     times: int | None = None) -> Fault:  # fmt: skip
        """Matching pods are never scheduled (``FailedScheduling``, Unschedulable)."""
        return self.inject(Fault("pending", pod=pod, image=image, namespace=namespace, times=times))

    def fail_image_pull(self, *, pod: str | None = None, image: str | None = None, namespace: str | None = None,
                        times: int | None = None) -> Fault:  # fmt: skip
        """Matching pods wait with ``ErrImagePull`` then ``ImagePullBackOff``."""
        return self.inject(Fault("image_pull", pod=pod, image=image, namespace=namespace, times=times))

    def kill_after(self, seconds: float, *, pod: str | None = None, image: str | None = None,
                   namespace: str | None = None, reason: str = "Error", times: int | None = None) -> Fault:  # fmt: skip
        """SIGKILL matching pods ``seconds`` after they start: exit 137, ``reason`` Error/OOMKilled."""
        fault = Fault(
            "kill", pod=pod, image=image, namespace=namespace, after_seconds=seconds, reason=reason, times=times
        )
        return self.inject(fault)

    def lose_node_after(self, seconds: float, *, pod: str | None = None, image: str | None = None,
                        namespace: str | None = None, times: int | None = None) -> Fault:  # fmt: skip
        """Matching pods vanish (processes killed, 404) ``seconds`` after they start."""
        fault = Fault("node_lost", pod=pod, image=image, namespace=namespace, after_seconds=seconds, times=times)
        return self.inject(fault)

    def kill_pod(self, name: str, namespace: str = "default", reason: str = "Error") -> None:
        """SIGKILL a running pod now (exit code 137)."""
        self.cluster.kill_pod(namespace, name, reason)

    def lose_pod(self, name: str, namespace: str = "default") -> None:
        """The pod's node is lost now: processes killed, the object vanishes (404)."""
        self.cluster.lose_pod(namespace, name)

    def clear_faults(self) -> None:
        with self.cluster.cond:
            self.cluster.faults.clear()

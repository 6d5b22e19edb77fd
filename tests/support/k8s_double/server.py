"""HTTP layer of the Kubernetes API test double (threaded, HTTP/1.1, chunked streams, TCP_NODELAY)."""

from __future__ import annotations

import calendar
import json
import re
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .cluster import ApiError, Cluster, Container, Pod, rfc3339nano
from .selectors import SelectorError, field_selector_matcher, label_selector_matcher

MAX_WATCH_SECONDS = 1800
VERSION_INFO = {
    "major": "1",
    "minor": "33",
    "emulationMajor": "1",
    "emulationMinor": "33",
    "minCompatibilityMajor": "1",
    "minCompatibilityMinor": "32",
    "gitVersion": "v1.33.0-k8s-api-double",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.24.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}
API_RESOURCES = [
    ("pods", "Pod", True, ["create", "delete", "get", "list", "patch", "watch"]),
    ("pods/log", "Pod", True, ["get"]),
    ("pods/status", "Pod", True, ["get"]),
    ("events", "Event", True, ["get", "list", "watch"]),
    ("configmaps", "ConfigMap", True, ["create", "delete", "get", "list", "watch"]),
    ("secrets", "Secret", True, ["create", "delete", "get", "list", "watch"]),
    ("namespaces", "Namespace", False, ["get", "list"]),
]
# Subresources that would run something inside a container: always refused, nothing is executed.
REFUSED_SUBRESOURCES = ("exec", "attach", "portforward", "proxy")


def parse_bool(value: str | None) -> bool:
    """The Python client sends ``True``/``False``; kubectl sends ``true``/``false``."""
    return value is not None and value.strip().lower() in ("true", "1", "yes")


@dataclass
class RecordedRequest:
    """One request the double received; ``status`` is filled in once the answer is sent."""

    method: str
    path: str
    query: dict[str, list[str]]
    body: Any = None
    content_type: str | None = None
    status: int = 0
    time: float = field(default_factory=time.time)

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    cluster: Cluster
    record: Callable[[RecordedRequest], None]
    namespaces: set[str]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        # Without it every small response waits for the peer's delayed ACK (~40 ms per call).
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:
        """Requests are recorded on the double; keep pytest output clean."""

    # -- plumbing ------------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query, keep_blank_values=True)
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip() or None
        self.recorded = RecordedRequest(method, url.path, query, content_type=content_type)
        self.server.record(self.recorded)
        try:
            if raw:
                try:
                    self.recorded.body = json.loads(raw)
                except ValueError as exc:
                    raise ApiError(400, "BadRequest", f"the request body is not valid JSON: {exc}") from exc
            self._route(method, url.path.rstrip("/") or "/", self.recorded)
        except ApiError as exc:
            self._send_json(exc.code, exc.status())
        except SelectorError as exc:
            self._send_json(400, ApiError(400, "BadRequest", f"unable to parse requirement: {exc}").status())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # a bug in the double: answer 500 naming it rather than hang the client
            if self.recorded.status:  # a stream had started: the client sees it cut short
                self.close_connection = True
                raise
            message = f"Kubernetes API test double error on {method} {url.path}: {exc!r}"
            self._send_json(500, ApiError(500, "InternalError", message).status())
            raise

    def _send_json(self, code: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.recorded.status = code
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _start_stream(self, content_type: str) -> None:
        self.recorded.status = 200
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def _end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")

    def _client_gone(self) -> bool:
        """True once the client closed its side (a cancelled watch or log follow)."""
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    # -- routing -------------------------------------------------------------------------------

    def _route(self, method: str, path: str, req: RecordedRequest) -> None:
        if path == "/version" and method == "GET":
            return self._send_json(200, VERSION_INFO)
        if path in ("/healthz", "/livez", "/readyz") and method == "GET":
            return self._send_text(200, "ok")
        if path == "/api" and method == "GET":
            return self._send_json(
                200,
                {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [
                        {"clientCIDR": "0.0.0.0/0", "serverAddress": self.server.server_address[0]}
                    ],
                },
            )
        if path == "/apis" and method == "GET":
            return self._send_json(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": []})
        if path == "/api/v1" and method == "GET":
            return self._send_json(200, api_resource_list())
        if path == "/api/v1/namespaces" and method == "GET":
            return self._send_json(200, self._namespace_list())
        match = re.fullmatch(r"/api/v1/namespaces/([^/]+)", path)
        if match and method == "GET":
            return self._send_json(200, namespace_obj(match[1]))
        if path in ("/api/v1/pods", "/api/v1/events") and method == "GET":
            return self._list_or_watch(path.rsplit("/", 1)[1], None, req)
        match = re.fullmatch(r"/api/v1/namespaces/([^/]+)/([a-z]+)(?:/([^/]+))?(?:/([a-z]+))?", path)
        if not match:
            raise ApiError(404, "NotFound", f"the Kubernetes API test double does not implement {method} {path}")
        namespace, resource, name, sub = match.groups()
        self.server.namespaces.add(namespace)
        if sub in REFUSED_SUBRESOURCES:
            raise ApiError(
                403,
                "Forbidden",
                f'pods "{name}" is forbidden: the Kubernetes API test double refuses pods/{sub}: '
                "it never runs a command on the host",
                kind="pods",
                name=name or "",
            )
        if resource == "pods":
            return self._pods(method, namespace, name, sub, req)
        if resource == "events" and name is None and method == "GET":
            return self._list_or_watch("events", namespace, req)
        if resource in ("configmaps", "secrets") and sub is None:
            return self._config(method, resource, namespace, name, req)
        raise ApiError(404, "NotFound", f"the Kubernetes API test double does not implement {method} {path}")

    def _send_text(self, code: int, text: str) -> None:
        data = text.encode()
        self.recorded.status = code
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _namespace_list(self) -> dict[str, Any]:
        items = [namespace_obj(ns) for ns in sorted(self.server.namespaces)]
        return {"kind": "NamespaceList", "apiVersion": "v1", "metadata": {}, "items": items}

    def _pods(self, method: str, namespace: str, name: str | None, sub: str | None, req: RecordedRequest) -> None:
        cluster = self.server.cluster
        if name is None:
            if method == "GET":
                return self._list_or_watch("pods", namespace, req)
            if method == "POST":
                return self._send_json(201, cluster.create_pod(namespace, req.body))
        elif sub is None:
            if method == "GET":
                return self._send_json(200, cluster.get_pod(namespace, name).to_dict())
            if method == "PATCH":
                return self._send_json(200, cluster.patch_pod(namespace, name, req.content_type or "", req.body))
            if method == "DELETE":
                grace = req.param("gracePeriodSeconds")
                if grace is None and isinstance(req.body, dict):
                    grace = req.body.get("gracePeriodSeconds")
                return self._send_json(
                    200, cluster.delete_pod(namespace, name, None if grace is None else float(grace))
                )
        elif sub == "status" and method == "GET":
            return self._send_json(200, cluster.get_pod(namespace, name).to_dict())
        elif sub == "log" and method == "GET":
            return self._log(cluster.get_pod(namespace, name), req)
        raise ApiError(
            405, "MethodNotAllowed", f"the Kubernetes API test double does not implement {method} {req.path}"
        )

    def _config(self, method: str, kind: str, namespace: str, name: str | None, req: RecordedRequest) -> None:
        cluster = self.server.cluster
        singular = "ConfigMap" if kind == "configmaps" else "Secret"
        if name is None and method == "GET":
            items = cluster.list_config(kind, namespace)
            meta = {"resourceVersion": str(cluster.resource_version)}
            return self._send_json(
                200, {"kind": f"{singular}List", "apiVersion": "v1", "metadata": meta, "items": items}
            )
        if name is None and method == "POST":
            return self._send_json(201, cluster.put_config(kind, namespace, req.body))
        if name is not None and method == "GET":
            return self._send_json(200, cluster.get_config(kind, namespace, name))
        if name is not None and method == "DELETE":
            return self._send_json(200, cluster.delete_config(kind, namespace, name))
        raise ApiError(
            405, "MethodNotAllowed", f"the Kubernetes API test double does not implement {method} {req.path}"
        )

    # -- list / watch --------------------------------------------------------------------------

    def _list_or_watch(self, resource: str, namespace: str | None, req: RecordedRequest) -> None:
        cluster = self.server.cluster
        labels = label_selector_matcher(req.param("labelSelector"))
        fields = field_selector_matcher(req.param("fieldSelector"))

        def selected(obj: dict[str, Any]) -> bool:
            return labels((obj.get("metadata") or {}).get("labels") or {}) and fields(obj)

        if parse_bool(req.param("watch")):
            return self._watch(resource, namespace, req, selected)
        with cluster.cond:
            rv = cluster.resource_version
            if resource == "pods":
                items = cluster.list_pods(namespace, selected)
            else:
                items = [e for e in cluster.events if namespace in (None, e["metadata"]["namespace"]) and selected(e)]
        kind = "PodList" if resource == "pods" else "EventList"
        body = {"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": str(rv)}, "items": items}
        self._send_json(200, body)

    def _watch(
        self, resource: str, namespace: str | None, req: RecordedRequest, selected: Callable[[dict], bool]
    ) -> None:
        cluster = self.server.cluster
        timeout = min(float(req.param("timeoutSeconds") or MAX_WATCH_SECONDS), MAX_WATCH_SECONDS)
        deadline = time.monotonic() + timeout
        start_rv = req.param("resourceVersion") or ""
        lines: list[bytes] = []
        with cluster.cond:
            if start_rv in ("", "0"):
                # "Start at most recent": synthetic ADDED for what exists now, then the changes.
                existing = (
                    cluster.list_pods(namespace, selected)
                    if resource == "pods"
                    else [e for e in cluster.events if namespace in (None, e["metadata"]["namespace"]) and selected(e)]
                )
                lines = [watch_line("ADDED", obj) for obj in existing]
                seen_rv = cluster.resource_version
            else:
                seen_rv = int(start_rv) if start_rv.isdigit() else 0
        self._start_stream("application/json")
        for line in lines:
            self._chunk(line)
        while True:
            with cluster.cond:
                entries = list(cluster.journal_since(seen_rv, resource, namespace))
                seen_rv = max(seen_rv, cluster.resource_version)
            for entry in entries:
                if selected(entry.obj):
                    self._chunk(watch_line(entry.type, entry.obj))
            remaining = deadline - time.monotonic()
            if remaining <= 0 or cluster.stopping or self._client_gone():
                break
            with cluster.cond:
                cluster.cond.wait_for(
                    lambda rv=seen_rv: cluster.stopping or cluster.resource_version > rv, timeout=min(remaining, 0.5)
                )
        self._end_stream()

    # -- logs ----------------------------------------------------------------------------------

    def _log(self, pod: Pod, req: RecordedRequest) -> None:
        cluster = self.server.cluster
        container = pod.container(req.param("container"))
        with cluster.cond:
            if not container.started:
                reason = container.state.get("waiting", {}).get("reason", "ContainerCreating")
                raise ApiError(
                    400,
                    "BadRequest",
                    f'container "{container.name}" in pod "{pod.name}" is waiting to start: {reason}',
                )
            index = first_log_index(container, req)
        follow = parse_bool(req.param("follow"))
        timestamps = parse_bool(req.param("timestamps"))
        limit = int(req.param("limitBytes") or 0) or None
        sent = 0
        self._start_stream("text/plain")
        while True:
            with cluster.cond:
                if follow:
                    cluster.cond.wait_for(
                        lambda i=index: len(container.logs) > i or _log_finished(cluster, pod, container), timeout=0.5
                    )
                batch = container.logs[index:]
                index += len(batch)
                finished = _log_finished(cluster, pod, container) and index >= len(container.logs)
            for ts_ns, line in batch:
                data = f"{rfc3339nano(ts_ns)} ".encode() + line if timestamps else line
                if limit is not None:
                    data = data[: max(limit - sent, 0)]
                self._chunk(data)
                sent += len(data)
            if not follow or finished or (limit is not None and sent >= limit) or self._client_gone():
                break
        self._end_stream()


def _log_finished(cluster: Cluster, pod: Pod, container: Container) -> bool:
    """A followed log ends once the container terminated (after its last line) or the pod is gone."""
    return container.terminated or pod.gone or cluster.stopping


def first_log_index(container: Container, req: RecordedRequest) -> int:
    """Index of the first line to send, from ``sinceSeconds``/``sinceTime``/``tailLines``."""
    logs = container.logs
    index = 0
    since_seconds = req.param("sinceSeconds")
    since_time = req.param("sinceTime")
    if since_seconds is not None:
        cutoff = time.time_ns() - int(float(since_seconds) * 1e9)
        index = next((i for i, (ts, _) in enumerate(logs) if ts >= cutoff), len(logs))
    elif since_time is not None:
        cutoff = calendar.timegm(time.strptime(since_time[:19], "%Y-%m-%dT%H:%M:%S")) * 10**9
        index = next((i for i, (ts, _) in enumerate(logs) if ts >= cutoff), len(logs))
    tail = req.param("tailLines")
    if tail is not None:
        index = max(index, len(logs) - int(tail))
    return index


def watch_line(change: str, obj: dict[str, Any]) -> bytes:
    return json.dumps({"type": change, "object": obj}).encode() + b"\n"


def namespace_obj(name: str) -> dict[str, Any]:
    return {
        "kind": "Namespace",
        "apiVersion": "v1",
        "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


def api_resource_list() -> dict[str, Any]:
    resources = [
        {"name": name, "singularName": "", "namespaced": namespaced, "kind": kind, "verbs": verbs}
        for name, kind, namespaced, verbs in API_RESOURCES
    ]
    return {"kind": "APIResourceList", "groupVersion": "v1", "resources": resources}


def make_server(cluster: Cluster, record: Callable[[RecordedRequest], None], namespaces: set[str]) -> _Server:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.cluster = cluster
    server.record = record
    server.namespaces = namespaces
    return server


def serve_in_thread(server: _Server) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    return thread

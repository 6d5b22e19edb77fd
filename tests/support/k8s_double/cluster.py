"""In-memory cluster state of the Kubernetes API test double: pods that run as host subprocesses.

A pod's containers are run, in order of creation, as subprocesses in their own session (so their
process group id is their PID); stdout and stderr are merged into the container log. Nothing here
ever runs a command that did not come from the image mapping (plus the pod's ``args``).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import itertools
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .faults import Fault
from .images import ImageMapping, ImageMappingError

NODE_NAME = "double-node-1"
HOST_IP = "10.0.0.10"
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
_ip_counter = itertools.count(2)


class ApiError(Exception):
    """An error the HTTP layer turns into a Kubernetes ``Status`` response."""

    def __init__(self, code: int, reason: str, message: str, *, kind: str = "", name: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.kind = kind
        self.name = name

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.kind or self.name:
            body["details"] = {"name": self.name, "kind": self.kind}
        return body


def not_found(kind: str, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{kind} "{name}" not found', kind=kind, name=name)


def rfc3339(ts: float | None = None) -> str:
    """Second-precision RFC 3339 (what the API server uses for object timestamps)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if ts is None else ts))


def rfc3339nano(ts_ns: int) -> str:
    """Go's RFC3339Nano (trailing zeros of the fraction trimmed), as kubelet prefixes log lines."""
    seconds, nanos = divmod(ts_ns, 1_000_000_000)
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    fraction = f"{nanos:09d}".rstrip("0")
    return f"{base}.{fraction}Z" if fraction else f"{base}Z"


@dataclass
class Container:
    """Runtime of one container: its state, its log lines and its process."""

    name: str
    image: str
    spec: dict[str, Any]
    state: dict[str, Any] = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    logs: list[tuple[int, bytes]] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None
    kill_reason: str | None = None
    container_id: str = ""
    reap_lock: threading.Lock = field(default_factory=threading.Lock)
    reaped: bool = False

    @property
    def started(self) -> bool:
        return "running" in self.state or "terminated" in self.state

    @property
    def terminated(self) -> bool:
        return "terminated" in self.state

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": self.name,
            "image": self.image,
            "imageID": f"docker-pullable://{self.image}" if self.started else "",
            "ready": "running" in self.state,
            "restartCount": 0,
            "started": "running" in self.state,
            "state": copy.deepcopy(self.state),
            "lastState": {},
        }
        if self.container_id:
            body["containerID"] = self.container_id
        return body

    def signal_group(self, sig: int) -> bool:
        """Signal the container's process group (its PID: it leads its own session), if not reaped."""
        with self.reap_lock:
            proc = self.process
            if proc is None or self.reaped or proc.pid <= 1 or proc.pid == os.getpid():
                return False
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return False
            return True


@dataclass
class Pod:
    """A pod object as created, plus its simulated status."""

    namespace: str
    name: str
    obj: dict[str, Any]
    containers: list[Container]
    faults: list[Fault]
    phase: str = "Pending"
    conditions: dict[str, dict[str, Any]] = field(default_factory=dict)
    pod_ip: str = ""
    start_time: str = ""
    reason: str = ""
    message: str = ""
    deleting: bool = False
    gone: bool = False

    def fault(self, kind: str) -> Fault | None:
        return next((f for f in self.faults if f.kind == kind), None)

    def container(self, name: str | None) -> Container:
        if name is None:
            if len(self.containers) != 1:
                names = " ".join(c.name for c in self.containers)
                raise ApiError(
                    400,
                    "BadRequest",
                    f"a container name must be specified for pod {self.name}, choose one of: [{names}]",
                )
            return self.containers[0]
        for container in self.containers:
            if container.name == name:
                return container
        raise ApiError(400, "BadRequest", f"container {name} is not valid for pod {self.name}")

    def to_dict(self) -> dict[str, Any]:
        body = copy.deepcopy(self.obj)
        status: dict[str, Any] = {
            "phase": self.phase,
            "conditions": [copy.deepcopy(c) for c in self.conditions.values()],
            "qosClass": "BestEffort",
        }
        if self.reason:
            status["reason"] = self.reason
        if self.message:
            status["message"] = self.message
        if self.start_time:
            status["startTime"] = self.start_time
            status["hostIP"] = HOST_IP
            status["hostIPs"] = [{"ip": HOST_IP}]
            status["containerStatuses"] = [c.status() for c in self.containers]
        if self.pod_ip:
            status["podIP"] = self.pod_ip
            status["podIPs"] = [{"ip": self.pod_ip}]
        body["status"] = status
        return body


@dataclass
class JournalEntry:
    """One change, for watches: ``resource`` is ``pods``, ``events``, ``configmaps`` or ``secrets``."""

    rv: int
    resource: str
    namespace: str
    type: str
    obj: dict[str, Any]


class Cluster:
    """All state of the double, guarded by one condition variable (notified on every change)."""

    def __init__(
        self,
        image_mapping: ImageMapping,
        workdir: Path,
        *,
        startup_delay: float = 0.05,
        base_env: dict[str, str] | None = None,
        allow_command_override: bool = False,
        max_grace_seconds: float = 2.0,
    ) -> None:
        self.image_mapping = image_mapping
        self.workdir = workdir
        self.startup_delay = startup_delay
        self.base_env = base_env if base_env is not None else default_base_env(workdir)
        self.allow_command_override = allow_command_override
        self.max_grace_seconds = max_grace_seconds
        self.cond = threading.Condition(threading.RLock())
        self.stopping = False
        self._rv = 0
        self.pods: dict[tuple[str, str], Pod] = {}
        self.deleted_pods: list[dict[str, Any]] = []
        self.history: list[Pod] = []  # every pod ever created, for logs of deleted/lost pods
        self.events: list[dict[str, Any]] = []
        self.configmaps: dict[tuple[str, str], dict[str, Any]] = {}
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.journal: list[JournalEntry] = []
        self.faults: list[Fault] = []
        self.started: list[Container] = []
        self._threads: list[threading.Thread] = []

    # -- bookkeeping ---------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        return self._rv

    def _bump(self) -> str:
        self._rv += 1
        return str(self._rv)

    def _record(self, resource: str, namespace: str, change: str, obj: dict[str, Any]) -> None:
        self.journal.append(JournalEntry(self._rv, resource, namespace, change, copy.deepcopy(obj)))
        self.cond.notify_all()

    def _pod_changed(self, pod: Pod, change: str = "MODIFIED") -> None:
        pod.obj["metadata"]["resourceVersion"] = self._bump()
        self._record("pods", pod.namespace, change, pod.to_dict())

    def _spawn_thread(self, target: Callable[..., None], *args: Any, name: str) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _sleep(self, seconds: float, pod: Pod | None = None) -> bool:
        """Sleep unless the double stops or the pod goes away; return True if still wanted."""
        with self.cond:
            self.cond.wait_for(
                lambda: self.stopping or (pod is not None and (pod.gone or pod.deleting)), timeout=seconds
            )
            return not self.stopping and not (pod is not None and (pod.gone or pod.deleting))

    def add_event(
        self,
        pod: Pod,
        reason: str,
        message: str,
        *,
        type_: str = "Normal",
        container: str | None = None,
        component: str = "kubelet",
    ) -> None:
        with self.cond:
            now = rfc3339()
            rv = self._bump()
            involved: dict[str, Any] = {
                "kind": "Pod",
                "namespace": pod.namespace,
                "name": pod.name,
                "uid": pod.obj["metadata"]["uid"],
                "apiVersion": "v1",
                "resourceVersion": pod.obj["metadata"]["resourceVersion"],
            }
            if container is not None:
                involved["fieldPath"] = f"spec.containers{{{container}}}"
            event = {
                "kind": "Event",
                "apiVersion": "v1",
                "metadata": {
                    "name": f"{pod.name}.{uuid.uuid4().hex[:16]}",
                    "namespace": pod.namespace,
                    "uid": str(uuid.uuid4()),
                    "resourceVersion": rv,
                    "creationTimestamp": now,
                },
                "involvedObject": involved,
                "reason": reason,
                "message": message,
                "source": {"component": component, **({"host": NODE_NAME} if component == "kubelet" else {})},
                "firstTimestamp": now,
                "lastTimestamp": now,
                "count": 1,
                "type": type_,
                "eventTime": None,
                "reportingComponent": component,
                "reportingInstance": NODE_NAME if component == "kubelet" else "",
            }
            self.events.append(event)
            self._record("events", pod.namespace, "ADDED", event)

    def _set_condition(self, pod: Pod, type_: str, status: bool, reason: str = "", message: str = "") -> None:
        condition: dict[str, Any] = {
            "type": type_,
            "status": "True" if status else "False",
            "lastProbeTime": None,
            "lastTransitionTime": rfc3339(),
        }
        if reason:
            condition["reason"] = reason
        if message:
            condition["message"] = message
        pod.conditions[type_] = condition

    # -- pods ----------------------------------------------------------------------------------

    def create_pod(self, namespace: str, body: Any) -> dict[str, Any]:
        obj = validate_pod(namespace, body)
        meta = obj["metadata"]
        with self.cond:
            if not meta.get("name"):
                meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:5]}"
            name = meta["name"]
            if (namespace, name) in self.pods:
                raise ApiError(409, "AlreadyExists", f'pods "{name}" already exists', kind="pods", name=name)
            meta.update(
                namespace=namespace,
                uid=str(uuid.uuid4()),
                creationTimestamp=rfc3339(),
                resourceVersion="0",
            )
            meta.setdefault("labels", {})
            meta.setdefault("annotations", {})
            containers = [Container(c["name"], c["image"], c) for c in obj["spec"]["containers"]]
            images = [c.image for c in containers]
            faults = []
            for fault in self.faults:
                if fault.matches(name, namespace, images):
                    fault.applied += 1
                    faults.append(fault)
            pod = Pod(namespace, name, obj, containers, faults)
            self.pods[(namespace, name)] = pod
            self.history.append(pod)
            self._pod_changed(pod, "ADDED")
            self._spawn_thread(self._run_pod, pod, name=f"k8s-double-pod-{name}")
            return pod.to_dict()

    def get_pod(self, namespace: str, name: str) -> Pod:
        with self.cond:
            pod = self.pods.get((namespace, name))
            if pod is None:
                raise not_found("pods", name)
            return pod

    def list_pods(self, namespace: str | None, predicate: Callable[[dict[str, Any]], bool]) -> list[dict]:
        with self.cond:
            items = [p.to_dict() for (ns, _), p in sorted(self.pods.items()) if namespace in (None, ns)]
        return [item for item in items if predicate(item)]

    def patch_pod(self, namespace: str, name: str, content_type: str, patch: Any) -> dict[str, Any]:
        with self.cond:
            pod = self.get_pod(namespace, name)
            meta = pod.obj["metadata"]
            if content_type == "application/json-patch+json":
                apply_json_patch(meta, patch)
            elif content_type in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                apply_metadata_merge_patch(meta, patch)
            else:
                raise ApiError(
                    415,
                    "UnsupportedMediaType",
                    f"the body of the request was in an unknown format ({content_type!r}) - accepted media "
                    "types include: application/json-patch+json, application/merge-patch+json, "
                    "application/strategic-merge-patch+json",
                )
            self._pod_changed(pod)
            return pod.to_dict()

    def delete_pod(self, namespace: str, name: str, grace_seconds: float | None) -> dict[str, Any]:
        with self.cond:
            pod = self.get_pod(namespace, name)
            pod.deleting = True
            self.cond.notify_all()
            if "deletionTimestamp" not in pod.obj["metadata"]:
                grace = 30 if grace_seconds is None else int(grace_seconds)
                pod.obj["metadata"]["deletionTimestamp"] = rfc3339()
                pod.obj["metadata"]["deletionGracePeriodSeconds"] = grace
                self._pod_changed(pod)
            for container in pod.containers:
                if "running" in container.state:
                    self.add_event(pod, "Killing", f"Stopping container {container.name}", container=container.name)
        wait = min(self.max_grace_seconds, 30 if grace_seconds is None else grace_seconds)
        self._terminate(pod, wait)
        with self.cond:
            snapshot = pod.to_dict()
            self._remove(pod)
            self.deleted_pods.append(snapshot)
            return snapshot

    def _terminate(self, pod: Pod, grace: float) -> None:
        """SIGTERM the pod's process groups, SIGKILL after ``grace`` s, wait for their status."""
        sig = signal.SIGKILL if grace <= 0 else signal.SIGTERM
        for container in pod.containers:
            container.signal_group(sig)
        with self.cond:
            running = lambda: any("running" in c.state and c.process is not None for c in pod.containers)  # noqa: E731
            if grace > 0 and not self.cond.wait_for(lambda: not running(), timeout=grace):
                for container in pod.containers:
                    container.signal_group(signal.SIGKILL)
            self.cond.wait_for(lambda: not running(), timeout=5)

    def _remove(self, pod: Pod) -> None:
        with self.cond:
            if self.pods.get((pod.namespace, pod.name)) is pod:
                del self.pods[(pod.namespace, pod.name)]
                pod.gone = True
                self._pod_changed(pod, "DELETED")

    def kill_pod(self, namespace: str, name: str, reason: str = "Error") -> None:
        """SIGKILL the running containers of a pod (exit code 137 with ``reason``)."""
        pod = self.get_pod(namespace, name)
        killed = False
        for container in pod.containers:
            if "running" in container.state:
                container.kill_reason = reason
                killed = container.signal_group(signal.SIGKILL) or killed
        if not killed:
            raise RuntimeError(f"pod {namespace}/{name} has no running container to kill")

    def lose_pod(self, namespace: str, name: str) -> None:
        """Node lost: SIGKILL the pod's processes and make the pod object vanish (404)."""
        pod = self.get_pod(namespace, name)
        for container in pod.containers:
            container.signal_group(signal.SIGKILL)
        self._remove(pod)

    # -- the pod lifecycle ---------------------------------------------------------------------

    def _run_pod(self, pod: Pod) -> None:
        if not self._sleep(self.startup_delay, pod):
            return
        with self.cond:
            if pod.fault("pending"):
                self._set_condition(
                    pod, "PodScheduled", False, "Unschedulable",
                    "0/1 nodes are available: 1 node(s) were unschedulable.",
                )  # fmt: skip
                self._pod_changed(pod)
                self.add_event(
                    pod, "FailedScheduling",
                    "0/1 nodes are available: 1 node(s) were unschedulable. "
                    "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.",
                    type_="Warning", component="default-scheduler",
                )  # fmt: skip
                return
            pod.obj["spec"]["nodeName"] = NODE_NAME
            pod.start_time = rfc3339()
            pod.pod_ip = f"10.244.0.{next(_ip_counter) % 250 + 2}"
            self._set_condition(pod, "PodScheduled", True)
            self._set_condition(pod, "Initialized", True)
            self._set_condition(pod, "Ready", False, "ContainersNotReady", "containers with unready status")
            self._set_condition(pod, "ContainersReady", False, "ContainersNotReady", "containers with unready status")
            self._pod_changed(pod)
            self.add_event(
                pod, "Scheduled", f"Successfully assigned {pod.namespace}/{pod.name} to {NODE_NAME}",
                component="default-scheduler",
            )  # fmt: skip
        argvs = [self._pull(pod, container) for container in pod.containers]
        if any(argv is None for argv in argvs):
            return
        envs = []
        for container in pod.containers:
            env = self._container_env(pod, container)
            if env is None:
                return
            envs.append(env)
        for container, argv, env in zip(pod.containers, argvs, envs, strict=True):
            if not self._start(pod, container, argv, env):  # type: ignore[arg-type]
                return
        with self.cond:
            pod.phase = "Running"
            self._set_condition(pod, "PodReadyToStartContainers", True)
            self._set_condition(pod, "Ready", True)
            self._set_condition(pod, "ContainersReady", True)
            self._pod_changed(pod)
        for kind in ("kill", "node_lost"):
            fault = pod.fault(kind)
            if fault is not None:
                self._spawn_thread(self._apply_runtime_fault, pod, fault, name=f"k8s-double-fault-{pod.name}")

    def _pull(self, pod: Pod, container: Container) -> list[str] | None:
        self.add_event(pod, "Pulling", f'Pulling image "{container.image}"', container=container.name)
        error = ""
        argv: list[str] | None = None
        if pod.fault("image_pull"):
            error = "pull access denied, repository does not exist or may require authorization (test fault)"
        else:
            try:
                argv = self.image_mapping(container.image)
            except ImageMappingError as exc:
                error = str(exc)
            if argv is None and not error:
                error = "the Kubernetes API test double has no command mapped to this image"
        if argv is not None:
            self.add_event(
                pod, "Pulled", f'Successfully pulled image "{container.image}" in 1ms (1ms including waiting)',
                container=container.name,
            )  # fmt: skip
            return argv
        message = f'Failed to pull image "{container.image}": {error}'
        self.add_event(pod, "Failed", message, type_="Warning", container=container.name)
        self.add_event(pod, "Failed", "Error: ErrImagePull", type_="Warning", container=container.name)
        with self.cond:
            container.state = {"waiting": {"reason": "ErrImagePull", "message": message}}
            self._pod_changed(pod)
        if self._sleep(max(self.startup_delay, 0.2), pod):
            # Events first, then the state: whoever sees the new state also sees its events.
            self.add_event(pod, "BackOff", f'Back-off pulling image "{container.image}"', container=container.name)
            self.add_event(pod, "Failed", "Error: ImagePullBackOff", type_="Warning", container=container.name)
            with self.cond:
                backoff = {"reason": "ImagePullBackOff", "message": f'Back-off pulling image "{container.image}"'}
                container.state = {"waiting": backoff}
                self._pod_changed(pod)
        return None

    def _container_env(self, pod: Pod, container: Container) -> dict[str, str] | None:
        try:
            with self.cond:
                env = resolve_env(pod, container.spec, self.configmaps, self.secrets)
        except ApiError as exc:
            self.add_event(pod, "Failed", f"Error: {exc.message}", type_="Warning", container=container.name)
            with self.cond:
                container.state = {"waiting": {"reason": "CreateContainerConfigError", "message": exc.message}}
                self._pod_changed(pod)
            return None
        merged = dict(self.base_env)
        merged["HOSTNAME"] = pod.name
        merged.update(env)
        return merged

    def _argv(self, pod: Pod, container: Container, entrypoint: list[str]) -> list[str] | None:
        command = container.spec.get("command")
        args = container.spec.get("args") or []
        if command:
            if not self.allow_command_override:
                message = (
                    "the Kubernetes API test double runs only mapped image entrypoints: container "
                    f"{container.name!r} sets 'command' (construct the double with allow_command_override=True)"
                )
                with self.cond:
                    self.add_event(pod, "Failed", f"Error: {message}", type_="Warning", container=container.name)
                    container.state = {"waiting": {"reason": "CreateContainerError", "message": message}}
                    self._pod_changed(pod)
                return None
            return [*command, *args]
        return [*entrypoint, *args]

    def _start(self, pod: Pod, container: Container, entrypoint: list[str], env: dict[str, str]) -> bool:
        argv = self._argv(pod, container, entrypoint)
        if argv is None:
            return False
        self.add_event(pod, "Created", f"Created container: {container.name}", container=container.name)
        with self.cond:
            if self.stopping or pod.gone or pod.deleting:
                return False
            try:
                process = subprocess.Popen(
                    argv,
                    cwd=self.workdir,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # own process group: pgid == pid, killed as a group
                )
            except OSError as exc:
                message = f"failed to create containerd task: exec: {argv[0]!r}: {exc.strerror}"
                self.add_event(pod, "Failed", f"Error: {message}", type_="Warning", container=container.name)
                container.state = {"waiting": {"reason": "RunContainerError", "message": message}}
                self._pod_changed(pod)
                return False
            self.started.append(container)
            container.process = process
            container.container_id = f"containerd://{uuid.uuid4().hex}{uuid.uuid4().hex}"
            container.state = {"running": {"startedAt": rfc3339()}}
            self._pod_changed(pod)
        self.add_event(pod, "Started", f"Started container {container.name}", container=container.name)
        self._spawn_thread(self._supervise, pod, container, name=f"k8s-double-proc-{pod.name}")
        return True

    def _supervise(self, pod: Pod, container: Container) -> None:
        process = container.process
        assert process is not None and process.stdout is not None
        reader = threading.Thread(target=self._read_log, args=(container, process.stdout), daemon=True)
        reader.start()
        try:
            os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped: pgid still ours
            exited_unreaped = True
        except ChildProcessError:  # reaped behind our back: its group id may be reused, do not signal it
            exited_unreaped = False
        with container.reap_lock:
            if exited_unreaped:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)  # leftovers of the container, as the runtime does
            returncode = process.wait()
            container.reaped = True
        reader.join(timeout=5)
        exit_code = returncode if returncode >= 0 else 128 - returncode
        with self.cond:
            reason = container.kill_reason or ("Completed" if exit_code == 0 else "Error")
            terminated: dict[str, Any] = {
                "exitCode": exit_code,
                "reason": reason,
                "startedAt": container.state.get("running", {}).get("startedAt", rfc3339()),
                "finishedAt": rfc3339(),
                "containerID": container.container_id,
            }
            if returncode < 0:
                terminated["signal"] = -returncode
            message = termination_message(container)
            if exit_code != 0 and message:
                terminated["message"] = message
            container.state = {"terminated": terminated}
            if all(c.terminated for c in pod.containers):
                failed = any(c.state["terminated"]["exitCode"] != 0 for c in pod.containers)
                pod.phase = "Failed" if failed else "Succeeded"
                self._set_condition(pod, "Ready", False, "PodCompleted")
                self._set_condition(pod, "ContainersReady", False, "PodCompleted")
                self._set_condition(pod, "PodReadyToStartContainers", False)
            self._pod_changed(pod)

    def _read_log(self, container: Container, stream: Any) -> None:
        for line in iter(stream.readline, b""):
            with self.cond:
                container.logs.append((time.time_ns(), line))
                self.cond.notify_all()
        stream.close()

    def _apply_runtime_fault(self, pod: Pod, fault: Fault) -> None:
        if not self._sleep(fault.after_seconds, pod):
            return
        if fault.kind == "node_lost":
            self.lose_pod(pod.namespace, pod.name)
            return
        for container in pod.containers:
            if "running" in container.state:
                container.kill_reason = fault.reason
                container.signal_group(signal.SIGKILL)

    # -- config objects ------------------------------------------------------------------------

    def put_config(self, kind: str, namespace: str, body: Any, *, replace: bool = False) -> dict[str, Any]:
        store = self.configmaps if kind == "configmaps" else self.secrets
        obj = validate_config(kind, namespace, body)
        name = obj["metadata"]["name"]
        with self.cond:
            if (namespace, name) in store and not replace:
                raise ApiError(409, "AlreadyExists", f'{kind} "{name}" already exists', kind=kind, name=name)
            obj["metadata"].update(
                namespace=namespace, uid=str(uuid.uuid4()), creationTimestamp=rfc3339(), resourceVersion=self._bump()
            )
            store[(namespace, name)] = obj
            self._record(kind, namespace, "ADDED", obj)
            return copy.deepcopy(obj)

    def get_config(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        store = self.configmaps if kind == "configmaps" else self.secrets
        with self.cond:
            if (namespace, name) not in store:
                raise not_found(kind, name)
            return copy.deepcopy(store[(namespace, name)])

    def list_config(self, kind: str, namespace: str) -> list[dict[str, Any]]:
        store = self.configmaps if kind == "configmaps" else self.secrets
        with self.cond:
            return [copy.deepcopy(obj) for (ns, _), obj in sorted(store.items()) if ns == namespace]

    def delete_config(self, kind: str, namespace: str, name: str) -> dict[str, Any]:
        store = self.configmaps if kind == "configmaps" else self.secrets
        with self.cond:
            if (namespace, name) not in store:
                raise not_found(kind, name)
            obj = store.pop((namespace, name))
            self._bump()
            self._record(kind, namespace, "DELETED", obj)
            return obj

    # -- watches and shutdown ------------------------------------------------------------------

    def journal_since(self, rv: int, resource: str, namespace: str | None) -> Iterator[JournalEntry]:
        with self.cond:
            entries = [
                e for e in self.journal if e.rv > rv and e.resource == resource and namespace in (None, e.namespace)
            ]
        return iter(entries)

    def stop(self) -> None:
        """Kill every process group this double started (by PID), then release waiting streams."""
        with self.cond:
            self.stopping = True
            started = list(self.started)
            self.cond.notify_all()
        for container in started:
            container.signal_group(signal.SIGKILL)
        for thread in self._threads:
            thread.join(timeout=5)


def default_base_env(workdir: Path) -> dict[str, str]:
    """The environment a container starts with before the pod's ``env``: no host secrets leak in."""
    return {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": str(workdir),
        "LANG": "C.UTF-8",
        "TZ": "UTC",
        # Task images set this (logs must reach `kubectl logs` line by line); the double does too.
        "PYTHONUNBUFFERED": "1",
        "KUBERNETES_SERVICE_HOST": "10.96.0.1",
        "KUBERNETES_SERVICE_PORT": "443",
    }


def termination_message(container: Container) -> str:
    """``FallbackToLogsOnError``: the last 80 lines / 2048 bytes of the log of a failed container."""
    if container.spec.get("terminationMessagePolicy") != "FallbackToLogsOnError":
        return ""
    tail = b"".join(line for _, line in container.logs[-80:])[-2048:]
    return tail.decode("utf-8", errors="replace")


def validate_pod(namespace: str, body: Any) -> dict[str, Any]:
    """Check the parts of a pod the double relies on; errors name the field, like the API server."""
    if not isinstance(body, dict) or body.get("kind", "Pod") != "Pod":
        raise ApiError(400, "BadRequest", "the request body must be a Pod object")
    obj = copy.deepcopy(body)
    meta = obj.setdefault("metadata", {})
    name = meta.get("name") or ""
    if not name and not meta.get("generateName"):
        raise ApiError(
            422, "Invalid", "Pod is invalid: metadata.name: Required value: name or generateName is required"
        )
    if name and (len(name) > 253 or not _NAME_RE.match(name)):
        raise ApiError(422, "Invalid", f'Pod "{name}" is invalid: metadata.name: Invalid value: "{name}"')
    if meta.get("namespace") not in (None, namespace):
        raise ApiError(
            400,
            "BadRequest",
            "the namespace of the provided object does not match the namespace sent on the request",
        )
    spec = obj.get("spec")
    if not isinstance(spec, dict) or not spec.get("containers"):
        raise ApiError(422, "Invalid", f'Pod "{name}" is invalid: spec.containers: Required value')
    if spec.get("initContainers"):
        raise ApiError(
            422, "Invalid", "spec.initContainers: the Kubernetes API test double does not run init containers"
        )
    seen: set[str] = set()
    for index, container in enumerate(spec["containers"]):
        for key in ("name", "image"):
            if not isinstance(container, dict) or not container.get(key):
                raise ApiError(
                    422, "Invalid", f'Pod "{name}" is invalid: spec.containers[{index}].{key}: Required value'
                )
        if container["name"] in seen:
            raise ApiError(422, "Invalid", f'spec.containers[{index}].name: Duplicate value: "{container["name"]}"')
        seen.add(container["name"])
    obj.setdefault("apiVersion", "v1")
    obj["kind"] = "Pod"
    return obj


def validate_config(kind: str, namespace: str, body: Any) -> dict[str, Any]:
    singular = "ConfigMap" if kind == "configmaps" else "Secret"
    if not isinstance(body, dict) or not (body.get("metadata") or {}).get("name"):
        raise ApiError(422, "Invalid", f"{singular} is invalid: metadata.name: Required value")
    obj = copy.deepcopy(body)
    if obj["metadata"].get("namespace") not in (None, namespace):
        raise ApiError(
            400, "BadRequest", "the namespace of the provided object does not match the namespace sent on the request"
        )
    obj.update(kind=singular, apiVersion="v1")
    data = obj.get("data") or {}
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise ApiError(422, "Invalid", f"{singular} is invalid: data: values must be strings")
    if kind == "secrets":
        for key, value in data.items():
            try:
                base64.b64decode(value, validate=True)
            except ValueError as exc:
                raise ApiError(422, "Invalid", f"Secret is invalid: data[{key}]: not valid base64") from exc
        for key, value in (obj.pop("stringData", None) or {}).items():
            data[key] = base64.b64encode(str(value).encode()).decode()
        obj.setdefault("type", "Opaque")
    obj["data"] = data
    return obj


def _config_value(kind: str, obj: dict[str, Any], key: str) -> str | None:
    value = (obj.get("data") or {}).get(key)
    if value is None:
        return None
    return base64.b64decode(value).decode() if kind == "secrets" else value


def resolve_env(
    pod: Pod,
    container: dict[str, Any],
    configmaps: dict[tuple[str, str], dict[str, Any]],
    secrets: dict[tuple[str, str], dict[str, Any]],
) -> dict[str, str]:
    """Container env as kubelet builds it: ``envFrom`` first, then ``env`` (later entries win)."""
    namespace = pod.namespace
    stores = {"configmaps": configmaps, "secrets": secrets}
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        kind, ref = (
            ("configmaps", source["configMapRef"])
            if "configMapRef" in source
            else ("secrets", source.get("secretRef") or {})
        )
        obj = stores[kind].get((namespace, ref.get("name", "")))
        if obj is None:
            if ref.get("optional"):
                continue
            raise ApiError(400, "BadRequest", f'{kind[:-1]} "{ref.get("name")}" not found')
        prefix = source.get("prefix") or ""
        for key in obj.get("data") or {}:
            env[prefix + key] = _config_value(kind, obj, key) or ""
    for item in container.get("env") or []:
        name = item["name"]
        if "valueFrom" not in item:
            env[name] = expand_env_refs(str(item.get("value") or ""), env)
            continue
        value_from = item["valueFrom"]
        if "configMapKeyRef" in value_from or "secretKeyRef" in value_from:
            kind = "configmaps" if "configMapKeyRef" in value_from else "secrets"
            ref = value_from.get("configMapKeyRef") or value_from.get("secretKeyRef")
            obj = stores[kind].get((namespace, ref.get("name", "")))
            value = _config_value(kind, obj, ref["key"]) if obj is not None else None
            if value is None:
                if ref.get("optional"):
                    continue
                what = (
                    f'{kind[:-1]} "{ref.get("name")}" not found'
                    if obj is None
                    else (
                        f"couldn't find key {ref['key']} in {'ConfigMap' if kind == 'configmaps' else 'Secret'} "
                        f"{namespace}/{ref.get('name')}"
                    )
                )
                raise ApiError(400, "BadRequest", what)
            env[name] = value
        elif "fieldRef" in value_from:
            env[name] = pod_field(pod, str(value_from["fieldRef"].get("fieldPath", "")))
        else:
            raise ApiError(
                400, "BadRequest", f"env {name}: valueFrom {sorted(value_from)} is not supported by the test double"
            )
    return env


def pod_field(pod: Pod, path: str) -> str:
    """The downward-API ``fieldRef`` paths Kubernetes supports for env vars."""
    meta = pod.obj["metadata"]
    subscript = re.match(r"^metadata\.(labels|annotations)\['([^']+)'\]$", path)
    if subscript:
        return str((meta.get(subscript[1]) or {}).get(subscript[2], ""))
    values = {
        "metadata.name": pod.name,
        "metadata.namespace": pod.namespace,
        "metadata.uid": meta["uid"],
        "spec.nodeName": pod.obj["spec"].get("nodeName", ""),
        "spec.serviceAccountName": pod.obj["spec"].get("serviceAccountName", "default"),
        "status.podIP": pod.pod_ip,
        "status.hostIP": HOST_IP,
    }
    if path not in values:
        raise ApiError(400, "BadRequest", f"fieldRef {path!r} is not supported by the Kubernetes API test double")
    return values[path]


def expand_env_refs(value: str, env: dict[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion of earlier variables; ``$$`` escapes."""
    return re.sub(
        r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
        lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)),
        value,
    )


def apply_metadata_merge_patch(meta: dict[str, Any], patch: Any) -> None:
    """Merge / strategic-merge patch restricted to ``metadata.labels`` and ``metadata.annotations``."""
    if not isinstance(patch, dict):
        raise ApiError(400, "BadRequest", "a merge patch must be a JSON object")
    unsupported = set(patch) - {"metadata", "apiVersion", "kind"}
    patch_meta = patch.get("metadata") or {}
    unsupported |= {f"metadata.{k}" for k in patch_meta if k not in ("labels", "annotations", "name", "namespace")}
    if unsupported:
        raise ApiError(
            422, "Invalid",
            f"the Kubernetes API test double patches only metadata.labels/annotations, not {sorted(unsupported)}",
        )  # fmt: skip
    for key in ("labels", "annotations"):
        if key not in patch_meta:
            continue
        if patch_meta[key] is None:
            meta[key] = {}
            continue
        target = meta.setdefault(key, {})
        for k, v in patch_meta[key].items():
            if v is None:
                target.pop(k, None)
            else:
                target[k] = str(v)


def apply_json_patch(meta: dict[str, Any], ops: Any) -> None:
    """RFC 6902 ``add``/``replace``/``remove``/``test`` on ``/metadata/labels|annotations[/key]``."""
    if not isinstance(ops, list):
        raise ApiError(400, "BadRequest", "a JSON patch must be a JSON array of operations")
    for op in ops:
        path = str(op.get("path", ""))
        parts = [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]
        if len(parts) not in (2, 3) or parts[0] != "metadata" or parts[1] not in ("labels", "annotations"):
            raise ApiError(
                422,
                "Invalid",
                f"the Kubernetes API test double patches only /metadata/labels|annotations, not {path!r}",
            )
        kind = op.get("op")
        if len(parts) == 2:
            if kind in ("add", "replace"):
                meta[parts[1]] = {str(k): str(v) for k, v in (op.get("value") or {}).items()}
            elif kind == "remove":
                meta[parts[1]] = {}
            else:
                raise ApiError(422, "Invalid", f"unsupported JSON patch op {kind!r} on {path!r}")
            continue
        target = meta.setdefault(parts[1], {})
        key = parts[2]
        if kind in ("add", "replace"):
            if kind == "replace" and key not in target:
                raise ApiError(422, "Invalid", f"replace operation does not apply: doc is missing key: {path}")
            target[key] = str(op.get("value"))
        elif kind == "remove":
            if key not in target:
                raise ApiError(422, "Invalid", f"remove operation does not apply: doc is missing key: {path}")
            del target[key]
        elif kind == "test":
            if target.get(key) != op.get("value"):
                raise ApiError(422, "Invalid", f"testing value {path} failed")
        else:
            raise ApiError(422, "Invalid", f"unsupported JSON patch op {kind!r}")

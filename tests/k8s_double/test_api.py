"""The Kubernetes API test double through the real Kubernetes Python client (and raw HTTP)."""

from __future__ import annotations

import http.client
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pendulum
import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import stream

from tests.support.k8s_double import KubeApiDouble

# A tiny "container": each argument is an instruction, run in order.
PROGRAM = """
import os, sys, time
for arg in sys.argv[1:]:
    op, _, value = arg.partition(":")
    if op == "say": print(value)
    elif op == "err": print(value, file=sys.stderr)
    elif op == "sleep": time.sleep(float(value))
    elif op == "env": print(value + "=" + os.environ.get(value, "<unset>"))
    elif op == "cwd": print("cwd=" + os.getcwd())
    elif op == "pid": print("pid=" + str(os.getpid()))
    elif op == "exit": sys.exit(int(value))
"""
NS = "crypto-tasks"


def program_mapping(image: str) -> list[str] | None:
    return [sys.executable, "-c", PROGRAM] if image.startswith("test/program") else None


@pytest.fixture
def double(k8s_double_factory: Callable[..., KubeApiDouble]) -> KubeApiDouble:
    return k8s_double_factory(image_mapping=program_mapping)


@pytest.fixture
def api(double: KubeApiDouble) -> Iterator[client.CoreV1Api]:
    api_client = config.new_client_from_config_dict(double.kubeconfig(NS))
    yield client.CoreV1Api(api_client)
    api_client.close()


def pod_body(name: str, *args: str, image: str = "test/program:1", **container: Any) -> dict[str, Any]:
    labels = container.pop("labels", {"app": "test"})
    spec = {"name": "base", "image": image, "args": list(args), **container}
    return {"metadata": {"name": name, "labels": labels}, "spec": {"restartPolicy": "Never", "containers": [spec]}}


def read_log(api: client.CoreV1Api, name: str, **kwargs: Any) -> str:
    """The log text (this client's own str deserialization of logs yields "b'...'": read raw bytes)."""
    return api.read_namespaced_pod_log(name, NS, _preload_content=False, **kwargs).data.decode()


def terminated(pod: dict[str, Any] | None) -> bool:
    return pod is not None and pod["status"]["phase"] in ("Succeeded", "Failed")


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        # The process may exit between the two calls: reading its /proc entry then fails with ESRCH/ENOENT.
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (ProcessLookupError, FileNotFoundError):
        return False


def children_of_this_process() -> set[int]:
    pids = set()
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(os.getpid()):
            pids.add(int(status.parent.name))
    return pids


def raw_get(double: KubeApiDouble, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", double.port, timeout=10)
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body


# -- discovery ------------------------------------------------------------------------------------


def test_version_has_every_version_info_field(double: KubeApiDouble, api: client.CoreV1Api) -> None:
    version = client.VersionApi(api.api_client).get_code()
    assert version.major == "1" and version.minor == "33"
    status, body = raw_get(double, "/version")
    raw = json.loads(body)
    expected = set(client.VersionInfo.attribute_map.values())
    assert status == 200 and expected <= set(raw), expected - set(raw)


def test_discovery_and_namespaces(double: KubeApiDouble, api: client.CoreV1Api) -> None:
    assert json.loads(raw_get(double, "/api")[1])["versions"] == ["v1"]
    assert json.loads(raw_get(double, "/apis")[1])["kind"] == "APIGroupList"
    resources = {r["name"] for r in json.loads(raw_get(double, "/api/v1")[1])["resources"]}
    assert {"pods", "pods/log", "events", "configmaps", "secrets"} <= resources
    assert {ns.metadata.name for ns in api.list_namespace().items} >= {"default", NS}
    assert api.read_namespace(NS).status.phase == "Active"
    status, body = raw_get(double, "/apis/batch/v1/jobs")
    assert status == 404 and b"does not implement" in body


# -- pod lifecycle --------------------------------------------------------------------------------


def test_pod_runs_args_env_and_succeeds(double: KubeApiDouble, api: client.CoreV1Api) -> None:
    double.add_configmap(NS, "cryptopipe-config", {"CRYPTOPIPE_STORAGE__URI": "file://./data", "SHARED": "cm"})
    api.create_namespaced_secret(NS, {"metadata": {"name": "cryptopipe-secrets"}, "stringData": {"API_KEY": "k1"}})
    body = pod_body(
        "lifecycle",
        "say:hello world",
        "env:GREETING",
        "env:CRYPTOPIPE_STORAGE__URI",
        "env:SHARED",
        "env:API_KEY",
        "env:FROM_KEY",
        "env:POD_NAME",
        "cwd",
        env=[
            {"name": "GREETING", "value": "hi $(POD_NAME)"},
            {"name": "SHARED", "value": "explicit env wins"},
            {"name": "FROM_KEY", "valueFrom": {"secretKeyRef": {"name": "cryptopipe-secrets", "key": "API_KEY"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
        envFrom=[{"configMapRef": {"name": "cryptopipe-config"}}, {"secretRef": {"name": "cryptopipe-secrets"}}],
    )
    created = api.create_namespaced_pod(NS, body)
    assert created.status.phase == "Pending" and created.metadata.uid
    final = double.wait_for_pod("lifecycle", NS, until=terminated)
    assert final is not None
    pod = api.read_namespaced_pod("lifecycle", NS)
    assert pod.status.phase == "Succeeded"
    state = pod.status.container_statuses[0].state.terminated
    assert (state.exit_code, state.reason) == (0, "Completed")
    assert state.started_at is not None and state.finished_at is not None
    assert pod.status.pod_ip and pod.status.start_time and pod.spec.node_name
    conditions = {c.type: c.status for c in pod.status.conditions}
    assert conditions["PodScheduled"] == "True" and conditions["Ready"] == "False"
    log = read_log(api, "lifecycle", container="base")
    assert log.splitlines() == [
        "hello world",
        "GREETING=hi $(POD_NAME)",  # POD_NAME is defined later: not expanded, as in Kubernetes
        "CRYPTOPIPE_STORAGE__URI=file://./data",
        "SHARED=explicit env wins",
        "API_KEY=k1",
        "FROM_KEY=k1",
        "POD_NAME=lifecycle",
        f"cwd={double.workdir}",
    ]
    reasons = [e.reason for e in api.list_namespaced_event(NS, field_selector="involvedObject.name=lifecycle").items]
    assert reasons == ["Scheduled", "Pulling", "Pulled", "Created", "Started"]


def test_failing_pod_reports_exit_code_and_fallback_message(double: KubeApiDouble, api: client.CoreV1Api) -> None:
    body = pod_body(
        "fails", "say:working", "err:boom: bad data", "exit:3", terminationMessagePolicy="FallbackToLogsOnError"
    )
    api.create_namespaced_pod(NS, body)
    double.wait_for_pod("fails", NS, until=terminated)
    pod = api.read_namespaced_pod("fails", NS)
    state = pod.status.container_statuses[0].state.terminated
    assert pod.status.phase == "Failed"
    assert (state.exit_code, state.reason) == (3, "Error")
    assert "boom: bad data" in state.message  # stderr is part of the container log


def test_missing_config_keeps_pod_waiting(double: KubeApiDouble, api: client.CoreV1Api) -> None:
    api.create_namespaced_pod(NS, pod_body("noconfig", "say:x", envFrom=[{"configMapRef": {"name": "absent"}}]))
    # every container starts waiting as ContainerCreating; wait for the reason the missing ConfigMap gives
    pod = double.wait_for_pod(
        "noconfig", NS, until=lambda p: p is not None and "CreateContainerConfigError" in str(p["status"])
    )
    waiting = pod["status"]["containerStatuses"][0]["state"]["waiting"]  # type: ignore[index]
    assert waiting == {"reason": "CreateContainerConfigError", "message": 'configmap "absent" not found'}
    assert pod["status"]["phase"] == "Pending"  # type: ignore[index]
    assert double.spawned_pids == []


def test_command_override_is_refused_by_default(double: KubeApiDouble, api: client.CoreV1Api) -> None:
    api.create_namespaced_pod(NS, pod_body("cmd", command=["/bin/sh", "-c", "echo hi"]))
    pod = double.wait_for_pod(
        "cmd", NS, until=lambda p: p is not None and "CreateContainerError" in json.dumps(p["status"])
    )
    assert pod is not None and double.spawned_pids == []


def test_create_validation_and_conflict(api: client.CoreV1Api) -> None:
    with pytest.raises(ApiException) as missing:
        api.create_namespaced_pod(NS, {"metadata": {"name": "x"}, "spec": {"containers": [{"name": "base"}]}})
    assert missing.value.status == 422 and "spec.containers[0].image" in missing.value.body
    api.create_namespaced_pod(NS, pod_body("dup", "say:x"))
    with pytest.raises(ApiException) as conflict:
        api.create_namespaced_pod(NS, pod_body("dup", "say:x"))
    assert conflict.value.status == 409
    generated = api.create_namespaced_pod(
        NS, {"metadata": {"generateName": "gen-"}, "spec": {"containers": [{"name": "b", "image": "test/program"}]}}
    )
    assert generated.metadata.name.startswith("gen-") and len(generated.metadata.name) > 4


# -- list, patch, delete --------------------------------------------------------------------------


def test_list_with_label_and_field_selectors(double: KubeApiDouble, api: client.CoreV1Api) -> None:
    api.create_namespaced_pod(NS, pod_body("a", "say:a", labels={"dag_id": "d", "task_id": "ingest"}))
    api.create_namespaced_pod(NS, pod_body("b", "sleep:30", labels={"dag_id": "d", "task_id": "validate"}))
    api.create_namespaced_pod("default", pod_body("c", "say:c", labels={"dag_id": "d", "airflow-worker": "1"}))
    double.wait_for_pod("a", NS, until=terminated)
    double.wait_for_pod("b", NS, phase="Running")

    def names(selector: str = "", field: str = "", namespace: str | None = NS) -> list[str]:
        pods = (
            api.list_namespaced_pod(namespace, label_selector=selector, field_selector=field)
            if namespace
            else api.list_pod_for_all_namespaces(label_selector=selector)
        )
        return sorted(p.metadata.name for p in pods.items)

    assert names("dag_id=d") == ["a", "b"]
    assert names("dag_id==d,task_id!=ingest") == ["b"]
    assert names("dag_id=d,!airflow-worker", namespace=None) == ["a", "b"]
    assert names("airflow-worker", namespace=None) == ["c"]
    assert names(field="status.phase=Running") == ["b"]
    assert names(field="metadata.name!=a") == ["b"]
    with pytest.raises(ApiException) as bad:
        api.list_namespaced_pod(NS, label_selector="bad key=x")
    assert bad.value.status == 400


def test_patch_labels(double: KubeApiDouble, api: client.CoreV1Api) -> None:
    api.create_namespaced_pod(NS, pod_body("p", "say:x", labels={"task_id": "ingest"}))
    # The body the operator's patch_already_checked sends (strategic merge patch).
    api.patch_namespaced_pod("p", NS, {"metadata": {"labels": {"already_checked": "True"}}})
    assert api.list_namespaced_pod(NS, label_selector="task_id=ingest,already_checked!=True").items == []
    api.patch_namespaced_pod("p", NS, [{"op": "remove", "path": "/metadata/labels/already_checked"}])
    api.patch_namespaced_pod("p", NS, [{"op": "add", "path": "/metadata/annotations/example.com~1note", "value": "n"}])
    pod = api.read_namespaced_pod("p", NS)
    assert pod.metadata.labels == {"task_id": "ingest"}
    assert pod.metadata.annotations == {"example.com/note": "n"}
    with pytest.raises(ApiException) as spec_patch:
        api.patch_namespaced_pod("p", NS, {"spec": {"activeDeadlineSeconds": 5}})
    assert spec_patch.value.status == 422
    assert double.requests_matching("PATCH")[0].content_type == "application/strategic-merge-patch+json"


def test_delete_terminates_the_process(double: KubeApiDouble, api: client.CoreV1Api) -> None:
    api.create_namespaced_pod(NS, pod_body("long", "say:started", "sleep:60"))
    double.wait_for_log("long", NS, "started\n")
    [pid] = double.spawned_pids
    assert process_alive(pid)
    started = time.monotonic()
    deleted = api.delete_namespaced_pod("long", NS, body=client.V1DeleteOptions(grace_period_seconds=5))
    assert time.monotonic() - started < 3  # SIGTERM ends the sleep at once
    assert deleted.metadata.deletion_timestamp is not None
    assert not process_alive(pid)
    with pytest.raises(ApiException) as gone:
        api.read_namespaced_pod("long", NS)
    assert gone.value.status == 404 and json.loads(gone.value.body)["reason"] == "NotFound"
    with pytest.raises(ApiException) as again:
        api.delete_namespaced_pod("long", NS)
    assert again.value.status == 404
    [snapshot] = double.deleted_pods
    assert snapshot["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"] == 143
    assert double.pod_logs("long", NS) == "started\n"


# -- logs -----------------------------------------------------------------------------------------


def test_follow_streams_lines_live_and_ends_after_termination(double: KubeApiDouble, api: client.CoreV1Api) -> None:
    api.create_namespaced_pod(NS, pod_body("stream", "say:first", "sleep:0.8", "say:second", "exit:0"))
    double.wait_for_pod("stream", NS, phase="Running")
    response = api.read_namespaced_pod_log(
        "stream", NS, container="base", follow=True, timestamps=True, _preload_content=False
    )
    arrivals = []
    for chunk in response.stream():
        arrivals.append((time.monotonic(), chunk))
    ended = time.monotonic()
    lines = b"".join(chunk for _, chunk in arrivals).decode().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == ["first", "second"]
    for line in lines:
        stamp = line.split(" ", 1)[0]
        assert stamp.endswith("Z") and "." in stamp
        assert abs((pendulum.now("UTC") - pendulum.parse(stamp)).total_seconds()) < 30
    assert ended - arrivals[0][0] > 0.5  # the first line came while the container still ran
    # The stream ended only after the container terminated: the very next read shows it.
    assert api.read_namespaced_pod("stream", NS).status.container_statuses[0].state.terminated is not None


def test_log_options(double: KubeApiDouble, api: client.CoreV1Api) -> None:
    # Still running when read (non-follow reads of a running container return what is there).
    api.create_namespaced_pod(NS, pod_body("opts", "say:old", "sleep:1.2", "say:new1", "say:new2", "sleep:30"))
    double.wait_for_log("opts", NS, "new2\n", timeout=15)
    assert read_log(api, "opts") == "old\nnew1\nnew2\n"  # single container: name optional
    assert read_log(api, "opts", since_seconds=1) == "new1\nnew2\n"
    assert read_log(api, "opts", tail_lines=1) == "new2\n"
    assert read_log(api, "opts", limit_bytes=6) == "old\nne"
    with pytest.raises(ApiException) as bad_container:
        read_log(api, "opts", container="nope")
    assert bad_container.value.status == 400


def test_logs_of_a_waiting_container_are_refused(double: KubeApiDouble, api: client.CoreV1Api) -> None:
    double.keep_pending(pod="waiting-*")
    api.create_namespaced_pod(NS, pod_body("waiting-1", "say:x"))
    with pytest.raises(ApiException) as waiting:
        read_log(api, "waiting-1", container="base", follow=True)
    assert waiting.value.status == 400 and "is waiting to start" in waiting.value.body


# -- events and watches ---------------------------------------------------------------------------


def test_event_watch_streams_newline_delimited_json(double: KubeApiDouble, api: client.CoreV1Api) -> None:
    double.keep_pending(pod="unsched")
    api.create_namespaced_pod(NS, pod_body("unsched", "say:x"))
    double.wait_for_pod("unsched", NS, until=lambda p: p is not None and bool(p["status"]["conditions"]))
    started = time.monotonic()
    status, body = raw_get(
        double,
        f"/api/v1/namespaces/{NS}/events?fieldSelector=involvedObject.name%3Dunsched&watch=True&timeoutSeconds=1",
    )
    assert status == 200 and 0.9 < time.monotonic() - started < 3  # ends at timeoutSeconds
    events = [json.loads(line) for line in body.decode().splitlines()]
    assert [e["type"] for e in events] == ["ADDED"]
    event = events[0]["object"]
    assert (event["reason"], event["type"]) == ("FailedScheduling", "Warning")
    pod = api.read_namespaced_pod("unsched", NS)
    scheduled = next(c for c in pod.status.conditions if c.type == "PodScheduled")
    assert (pod.status.phase, scheduled.status, scheduled.reason) == ("Pending", "False", "Unschedulable")


def test_pod_watch_sees_changes_after_resource_version(double: KubeApiDouble, api: client.CoreV1Api) -> None:
    double.add_configmap(NS, "before", {"k": "v"})  # resourceVersion "0" would mean "any": start later
    rv = api.list_namespaced_pod(NS).metadata.resource_version
    assert rv != "0"
    api.create_namespaced_pod(NS, pod_body("watched", "say:x"))
    double.wait_for_pod("watched", NS, until=terminated)
    api.delete_namespaced_pod("watched", NS)
    status, body = raw_get(double, f"/api/v1/namespaces/{NS}/pods?watch=true&resourceVersion={rv}&timeoutSeconds=0.2")
    assert status == 200
    changes = [json.loads(line) for line in body.decode().splitlines()]
    assert changes[0]["type"] == "ADDED" and changes[-1]["type"] == "DELETED"
    phases = [c["object"]["status"]["phase"] for c in changes]
    assert "Running" in phases and "Succeeded" in phases


def test_async_hook_watch_pod_events(double: KubeApiDouble) -> None:
    """The triggerer's path: AsyncKubernetesHook.watch_pod_events (kubernetes_asyncio Watch)."""
    import asyncio

    from airflow.providers.cncf.kubernetes.hooks.kubernetes import AsyncKubernetesHook

    double.keep_pending(pod="pending-pod")
    double.cluster.create_pod(NS, pod_body("pending-pod", "say:x"))
    double.wait_for_pod("pending-pod", NS, until=lambda p: p is not None and bool(p["status"]["conditions"]))

    async def first_event() -> Any:
        hook = AsyncKubernetesHook(conn_id=None, config_dict=double.kubeconfig(NS))
        async for event in hook.watch_pod_events("pending-pod", NS, timeout_seconds=1):
            return event
        return None

    event = asyncio.run(asyncio.wait_for(first_event(), timeout=10))
    assert event.reason == "FailedScheduling" and event.involved_object.name == "pending-pod"
    watch = [r for r in double.requests_matching("GET", f"/api/v1/namespaces/{NS}/events") if r.param("watch")]
    assert watch and watch[0].param("watch") == "True" and watch[0].param("timeoutSeconds") == "1"


# -- exec is refused ------------------------------------------------------------------------------


def test_exec_is_refused_and_runs_nothing(double: KubeApiDouble, api: client.CoreV1Api, tmp_path: Path) -> None:
    api.create_namespaced_pod(NS, pod_body("target", "sleep:30"))
    double.wait_for_pod("target", NS, phase="Running")
    marker = tmp_path / "exec-ran"
    pids_before, children_before = double.spawned_pids, children_of_this_process()
    for command in (["/bin/sh", "-c", f"touch {marker}"], ["/bin/sh"]):
        # The client turns the refused handshake into ApiException (and, handling it, sometimes an
        # AttributeError on its empty body): look for the 403 along the exception chain.
        with pytest.raises(Exception) as refused:
            stream(
                api.connect_get_namespaced_pod_exec,
                "target",
                NS,
                command=command,
                container="base",
                stdin=command == ["/bin/sh"],
                stdout=True,
                stderr=True,
                tty=False,
            )
        chain, error = [], refused.value
        while error is not None:
            chain.append(str(error))
            error = error.__context__
        assert any("403 Forbidden" in text for text in chain), chain
    assert not marker.exists()
    assert double.spawned_pids == pids_before
    assert children_of_this_process() <= children_before
    exec_requests = double.requests_matching("GET", f"/api/v1/namespaces/{NS}/pods/target/exec")
    assert len(exec_requests) == 2 and {r.status for r in exec_requests} == {403}


# -- faults ---------------------------------------------------------------------------------------


def test_image_pull_failures(double: KubeApiDouble, api: client.CoreV1Api) -> None:
    double.fail_image_pull(image="test/program:broken")
    api.create_namespaced_pod(NS, pod_body("pull-fault", image="test/program:broken"))
    api.create_namespaced_pod(NS, pod_body("unmapped", image="docker.io/library/alpine:3"))
    for name in ("pull-fault", "unmapped"):
        pod = double.wait_for_pod(name, NS, until=lambda p: p is not None and "ImagePullBackOff" in json.dumps(p))
        assert pod is not None and pod["status"]["phase"] == "Pending"
        reasons = [e["reason"] for e in double.events(NS, name)]
        assert reasons[-4:] == ["Failed", "Failed", "BackOff", "Failed"]
    assert "no command mapped" in json.dumps(double.events(NS, "unmapped"))
    assert double.spawned_pids == []


@pytest.mark.parametrize("reason", ["Error", "OOMKilled"])
def test_kill_after_start(double: KubeApiDouble, api: client.CoreV1Api, reason: str) -> None:
    double.kill_after(0.3, pod="victim", reason=reason)
    api.create_namespaced_pod(NS, pod_body("victim", "say:up", "sleep:30"))
    double.wait_for_pod("victim", NS, until=terminated)
    state = api.read_namespaced_pod("victim", NS).status.container_statuses[0].state.terminated
    assert (state.exit_code, state.reason) == (137, reason)
    assert double.pod_logs("victim", NS) == "up\n"


def test_kill_pod_now_and_times_limit(double: KubeApiDouble, api: client.CoreV1Api) -> None:
    double.keep_pending(pod="once-*", times=1)
    api.create_namespaced_pod(NS, pod_body("once-1", "sleep:30"))
    api.create_namespaced_pod(NS, pod_body("once-2", "sleep:30"))
    double.wait_for_pod("once-2", NS, phase="Running")
    assert api.read_namespaced_pod("once-1", NS).status.phase == "Pending"
    double.kill_pod("once-2", NS)
    double.wait_for_pod("once-2", NS, until=terminated)
    assert api.read_namespaced_pod("once-2", NS).status.container_statuses[0].state.terminated.exit_code == 137
    with pytest.raises(RuntimeError, match="no running container"):
        double.kill_pod("once-1", NS)


def test_node_lost(double: KubeApiDouble, api: client.CoreV1Api) -> None:
    double.lose_node_after(0.2, pod="lost")
    api.create_namespaced_pod(NS, pod_body("lost", "say:x", "sleep:30"))
    double.wait_for_pod("lost", NS, phase="Running")
    [pid] = double.spawned_pids
    double.wait_for_pod("lost", NS, until=lambda p: p is None)
    with pytest.raises(ApiException) as gone:
        api.read_namespaced_pod("lost", NS)
    assert gone.value.status == 404
    deadline = time.monotonic() + 5
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not process_alive(pid)


def test_stop_kills_every_process(k8s_double_factory: Callable[..., KubeApiDouble]) -> None:
    double = k8s_double_factory(image_mapping=program_mapping)
    for name in ("s1", "s2"):
        double.cluster.create_pod(NS, pod_body(name, "sleep:60"))
        double.wait_for_pod(name, NS, phase="Running")
    pids = double.spawned_pids
    assert len(pids) == 2 and all(process_alive(pid) for pid in pids)
    double.stop()
    assert not any(process_alive(pid) for pid in pids)


# -- transport ------------------------------------------------------------------------------------


def test_requests_are_recorded_with_client_booleans(double: KubeApiDouble, api: client.CoreV1Api) -> None:
    api.list_namespaced_pod(NS, watch=False, label_selector="a=b")
    [recorded] = double.requests_matching("GET", f"/api/v1/namespaces/{NS}/pods")
    assert recorded.param("watch") == "False" and recorded.param("labelSelector") == "a=b"
    assert recorded.status == 200


def test_keep_alive_calls_do_not_stall(double: KubeApiDouble) -> None:
    """TCP_NODELAY: 40 small calls on one connection take far less than 40 delayed ACKs (~40 ms each)."""
    conn = http.client.HTTPConnection("127.0.0.1", double.port, timeout=10)
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    started = time.monotonic()
    for _ in range(40):
        conn.request("GET", f"/api/v1/namespaces/{NS}/pods")
        assert conn.getresponse().read()
    conn.close()
    assert time.monotonic() - started < 1.0

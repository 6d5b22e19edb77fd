"""Pod specs: every stage's pod request, rendered without a cluster, is a valid Kubernetes 1.33 Pod."""

from __future__ import annotations

from typing import Any

import kubernetes_validate
import pendulum
import pytest
from dagtest_support import DAG_ID, render_context
from kubernetes.client import ApiClient

STAGES = ["ingest", "validate", "transform", "archive"]
KUBERNETES_VERSION = "1.33"


def pod_document(dag: Any, stage: str, start: Any = None) -> dict[str, Any]:
    """The pod the operator would POST for ``stage``: templates rendered, serialized like the client does."""
    task = dag.get_task(stage)
    context = render_context(dag, task, start)
    task.render_template_fields(context)
    pod = task.build_pod_request_obj(context)
    return ApiClient().sanitize_for_serialization(pod)


@pytest.fixture
def pods(dag: Any) -> dict[str, dict[str, Any]]:
    return {stage: pod_document(dag, stage) for stage in STAGES}


@pytest.mark.parametrize("stage", STAGES)
def test_pod_passes_strict_schema_validation(pods: dict[str, dict[str, Any]], stage: str) -> None:
    assert kubernetes_validate.validate(pods[stage], KUBERNETES_VERSION, strict=True) == KUBERNETES_VERSION


def test_strict_validation_rejects_an_unknown_field(pods: dict[str, dict[str, Any]]) -> None:
    # Guards the guard: strict mode must fail on a misspelt field, or the test above proves nothing.
    broken = pods["ingest"]
    broken["spec"]["containers"][0]["securityContext"]["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("stage", STAGES)
def test_pod_is_hardened(pods: dict[str, dict[str, Any]], stage: str) -> None:
    spec = pods[stage]["spec"]
    [container] = spec["containers"]  # no XCom sidecar: stages hand over through storage
    pod_sc, sc = spec["securityContext"], container["securityContext"]
    assert pod_sc["runAsNonRoot"] is True
    assert pod_sc["runAsUser"] != 0
    assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    assert spec["restartPolicy"] == "Never"
    # A writable /tmp on an emptyDir, since the root filesystem is read-only.
    [tmp_mount] = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    [tmp_volume] = [v for v in spec["volumes"] if v["name"] == tmp_mount["name"]]
    assert "emptyDir" in tmp_volume


@pytest.mark.parametrize("stage", STAGES)
def test_pod_identity_image_args_env_resources(pods: dict[str, dict[str, Any]], stage: str) -> None:
    pod = pods[stage]
    spec, meta = pod["spec"], pod["metadata"]
    [container] = spec["containers"]
    assert meta["namespace"] == "crypto-tasks"
    assert meta["name"].startswith(f"cryptopipe-{stage}-")
    assert spec["serviceAccountName"] == f"cryptopipe-{stage}"
    assert container["image"] == f"localhost:5001/cryptopipe-{stage}:latest"
    assert container.get("command") in (None, [])  # the image ENTRYPOINT is ["cryptopipe", "<stage>"]
    assert container["args"] == [
        "--interval-start",
        "2026-11-22T13:00:00+00:00",
        "--interval-end",
        "2026-11-22T14:00:00+00:00",
    ]
    assert container["envFrom"] == [
        {"configMapRef": {"name": "cryptopipe-config"}},
        {"secretRef": {"name": "cryptopipe-secrets"}},
    ]
    # No literal secrets in the spec: env comes only from the ConfigMap and the Secret.
    assert not container.get("env")
    resources = container["resources"]
    assert set(resources["requests"]) == {"cpu", "memory"}
    assert set(resources["limits"]) == {"cpu", "memory"}
    labels = meta["labels"]
    assert labels["app.kubernetes.io/part-of"] == "crypto-pipeline"
    assert labels["app.kubernetes.io/component"] == stage
    assert labels["dag_id"] == DAG_ID
    assert labels["task_id"] == stage
    assert labels["try_number"] == "1"
    assert "run_id" in labels
    assert spec["activeDeadlineSeconds"] > 0


def test_rendered_interval_is_utc_iso8601_for_any_timezone(dag: Any) -> None:
    # A data interval handed over in another zone still renders as the same instant with an offset.
    start = pendulum.datetime(2026, 3, 29, 2, tz="Europe/Berlin")
    args = pod_document(dag, "ingest", start)["spec"]["containers"][0]["args"]
    parsed = pendulum.parse(args[1])
    assert parsed == start
    assert args[1].endswith(("+00:00", "+01:00", "+02:00", "Z"))
    assert pendulum.parse(args[3]) == start.add(hours=1)


def test_memory_limits_are_at_least_requests(pods: dict[str, dict[str, Any]]) -> None:
    from kubernetes.utils import parse_quantity

    for stage, pod in pods.items():
        resources = pod["spec"]["containers"][0]["resources"]
        for kind in ("cpu", "memory"):
            assert parse_quantity(resources["limits"][kind]) >= parse_quantity(resources["requests"][kind]), (
                stage,
                kind,
            )

"""The one place that turns a pipeline stage into an Airflow task.

``PIPELINE_RUNTIME=kubernetes`` (default): a KubernetesPodOperator running the stage's own image in the task
namespace. ``PIPELINE_RUNTIME=local``: a subprocess of the same ``cryptopipe <stage>`` CLI with the same
arguments. Everything else (retries, timeouts, pool, callbacks, dependencies) is shared by both runtimes.

This module is imported by the DAG file at parse time: keep it free of pandas/GX/boto3 and of ``cryptopipe``
itself (the Airflow image does not contain the stage programs).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk.bases.operator import BaseOperator  # = airflow.sdk.BaseOperator, without the lazy lookup
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from kubernetes.client import models as k8s

STAGES: tuple[str, ...] = ("ingest", "validate", "transform", "archive")
RUNTIMES: tuple[str, ...] = ("kubernetes", "local")
INGEST_POOL = "coingecko_api"
PART_OF = "crypto-pipeline"

# The stage contract's arguments; `ts` renders ISO-8601 with offset (2026-11-22T13:00:00+00:00).
STAGE_ARGUMENTS: tuple[str, ...] = (
    "--interval-start",
    "{{ data_interval_start | ts }}",
    "--interval-end",
    "{{ data_interval_end | ts }}",
)

# Exit codes of the stage contract (docs/architecture.md) → name and what the operator should do.
EXIT_CODES: dict[int, tuple[str, str]] = {
    1: ("INTERNAL", "unexpected error (a bug); see the traceback in the task log"),
    2: ("CONFIG", "bad configuration or command line; nothing was started - fix the config, a retry cannot"),
    3: ("QUALITY_GATE", "a critical data-quality expectation failed; see quality/<interval>/report.json"),
    4: ("SOURCE_UNAVAILABLE", "CoinGecko unreachable, rate-limited or 5xx after all retries"),
    5: ("STORAGE", "object store unreachable or failing"),
    6: ("WAREHOUSE", "SQL warehouse unreachable or failing"),
    7: ("SOURCE_INVALID", "the source answered with something that is not valid data"),
    8: ("MISSING_INPUT", "the upstream stage's output for this interval is absent"),
    9: ("CONFLICT", "a write-once object exists with different bytes; it is never overwritten"),
}
# Retrying cannot fix these: bad config, bad data, or a write-once conflict. Everything else may be transient.
NO_RETRY_EXIT_CODES: frozenset[int] = frozenset({2, 3, 9})

# Runs as this numeric user; the task images create it (numeric so runAsNonRoot can be verified).
RUN_AS_UID = 10001


@dataclass(frozen=True)
class StageSpec:
    """Per-stage sizing: container requests/limits and the execution timeout."""

    name: str
    cpu_request: str
    memory_request: str
    cpu_limit: str
    memory_limit: str
    execution_timeout: timedelta

    @property
    def pool(self) -> str | None:
        # Ingest alone calls CoinGecko: the pool (sized to the plan) bounds concurrent API users in a backfill.
        return INGEST_POOL if self.name == "ingest" else None


STAGE_SPECS: dict[str, StageSpec] = {
    "ingest": StageSpec("ingest", "100m", "256Mi", "500m", "512Mi", timedelta(minutes=20)),
    "validate": StageSpec("validate", "250m", "768Mi", "1", "1536Mi", timedelta(minutes=20)),
    "transform": StageSpec("transform", "250m", "1Gi", "1", "2Gi", timedelta(minutes=30)),
    "archive": StageSpec("archive", "100m", "512Mi", "500m", "1Gi", timedelta(minutes=20)),
}


@dataclass(frozen=True)
class DeploymentSettings:
    """Deployment settings read from the Airflow components' environment (docs/architecture.md)."""

    runtime: str = "kubernetes"
    image_registry: str = "localhost:5001"
    image_tag: str = "latest"
    task_namespace: str = "crypto-tasks"
    configmap: str = "cryptopipe-config"
    secret: str = "cryptopipe-secrets"  # noqa: S105 - the name of a Secret object, not a secret
    storage_uri: str = "file://./data"
    kubernetes_conn_id: str = "kubernetes_default"
    slack_conn_id: str = "slack_alerts"
    aws_conn_id: str = "aws_default"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> DeploymentSettings:
        env = os.environ if env is None else env
        defaults = cls()

        def get(name: str, default: str) -> str:
            value = env.get(name, "").strip()
            return value or default

        settings = cls(
            runtime=get("PIPELINE_RUNTIME", defaults.runtime).lower(),
            image_registry=get("PIPELINE_IMAGE_REGISTRY", defaults.image_registry).rstrip("/"),
            image_tag=get("PIPELINE_IMAGE_TAG", defaults.image_tag),
            task_namespace=get("PIPELINE_TASK_NAMESPACE", defaults.task_namespace),
            configmap=get("PIPELINE_CONFIGMAP", defaults.configmap),
            secret=get("PIPELINE_SECRET", defaults.secret),
            storage_uri=get("PIPELINE_STORAGE_URI", defaults.storage_uri),
            kubernetes_conn_id=get("PIPELINE_KUBERNETES_CONN_ID", defaults.kubernetes_conn_id),
            slack_conn_id=get("PIPELINE_SLACK_CONN_ID", defaults.slack_conn_id),
            aws_conn_id=get("PIPELINE_AWS_CONN_ID", defaults.aws_conn_id),
        )
        if settings.runtime not in RUNTIMES:
            raise ValueError(
                f"PIPELINE_RUNTIME={settings.runtime!r} is not a runtime: expected one of {', '.join(RUNTIMES)}"
            )
        if ":" in settings.image_tag or "/" in settings.image_tag:
            raise ValueError(f"PIPELINE_IMAGE_TAG={settings.image_tag!r} must be a bare tag (no ':' or '/')")
        return settings

    def image_for(self, stage: str) -> str:
        return f"{self.image_registry}/cryptopipe-{stage}:{self.image_tag}"


def describe_exit_code(stage: str, code: int) -> str:
    name, meaning = EXIT_CODES.get(code, ("UNKNOWN", "not a stage exit code (killed by a signal, OOM?)"))
    return f"stage {stage!r} exited with code {code} ({name}): {meaning}"


def failure_for_exit_code(stage: str, code: int, detail: str = "") -> AirflowException:
    """The exception a task raises for a failed stage: no retry where a retry cannot help."""
    message = describe_exit_code(stage, code) + (f"\n{detail}" if detail else "")
    if code in NO_RETRY_EXIT_CODES:
        return AirflowFailException(message + "\n(not retried: a retry cannot fix this)")
    return AirflowException(message)


def container_exit_code(pod: k8s.V1Pod | None, container_name: str) -> int | None:
    """Exit code of a terminated container of a pod as reported by the API, or None."""
    statuses = (pod.status.container_statuses if pod is not None and pod.status else None) or []
    for status in statuses:
        if status.name == container_name and status.state and status.state.terminated:
            return status.state.terminated.exit_code
    return None


class StagePodOperator(KubernetesPodOperator):
    """KubernetesPodOperator that turns the stage's exit code into the task outcome.

    Both sync and deferrable execution end in ``cleanup`` (sync via ``post_complete_action``, deferrable via
    ``trigger_reentry`` → ``_clean``), which raises a generic ``AirflowException`` for any failed pod. Here
    the exit code is mapped: exit 2/3/9 fail without retry, others keep the generic retrying failure.
    """

    def __init__(self, *, stage: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stage = stage

    def cleanup(
        self,
        pod: k8s.V1Pod,
        remote_pod: k8s.V1Pod,
        xcom_result: dict | None = None,
        context: Any = None,
    ) -> None:
        try:
            super().cleanup(pod=pod, remote_pod=remote_pod, xcom_result=xcom_result, context=context)
        except AirflowException as exc:
            code = container_exit_code(remote_pod, self.base_container_name)
            pod_name = pod.metadata.name if pod is not None and pod.metadata else "?"
            if code is None:
                waiting = container_waiting(remote_pod, self.base_container_name)
                if waiting is None:
                    raise
                # The container never ran (ErrImagePull, CreateContainerConfigError, ...): say why, not only
                # "returned a failure", so the Slack alert names the cause.
                raise AirflowException(
                    f"stage {self.stage}: pod {pod_name} never started its container: {waiting} (image {self.image})"
                ) from exc
            if code == 0:
                raise
            raise failure_for_exit_code(self.stage, code, f"pod {pod_name}") from exc


def container_waiting(pod: k8s.V1Pod | None, container_name: str) -> str | None:
    """``reason: message`` of a container that is still waiting (it never ran), else None."""
    statuses = (pod.status.container_statuses or []) if pod is not None and pod.status else []
    for status in statuses:
        waiting = status.state.waiting if status.name == container_name and status.state else None
        if waiting is not None and waiting.reason:
            return f"{waiting.reason}: {waiting.message}" if waiting.message else waiting.reason
    return None


def find_cryptopipe(env: Mapping[str, str] | None = None) -> str:
    """The CLI for the local runtime: $PIPELINE_CRYPTOPIPE_BIN, else next to this Python, else on PATH."""
    env = os.environ if env is None else env
    explicit = env.get("PIPELINE_CRYPTOPIPE_BIN", "").strip()
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise AirflowFailException(f"PIPELINE_CRYPTOPIPE_BIN={explicit!r} is not an executable file")
        return explicit
    sibling = Path(sys.executable).with_name("cryptopipe")
    if os.access(sibling, os.X_OK):
        return str(sibling)
    found = shutil.which("cryptopipe", path=env.get("PATH"))
    if found:
        return found
    raise AirflowFailException(
        "PIPELINE_RUNTIME=local but no `cryptopipe` executable: install the package next to Airflow "
        "(pip install -e .[all]), put it on PATH, or set PIPELINE_CRYPTOPIPE_BIN"
    )


def stage_environment(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment of a local stage process: the component's env without Airflow's own settings/secrets."""
    env = os.environ if env is None else env
    child = {k: v for k, v in env.items() if not k.startswith(("AIRFLOW", "_AIRFLOW"))}
    child["PYTHONUNBUFFERED"] = "1"  # stream the JSON log lines as they happen
    return child


class LocalStageOperator(BaseOperator):
    """Runs ``cryptopipe <stage> <arguments>`` as a local process, streaming its output into the task log."""

    template_fields: Sequence[str] = ("arguments",)
    ui_color = "#e8f4ea"

    def __init__(self, *, stage: str, arguments: Sequence[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stage = stage
        self.arguments = list(arguments)
        self._process: subprocess.Popen[str] | None = None

    def execute(self, context: Any) -> None:
        command = [find_cryptopipe(), self.stage, *self.arguments]
        self.log.info("Running %s", " ".join(command))
        try:
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=stage_environment(),
                text=True,
                errors="backslashreplace",
                start_new_session=True,  # on_kill signals the stage's process group, never Airflow's
            )
        except OSError as exc:
            raise AirflowFailException(f"cannot start {command[0]!r} for stage {self.stage!r}: {exc}") from exc
        with process:
            self._process = process
            assert process.stdout is not None
            for line in process.stdout:
                self.log.info("[%s] %s", self.stage, line.rstrip("\n"))
            code = process.wait()
        self._process = None
        if code != 0:
            raise failure_for_exit_code(self.stage, code)
        self.log.info("stage %r finished with exit code 0", self.stage)

    def on_kill(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            self.log.info("Terminating stage process group %d", process.pid)
            os.killpg(process.pid, signal.SIGTERM)


def pod_security_context() -> k8s.V1PodSecurityContext:
    return k8s.V1PodSecurityContext(
        run_as_non_root=True,
        run_as_user=RUN_AS_UID,
        run_as_group=RUN_AS_UID,
        fs_group=RUN_AS_UID,
        seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
    )


def container_security_context() -> k8s.V1SecurityContext:
    return k8s.V1SecurityContext(
        run_as_non_root=True,
        allow_privilege_escalation=False,
        privileged=False,
        read_only_root_filesystem=True,
        capabilities=k8s.V1Capabilities(drop=["ALL"]),
        seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
    )


def container_resources(spec: StageSpec) -> k8s.V1ResourceRequirements:
    return k8s.V1ResourceRequirements(
        requests={"cpu": spec.cpu_request, "memory": spec.memory_request},
        limits={"cpu": spec.cpu_limit, "memory": spec.memory_limit},
    )


def _kubernetes_task(spec: StageSpec, settings: DeploymentSettings, task_kwargs: dict[str, Any]) -> StagePodOperator:
    tmp_volume = k8s.V1Volume(name="tmp", empty_dir=k8s.V1EmptyDirVolumeSource(size_limit="1Gi"))
    return StagePodOperator(
        stage=spec.name,
        name=f"cryptopipe-{spec.name}",
        kubernetes_conn_id=settings.kubernetes_conn_id,
        namespace=settings.task_namespace,
        service_account_name=f"cryptopipe-{spec.name}",
        # The pods never call the Kubernetes API (IRSA / Pod Identity inject their own token).
        automount_service_account_token=False,
        image=settings.image_for(spec.name),
        # A moving tag must be re-pulled; an immutable tag (CI sets the git revision) need not.
        image_pull_policy="Always" if settings.image_tag == "latest" else "IfNotPresent",
        arguments=list(STAGE_ARGUMENTS),  # the image ENTRYPOINT is ["cryptopipe", "<stage>"]
        labels={"app.kubernetes.io/part-of": PART_OF, "app.kubernetes.io/component": spec.name},
        annotations={"cluster-autoscaler.kubernetes.io/safe-to-evict": "false"},
        env_from=[
            k8s.V1EnvFromSource(config_map_ref=k8s.V1ConfigMapEnvSource(name=settings.configmap)),
            k8s.V1EnvFromSource(secret_ref=k8s.V1SecretEnvSource(name=settings.secret)),
        ],
        container_resources=container_resources(spec),
        security_context=pod_security_context(),
        container_security_context=container_security_context(),
        volumes=[tmp_volume],
        volume_mounts=[k8s.V1VolumeMount(name="tmp", mount_path="/tmp")],  # noqa: S108  # nosec B108: the pod's own emptyDir
        deferrable=True,
        get_logs=True,
        log_events_on_failure=True,
        do_xcom_push=False,
        # The failure message then carries the tail of the stage's log (its JSON error line).
        termination_message_policy="FallbackToLogsOnError",
        on_finish_action="delete_pod",
        on_kill_action="delete_pod",
        # Sized for a cluster that has to add a node and pull an image first.
        startup_timeout_seconds=900,
        schedule_timeout_seconds=900,
        termination_grace_period=60,
        # The kubelet ends a runaway pod even if Airflow lost track of it.
        active_deadline_seconds=int(spec.execution_timeout.total_seconds()),
        **task_kwargs,
    )


def stage_task(
    stage: str,
    *,
    settings: DeploymentSettings | None = None,
    on_failure_callback: Callable[[Any], None] | None = None,
    **task_kwargs: Any,
) -> BaseOperator:
    """The Airflow task that runs ``stage`` for the run's data interval in the configured runtime."""
    if stage not in STAGE_SPECS:
        raise ValueError(f"unknown stage {stage!r}: expected one of {', '.join(STAGES)}")
    settings = settings or DeploymentSettings.from_env()
    spec = STAGE_SPECS[stage]
    common: dict[str, Any] = {
        "task_id": stage,
        "execution_timeout": spec.execution_timeout,
        "doc_md": f"Runs `cryptopipe {stage}` for the data interval ({settings.runtime} runtime).",
        **task_kwargs,
    }
    if spec.pool:
        common["pool"] = spec.pool
    if on_failure_callback is not None:
        common["on_failure_callback"] = on_failure_callback
    if settings.runtime == "local":
        return LocalStageOperator(stage=stage, arguments=STAGE_ARGUMENTS, **common)
    return _kubernetes_task(spec, settings, common)

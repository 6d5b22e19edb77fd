"""stage_launch: the local runtime (a fake `cryptopipe` on PATH) and exit-code → task outcome mapping."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
from dagtest_support import render_context

REAL_PYTHON = sys.executable  # captured before fixtures repoint sys.executable

FAKE_CRYPTOPIPE = """#!{python}
import json, os, sys
record = os.environ["FAKE_CRYPTOPIPE_RECORD"]
with open(record, "w") as fh:
    json.dump({{"argv": sys.argv[1:], "env": dict(os.environ)}}, fh)
print(json.dumps({{"level": "info", "stage": sys.argv[1], "event": "fake stage says hello"}}))
print("second line", flush=True)
sys.exit(int(os.environ.get("FAKE_CRYPTOPIPE_EXIT", "0")))
"""


@pytest.fixture
def fake_cli(tmp_path: Path, pipeline_env: pytest.MonkeyPatch) -> Path:
    """A fake `cryptopipe` first on PATH, with no `cryptopipe` next to the interpreter."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "cryptopipe"
    script.write_text(FAKE_CRYPTOPIPE.format(python=REAL_PYTHON))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    pipeline_env.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    # The venv's real `cryptopipe` sits next to sys.executable and would win: point sys.executable elsewhere.
    pipeline_env.setattr(sys, "executable", str(tmp_path / "no-python-here" / "python"))
    pipeline_env.setenv("FAKE_CRYPTOPIPE_RECORD", str(tmp_path / "record.json"))
    return tmp_path / "record.json"


def run_local_stage(load_dag: Any, stage: str, **env: str) -> Any:
    dag = load_dag(PIPELINE_RUNTIME="local", **env)
    task = dag.get_task(stage)
    context = render_context(dag, task)
    task.render_template_fields(context)
    return task.execute(context)


def test_local_stage_runs_the_cli_with_interval_args_and_env(
    fake_cli: Path, load_dag: Any, pipeline_env: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pipeline_env.setenv("CRYPTOPIPE_STORAGE__URI", "file:///srv/data")
    pipeline_env.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgresql://airflow:hunter2@db/airflow")
    run_local_stage(load_dag, "validate")
    record = json.loads(fake_cli.read_text())
    assert record["argv"] == [
        "validate",
        "--interval-start",
        "2026-11-22T13:00:00+00:00",
        "--interval-end",
        "2026-11-22T14:00:00+00:00",
    ]
    assert record["env"]["CRYPTOPIPE_STORAGE__URI"] == "file:///srv/data"
    assert record["env"]["PYTHONUNBUFFERED"] == "1"
    # Airflow's own settings (database password, fernet key...) are not handed to the stage.
    assert not [k for k in record["env"] if k.startswith("AIRFLOW")]
    # The stage's output is streamed line by line into the task log (structlog writes it to stdout here).
    log = capsys.readouterr().out
    assert '[validate] {"level": "info", "stage": "validate", "event": "fake stage says hello"}' in log
    assert "[validate] second line" in log


@pytest.mark.parametrize(
    ("code", "name", "retried"),
    [
        (1, "INTERNAL", True),
        (2, "CONFIG", False),
        (3, "QUALITY_GATE", False),
        (4, "SOURCE_UNAVAILABLE", True),
        (5, "STORAGE", True),
        (6, "WAREHOUSE", True),
        (8, "MISSING_INPUT", True),
        (9, "CONFLICT", False),
        (137, "UNKNOWN", True),
    ],
)
def test_local_stage_exit_codes_map_to_failures(  # noqa: PLR0917 - fixtures + parameters
    fake_cli: Path, load_dag: Any, pipeline_env: pytest.MonkeyPatch, code: int, name: str, retried: bool
) -> None:
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    pipeline_env.setenv("FAKE_CRYPTOPIPE_EXIT", str(code))
    with pytest.raises(AirflowException) as excinfo:
        run_local_stage(load_dag, "transform")
    message = str(excinfo.value)
    assert f"stage 'transform' exited with code {code} ({name})" in message
    assert isinstance(excinfo.value, AirflowFailException) is (not retried)


def test_explicit_cli_path_wins(tmp_path: Path, fake_cli: Path, load_dag: Any, pipeline_env: Any) -> None:
    other = tmp_path / "other-cryptopipe"
    other.write_text(f"#!{REAL_PYTHON}\nimport sys\nprint('explicit')\nsys.exit(4)\n")
    other.chmod(0o755)
    pipeline_env.setenv("PIPELINE_CRYPTOPIPE_BIN", str(other))
    from airflow.sdk.exceptions import AirflowException

    with pytest.raises(AirflowException, match="SOURCE_UNAVAILABLE"):
        run_local_stage(load_dag, "ingest")
    assert not fake_cli.exists()  # the one on PATH was not run


def test_missing_cli_is_a_clear_non_retried_failure(
    tmp_path: Path, load_dag: Any, pipeline_env: pytest.MonkeyPatch
) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    pipeline_env.setenv("PATH", str(tmp_path))
    pipeline_env.setattr(sys, "executable", str(tmp_path / "python"))
    with pytest.raises(AirflowFailException, match="no `cryptopipe` executable"):
        run_local_stage(load_dag, "archive")


# --- KubernetesPodOperator: the same mapping from the terminated container's exit code --------------------


def terminated_pod(exit_code: int, phase: str) -> Any:
    from kubernetes.client import models as k8s

    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name="cryptopipe-validate-abc", namespace="crypto-tasks", labels={}),
        spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="base")]),
        status=k8s.V1PodStatus(
            phase=phase,
            container_statuses=[
                k8s.V1ContainerStatus(
                    name="base",
                    image="x",
                    image_id="",
                    ready=False,
                    restart_count=0,
                    state=k8s.V1ContainerState(
                        terminated=k8s.V1ContainerStateTerminated(exit_code=exit_code, message="boom")
                    ),
                )
            ],
        ),
    )


@pytest.fixture
def pod_task(dag: Any) -> Any:
    """The validate task with its cluster calls recorded instead of sent."""
    task = dag.get_task("validate")
    task.calls = []
    task.patch_already_checked = lambda pod, reraise=True: task.calls.append("patch")
    task.process_pod_deletion = lambda pod, reraise=True: task.calls.append("delete") or True
    task._read_pod_events = lambda pod, reraise=True: task.calls.append("events")
    task._read_pod_container_states = lambda pod, reraise=True: task.calls.append("states")
    task.is_istio_enabled = lambda pod: False  # would read the pod back from the API
    return task


@pytest.mark.parametrize(("code", "retried"), [(3, False), (2, False), (5, True), (7, True)])
def test_pod_exit_code_decides_retry(pod_task: Any, code: int, retried: bool) -> None:
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    pod = terminated_pod(code, "Failed")
    with pytest.raises(AirflowException) as excinfo:
        pod_task.cleanup(pod=pod, remote_pod=pod, context=None)
    assert isinstance(excinfo.value, AirflowFailException) is (not retried)
    assert f"exited with code {code}" in str(excinfo.value)
    assert "cryptopipe-validate-abc" in str(excinfo.value)
    # The pod is still deleted (on_finish_action=delete_pod) before the failure is raised.
    assert "delete" in pod_task.calls


def test_succeeded_pod_is_deleted_and_passes(pod_task: Any) -> None:
    pod = terminated_pod(0, "Succeeded")
    pod_task.cleanup(pod=pod, remote_pod=pod, context=None)
    assert pod_task.calls == ["delete"]


def test_failed_pod_without_exit_code_keeps_the_providers_failure(pod_task: Any) -> None:
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    pod = terminated_pod(1, "Failed")
    pod.status.container_statuses = []  # e.g. never started
    with pytest.raises(AirflowException, match="returned a failure") as excinfo:
        pod_task.cleanup(pod=pod, remote_pod=pod, context=None)
    assert not isinstance(excinfo.value, AirflowFailException)


def test_container_that_never_ran_names_its_waiting_reason(pod_task: Any) -> None:
    """ErrImagePull & co: the failure (and so the Slack alert) says why the container never ran, and which image."""
    from airflow.sdk.exceptions import AirflowException, AirflowFailException
    from kubernetes.client import models as k8s

    pod = terminated_pod(1, "Pending")
    pod.status.container_statuses[0].state = k8s.V1ContainerState(
        waiting=k8s.V1ContainerStateWaiting(reason="ErrImagePull", message="manifest unknown")
    )
    with pytest.raises(AirflowException, match="never started its container: ErrImagePull: manifest unknown") as exc:
        pod_task.cleanup(pod=pod, remote_pod=pod, context=None)
    assert pod_task.image in str(exc.value)
    assert not isinstance(exc.value, AirflowFailException)  # a registry hiccup may pass: retried
    assert "delete" in pod_task.calls

"""Dockerfiles: structure the other pieces rely on (ENTRYPOINT read by the Kubernetes API test double, non-root
numeric USER, multi-stage, OCI labels, only the stage's own extra) and hadolint."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from deploy_support import ROOT, STAGES, require_tool, run

TASK_DOCKERFILES = {stage: ROOT / "task_images" / stage / "Dockerfile" for stage in STAGES}
AIRFLOW_DOCKERFILE = ROOT / "images" / "airflow" / "Dockerfile"
OCI_LABELS = (
    "org.opencontainers.image.source",
    "org.opencontainers.image.revision",
    "org.opencontainers.image.version",
)


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    kept = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
    text = re.sub(r"\\\n", " ", "\n".join(kept))
    out = []
    for line in text.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def args_of(path: Path, word: str) -> list[str]:
    return [rest for w, rest in instructions(path) if w == word]


@pytest.mark.parametrize("stage", STAGES)
def test_task_entrypoint_is_exactly_the_stage_command(stage: str) -> None:
    entrypoints = args_of(TASK_DOCKERFILES[stage], "ENTRYPOINT")
    assert len(entrypoints) == 1, f"{stage}: exactly one ENTRYPOINT expected, got {entrypoints}"
    assert json.loads(entrypoints[0]) == ["cryptopipe", stage]
    # The test double greps this exact line: keep the JSON form with this spacing.
    assert f'ENTRYPOINT ["cryptopipe", "{stage}"]' in TASK_DOCKERFILES[stage].read_text()


@pytest.mark.parametrize("path", [*TASK_DOCKERFILES.values(), AIRFLOW_DOCKERFILE], ids=[*STAGES, "airflow"])
def test_runs_as_numeric_non_root_user(path: Path) -> None:
    users = args_of(path, "USER")
    assert users, f"{path}: no USER"
    final = users[-1]
    uid = final.split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"{path}: final USER must be a numeric non-root UID, got {final!r}"


@pytest.mark.parametrize("path", [*TASK_DOCKERFILES.values(), AIRFLOW_DOCKERFILE], ids=[*STAGES, "airflow"])
def test_oci_labels(path: Path) -> None:
    labels = " ".join(args_of(path, "LABEL"))
    for label in OCI_LABELS:
        assert f"{label}=" in labels, f"{path}: missing label {label}"


@pytest.mark.parametrize("stage", STAGES)
def test_task_image_is_multi_stage_with_pinned_base(stage: str) -> None:
    path = TASK_DOCKERFILES[stage]
    froms = args_of(path, "FROM")
    assert len(froms) == 2 and froms[0].endswith(" AS builder"), f"{stage}: expected builder + final stage: {froms}"
    assert any("COPY --from=builder /opt/venv /opt/venv" in line for line in path.read_text().splitlines())
    base = re.search(r"^ARG PYTHON_BASE=(\S+)$", path.read_text(), re.M)
    assert base, f"{stage}: ARG PYTHON_BASE with a default is required (overridable base)"
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim-bookworm@sha256:[0-9a-f]{64}", base.group(1)), base.group(1)


@pytest.mark.parametrize("stage", STAGES)
def test_task_image_installs_only_its_own_lock(stage: str) -> None:
    text = TASK_DOCKERFILES[stage].read_text()
    locks = set(re.findall(r"requirements/images/(\w+)\.lock", text))
    assert locks == {stage, "build"}, f"{stage}: installs locks {locks}"
    assert "--require-hashes -r /build/requirements/" + stage + ".lock" in text
    # The package itself without dependencies: everything else came from the stage lock.
    assert re.search(r"pip install --no-deps /build/dist/cryptopipe-\*\.whl", text)


@pytest.mark.parametrize("stage", STAGES)
def test_stage_lock_has_the_stage_dependencies_only(stage: str) -> None:
    lock = (ROOT / "requirements" / "images" / f"{stage}.lock").read_text()
    pins = {m.group(1).lower() for m in re.finditer(r"^([A-Za-z0-9_.-]+)==", lock, re.M)}
    assert "cryptopipe" not in pins, "the local package must not be in its own lock"
    assert all("--hash=sha256:" in block for block in lock.split("==")[1:]), "every pin needs hashes"
    heavy = {
        "great-expectations": "validate",
        "ta-lib": "transform",
        "pillow": "transform",
        "sqlalchemy": "archive",
    }
    for package, owner in heavy.items():
        assert (package in pins) == (stage == owner), f"{stage}.lock: {package} belongs to {owner} only"
    assert {"pyarrow", "boto3", "pydantic"} <= pins


def test_airflow_image_pins_providers_and_bakes_dags() -> None:
    text = AIRFLOW_DOCKERFILE.read_text()
    assert re.search(r"^ARG AIRFLOW_BASE=apache/airflow:3\.3\.2-python3\.11(@sha256:[0-9a-f]{64})?$", text, re.M)
    assert "COPY --chown=50000:0 dags/ /opt/airflow/dags/" in text
    reqs = (ROOT / "images" / "airflow" / "requirements.txt").read_text()
    expected = {
        "apache-airflow": "3.3.2",
        "apache-airflow-providers-cncf-kubernetes": "10.25.0",
        "apache-airflow-providers-amazon": "9.39.0",
        "apache-airflow-providers-slack": "9.11.1",
        "apache-airflow-providers-postgres": "7.1.1",
        "apache-airflow-providers-standard": "1.21.0",
    }
    pins = dict(re.findall(r"^([a-z0-9-]+)==(\S+)$", reqs, re.M))
    assert pins == expected


def test_hadolint_all_dockerfiles() -> None:
    hadolint = require_tool("hadolint")
    files = [str(p) for p in (*TASK_DOCKERFILES.values(), AIRFLOW_DOCKERFILE)]
    done = run([hadolint, "--config", str(ROOT / ".hadolint.yaml"), *files])
    assert done.returncode == 0, done.stdout + done.stderr

"""The image → command mapping: task images map to the ENTRYPOINT of their Dockerfile."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.support.k8s_double import DockerfileEntrypointMapping, ImageMappingError, static_mapping
from tests.support.k8s_double.images import image_repository_basename, read_entrypoint


@pytest.mark.parametrize(
    ("image", "basename"),
    [
        ("cryptopipe-ingest", "cryptopipe-ingest"),
        ("localhost:5001/cryptopipe-ingest:latest", "cryptopipe-ingest"),
        ("123.dkr.ecr.eu-west-1.amazonaws.com/team/cryptopipe-archive:abc123", "cryptopipe-archive"),
        ("registry/cryptopipe-validate@sha256:" + "0" * 64, "cryptopipe-validate"),
    ],
)
def test_repository_basename(image: str, basename: str) -> None:
    assert image_repository_basename(image) == basename


def _dockerfile(root: Path, stage: str, text: str) -> Path:
    path = root / stage / "Dockerfile"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    return path


def test_dockerfile_entrypoint_mapping(tmp_path: Path) -> None:
    _dockerfile(
        tmp_path,
        "ingest",
        'FROM python:3.11-slim AS build\nENTRYPOINT ["build-only"]\n\nFROM python:3.11-slim\n'
        "# the runtime stage\nRUN pip install \\\n    cryptopipe\n"
        'ENTRYPOINT ["cryptopipe", \\\n  "ingest"]\nCMD ["--help"]\n',
    )
    mapping = DockerfileEntrypointMapping(task_images_dir=tmp_path)
    expected = [str(Path(sys.executable).parent / "cryptopipe"), "ingest"]
    assert mapping("localhost:5001/cryptopipe-ingest:latest") == expected
    assert mapping("cryptopipe-ingest") == expected
    assert mapping("localhost:5001/cryptopipe-validate:latest") is None  # no Dockerfile: cannot pull
    assert mapping("docker.io/library/alpine:3") is None


def test_shell_form_entrypoint_is_an_error(tmp_path: Path) -> None:
    dockerfile = _dockerfile(tmp_path, "transform", "FROM scratch\nENTRYPOINT cryptopipe transform\n")
    with pytest.raises(ImageMappingError, match="JSON"):
        read_entrypoint(dockerfile)


def test_missing_entrypoint_and_unknown_program(tmp_path: Path) -> None:
    _dockerfile(tmp_path, "archive", 'FROM scratch\nENTRYPOINT ["/bin/sh"]\n')
    with pytest.raises(ImageMappingError, match="no host executable"):
        DockerfileEntrypointMapping(task_images_dir=tmp_path)("r/cryptopipe-archive:1")
    dockerfile = _dockerfile(tmp_path, "ingest", 'FROM a\nENTRYPOINT ["x"]\nFROM b\n')
    with pytest.raises(ImageMappingError, match="no ENTRYPOINT"):
        read_entrypoint(dockerfile)


def test_static_mapping() -> None:
    mapping = static_mapping({"reg/app:1": ["prog"], "other": ["prog2", "a"]})
    assert mapping("reg/app:1") == ["prog"]
    assert mapping("any.registry/other:9") == ["prog2", "a"]
    assert mapping("reg/app:2") is None

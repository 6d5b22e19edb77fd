"""Image → command mapping of the Kubernetes API test double.

The double never pulls or runs an image: an *image mapping* turns a container image reference into
the argv prefix that stands for the image's ENTRYPOINT, or ``None`` when the image "cannot be
pulled" (the pod then reports ``ErrImagePull``/``ImagePullBackOff``).

The default mapping (:class:`DockerfileEntrypointMapping`) serves the project's task images:
an image whose repository basename is ``cryptopipe-<stage>`` (any registry, any tag or digest)
maps to the JSON-form ``ENTRYPOINT`` of ``task_images/<stage>/Dockerfile``; the program name
``cryptopipe`` resolves to the executable next to ``sys.executable`` (the venv's ``bin``).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

ImageMapping = Callable[[str], "list[str] | None"]

REPO_ROOT = Path(__file__).resolve().parents[3]
_TASK_IMAGE_RE = re.compile(r"^cryptopipe-(?P<stage>[a-z0-9][a-z0-9-]*)$")


class ImageMappingError(ValueError):
    """The mapping found the image's Dockerfile but cannot derive a command from it."""


def image_repository_basename(image: str) -> str:
    """``localhost:5001/team/cryptopipe-ingest:abc@sha256:..`` → ``cryptopipe-ingest``."""
    without_digest = image.split("@", 1)[0]
    last_segment = without_digest.rsplit("/", 1)[-1]
    return last_segment.split(":", 1)[0]


def _logical_lines(text: str) -> list[str]:
    """Join Dockerfile continuation lines (trailing backslash) and drop comments."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current.strip():
        lines.append(current.strip())
    return lines


def read_entrypoint(dockerfile: Path) -> list[str]:
    """Return the JSON-form ENTRYPOINT of the last build stage of ``dockerfile``."""
    entrypoint: list[str] | None = None
    for line in _logical_lines(dockerfile.read_text(encoding="utf-8")):
        instruction, _, rest = line.partition(" ")
        if instruction.upper() == "FROM":
            entrypoint = None  # a new stage starts without the previous stage's ENTRYPOINT
        elif instruction.upper() == "ENTRYPOINT":
            try:
                parsed = json.loads(rest.strip())
            except json.JSONDecodeError as exc:
                raise ImageMappingError(
                    f"{dockerfile}: ENTRYPOINT must use the JSON (exec) form, got {rest.strip()!r}"
                ) from exc
            if not isinstance(parsed, list) or not parsed or not all(isinstance(x, str) for x in parsed):
                raise ImageMappingError(f"{dockerfile}: ENTRYPOINT must be a non-empty JSON list of strings")
            entrypoint = parsed
    if entrypoint is None:
        raise ImageMappingError(f"{dockerfile}: no ENTRYPOINT in the final stage")
    return entrypoint


def venv_executable(name: str) -> str:
    """Path of ``name`` next to the running interpreter (the venv's bin directory)."""
    return str(Path(sys.executable).parent / name)


class DockerfileEntrypointMapping:
    """Map ``*/cryptopipe-<stage>:*`` to the ENTRYPOINT of ``task_images/<stage>/Dockerfile``.

    ``executables`` maps program names in the ENTRYPOINT to host paths; by default ``cryptopipe``
    resolves to the venv's executable. Other program names are kept as written only if listed in
    ``executables`` (the double runs nothing it was not told about): otherwise the image
    "cannot be pulled".
    """

    def __init__(
        self,
        task_images_dir: Path | None = None,
        executables: Mapping[str, str] | None = None,
    ) -> None:
        self.task_images_dir = task_images_dir or REPO_ROOT / "task_images"
        self.executables = (
            dict(executables) if executables is not None else {"cryptopipe": venv_executable("cryptopipe")}
        )

    def __call__(self, image: str) -> list[str] | None:
        match = _TASK_IMAGE_RE.match(image_repository_basename(image))
        if not match:
            return None
        dockerfile = self.task_images_dir / match["stage"] / "Dockerfile"
        if not dockerfile.is_file():
            return None
        entrypoint = read_entrypoint(dockerfile)
        program = self.executables.get(entrypoint[0])
        if program is None:
            raise ImageMappingError(
                f"{dockerfile}: ENTRYPOINT program {entrypoint[0]!r} has no host executable "
                f"(known: {sorted(self.executables)})"
            )
        return [program, *entrypoint[1:]]


def static_mapping(table: Mapping[str, Sequence[str]]) -> ImageMapping:
    """A mapping from exact image references (or repository basenames) to argv prefixes."""

    def mapping(image: str) -> list[str] | None:
        argv = table.get(image) or table.get(image_repository_basename(image))
        return list(argv) if argv is not None else None

    return mapping

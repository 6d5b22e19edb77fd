#!/usr/bin/env python3
"""Fill the EKS templates from Terraform's `helm_handover` output (docs/deploy-eks.md, step 10).

    k8s/eks/render-values.py --handover <(terraform -chdir=terraform/envs/$ENV output -json helm_handover) \
        --image-tag "$IMAGE_TAG"

A template marks each value it takes from outside with a comment line right above it:

    # terraform output -json helm_handover | jq -r .storage_uri       (a scalar; `jq -c` for a list)
    CRYPTOPIPE_STORAGE__URI: "s3://cryptopipe-prod-datalake-111122223333"
    # k8s/eks/render-values.py --image-tag
    tag: "0000000example"

The value after the marked key is replaced (JSON-quoted, which is YAML); everything else, comments included, is
copied. Output goes to k8s/eks/rendered/ (git-ignored: one account's names; add it on purpose on the branch Argo CD
tracks). Standard library only, so it runs wherever Terraform does.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
# template -> file name under the output directory (the names the Argo CD EKS overlay reads).
TEMPLATES: dict[str, str] = {
    "charts/crypto-pipeline/values-eks.yaml": "crypto-pipeline-values.yaml",
    "charts/airflow/values-eks.yaml": "airflow-values.yaml",
    "k8s/eks/cluster-secret-store.yaml": "cluster-secret-store.yaml",
}
DEFAULT_OUT = ROOT / "k8s" / "eks" / "rendered"
IMAGE_TAG = "--image-tag"

HANDOVER_MARKER = re.compile(r"^\s*# terraform output -json helm_handover \| jq -(?P<mode>[rc]) (?P<path>\.\S+)\s*$")
IMAGE_TAG_MARKER = re.compile(r"^\s*# k8s/eks/render-values\.py --image-tag\s*$")
MARKER_START = re.compile(r"^\s*#\s*(terraform output -json helm_handover|k8s/eks/render-values\.py --image-tag)")
PATH_SEGMENT = re.compile(r"\.([a-z][a-z0-9_]*)")
# `key: value` or `- key: value`; marked values carry no trailing comment (the marker is the comment).
KEY_VALUE = re.compile(r"^(?P<key>\s*(?:- )?[A-Za-z0-9_.-]+:)(?: (?P<value>.*))?$")
BARE_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


class RenderError(Exception):
    """A template, the handover or an argument is wrong; the message names what and where."""


@dataclass(frozen=True)
class Marker:
    """One marked value: where it is and what fills it."""

    template: str
    line: int  # 1-based line of the value (the marker is the line above)
    source: str  # "handover" or "image-tag"
    path: tuple[str, ...]  # handover key path, e.g. ("airflow_secret_names", "airflow_fernet_key")
    mode: str  # "r" (scalar) or "c" (any JSON value)

    @property
    def where(self) -> str:
        return f"{self.template}:{self.line}"


def parse_path(text: str, where: str) -> tuple[str, ...]:
    segments = PATH_SEGMENT.findall(text)
    if not segments or "".join(f".{s}" for s in segments) != text:
        raise RenderError(f"{where}: jq path {text!r} is not of the form .key or .key.subkey")
    return tuple(segments)


def find_markers(template: str, text: str) -> list[Marker]:
    """Every marker of a template, checked: each sits right above a `key: value` line."""
    lines = text.splitlines()
    out: list[Marker] = []
    for index, line in enumerate(lines):
        handover, image_tag = HANDOVER_MARKER.match(line), IMAGE_TAG_MARKER.match(line)
        if not (handover or image_tag):
            if MARKER_START.match(line):  # looks like a marker but is not one: a typo would skip a value
                raise RenderError(f"{template}:{index + 1}: malformed marker {line.strip()!r}")
            continue
        where = f"{template}:{index + 2}"
        if index + 1 >= len(lines) or not (m := KEY_VALUE.match(lines[index + 1])) or not m.group("value"):
            raise RenderError(f"{where}: a marker must be followed by a `key: value` line")
        if handover:
            path, mode = parse_path(handover.group("path"), where), handover.group("mode")
            out.append(Marker(template, index + 2, "handover", path, mode))
        else:
            out.append(Marker(template, index + 2, "image-tag", (), "r"))
    return out


def lookup(handover: dict[str, Any], marker: Marker) -> Any:
    node: Any = handover
    for depth, key in enumerate(marker.path):
        if not isinstance(node, dict) or key not in node:
            missing = "." + ".".join(marker.path[: depth + 1])
            raise RenderError(f"{marker.where}: helm_handover has no {missing} (is the Terraform output current?)")
        node = node[key]
    scalar = isinstance(node, (str, int, float)) and not isinstance(node, bool)
    if marker.mode == "r" and not scalar:
        raise RenderError(f"{marker.where}: helm_handover .{'.'.join(marker.path)} is not a scalar (use jq -c)")
    if node in ("", None, []):
        raise RenderError(f"{marker.where}: helm_handover .{'.'.join(marker.path)} is empty")
    return node


def render(template: str, text: str, handover: dict[str, Any], image_tag: str) -> str:
    lines = text.splitlines()
    for marker in find_markers(template, text):
        value = image_tag if marker.source == "image-tag" else lookup(handover, marker)
        key = KEY_VALUE.match(lines[marker.line - 1])
        assert key  # checked by find_markers
        # JSON is YAML; ", " keeps flow lists yamllint-clean.
        lines[marker.line - 1] = f"{key.group('key')} {json.dumps(value, separators=(', ', ': '))}"
    header = (
        f"# Rendered by k8s/eks/render-values.py from {template} and `terraform output -json helm_handover`.\n"
        "# Do not edit: change the template (or Terraform) and render again.\n"
    )
    return header + "\n".join(lines) + "\n"


def load_handover(source: str) -> dict[str, Any]:
    try:
        raw = sys.stdin.read() if source == "-" else Path(source).read_text()
    except OSError as exc:
        raise RenderError(f"--handover {source}: cannot read: {exc.strerror}") from exc
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RenderError(f"--handover {source}: not JSON ({exc.msg} at line {exc.lineno})") from exc
    # `terraform output -json` (all outputs) wraps each value in {"value": ...}: accept that too.
    if isinstance(data, dict) and isinstance(data.get("helm_handover"), dict):
        data = data["helm_handover"].get("value", data["helm_handover"])
    if not isinstance(data, dict) or not data:
        raise RenderError(f"--handover {source}: expected the object of `terraform output -json helm_handover`")
    return data


def render_all(handover: dict[str, Any], image_tag: str, out_dir: Path) -> list[Path]:
    if not BARE_TAG.match(image_tag):
        raise RenderError(f"--image-tag {image_tag!r}: must be a bare image tag (letters, digits, '_', '.', '-')")
    rendered = {
        name: render(template, (ROOT / template).read_text(), handover, image_tag)
        for template, name in TEMPLATES.items()
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in rendered.items():  # written only once every template rendered
        (out_dir / name).write_text(text)
        written.append(out_dir / name)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--handover", required=True, help="JSON of `terraform output -json helm_handover` ('-': stdin)")
    parser.add_argument("--image-tag", required=True, help="tag of the pushed images (the git revision)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    args = parser.parse_args(argv)
    try:
        written = render_all(load_handover(args.handover), args.image_tag, args.out)
    except RenderError as exc:
        print(f"render-values: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Shared helpers of tests/deploy: tool lookup (fail in CI, skip locally), helm rendering, schema validation."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TOOLS_BIN = ROOT / ".tools" / "bin"
CHECKOV = ROOT / ".tools" / "checkov-venv" / "bin" / "checkov"
VENV_BIN = ROOT / ".venv" / "bin"
HERE = Path(__file__).resolve().parent
CHART = ROOT / "charts" / "crypto-pipeline"
AIRFLOW_VALUES = ROOT / "charts" / "airflow"
STAGES = ("ingest", "validate", "transform", "archive")
K8S_VERSION = "1.33"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_tool(name: str) -> str:
    """Path of a tool `make tools` installs: missing fails in CI, skips locally (with the fix in the message)."""
    for candidate in (TOOLS_BIN / name, VENV_BIN / name):
        if candidate.exists():
            return str(candidate)
    if name == "checkov" and CHECKOV.exists():
        return str(CHECKOV)
    found = shutil.which(name)
    if found:
        return found
    message = f"{name} not found in .tools/bin or .venv/bin: run `make tools`"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)
    raise AssertionError("unreachable")


def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT, **kwargs)


def helm_template(helm: str, values: list[Path], extra: list[str] | None = None) -> list[dict[str, Any]]:
    cmd = [helm, "template", "crypto-pipeline", str(CHART), "--namespace", "airflow"]
    for v in values:
        cmd += ["-f", str(v)]
    done = run(cmd + (extra or []))
    assert done.returncode == 0, f"helm template failed:\n{done.stderr}"
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Helm's coalescing of values files: maps merge key by key, everything else is replaced."""
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# --- custom resources -------------------------------------------------------------------------------------------


def _strict(node: Any) -> Any:
    """Close every object schema that lists properties (server-side strict field validation)."""
    if isinstance(node, dict):
        node = {k: _strict(v) for k, v in node.items()}
        if (
            node.get("type") == "object"
            and "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")
        ):
            node["additionalProperties"] = False
        return node
    if isinstance(node, list):
        return [_strict(v) for v in node]
    return node


@cache
def crd_validators() -> dict[tuple[str, str], jsonschema.Draft7Validator]:
    """(apiVersion, kind) -> validator, from tests/deploy/crds/*.json."""
    out: dict[tuple[str, str], jsonschema.Draft7Validator] = {}
    for path in sorted((HERE / "crds").glob("*.json")):
        crd = json.loads(path.read_text())
        schema = _strict(crd["openAPIV3Schema"])
        out[(f"{crd['group']}/{crd['version']}", crd["kind"])] = jsonschema.Draft7Validator(schema)
    return out


def validate_object(doc: dict[str, Any]) -> list[str]:
    """Errors of one manifest: CRD schema for custom resources, Kubernetes strict schema for built-ins."""
    key = (doc.get("apiVersion", ""), doc.get("kind", ""))
    where = f"{key[1]}/{doc.get('metadata', {}).get('name', '?')}"
    validators = crd_validators()
    if key in validators:
        return [
            f"{where}: {'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validators[key].iter_errors(doc)
        ]
    import kubernetes_validate  # slow import (~1 s): only when a built-in kind is validated

    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return [f"{where}: {exc.message}"]
    except kubernetes_validate.SchemaNotFoundError:
        return [f"{where}: no Kubernetes {K8S_VERSION} schema and no CRD schema in tests/deploy/crds for {key}"]
    return []

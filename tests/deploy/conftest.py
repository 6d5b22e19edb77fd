"""Fixtures of tests/deploy: rendered charts and one checkov run per framework per session."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from deploy_support import CHART, CHECKOV, ROOT, helm_template, require_tool, run


@pytest.fixture(scope="session")
def helm() -> str:
    return require_tool("helm")


@pytest.fixture(scope="session")
def kubectl() -> str:
    return require_tool("kubectl")


@pytest.fixture(scope="session")
def rendered_kind(helm: str) -> list[dict[str, Any]]:
    return helm_template(helm, [CHART / "values-kind.yaml"])


@pytest.fixture(scope="session")
def rendered_eks(helm: str) -> list[dict[str, Any]]:
    return helm_template(helm, [CHART / "values-eks.yaml"])


def _checkov(args: list[str]) -> dict[str, Any]:
    if not CHECKOV.exists():
        require_tool("checkov")  # fails in CI, skips locally
    helm_dir = str(ROOT / ".tools" / "bin")
    env = {
        **os.environ,
        "BC_SKIP_MAPPING": "TRUE",
        "CHECKOV_RUN_SCA_PACKAGE_SCAN_V2": "false",
        # checkov's helm framework shells out to `helm`: without it, it silently checks nothing.
        "PATH": f"{helm_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    cmd = [str(CHECKOV), "--skip-download", "--compact", "-o", "json", "--soft-fail", *args]
    done = run(cmd, env=env, timeout=600)
    assert done.stdout.strip(), f"checkov printed nothing:\n{done.stderr[-2000:]}"
    # One JSON value per scanned directory (object or list of per-framework reports), concatenated.
    decoder, text, pos, reports = json.JSONDecoder(), done.stdout, 0, []
    while pos < len(text.rstrip()):
        value, end = decoder.raw_decode(text, pos)
        reports += value if isinstance(value, list) else [value]
        pos = end
        while pos < len(text) and text[pos].isspace():
            pos += 1
    merged: dict[str, Any] = {}
    for report in reports:
        if not isinstance(report, dict) or "check_type" not in report:
            continue  # e.g. {"passed": 0, ...} for a directory with nothing of a framework
        into = merged.setdefault(
            report["check_type"],
            {
                "summary": {"passed": 0, "failed": 0, "skipped": 0},
                "results": {"failed_checks": [], "skipped_checks": []},
            },
        )
        for key in ("passed", "failed", "skipped"):
            into["summary"][key] += report["summary"].get(key, 0)
        for key in ("failed_checks", "skipped_checks"):
            into["results"][key] += report["results"].get(key, [])
    return merged


@pytest.fixture(scope="session")
def checkov_reports() -> dict[str, dict[str, Any]]:
    """One checkov process for all frameworks (~5 s of start-up each otherwise)."""
    return _checkov(
        [
            "--framework",
            "dockerfile",
            "kubernetes",
            "helm",
            "kustomize",
            "-d",
            "task_images",
            "-d",
            "images",
            "-d",
            "charts/crypto-pipeline",
            "-d",
            "k8s",
            "--config-file",
            str(Path(ROOT / ".checkov.yaml")),
        ]
    )

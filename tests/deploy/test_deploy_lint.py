"""yamllint on our YAML and checkov on Dockerfiles, manifests and charts: zero failed checks; every skip is
written next to the code it skips, with its reason."""

from __future__ import annotations

import re
from typing import Any

import pytest
from deploy_support import ROOT, require_tool, run

YAML_PATHS = ["charts", "k8s", ".hadolint.yaml", ".yamllint.yaml", ".checkov.yaml"]


def test_yamllint() -> None:
    yamllint = require_tool("yamllint")
    done = run([yamllint, "--strict", "-c", str(ROOT / ".yamllint.yaml"), *YAML_PATHS])
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("framework", ["dockerfile", "kubernetes", "helm", "kustomize"])
def test_checkov_has_no_failed_checks(checkov_reports: dict[str, dict[str, Any]], framework: str) -> None:
    report = checkov_reports.get(framework)
    assert report is not None, f"checkov ran no {framework} checks (helm missing on PATH?): {sorted(checkov_reports)}"
    summary = report["summary"]
    assert summary["passed"] > 0, f"{framework}: nothing checked"
    failed = [
        f"{c['check_id']} {c['resource']} {c.get('file_path')}: {c['check_name']}"
        for c in report["results"]["failed_checks"]
    ]
    assert not failed, "\n".join(failed)


def test_checkov_skips_are_documented(checkov_reports: dict[str, dict[str, Any]]) -> None:
    """Every skip carries a reason of a few words (inline `checkov:skip=ID:reason` or `checkov.io/skipN: ID=reason`)."""
    for framework, report in checkov_reports.items():
        for check in report["results"]["skipped_checks"]:
            reason = (check.get("check_result") or {}).get("suppress_comment", "")
            assert len(re.findall(r"\w+", reason)) >= 4, f"{framework} {check['check_id']} skipped without a reason"

"""checkov on terraform/: zero failed checks; every skip is written next to the code with its reason."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, require
from tests.terraform.tfhelpers import TERRAFORM_DIR

CHECKOV = Path(os.environ.get("TOOLS", REPO / ".tools")) / "checkov-venv" / "bin" / "checkov"
# Every module of ours with resources must appear in the scan: an empty scan passes nothing.
SCANNED_MODULES = {"network", "eks", "rds", "s3", "ecr", "identities", "secrets"}


@pytest.fixture(scope="module")
def checkov_report() -> dict[str, Any]:
    """One checkov run per session (it is the slow part), offline."""
    require(CHECKOV.is_file(), f"checkov not installed at {CHECKOV} (run `make tools`)")
    env = {**os.environ, "BC_SKIP_MAPPING": "TRUE"}
    env.pop("BC_API_KEY", None)
    result = subprocess.run(
        [
            str(CHECKOV),
            "--directory",
            str(TERRAFORM_DIR),
            "--framework",
            "terraform",
            "--skip-download",
            "--download-external-modules",
            "false",
            "--output",
            "json",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode in (0, 1), f"checkov crashed ({result.returncode}):\n{result.stderr[-3000:]}"
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    (terraform_report,) = [r for r in reports if r.get("check_type") == "terraform"]
    return terraform_report


def test_no_failed_checks(checkov_report: dict[str, Any]) -> None:
    failed = checkov_report["results"]["failed_checks"]
    details = "\n".join(f"{c['check_id']} {c['resource']} {c['file_path']}: {c['check_name']}" for c in failed)
    assert not failed, f"checkov failed checks:\n{details}"
    assert checkov_report["summary"]["parsing_errors"] == 0


def test_scan_covered_every_module(checkov_report: dict[str, Any]) -> None:
    results = checkov_report["results"]
    resources = {c["resource"] for c in results["passed_checks"] + results["skipped_checks"]}
    scanned = {r.split(".")[1] for r in resources if r.startswith("module.")}
    assert scanned >= SCANNED_MODULES
    assert checkov_report["summary"]["passed"] >= 150


def test_every_skip_has_a_reason_in_the_code(checkov_report: dict[str, Any]) -> None:
    for check in checkov_report["results"]["skipped_checks"]:
        reason = (check["check_result"].get("suppress_comment") or "").strip()
        assert len(reason) >= 30, f"{check['check_id']} on {check['resource']} skipped without a real reason"
        source = (TERRAFORM_DIR / check["file_path"].lstrip("/")).read_text()
        assert f"#checkov:skip={check['check_id']}:{reason}" in source

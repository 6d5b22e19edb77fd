"""Static checks of the repository: no secret in git beyond the audited baseline, no medium/high bandit finding.

- detect-secrets scans every tracked file (``git ls-files``) with the plugins and filters recorded in
  ``.secrets.baseline``; any finding not in the baseline fails, and every baseline entry must be audited as a
  false positive with a reason (a real secret is removed from the repository, not baselined).
- bandit (``bandit.yaml``) over src/ and dags/: no finding of medium or high severity.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.security.baseline_tool import unaudited

REPO = Path(__file__).resolve().parents[2]
BASELINE = REPO / ".secrets.baseline"

# Medium/high bandit findings reviewed as false positives in files this area does not own (a `# nosec` belongs
# on the line itself; these wait for it): (file, test id, text on the flagged line) -> why it is safe.
# Findings reviewed as false positives that bandit cannot be told about in place: (file, test id, code marker).
REVIEWED_BANDIT: dict[tuple[str, str, str], str] = {}


def _tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    names = [name for name in out.decode().split("\0") if name and (REPO / name).is_file()]
    return [name for name in names if name != BASELINE.name]  # hashes of audited findings, not secrets


def _scan(files: list[str]) -> Any:
    from detect_secrets import SecretsCollection
    from detect_secrets.core import baseline

    audited = baseline.load(baseline.load_from_file(str(BASELINE)), str(BASELINE))  # also applies its settings
    found = SecretsCollection()  # paths as given (relative to the repository, as in the baseline)
    found.scan_files(*files, num_processors=2)
    return found, audited


def test_no_secret_outside_the_audited_baseline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    found, audited = _scan(_tracked_files())
    new = found - audited
    listing = [f"{name}:{secret.line_number} ({secret.type})" for name, secret in new]
    assert not listing, (
        "detect-secrets found possible secrets not in .secrets.baseline. A real secret: remove it from git and "
        "rotate it. A false positive: `python -m tests.security.baseline_tool` (make "
        f"secrets-baseline), then audit it (is_secret false + reason; docs/security.md): {listing}"
    )


def test_every_baseline_entry_is_an_audited_false_positive() -> None:
    todo = unaudited(json.loads(BASELINE.read_text(encoding="utf-8")))
    assert not todo, f"baseline entries not audited as false positives with a reason: {todo}"


def test_the_scan_does_find_a_planted_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The scan above is not vacuous: with the baseline's settings, a planted key in a new file is found."""
    planted = tmp_path / "leak.py"
    key_id = "AKIA" + "Q3EGRIUYW6XKZ7B4"  # an AWS access key id shape, built so this file holds none
    planted.write_text(f'aws_access_key_id = "{key_id}"\nslack = "https://hooks.slack.com/services/T1/B2/{"x" * 24}"\n')
    found, audited = _scan([str(planted)])
    types = {secret.type for _, secret in found - audited}
    assert {"AWS Access Key", "Slack Token"} <= types


def _bandit(*targets: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "bandit", "-c", "bandit.yaml", "-r", *targets, "-f", "json", "-q"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.stdout.strip(), f"bandit produced no report (exit {proc.returncode}): {proc.stderr[-2000:]}"
    report: dict[str, Any] = json.loads(proc.stdout)
    assert not report["errors"], f"bandit could not scan: {report['errors']}"
    return report


def _reviewed(result: dict[str, Any]) -> bool:
    return any(
        result["filename"] == path and result["test_id"] == test_id and marker in result["code"]
        for path, test_id, marker in REVIEWED_BANDIT
    )


def test_bandit_has_no_medium_or_high_findings() -> None:
    report = _bandit("src", "dags")
    assert report["metrics"]["_totals"]["loc"] > 1000  # it did scan the code
    serious = [
        f"{r['filename']}:{r['line_number']} {r['test_id']} ({r['issue_severity']}): {r['issue_text']}"
        for r in report["results"]
        if r["issue_severity"] in {"MEDIUM", "HIGH"} and not _reviewed(r)
    ]
    assert not serious, f"bandit medium/high findings (fix, or `# nosec BXXX: reason` where justified): {serious}"


def test_bandit_reports_a_planted_finding(tmp_path: Path) -> None:
    """The gate is not vacuous: a shell=True subprocess call is a high finding with this configuration."""
    sample = tmp_path / "sample.py"
    sample.write_text("import subprocess\n\n\ndef run(cmd: str) -> None:\n    subprocess.call(cmd, shell=True)\n")
    report = _bandit(str(sample))
    assert {(r["test_id"], r["issue_severity"]) for r in report["results"]} >= {("B602", "HIGH")}

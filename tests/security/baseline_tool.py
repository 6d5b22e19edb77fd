"""Refresh ``.secrets.baseline`` without losing its audit: ``python -m tests.security.baseline_tool``.

``detect-secrets scan --baseline`` updates line numbers and adds new findings but drops the ``reason`` each
audited entry carries. This runs it, puts the reasons back (matched on file, hashed secret and type) and lists
the entries that still need a human: run ``detect-secrets audit .secrets.baseline`` for those, then add a
``"reason"`` to each false positive. A real secret is removed from git (and rotated), never baselined.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BASELINE = REPO / ".secrets.baseline"


def _key(path: str, entry: dict[str, Any]) -> tuple[str, str, str]:
    return path, entry["hashed_secret"], entry["type"]


def unaudited(document: dict[str, Any]) -> list[str]:
    return [
        f"{path}:{entry['line_number']} ({entry['type']})"
        for path, entries in document["results"].items()
        for entry in entries
        if entry.get("is_secret") is not False or not entry.get("reason")
    ]


def refresh() -> list[str]:
    before = json.loads(BASELINE.read_text(encoding="utf-8"))
    reasons = {_key(p, e): e["reason"] for p, es in before["results"].items() for e in es if e.get("reason")}
    detect = Path(sys.executable).with_name("detect-secrets")
    subprocess.run([str(detect), "scan", "--baseline", str(BASELINE.name)], cwd=REPO, check=True)
    after = json.loads(BASELINE.read_text(encoding="utf-8"))
    for path, entries in after["results"].items():
        for entry in entries:
            if _key(path, entry) in reasons:
                entry["reason"] = reasons[_key(path, entry)]
    BASELINE.write_text(json.dumps(after, indent=2) + "\n", encoding="utf-8")
    return unaudited(after)


if __name__ == "__main__":
    todo = refresh()
    for line in todo:
        print(f"needs audit: {line}")
    sys.exit(1 if todo else 0)

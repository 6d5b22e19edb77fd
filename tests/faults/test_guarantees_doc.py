"""docs/guarantees.md lists every scenario of the fault matrix with its test id."""

from __future__ import annotations

from .harness import REPO
from .test_fault_matrix import SCENARIOS


def test_guarantees_doc_lists_every_scenario() -> None:
    doc = (REPO / "docs" / "guarantees.md").read_text(encoding="utf-8")
    missing = [s.id for s in SCENARIOS if f"`test_scenario[{s.id}]`" not in doc]
    assert not missing, f"docs/guarantees.md lacks these scenarios: {missing}"

"""A replay server for the ingest and backfill tests, and a small, fast pipeline configuration around it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cryptopipe.cli import main
from cryptopipe.replay.server import ReplayServer
from tests.support.replay import reset_replay, running_replay

CLOCK = "2025-06-01T13:05:00Z"  # the replay market's "now": just after the interval below ends
START, END = "2025-06-01T12:00:00Z", "2025-06-01T13:00:00Z"
PARTITION = "date=2025-06-01/hour=12"

FAST = {
    "CRYPTOPIPE_COINS__TOP_N": "30",
    "CRYPTOPIPE_QUOTE_CURRENCIES": "usd,eur",
    "CRYPTOPIPE_API__RATE_LIMIT_PER_MINUTE": "1000",
    "CRYPTOPIPE_API__TIMEOUT_SECONDS": "1",
    "CRYPTOPIPE_API__RETRY__MAX_ATTEMPTS": "4",
    "CRYPTOPIPE_API__RETRY__BACKOFF_SECONDS": "0.05",
    "CRYPTOPIPE_API__RETRY__BACKOFF_MAX_SECONDS": "2",
    "CRYPTOPIPE_API__RETRY__TOTAL_TIMEOUT_SECONDS": "20",
}


@pytest.fixture(scope="session")
def replay_session() -> Iterator[ReplayServer]:
    with running_replay(CLOCK, max_hang_seconds=10) as server:
        yield server


@pytest.fixture
def replay(replay_session: ReplayServer) -> ReplayServer:
    return reset_replay(replay_session, CLOCK)


@dataclass
class Pipeline:
    """Runs the real CLI against the replay server with one store per name under tmp_path."""

    tmp: Path
    monkeypatch: pytest.MonkeyPatch
    server: ReplayServer

    def root(self, name: str = "store") -> Path:
        return self.tmp / name

    def set(self, **env: str) -> None:
        for key, value in env.items():
            self.monkeypatch.setenv(f"CRYPTOPIPE_{key}", value)

    def ingest(self, name: str = "store", start: str = START, end: str = END) -> int:
        self.monkeypatch.setenv("CRYPTOPIPE_STORAGE__URI", f"file://{self.root(name)}")
        return main(["ingest", "--interval-start", start, "--interval-end", end])

    def backfill(self, start: str, end: str, name: str = "store") -> int:
        self.monkeypatch.setenv("CRYPTOPIPE_STORAGE__URI", f"file://{self.root(name)}")
        return main(["backfill", "--start", start, "--end", end, "--no-progress"])

    def objects(self, name: str = "store", *, runs: bool = False) -> dict[str, bytes]:
        """Every object of a store (run records left out unless asked for: they carry wall-clock times)."""
        root = self.root(name)
        if not root.exists():
            return {}
        found = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}
        return {k: v for k, v in found.items() if runs or not k.startswith("runs/")}

    def run_record(self, name: str = "store", stage: str = "ingest", partition: str = PARTITION) -> dict[str, Any]:
        data = (self.root(name) / "runs" / partition / f"{stage}.json").read_bytes()
        return json.loads(data)  # type: ignore[no-any-return]


@pytest.fixture
def pipeline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, replay: ReplayServer) -> Pipeline:
    for key in [k for k in os.environ if k.startswith("CRYPTOPIPE_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("CRYPTOPIPE_API__BASE_URL", replay.url)
    for key, value in FAST.items():
        monkeypatch.setenv(key, value)
    return Pipeline(tmp_path, monkeypatch, replay)

"""Every storage call a stage makes is allowed by its IAM role (terraform/modules/identities/access.tf).

The access table there is the single source of each pod's S3 policy. A stage that reads, writes or deletes a key
outside its prefixes works locally and fails in EKS with AccessDenied, so this test runs the real stages (the DAG's
per-interval path: ingest against the replay server, validate, transform with a compacted past day, archive at a
00:00 interval so retention sweeps, reruns, and a critical validate failure) with every object-store call recorded,
and checks each call against the table: get/exists/version/list/folders need read, put/put_once need write,
delete delete.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cryptopipe.cli import main
from cryptopipe.core.layout import Interval, raw_page_key, staging_key
from cryptopipe.core.storage import FileStore
from cryptopipe.core.tables import write_table
from tests.support.replay import running_replay
from tests.terraform.tfhelpers import load_dir, locals_of
from tests.unit.batch.helpers import edit, intervals, staging

IDENTITIES = Path(__file__).resolve().parents[2] / "terraform" / "modules" / "identities"
KIND = {"get": "read", "exists": "read", "version": "read", "list": "read", "put": "write",
        "_create_exclusive": "write", "delete": "delete", "folders": "read"}  # fmt: skip
BUCKET = {"datalake": "datalake", "archive": "archive"}
DAY = datetime(2026, 11, 22, tzinfo=UTC)
HOURS = intervals(26, DAY)  # a full day (compacted for the lookback) + 00:00 and 01:00 of the next
LIVE = HOURS[-2:]
CLOCK = "2025-06-01T13:05:00Z"


def access_table() -> dict[str, dict[str, dict[str, list[str]]]]:
    return locals_of(load_dir(IDENTITIES))["s3_access"]  # type: ignore[no-any-return]


class Recorder:
    """Wraps FileStore's primitives: (bucket, kind, key) per call while ``stage`` is set."""

    def __init__(self, roots: dict[str, Path]) -> None:
        self.roots = {str(path.resolve()): name for name, path in roots.items()}
        self.stage: str | None = None
        self.calls: dict[str, set[tuple[str, str, str]]] = {}

    def wrap(self, monkeypatch: pytest.MonkeyPatch) -> None:
        for name, kind in KIND.items():
            original = getattr(FileStore, name)
            monkeypatch.setattr(FileStore, name, self._recording(original, kind))

    def _recording(self, original: Callable[..., Any], kind: str) -> Callable[..., Any]:
        recorder = self

        def call(store: FileStore, key: str, *args: Any, **kwargs: Any) -> Any:
            if recorder.stage is not None:
                bucket = recorder.roots[str(store.root.resolve())]
                recorder.calls.setdefault(recorder.stage, set()).add((bucket, kind, key))
            return original(store, key, *args, **kwargs)

        return call

    def run(self, stage: str, argv: list[str]) -> int:
        self.stage = stage
        try:
            return main(argv)
        finally:
            self.stage = None


@pytest.fixture
def recorder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    roots = {"datalake": tmp_path / "datalake", "archive": tmp_path / "archive"}
    for key in [k for k in os.environ if k.startswith("CRYPTOPIPE_")]:
        monkeypatch.delenv(key)
    env = {
        "CRYPTOPIPE_STORAGE__URI": roots["datalake"].as_uri(),
        "CRYPTOPIPE_STORAGE__ARCHIVE_URI": roots["archive"].as_uri(),
        "CRYPTOPIPE_WAREHOUSE__URL": f"sqlite:///{tmp_path / 'warehouse.db'}",
        "CRYPTOPIPE_COINS__TOP_N": "20",
        "CRYPTOPIPE_TRANSFORM__CHART_TOP_N": "1",
        "CRYPTOPIPE_RETENTION__WORKING_DAYS": "1",  # the 00:00 archive run then deletes expired working data
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    recorder = Recorder(roots)
    recorder.wrap(monkeypatch)
    yield recorder


def _interval_args(interval: Interval) -> list[str]:
    return ["--interval-start", interval.start.isoformat(), "--interval-end", interval.end.isoformat()]


def _seed(root: Path) -> None:
    store = FileStore(root)
    for interval in HOURS:
        write_table(store, staging_key(interval), staging(interval))
        store.put(raw_page_key(interval, "usd", 1), b"{}")  # archive copies the interval's raw pages


def _allowed(table: dict[str, dict[str, list[str]]], bucket: str, kind: str, key: str) -> bool:
    return any(key.startswith(prefix) for prefix in table.get(BUCKET[bucket], {}).get(kind, []))


def _denied(calls: dict[str, set[tuple[str, str, str]]]) -> list[str]:
    table = access_table()
    return sorted(
        f"{stage}: {kind} {bucket}:{key}"
        for stage, seen in calls.items()
        for bucket, kind, key in seen
        if not _allowed(table[stage], bucket, kind, key)
    )


def test_every_storage_call_of_the_stages_is_granted_by_their_iam_role(recorder: Recorder, tmp_path: Path) -> None:
    _seed(tmp_path / "datalake")
    setup = ["run", "--start", HOURS[0].start.isoformat(), "--end", LIVE[0].start.isoformat(), "--batch"]
    assert main([*setup, "--stages", "validate,transform,archive"]) == 0  # history, not recorded
    for interval in LIVE:
        for _attempt in range(2):  # a rerun replaces and deletes what the first run wrote
            for stage in ("validate", "transform", "archive"):
                assert recorder.run(stage, [stage, *_interval_args(interval)]) == 0, (stage, interval)
    bad = LIVE[-1]
    store = FileStore(tmp_path / "datalake")
    write_table(store, staging_key(bad), edit(staging(bad), 2, price=-1.0))
    assert recorder.run("validate", ["validate", *_interval_args(bad)]) == 3  # the failure path deletes outputs
    assert {"validate", "transform", "archive"} <= set(recorder.calls)
    assert any(kind == "delete" for _, kind, _ in recorder.calls["archive"])  # retention did sweep
    denied = _denied(recorder.calls)
    assert denied == [], "\n".join(denied)


def test_ingest_storage_calls_are_granted(recorder: Recorder, monkeypatch: pytest.MonkeyPatch) -> None:
    with running_replay(CLOCK) as server:
        monkeypatch.setenv("CRYPTOPIPE_API__BASE_URL", server.url)
        monkeypatch.setenv("CRYPTOPIPE_API__RATE_LIMIT_PER_MINUTE", "1000")
        args = ["ingest", "--interval-start", "2025-06-01T12:00:00Z", "--interval-end", "2025-06-01T13:00:00Z"]
        assert recorder.run("ingest", args) == 0
        assert recorder.run("ingest", args) == 0  # the rerun compares the write-once raw pages
    denied = _denied(recorder.calls)
    assert denied == [], "\n".join(denied)


def test_the_check_catches_a_call_outside_the_role() -> None:
    calls = {"transform": {("datalake", "write", "validated/market_snapshots/date=2026-11-22/hour=00/x.parquet")}}
    assert _denied(calls) == ["transform: write datalake:validated/market_snapshots/date=2026-11-22/hour=00/x.parquet"]


def test_daily_layout_storage_calls_are_granted(recorder: Recorder, tmp_path: Path) -> None:
    """`run --batch --daily` per stage: over days an hourly run wrote first (the daily run deletes what it
    supersedes), a rerun, a day failing validate's gate (its compaction removed) and a refused hourly run."""
    days = intervals(72, DAY)
    store = FileStore(tmp_path / "datalake")
    for interval in days:
        write_table(store, staging_key(interval), staging(interval))
        store.put(raw_page_key(interval, "usd", 1), b"{}")
    span = ["--start", days[0].start.isoformat(), "--end", days[-1].end.isoformat(), "--batch"]
    first_day = ["run", "--start", days[0].start.isoformat(), "--end", days[23].end.isoformat(), "--batch"]
    assert main([*first_day, "--stages", "validate,transform,archive"]) == 0  # hourly objects, not recorded
    for _attempt in range(2):  # a rerun replaces what the first run wrote
        for stage in ("validate", "transform"):
            assert recorder.run(stage, ["run", *span, "--daily", "--stages", stage]) == 0, stage
    assert recorder.run("archive", ["run", *span, "--daily", "--stages", "archive"]) == 0  # retention sweeps
    # retention (1 working day) left the last day's staging only: fail that day's gate
    write_table(store, staging_key(days[60]), edit(staging(days[60]), 2, price=-1.0))
    last_day = ["run", "--start", days[48].start.isoformat(), "--end", days[-1].end.isoformat(), "--batch"]
    assert recorder.run("archive", [*last_day, "--daily", "--stages", "archive"]) == 0  # a rerun
    assert recorder.run("validate", [*last_day, "--daily", "--stages", "validate"]) == 3
    assert recorder.run("transform", ["transform", *_interval_args(days[30])]) == 2  # refused: a sealed day
    assert any(kind == "delete" for _, kind, _ in recorder.calls["transform"])  # the hourly objects superseded
    assert any(kind == "delete" for _, kind, _ in recorder.calls["validate"])
    denied = _denied(recorder.calls)
    assert denied == [], "\n".join(denied)

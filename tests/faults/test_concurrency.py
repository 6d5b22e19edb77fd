"""Concurrency safety (issue 8, item 2): two runs of one interval cannot both write.

Shown with real concurrency against the real servers (SeaweedFS S3, PostgreSQL), at the stage level:

- raw (ingest): write-once objects are S3 conditional writes (``If-None-Match: *``): of N writers racing on
  one key exactly one creates it, the others get a CONFLICT (other bytes) or a no-op (same bytes). Two ingest
  processes fetching the same interval at different moments (different bytes) end with ONE raw set, a marker
  that matches it, and the staging table of that set; the loser adopts the winner's page.
- validate / transform: outputs are deterministic functions of their inputs, so two concurrent runs write
  the same bytes (atomic ``put``): whoever lands last, the object is the one a single run writes.
- warehouse: an interval's load runs in one transaction under a per-interval advisory lock, so two loads
  serialise and the table holds exactly one of the two row sets, never a mix. The control (the same two loads
  without the lock) does mix: the lock is what makes it safe, not luck.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.postgres import PostgresServer
from tests.support.s3_server import S3Server

pytestmark = [pytest.mark.e2e]

START = datetime(2026, 11, 21, 5, tzinfo=UTC)
END = START + timedelta(hours=1)
PART = f"date={START:%Y-%m-%d}/hour={START:%H}"
CLI = str(Path(sys.executable).with_name("cryptopipe"))


@pytest.fixture
def bucket_env(s3_server: S3Server, tmp_path: Path) -> dict[str, str]:
    bucket = s3_server.new_bucket()
    return {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(tmp_path),
        **s3_server.env(bucket),
        "CRYPTOPIPE_COINS__TOP_N": "20",
        "CRYPTOPIPE_API__RATE_LIMIT_PER_MINUTE": "1000",
        "CRYPTOPIPE_TRANSFORM__LOOKBACK_DAYS": "8",
        "CRYPTOPIPE_TRANSFORM__CHART_TOP_N": "1",
        "CRYPTOPIPE_WAREHOUSE__URL": f"sqlite:///{tmp_path}/warehouse.db",
        "GX_ANALYTICS_ENABLED": "false",
        "MPLBACKEND": "Agg",
        "_BUCKET": bucket,
    }


def _store(s3_server: S3Server, bucket: str) -> Any:
    from cryptopipe.core.storage import S3Store

    return S3Store(bucket, endpoint_url=s3_server.endpoint, client=s3_server.client())


def _digests(s3_server: S3Server, bucket: str, prefix: str) -> dict[str, str]:
    store = _store(s3_server, bucket)
    return {k: hashlib.sha256(store.get(k)).hexdigest() for k in store.list(prefix)}


def _start(stage: str, env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [CLI, stage, "--interval-start", START.isoformat(), "--interval-end", END.isoformat()],
        env={k: v for k, v in env.items() if not k.startswith("_")},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _finish(procs: list[subprocess.Popen[str]]) -> list[tuple[int, str]]:
    return [(p.wait(timeout=300), p.communicate()[0]) for p in procs]


# -- raw: conditional writes --------------------------------------------------------------------------------------


def _race(store: Any, key: str, writers: int, same_bytes: bool) -> list[tuple[int, str]]:
    """``writers`` threads released together by a barrier, each put_once-ing its bytes to ``key``."""
    from cryptopipe.core.errors import WriteConflictError

    barrier = threading.Barrier(writers)
    outcomes: list[tuple[int, str]] = []
    lock = threading.Lock()

    def write(i: int) -> None:
        data = b"same" if same_bytes else f"writer-{i}".encode()
        barrier.wait()
        try:
            result = "created" if store.put_once(key, data) else "no-op"
        except WriteConflictError:
            result = "conflict"
        with lock:
            outcomes.append((i, result))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return sorted(outcomes)


@pytest.mark.parametrize("same_bytes", [False, True], ids=["other-bytes", "same-bytes"])
def test_put_once_race_has_exactly_one_winner(s3_server: S3Server, same_bytes: bool) -> None:
    store = _store(s3_server, s3_server.new_bucket())
    writers = 6
    for n in range(5):
        key = f"raw/race/round={n}.json.gz"
        outcomes = _race(store, key, writers, same_bytes)
        winners = [i for i, r in outcomes if r == "created"]
        assert len(outcomes) == writers and len(winners) == 1, f"round {n}: {outcomes}"
        losers = {r for i, r in outcomes if i != winners[0]}
        assert losers == ({"no-op"} if same_bytes else {"conflict"}), f"round {n}: {outcomes}"
        stored = store.get(key)
        assert stored == (b"same" if same_bytes else f"writer-{winners[0]}".encode()), "the winner's bytes"


@pytest.fixture
def two_replays() -> Iterator[tuple[Any, Any]]:
    from cryptopipe.replay.server import ReplayServer

    # Two moments of the market: the two ingests fetch different bytes for the same page. Each first request
    # is slowed by 1 s so both fetch before either writes.
    slow = [{"path": "coins/markets", "faults": ["slow:1"]}]
    with (
        ReplayServer(clock=END + timedelta(seconds=20), faults=slow) as first,
        ReplayServer(clock=END + timedelta(seconds=50), faults=slow) as second,
    ):
        yield first, second


def test_two_ingests_of_one_interval_end_with_one_raw_set(
    s3_server: S3Server, bucket_env: dict[str, str], two_replays: tuple[Any, Any], tmp_path: Path
) -> None:
    import json

    bucket = bucket_env["_BUCKET"]
    procs = [
        _start("ingest", {**bucket_env, "CRYPTOPIPE_API__BASE_URL": replay.url}, tmp_path) for replay in two_replays
    ]
    results = _finish(procs)
    assert [code for code, _ in results] == [0, 0], "\n".join(out[-2000:] for _, out in results)
    logs = "".join(out for _, out in results)
    assert "adopting it" in logs, "the race did not happen: no ingest had to adopt the other's page"

    store = _store(s3_server, bucket)
    page_key = f"raw/coins_markets/{PART}/vs=usd/page=0001.json.gz"
    page = store.get(page_key)
    marker = json.loads(store.get(f"raw/coins_markets/{PART}/_SUCCESS.json"))
    [entry] = marker["pages"]
    assert entry["sha256"] == hashlib.sha256(page).hexdigest(), "the marker describes another page than stored"
    staging = store.get(f"staging/market_snapshots/{PART}/snapshots.parquet")

    # A third run takes the marker path: it must write the very staging bytes both racers left.
    code, out = _finish([_start("ingest", {**bucket_env, "CRYPTOPIPE_API__BASE_URL": "http://127.0.0.1:9/api/v3"},
                                tmp_path)])[0]  # fmt: skip
    assert code == 0, out[-2000:]
    assert '"raw_reused": true' in out
    assert store.get(f"staging/market_snapshots/{PART}/snapshots.parquet") == staging
    assert [k for k in store.list("raw/") if k.endswith(".json.gz")] == [page_key]


# -- validate / transform: deterministic outputs ------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.full_matrix
def test_concurrent_validate_and_transform_write_the_bytes_of_a_single_run(
    s3_server: S3Server, bucket_env: dict[str, str], tmp_path: Path
) -> None:
    from cryptopipe.replay.server import ReplayServer

    bucket = bucket_env["_BUCKET"]
    with ReplayServer(clock=END + timedelta(seconds=30)) as replay:
        env = {**bucket_env, "CRYPTOPIPE_API__BASE_URL": replay.url}
        [(code, out)] = _finish([_start("ingest", env, tmp_path)])
        assert code == 0, out[-2000:]
    prefixes = {
        "validate": (f"validated/market_snapshots/{PART}/", f"quality/{PART}/report.json"),
        "transform": (f"analytics/indicators/{PART}/", f"alerts/{PART}/"),
    }
    for stage, keys in prefixes.items():
        [(code, out)] = _finish([_start(stage, env, tmp_path)])
        assert code == 0, out[-2000:]
        single = {p: _digests(s3_server, bucket, p) for p in keys}
        assert all(single.values()), f"{stage} wrote nothing under {keys}"
        results = _finish([_start(stage, env, tmp_path) for _ in range(2)])
        assert [c for c, _ in results] == [0, 0], "\n".join(o[-2000:] for _, o in results)
        assert {p: _digests(s3_server, bucket, p) for p in keys} == single, f"concurrent {stage} changed bytes"


# -- warehouse: the interval lock ---------------------------------------------------------------------------------


def _rows(tag: str, coins: list[str]) -> list[dict[str, Any]]:
    return [
        {
            "coin_id": c,
            "vs_currency": "usd",
            "snapshot_time": END,
            "interval_start": START,
            "price": 1.0,
            "source": tag,
        }
        for c in coins
    ]


def _concurrent_loads(url: str, *, locked: bool) -> list[tuple[str, str]]:
    """Two loads of one interval with different row sets, the second starting while the first is open."""
    from cryptopipe.archive import models
    from cryptopipe.archive.warehouse import create_engine, lock_interval, migrate, replace_interval

    engine = create_engine(url)
    migrate(engine)
    first_open = threading.Event()
    errors: list[BaseException] = []

    def load(tag: str, coins: list[str], hold: float) -> None:
        try:
            with engine.begin() as conn:
                if locked:
                    lock_interval(conn, START)
                replace_interval(conn, models.market_snapshots, "interval_start", START, _rows(tag, coins))
                first_open.set()
                time.sleep(hold)  # the other load starts while this transaction is still open
        except BaseException as exc:
            errors.append(exc)

    first = threading.Thread(target=load, args=("run-a", ["a1", "a2", "both"], 1.5))
    first.start()
    assert first_open.wait(30)
    second = threading.Thread(target=load, args=("run-b", ["b1", "both"], 0.0))
    second.start()
    first.join(60)
    second.join(60)
    assert not errors, errors
    import sqlalchemy as sa

    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT coin_id, source FROM market_snapshots ORDER BY coin_id")).all()
    engine.dispose()
    return [(r[0], r[1]) for r in rows]


def test_two_warehouse_loads_of_one_interval_serialise(postgres_server: PostgresServer) -> None:
    rows = _concurrent_loads(postgres_server.new_database(), locked=True)
    # The later load replaced the earlier one completely: its rows, one per key, nothing of the first left.
    assert rows == [("b1", "run-b"), ("both", "run-b")], rows


def test_without_the_lock_two_loads_mix(postgres_server: PostgresServer) -> None:
    """Control: the same two loads without the lock leave a mix of both runs (what the lock prevents)."""
    rows = _concurrent_loads(postgres_server.new_database(), locked=False)
    sources = {s for _, s in rows}
    assert sources == {"run-a", "run-b"}, f"expected a mix without the lock, got {rows}"

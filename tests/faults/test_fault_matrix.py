"""The fault matrix (issue 8, item 1): the real DAG end to end under injected faults.

Each row of ``SCENARIOS`` says what is injected and the EXPECTED OUTCOME, one of:

- ``success``: every task succeeds (after retries inside a stage or Airflow retries of a task) and the
  interval's data is EXACTLY the clean run's: raw page bodies, staging, validated, quarantine, quality report,
  indicators, alerts and the archive copy byte-identical; warehouse rows identical.
- ``failure``: ``failed_stage`` fails with ``error`` in the task log and in a Slack failure message, later
  tasks do not run, nothing partial or different from the clean run is left; then the fault is cleared,
  the DAG is run again and converges to the clean run's data.

Everything is real except the cluster: the KubernetesPodOperator (deferrable, as deployed) talks to the
Kubernetes API double, which runs each pod as ``cryptopipe <stage>`` with the pod's env; the CoinGecko replay
server; SeaweedFS S3 (for some scenarios behind a proxy that cuts a write half way); PostgreSQL; a Slack
receiver. Airflow retries are 1 (2 tries), 1 s apart, so a scenario takes a minute, not an hour.

Counts (rows lost, rows duplicated, scenarios without a clear error) are printed at the end of the session
and asserted by ``test_fault_matrix_counts`` (the last test of this module).
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from .harness import (
    ALL_SUCCESS,
    DATA_LAYERS,
    END,
    PARTITION,
    REGISTRY,
    STAGES,
    START,
    Harness,
    RunResult,
    ScenarioRecord,
    Snapshot,
    compare,
    exit_message,
    partial_data,
    reference_snapshot,
    when_pod_logs,
)

pytestmark = [pytest.mark.e2e]

RAW_PAGE = f"raw/coins_markets/{PARTITION}/vs=usd/page=0001.json.gz"
RAW_SIDECAR = RAW_PAGE.replace(".json.gz", ".meta.json")
RAW_MARKER = f"raw/coins_markets/{PARTITION}/_SUCCESS.json"
ARCHIVE_PAGE = f"archive/{RAW_PAGE}"


@dataclass
class Ctx:
    """What a scenario's arrange step hands to the run: options and threads/cleanups."""

    run: dict[str, Any] = field(default_factory=dict)
    heal: Callable[[Harness], None] | None = None
    after: list[Callable[[], None]] = field(default_factory=list)
    notes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Scenario:
    id: str
    category: str
    expected: str
    arrange: Callable[[Harness, Ctx], None]
    failed_stage: str | None = None  # None: the run must succeed
    error: str = ""  # text of the clear error (task log and Slack message) when it must fail
    pods: dict[str, int] = field(default_factory=dict)  # pods per stage in the (first) run: proves the fault hit
    compare_layers: tuple[str, ...] = tuple(DATA_LAYERS)
    compare_tables: tuple[str, ...] = ("market_snapshots", "indicators", "anomalies")
    check: Callable[[Harness, RunResult, Ctx], None] | None = None
    env: dict[str, str] = field(default_factory=dict)
    via_proxy: bool = False
    slow: bool = True


# -- arrange helpers ------------------------------------------------------------------------------------------


def replay_faults(*faults: str, repeat: bool = False) -> Callable[[Harness, Ctx], None]:
    def arrange(h: Harness, ctx: Ctx) -> None:
        h.replay.set_faults([{"path": "coins/markets", "faults": list(faults), "repeat": repeat}])
        ctx.heal = lambda h: h.replay.set_faults(None)

    return arrange


def served(h: Harness, fault_prefix: str) -> int:
    return sum(1 for r in h.replay.requests if str(r.get("fault") or "").startswith(fault_prefix))


def s3_down_until_retry_of(stage: str, *, when_log: str | None = None) -> Callable[[Harness, Ctx], None]:
    """S3 stops (before the run, or once ``stage``'s pod logged ``when_log``) and comes back when Airflow
    schedules the stage's retry."""

    def arrange(h: Harness, ctx: Ctx) -> None:
        if when_log is None:
            h.s3.stop()
        else:
            assert h.k8s is not None
            when_pod_logs(h.k8s, f"cryptopipe-{stage}-*", when_log, h.s3.stop)
        ctx.run["on_retry"] = {stage: lambda _c: h.ensure_servers()}

    return arrange


def pg_down_until_retry_of(stage: str) -> Callable[[Harness, Ctx], None]:
    def arrange(h: Harness, ctx: Ctx) -> None:
        assert h.k8s is not None
        when_pod_logs(h.k8s, f"cryptopipe-{stage}-*", "stage started", h.pg.stop)
        ctx.run["on_retry"] = {stage: lambda _c: h.ensure_servers()}

    return arrange


def reference_raw(h: Harness) -> dict[str, bytes]:
    return dict(_REFERENCE_RAW)


_REFERENCE_RAW: dict[str, bytes] = {}


def plant(*keys: str, mutate: Callable[[str, bytes], bytes] | None = None) -> Callable[[Harness, Ctx], None]:
    """Put objects of the clean run into the bucket before the run (a previous partial run's leftovers)."""

    def arrange(h: Harness, ctx: Ctx) -> None:
        for key in keys:
            data = _REFERENCE_RAW[key.removeprefix("archive/")]
            h.put(key, mutate(key, data) if mutate else data)

    return arrange


def other_bytes(_key: str, data: bytes) -> bytes:
    body = json.loads(gzip.decompress(data))
    body[0]["current_price"] = body[0]["current_price"] * 1.01
    return gzip.compress(json.dumps(body).encode(), mtime=0)


def combine(*steps: Callable[[Harness, Ctx], None]) -> Callable[[Harness, Ctx], None]:
    def arrange(h: Harness, ctx: Ctx) -> None:
        for step in steps:
            step(h, ctx)

    return arrange


def stage_cli_env(h: Harness) -> dict[str, str]:
    """The environment a second, manual run gets: the same ConfigMap and Secret as the pods."""
    bin_dir = str(Path(sys.executable).parent)
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(h.workdir), **h.stage_env(), **h.secrets()}


def concurrent_cli(args: list[str], *, when_stage: str = "ingest") -> Callable[[Harness, Ctx], None]:
    """Start ``cryptopipe <args>`` as a separate process as soon as ``when_stage``'s pod starts."""

    def arrange(h: Harness, ctx: Ctx) -> None:
        assert h.k8s is not None
        procs: list[subprocess.Popen[bytes]] = []
        log = h.workdir / f"cli-{int(time.time() * 1000)}.log"

        def start() -> None:
            cli = str(Path(sys.executable).with_name("cryptopipe"))
            with log.open("wb") as out:
                procs.append(
                    subprocess.Popen(
                        [cli, *args], env=stage_cli_env(h), cwd=h.workdir, stdout=out, stderr=subprocess.STDOUT
                    )
                )

        when_pod_logs(h.k8s, f"cryptopipe-{when_stage}-*", "stage started", start)

        def wait() -> None:
            deadline = time.monotonic() + 5
            while not procs and time.monotonic() < deadline:
                time.sleep(0.05)
            assert procs, "the concurrent CLI run never started"
            ctx.notes["cli_exit"] = procs[0].wait(timeout=300)
            ctx.notes["cli_log"] = log.read_text()

        ctx.after.append(wait)

    return arrange


def hold_interval_lock(seconds: float) -> Callable[[Harness, Ctx], None]:
    """Another run holds the interval's warehouse lock; it lets go ``seconds`` after archive started."""

    def arrange(h: Harness, ctx: Ctx) -> None:
        import psycopg

        from cryptopipe.archive.warehouse import _lock_key

        assert h.k8s is not None
        dsn = h.warehouse_url.replace("postgresql+psycopg://", "postgresql://")
        conn = psycopg.connect(dsn, autocommit=True)
        conn.execute("SELECT pg_advisory_lock(%s)", (_lock_key(f"interval:{START.isoformat()}"),))

        def release() -> None:
            time.sleep(seconds)
            ctx.notes["released_at"] = time.time()
            conn.close()  # ends the session: the lock goes with it

        when_pod_logs(h.k8s, "cryptopipe-archive-*", "stage started", release)

    return arrange


def database_refuses_connections(h: Harness, ctx: Ctx) -> None:
    """The warehouse database refuses every connection until archive's retry is scheduled."""
    import psycopg

    name = h.warehouse_url.rsplit("/", 1)[1]
    admin = h.pg.url().replace("postgresql+psycopg://", "postgresql://")

    def allow(value: bool) -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS {str(value).lower()}')

    assert h.k8s is not None
    when_pod_logs(h.k8s, "cryptopipe-transform-*", "stage started", lambda: allow(False))
    ctx.run["on_retry"] = {"archive": lambda _c: allow(True)}


# -- scenario-specific checks -----------------------------------------------------------------------------------


def check_vanished(h: Harness, result: RunResult, ctx: Ctx) -> None:
    reference = _REFERENCE_SNAPSHOT[0]
    rows = h.warehouse_rows()["market_snapshots"]
    expected = [r for r in reference.warehouse["market_snapshots"] if r[0] != "bitcoin"]
    assert len(expected) == len(reference.warehouse["market_snapshots"]) - 1, "bitcoin was not in the clean run"
    assert rows == expected, "the other coins' rows differ from the clean run's"


def check_adopted(h: Harness, result: RunResult, ctx: Ctx) -> None:
    log = h.pod_log("cryptopipe-ingest-")
    assert '"pages_adopted": 1' in log, "the stored page of the partial run was not adopted"


def check_lock_waited(h: Harness, result: RunResult, ctx: Ctx) -> None:
    released = ctx.notes.get("released_at")
    assert released is not None, "the lock was never released: archive did not start"
    log = h.pod_log("cryptopipe-archive-")
    loaded = [json.loads(line) for line in log.splitlines() if '"warehouse loaded"' in line]
    assert loaded, "archive never loaded the warehouse"
    ts = loaded[0]["ts"].replace("Z", "+00:00")
    from datetime import datetime

    assert datetime.fromisoformat(ts).timestamp() >= released - 0.5, "archive loaded while the lock was held"


def check_cli_concurrent(h: Harness, result: RunResult, ctx: Ctx) -> None:
    for wait in ctx.after:
        wait()
    ctx.after.clear()
    assert ctx.notes.get("cli_exit") == 0, f"the concurrent run failed:\n{ctx.notes.get('cli_log', '')[-3000:]}"


def check_backfill(h: Harness, result: RunResult, ctx: Ctx) -> None:
    check_cli_concurrent(h, result, ctx)
    earlier = START - timedelta(hours=2)
    assert h.keys(f"validated/market_snapshots/date={earlier:%Y-%m-%d}/hour={earlier:%H}/"), (
        "the backfill wrote no earlier hour"
    )


def check_no_retry(stage: str) -> Callable[[Harness, RunResult, Ctx], None]:
    def check(h: Harness, result: RunResult, ctx: Ctx) -> None:
        pods = [p for p in result.pods if p.startswith(f"cryptopipe-{stage}-")]
        assert len(pods) == 1, f"{stage} must fail without retry, pods: {pods}"
        assert "not retried" in result.log

    return check


# -- the matrix --------------------------------------------------------------------------------------------------

SUCCESS_AFTER_RETRY = "success after retries; data identical to the clean run"

SCENARIOS: list[Scenario] = [
    # --- source (CoinGecko via the replay server) ---
    Scenario(
        "source-429-storm-retry-after", "source", SUCCESS_AFTER_RETRY + " (three 429 with Retry-After: 1 honoured)",
        replay_faults("429:1", "429:1", "429:1", "ok"), pods={"ingest": 1},
        check=lambda h, r, c: _expect(served(h, "429") == 3, "three 429 served"), slow=False,
    ),
    Scenario(
        "source-429-storm-exhausts-retries", "source",
        "ingest fails with exit 4 after the HTTP retry budget on both tries; Slack; nothing written; rerun converges",
        replay_faults("429:1", repeat=True), failed_stage="ingest", error=exit_message("ingest", 4),
    ),
    Scenario(
        "source-5xx-burst", "source", SUCCESS_AFTER_RETRY + " (500, 502, 503, 504 retried inside ingest)",
        replay_faults("500", "502", "503", "504", "ok"), pods={"ingest": 1},
        check=lambda h, r, c: _expect(served(h, "50") == 4, "four 5xx served"),
    ),
    Scenario(
        "source-5xx-persistent", "source", "ingest fails with exit 4 (503 on every attempt); Slack; nothing written",
        replay_faults("503", repeat=True), failed_stage="ingest", error=exit_message("ingest", 4),
    ),
    Scenario(
        "source-hang", "source", SUCCESS_AFTER_RETRY + " (a hung request ends at the 2 s read timeout, retried)",
        replay_faults("hang", "ok"), pods={"ingest": 1},
    ),
    Scenario(
        "source-html-200", "source", SUCCESS_AFTER_RETRY + " (an HTML page with status 200 is retried)",
        replay_faults("html", "ok"), pods={"ingest": 1},
    ),
    Scenario(
        "source-html-403-block", "source", "ingest fails with exit 7 (Cloudflare block is not retried); Slack",
        replay_faults("html403", repeat=True), failed_stage="ingest", error=exit_message("ingest", 7),
    ),
    Scenario(
        "source-truncated-json-once", "source", SUCCESS_AFTER_RETRY + " (a truncated body is retried)",
        replay_faults("truncated", "ok"), pods={"ingest": 1},
    ),
    Scenario(
        "source-truncated-json-always", "source", "ingest fails with exit 7 (invalid body after all retries); Slack",
        replay_faults("truncated", repeat=True), failed_stage="ingest", error=exit_message("ingest", 7),
    ),
    Scenario(
        "source-drift-missing-field", "source",
        "ingest fails with exit 7 naming current_price (a required field disappeared); Slack; nothing written",
        replay_faults("drift:missing=current_price", repeat=True), failed_stage="ingest",
        error=exit_message("ingest", 7),
    ),
    Scenario(
        "source-drift-renamed-field", "source", "ingest fails with exit 7 naming total_volume; Slack",
        replay_faults("drift:rename=total_volume:volume_24h", repeat=True), failed_stage="ingest",
        error=exit_message("ingest", 7),
    ),
    Scenario(
        "source-drift-extra-field", "source",
        "success; an unknown field stays in raw only: every derived object and row identical to the clean run",
        replay_faults("drift:extra=brand_new_field", repeat=True),
        compare_layers=("staging", "validated", "quarantine", "quality", "indicators", "alerts"),
    ),
    Scenario(
        "source-drift-numbers-as-strings", "source",
        "success; numbers sent as strings are converted: derived objects and rows identical to the clean run",
        replay_faults("drift:string_numbers", repeat=True),
        compare_layers=("staging", "validated", "quarantine", "quality", "indicators", "alerts"),
    ),
    Scenario(
        "source-coin-vanished", "source",
        "success without the vanished coin (bitcoin): the 19 other coins of the page, one row each, identical "
        "to the clean run's (19/20 is above min_row_share); a rerun keeps it (raw is write-once)",
        replay_faults("drop:bitcoin", repeat=True), compare_layers=(), compare_tables=(), check=check_vanished,
    ),
    Scenario(
        "source-empty-page-once", "source", SUCCESS_AFTER_RETRY + " (an empty ranking page is retried)",
        replay_faults("empty", "ok"), pods={"ingest": 1},
    ),
    Scenario(
        "source-empty-page-always", "source", "ingest fails with exit 7 (empty ranking after retries); Slack",
        replay_faults("empty", repeat=True), failed_stage="ingest", error=exit_message("ingest", 7),
    ),
    Scenario(
        "source-key-rejected", "source", "ingest fails with exit 7 (401 key rejected, never retried by HTTP); Slack",
        replay_faults("key_rejected", repeat=True), failed_stage="ingest", error=exit_message("ingest", 7),
    ),
    # --- storage (SeaweedFS S3) ---
    Scenario(
        "storage-s3-down-then-back", "storage",
        SUCCESS_AFTER_RETRY + " (ingest exits 5 while S3 is down; S3 is back for the Airflow retry)",
        s3_down_until_retry_of("ingest"), pods={"ingest": 2},
    ),
    Scenario(
        "storage-s3-stopped-mid-validate", "storage",
        SUCCESS_AFTER_RETRY + " (S3 stops while validate runs; validate exits 5, its retry succeeds)",
        s3_down_until_retry_of("validate", when_log="stage started"), pods={"validate": 2},
    ),
    Scenario(
        "storage-write-cut-half-way-ingest", "storage",
        SUCCESS_AFTER_RETRY + " (the connection dies half way through the 2nd PUT; the retry adopts the stored "
        "page and completes the raw set)",
        lambda h, c: (h.proxy.cut_after_puts(1), c.run.update(on_retry={"ingest": lambda _c: h.proxy.heal()})),
        pods={"ingest": 2}, via_proxy=True, check=check_adopted, slow=False,
    ),
    Scenario(
        "storage-write-cut-half-way-validate", "storage",
        SUCCESS_AFTER_RETRY + " (a validate write is cut half way; S3 keeps no partial object)",
        lambda h, c: (
            when_pod_logs(h.k8s, "cryptopipe-validate-*", "stage started", lambda: h.proxy.cut_after_puts(0)),
            c.run.update(on_retry={"validate": lambda _c: h.proxy.heal()}),
        ),
        pods={"validate": 2}, via_proxy=True,
    ),
    Scenario(
        "storage-s3-down-throughout-transform", "storage",
        "transform fails with exit 5 on both tries (S3 down); Slack; no indicators/alerts; rerun converges",
        lambda h, c: (
            when_pod_logs(h.k8s, "cryptopipe-transform-*", "stage started", h.s3.stop),
            setattr(c, "heal", Harness.ensure_servers),  # S3 back (started once only)
        ),
        failed_stage="transform", error=exit_message("transform", 5),
    ),
    Scenario(
        "storage-archive-object-other-bytes", "storage",
        "archive fails with exit 9 without retry (the archive copy exists with other bytes, never overwritten); "
        "Slack; no warehouse rows, no manifest; rerun after the bad object is removed converges",
        plant(ARCHIVE_PAGE, mutate=other_bytes), failed_stage="archive", error=exit_message("archive", 9),
        check=check_no_retry("archive"),
    ),
    Scenario(
        "storage-raw-page-tampered", "storage",
        "ingest fails with exit 5 (a stored raw page does not match the marker's sha256); Slack; nothing "
        "downstream; rerun after restoring the page converges",
        plant(RAW_MARKER, RAW_SIDECAR, RAW_PAGE, mutate=lambda k, d: other_bytes(k, d) if k == RAW_PAGE else d),
        failed_stage="ingest", error=exit_message("ingest", 5),
    ),
    # --- warehouse (PostgreSQL) ---
    Scenario(
        "warehouse-postgres-down-then-back", "warehouse",
        SUCCESS_AFTER_RETRY + " (PostgreSQL stops when archive starts: exit 6; back for the retry)",
        pg_down_until_retry_of("archive"), pods={"archive": 2}, slow=False,
    ),
    Scenario(
        "warehouse-postgres-down-throughout", "warehouse",
        "archive fails with exit 6 on both tries; Slack; no rows, no manifest; rerun converges",
        lambda h, c: (
            when_pod_logs(h.k8s, "cryptopipe-archive-*", "stage started", h.pg.stop),
            setattr(c, "heal", Harness.ensure_servers),  # PostgreSQL back
        ),
        failed_stage="archive", error=exit_message("archive", 6),
    ),
    Scenario(
        "warehouse-connections-refused", "warehouse",
        SUCCESS_AFTER_RETRY + " (the database refuses connections during archive's first try: exit 6)",
        database_refuses_connections, pods={"archive": 2},
    ),
    Scenario(
        "warehouse-lock-held-by-another-run", "warehouse",
        "success; archive waits for the interval lock another run holds (4 s), then loads: one row per key",
        hold_interval_lock(4.0), pods={"archive": 1}, check=check_lock_waited,
    ),
    # --- Kubernetes (the API double) ---
    Scenario(
        "k8s-pod-killed-mid-run", "kubernetes", SUCCESS_AFTER_RETRY + " (validate's pod SIGKILLed: exit 137)",
        lambda h, c: h.k8s.kill_after(1.0, pod="cryptopipe-validate-*", times=1), pods={"validate": 2},
        slow=False,
    ),
    Scenario(
        "k8s-oom-killed", "kubernetes", SUCCESS_AFTER_RETRY + " (transform's pod OOMKilled)",
        lambda h, c: h.k8s.kill_after(1.0, pod="cryptopipe-transform-*", reason="OOMKilled", times=1),
        pods={"transform": 2},
    ),
    Scenario(
        "k8s-pod-killed-sync-mode", "kubernetes", SUCCESS_AFTER_RETRY + " (ingest killed; operator in sync mode)",
        lambda h, c: (h.k8s.kill_after(0.5, pod="cryptopipe-ingest-*", times=1), c.run.update(deferrable=False)),
        pods={"ingest": 2},
    ),
    Scenario(
        "k8s-stuck-pending", "kubernetes",
        SUCCESS_AFTER_RETRY + " (ingest's pod never scheduled: the startup timeout fails the try, the retry runs)",
        lambda h, c: h.k8s.keep_pending(pod="cryptopipe-ingest-*", times=1), pods={"ingest": 2},
    ),
    Scenario(
        "k8s-image-pull-failure", "kubernetes",
        "transform fails on both tries ('never started its container: ErrImagePull/ImagePullBackOff … (image …)', "
        "the waiting reason in the Slack alert); no indicators; rerun with a pullable image converges",
        lambda h, c: (
            h.k8s.fail_image_pull(image="*/cryptopipe-transform:*"),
            setattr(c, "heal", lambda h: h.k8s.clear_faults()),
        ),
        failed_stage="transform", error="never started its container",
        check=lambda h, r, c: _expect("ImagePullBackOff" in r.log, "ImagePullBackOff in the task log"),
    ),
    Scenario(
        "k8s-node-lost", "kubernetes", SUCCESS_AFTER_RETRY + " (archive's node lost: the pod vanishes mid-run)",
        lambda h, c: h.k8s.lose_node_after(1.0, pod="cryptopipe-archive-*", times=1), pods={"archive": 2},
    ),
    # --- operations ---
    Scenario(
        "ops-same-interval-twice-at-once", "operations",
        "both runs succeed (a second `cryptopipe run` of the interval races the DAG): data identical to the clean "
        "run, one row per key",
        concurrent_cli(["run", "--start", START.isoformat(), "--end", END.isoformat()]), check=check_cli_concurrent,
    ),
    Scenario(
        "ops-rerun-after-partial-ingest", "operations",
        "success; the page a crashed ingest stored (no sidecar, no marker) is adopted: data identical",
        plant(RAW_PAGE), check=check_adopted,
    ),
    Scenario(
        "ops-backfill-overlapping-hourly", "operations",
        "both succeed: the interval's validated data is the hourly run's (byte-identical to the clean run), the "
        "backfill fills the other hours, one row per key; indicators depend on the history present (not compared)",
        concurrent_cli(
            ["backfill", "--start", (START - timedelta(hours=3)).isoformat(), "--end", END.isoformat(), "--no-progress"]
        ),
        compare_layers=("raw", "staging", "validated", "quarantine", "quality", "archive"),
        compare_tables=("market_snapshots",), check=check_backfill,
    ),
    Scenario(
        "ops-bad-config-pushed", "operations",
        "ingest fails with exit 2 without retry (rate limit 0 in the ConfigMap); Slack; nothing written; rerun "
        "with the fixed ConfigMap converges",
        lambda h, c: setattr(c, "heal", lambda h: h.reconfigure()),
        env={"CRYPTOPIPE_API__RATE_LIMIT_PER_MINUTE": "0"},
        failed_stage="ingest", error=exit_message("ingest", 2), check=check_no_retry("ingest"), slow=False,
    ),
    Scenario(
        "ops-config-changed-for-complete-interval", "operations",
        "ingest fails with exit 9 without retry (top_n changed for an interval whose raw is complete); existing "
        "data untouched; Slack; rerun with the restored config converges",
        combine(plant(RAW_MARKER, RAW_SIDECAR, RAW_PAGE), lambda h, c: setattr(c, "heal", lambda h: h.reconfigure())),
        env={"CRYPTOPIPE_COINS__TOP_N": "25"},
        failed_stage="ingest", error=exit_message("ingest", 9), check=check_no_retry("ingest"),
    ),
]  # fmt: skip


def _expect(condition: bool, what: str) -> None:
    assert condition, f"the fault was not injected as planned: expected {what}"


def _params() -> list[Any]:
    return [
        pytest.param(s, id=s.id, marks=[pytest.mark.slow, pytest.mark.full_matrix] if s.slow else []) for s in SCENARIOS
    ]


def test_matrix_has_every_category() -> None:
    categories = {s.category for s in SCENARIOS}
    assert categories == {"source", "storage", "warehouse", "kubernetes", "operations"}
    assert len(SCENARIOS) >= 30
    assert len({s.id for s in SCENARIOS}) == len(SCENARIOS)


@pytest.mark.parametrize("scenario", _params())
def test_scenario(scenario: Scenario, harness: Harness, capfd: pytest.CaptureFixture[str]) -> None:
    reference = _reference(harness, capfd)
    record = ScenarioRecord(scenario.id, scenario.category, scenario.expected)
    REGISTRY.append(record)
    began = time.perf_counter()
    try:
        _run_scenario(scenario, harness, capfd, reference, record)
        record.passed = True
    finally:
        record.seconds = time.perf_counter() - began
        harness.ensure_servers()
        harness.proxy.heal()


_REFERENCE_SNAPSHOT: list[Snapshot] = []


def _reference(harness: Harness, capfd: pytest.CaptureFixture[str]) -> Snapshot:
    snap = reference_snapshot(harness, capfd)
    _REFERENCE_SNAPSHOT[:] = [snap]
    if not _REFERENCE_RAW:
        for key in harness.keys("raw/"):
            _REFERENCE_RAW[key] = harness.get(key)
    return snap


def _run_scenario(
    sc: Scenario, h: Harness, capfd: pytest.CaptureFixture[str], reference: Snapshot, record: ScenarioRecord
) -> None:
    h.fresh(via_proxy=sc.via_proxy, **sc.env)
    ctx = Ctx()
    sc.arrange(h, ctx)
    result = h.run(capfd, **ctx.run)
    for stage, count in sc.pods.items():
        pods = [p for p in result.pods if p.startswith(f"cryptopipe-{stage}-")]
        assert len(pods) == count, f"{stage}: expected {count} pod(s) (the fault must hit), got {pods}"

    if sc.failed_stage is None:
        record.outcome = f"success in {result.seconds:.0f} s"
        assert result.states == ALL_SUCCESS, _explain(result)
        assert not result.failures, f"a successful run sent failure alerts: {result.failures}"
        if sc.check:
            sc.check(h, result, ctx)
        _converged(h, reference, record, sc)
        return

    failed = sc.failed_stage
    record.clear_error = False
    index = STAGES.index(failed)
    expected_states = {
        **dict.fromkeys(STAGES[:index], "success"),
        failed: "failed",
        **dict.fromkeys(STAGES[index + 1 :], "upstream_failed"),
        "notify_anomalies": "upstream_failed" if index <= STAGES.index("transform") else "success",
    }
    assert result.states == expected_states, _explain(result)
    assert sc.error in result.log, f"the task log lacks {sc.error!r}; Slack: {result.failures}\n{result.log[-3000:]}"
    messages = [m for m in result.failures if f"`{failed}` failed" in m]
    assert len(messages) == 1, f"expected one Slack failure message for {failed}, got {result.slack}"
    assert sc.error in messages[0], f"the Slack message lacks {sc.error!r}: {messages[0]}"
    record.clear_error = True
    if sc.check:
        sc.check(h, result, ctx)
    h.ensure_servers()  # an outage scenario may have left a server down: look at what was left
    problems = partial_data(reference, h.snapshot(), failed)
    problems = [p for p in problems if not _planted(p)]
    assert not problems, f"partial or divergent data after the failure: {problems}"

    # The operator's fix, then a rerun of the whole DAG converges.
    if ctx.heal:
        ctx.heal(h)
    if h.keys(ARCHIVE_PAGE) and h.get(ARCHIVE_PAGE) != _REFERENCE_RAW[RAW_PAGE]:
        h.delete(ARCHIVE_PAGE)  # the operator removes the object that blocked archive
    if h.keys(RAW_PAGE) and h.get(RAW_PAGE) != _REFERENCE_RAW[RAW_PAGE]:
        h.delete(RAW_PAGE)
        h.put(RAW_PAGE, _REFERENCE_RAW[RAW_PAGE])  # restored from the archive copy / backup
    h.slack.clear()
    rerun = h.run(capfd)
    record.outcome = f"{failed} failed clearly ({sc.error}); rerun {rerun.states == ALL_SUCCESS and 'converged'}"
    assert rerun.states == ALL_SUCCESS, _explain(rerun)
    _converged(h, reference, record, sc, full=True)


def _planted(problem: str) -> bool:
    # The objects a storage scenario planted with other bytes are the fault itself, not a result of the run.
    return problem.startswith((ARCHIVE_PAGE + " differs", RAW_PAGE + " differs"))


def _converged(h: Harness, reference: Snapshot, record: ScenarioRecord, sc: Scenario, *, full: bool = False) -> None:
    """The interval's data equals the clean run's (all of it after a rerun; the scenario's layers otherwise)."""
    layers = tuple(DATA_LAYERS) if full else sc.compare_layers
    tables = ("market_snapshots", "indicators", "anomalies") if full else sc.compare_tables
    diff = compare(reference, h.snapshot(), layers, tables)
    record.rows_lost, record.rows_duplicated = diff["lost"], diff["duplicated"]
    assert not diff["objects_differ"], f"data differs from the clean run: {diff['objects_differ']}"
    assert not diff["warehouse_differ"], f"warehouse rows differ from the clean run: {diff['warehouse_differ']}"
    assert diff["lost"] == 0 and diff["duplicated"] == 0, diff


def _explain(result: RunResult) -> str:
    return f"task states {result.states}\nSlack: {result.slack}\n--- log tail ---\n{result.log[-6000:]}"


# Last in this module (pytest keeps file order; pytest-xdist --dist loadfile keeps the file in one worker), so it
# sees every scenario that ran in this process.
def test_fault_matrix_counts(capsys: pytest.CaptureFixture[str]) -> None:
    if not REGISTRY:
        pytest.skip("no fault scenario ran in this session (all deselected): nothing to count")
    lost = sum(r.rows_lost for r in REGISTRY)
    duplicated = sum(r.rows_duplicated for r in REGISTRY)
    unclear = [r.id for r in REGISTRY if r.clear_error is False]
    failed = [r.id for r in REGISTRY if not r.passed]
    with capsys.disabled():
        print(
            f"\n[faults] {len(REGISTRY)} scenarios: rows lost {lost}, rows duplicated {duplicated}, "
            f"scenarios without a clear error {len(unclear)}, scenarios not as expected {len(failed)}",
            file=sys.stderr,
        )
    assert lost == 0, f"rows lost: {lost}"
    assert duplicated == 0, f"rows duplicated: {duplicated}"
    assert not unclear, f"scenarios without a clear error: {unclear}"
    assert not failed, f"scenarios whose outcome was not the expected one: {failed}"

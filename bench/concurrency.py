"""Benchmark 6: a backfill of N hourly intervals through real Airflow components with deferrable pods.

What runs (tests/support/airflow_cluster.py): PostgreSQL, ``airflow db migrate``, api-server (REST + execution
API), scheduler with the LocalExecutor (``[core] parallelism`` = the worker slots), triggerer and dag-processor,
each a subprocess on 127.0.0.1, with the real DAG (dags/, ``PIPELINE_RUNTIME=kubernetes``: deferrable
KubernetesPodOperator tasks) and ``AIRFLOW_CONN_KUBERNETES_DEFAULT`` pointing at the Kubernetes API double, which
runs in this process. The intervals are created with the real CLI, ``airflow backfill create``.

The pods run a **fake stage** (the double's ``image_mapping``): a Python one-liner that logs a line, sleeps
``stage_seconds`` and exits 0 (transform also writes the interval's empty ``alerts.json``, which
``notify_anomalies`` reads). So this measures orchestration and worker-slot behaviour, not stage CPU: on 2 cores
real stages (several CPU-seconds each, benchmarks 2 and 3) would compete with Airflow itself for the CPU.

Every ``sample_seconds`` the benchmark records task instances by state (metadata DB), the pods in phase Running
on the double, and for each running pod the state of its task instance (matched through the operator's pod
labels ``task_id`` and ``run_id``). The claim "a waiting pod holds no worker slot" is shown when (a) the pods'
task instances are ``deferred`` while their pods run, and (b) more pods run at once than the executor has slots.
"""

from __future__ import annotations

import hashlib
import json
import re
import signal
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import REPO, BenchConfig, Result, Target

DAG_ID = "crypto_market_pipeline"
NAMESPACE = "crypto-tasks"
POOL = "coingecko_api"
FIRST = datetime(2026, 11, 21, 0, tzinfo=UTC)  # the first interval's start (= logical date)
STAGES = ("ingest", "validate", "transform", "archive")
PRELOAD = "airflow.providers.cncf.kubernetes.operators.pod"
TIMELINES = "timelines"  # bench/results/timelines/: not a result file (report.load_results globs *.json)

# The fake stage: argv = [python, -c, CODE, <stage>, --interval-start, S, --interval-end, E] (the DAG's args).
FAKE_STAGE_CODE = """\
import json, os, sys, time
from datetime import datetime
stage, args = sys.argv[1], sys.argv[2:]
start = args[args.index("--interval-start") + 1]
print(json.dumps({"stage": stage, "event": "fake_stage_started", "interval_start": start}), flush=True)
time.sleep(float(os.environ["BENCH_STAGE_SECONDS"]))
if stage == "transform":
    d = datetime.fromisoformat(start)
    root = os.environ["CRYPTOPIPE_STORAGE__URI"].removeprefix("file://")
    folder = os.path.join(root, "alerts", f"date={d:%Y-%m-%d}", f"hour={d:%H}")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "alerts.json"), "w") as fh:
        json.dump({"interval_start": start, "anomalies": []}, fh)
print(json.dumps({"stage": stage, "event": "fake_stage_done"}), flush=True)
"""
_TASK_IMAGE = re.compile(r"(?:^|/)cryptopipe-(?P<stage>[a-z]+)(?::[^/]*)?$")


def fake_stage_mapping(image: str) -> list[str] | None:
    """The double's image mapping: ``*/cryptopipe-<stage>:*`` runs the fake stage; other images cannot be pulled."""
    match = _TASK_IMAGE.search(image.split("@", 1)[0])
    if not match or match["stage"] not in STAGES:
        return None
    return [sys.executable, "-c", FAKE_STAGE_CODE, match["stage"]]


def pod_label_value(value: str) -> str:
    """The label value the operator writes for ``value`` (provider cncf.kubernetes, ``make_safe_label_value``)."""
    safe = re.sub(r"^[^a-z0-9A-Z]*|[^a-zA-Z0-9_\-\.]|[^a-z0-9A-Z]*$", "", value)
    if len(safe) > 63 or safe != value:
        digest = hashlib.md5(value.encode()).hexdigest()[:9]
        safe = safe[: 63 - len(digest) - 1] + "-" + digest
    return safe


@dataclass
class Sample:
    t: float  # seconds since the backfill was created
    ti_states: dict[str, int]  # task instances by state
    slots_used: int  # running task instances: each holds one of the LocalExecutor's worker processes
    pods_running: int
    pods_running_by_stage: dict[str, int]
    running_pod_ti_states: dict[str, int]  # state of the task instance of each running pod
    runs_done: int


@dataclass
class Plan:
    intervals: int
    parallelism: int
    stage_seconds: float
    max_active_runs: int
    pool_slots: int = 1
    sample_seconds: float = 0.5
    timeout_seconds: float = 1800.0
    preload_provider: bool = True  # import the cncf.kubernetes operator once per component, not per task start


@dataclass
class Measurement:
    plan: Plan
    startup: dict[str, float] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    runs: list[dict[str, Any]] = field(default_factory=list)
    wall_seconds: float = 0.0
    backfill_create_s: float = 0.0
    worker_parse_ms: list[int] = field(default_factory=list)  # DAG parse of each task process (task runner log)


class Sampler:
    """Polls the metadata DB and the double every ``interval`` seconds in a thread until stopped."""

    def __init__(self, cluster: Any, k8s: Any, run_labels: dict[str, str], t0: float, interval: float) -> None:
        self.cluster, self.k8s, self.run_labels, self.t0, self.interval = cluster, k8s, run_labels, t0, interval
        self.samples: list[Sample] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="concurrency-sampler", daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                self.samples.append(self.take())
            except Exception as exc:  # reported with the result; the measurement itself goes on
                self.error = exc
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - began)))

    def take(self) -> Sample:
        t = round(time.monotonic() - self.t0, 2)
        rows = self.cluster.query("SELECT task_id, run_id, state FROM task_instance WHERE dag_id = %s", (DAG_ID,))
        by_label = {(task, self.run_labels.get(run, run)): state or "none" for task, run, state in rows}
        states: dict[str, int] = {}
        for _, _, state in rows:
            states[state or "none"] = states.get(state or "none", 0) + 1
        pods = [p for p in self.k8s.pods(NAMESPACE) if (p.get("status") or {}).get("phase") == "Running"]
        by_stage: dict[str, int] = {}
        pod_ti: dict[str, int] = {}
        for pod in pods:
            labels = pod["metadata"].get("labels") or {}
            by_stage[labels.get("task_id", "?")] = by_stage.get(labels.get("task_id", "?"), 0) + 1
            ti_state = by_label.get((labels.get("task_id"), labels.get("run_id")), "unmatched")
            pod_ti[ti_state] = pod_ti.get(ti_state, 0) + 1
        done = self.cluster.query(
            "SELECT count(*) FROM dag_run WHERE dag_id = %s AND state IN ('success', 'failed')", (DAG_ID,)
        )[0][0]
        return Sample(
            t=t,
            ti_states=states,
            slots_used=states.get("running", 0),
            pods_running=len(pods),
            pods_running_by_stage=by_stage,
            running_pod_ti_states=pod_ti,
            runs_done=int(done),
        )


def _component_env(k8s: Any, store: Path) -> dict[str, str]:
    return {
        "PIPELINE_RUNTIME": "kubernetes",
        "PIPELINE_IMAGE_REGISTRY": "registry.bench.test:5000",
        "PIPELINE_IMAGE_TAG": "bench",
        "PIPELINE_TASK_NAMESPACE": NAMESPACE,
        "PIPELINE_STORAGE_URI": f"file://{store}",
        "AIRFLOW_CONN_KUBERNETES_DEFAULT": k8s.airflow_connection_json(NAMESPACE),
    }


def measure(plan: Plan, workdir: Path) -> Measurement:
    """Start the cluster and the double, backfill ``plan.intervals`` hours, sample until every run ended."""
    from tests.support.airflow_cluster import AirflowCluster
    from tests.support.k8s_double import KubeApiDouble

    store = workdir / "store"
    store.mkdir(parents=True, exist_ok=True)
    result = Measurement(plan)
    began = time.perf_counter()
    with KubeApiDouble(
        workdir=workdir / "pods", namespaces=("default", NAMESPACE), image_mapping=fake_stage_mapping
    ) as k8s:
        k8s.add_configmap(
            NAMESPACE,
            "cryptopipe-config",
            {"CRYPTOPIPE_STORAGE__URI": f"file://{store}", "BENCH_STAGE_SECONDS": str(plan.stage_seconds)},
        )
        k8s.add_secret(NAMESPACE, "cryptopipe-secrets", {"CRYPTOPIPE_API__KEY": "unused-by-the-fake-stage"})
        with AirflowCluster(
            workdir,
            dags_folder=REPO / "dags",
            parallelism=plan.parallelism,
            extra_env=_component_env(k8s, store),
            preload_modules=(PRELOAD,) if plan.preload_provider else (),
        ) as cluster:
            result.startup = dict(cluster.timings)
            result.startup["dag_serialized_s"] = cluster.wait_for_dag(DAG_ID)
            # As the chart's migration job does (charts/airflow/values.yaml): no --include-deferred.
            cluster.airflow("pools", "set", POOL, str(plan.pool_slots), "CoinGecko API (benchmark)")
            result.startup["total_s"] = round(time.perf_counter() - began, 2)
            last = FIRST + timedelta(hours=plan.intervals - 1)
            t0 = time.monotonic()
            cluster.airflow(
                "backfill", "create", "--dag-id", DAG_ID,
                "--from-date", FIRST.isoformat(), "--to-date", last.isoformat(),
                "--max-active-runs", str(plan.max_active_runs),
            )  # fmt: skip
            result.backfill_create_s = round(time.monotonic() - t0, 2)
            run_ids = [r[0] for r in cluster.query("SELECT run_id FROM dag_run WHERE dag_id = %s", (DAG_ID,))]
            if len(run_ids) != plan.intervals:
                raise RuntimeError(f"backfill created {len(run_ids)} runs, expected {plan.intervals}: {run_ids}")
            labels = {run_id: pod_label_value(run_id) for run_id in run_ids}
            with Sampler(cluster, k8s, labels, t0, plan.sample_seconds) as sampler:
                _wait_for_runs(cluster, plan, t0)
            if sampler.error is not None and not sampler.samples:
                raise RuntimeError(f"sampling failed: {sampler.error!r}")
            result.samples = sampler.samples
            result.runs = _runs(cluster)
            result.wall_seconds = round(time.monotonic() - t0, 2)
            # LocalExecutor task processes log to the scheduler's output: each start parses the DAG file.
            result.worker_parse_ms = [
                int(v) for v in re.findall(r"dag_file_parse_ms=(\d+)", cluster.log_tail("scheduler", chars=10**9))
            ]
    return result


def _wait_for_runs(cluster: Any, plan: Plan, t0: float) -> None:
    while True:
        cluster.check_alive()
        open_runs = cluster.query(
            "SELECT count(*) FROM dag_run WHERE dag_id = %s AND state NOT IN ('success', 'failed')", (DAG_ID,)
        )[0][0]
        if open_runs == 0:
            return
        if time.monotonic() - t0 > plan.timeout_seconds:
            raise TimeoutError(
                f"{open_runs} of {plan.intervals} runs still open after {plan.timeout_seconds:.0f} s; scheduler log:\n"
                f"{cluster.log_tail('scheduler')}"
            )
        time.sleep(1)


def _runs(cluster: Any) -> list[dict[str, Any]]:
    rows = cluster.query(
        "SELECT run_id, state, data_interval_start, start_date, end_date FROM dag_run WHERE dag_id = %s "
        "ORDER BY data_interval_start",
        (DAG_ID,),
    )
    tis = cluster.query("SELECT run_id, task_id, state, try_number FROM task_instance WHERE dag_id = %s", (DAG_ID,))
    created = cluster.query("SELECT min(created_at) FROM backfill WHERE dag_id = %s", (DAG_ID,))[0][0]
    runs = []
    for run_id, state, start, started, ended in rows:
        runs.append(
            {
                "run_id": run_id,
                "state": state,
                "interval_start": start.astimezone(UTC).isoformat(),
                "started_s": round((started - created).total_seconds(), 2) if started else None,
                "ended_s": round((ended - created).total_seconds(), 2) if ended else None,
                "tasks": {t: {"state": s, "tries": n} for r, t, s, n in tis if r == run_id},
            }
        )
    return runs


# --- the result ----------------------------------------------------------------------------------------------


def summarise(m: Measurement) -> dict[str, Any]:
    plan, samples, runs = m.plan, m.samples, m.runs
    ended = [r["ended_s"] for r in runs if r["ended_s"] is not None]
    span = max(ended) if ended else None
    pod_samples = sum(s.pods_running for s in samples)
    deferred = sum(s.running_pod_ti_states.get("deferred", 0) for s in samples)
    busiest = max(samples, key=lambda s: s.pods_running) if samples else None
    ingest_peak = max((s.pods_running_by_stage.get("ingest", 0) for s in samples), default=0)
    return {
        "runs_succeeded": sum(r["state"] == "success" for r in runs),
        "runs_failed": sum(r["state"] == "failed" for r in runs),
        "span_s": span,
        "intervals_per_minute": round(len(ended) / span * 60, 2) if span else None,
        "peak_pods_running": busiest.pods_running if busiest else 0,
        "peak_at_s": busiest.t if busiest else None,
        "slots_used_at_peak": busiest.slots_used if busiest else None,
        "ti_states_at_peak": busiest.ti_states if busiest else {},
        "peak_slots_used": max((s.slots_used for s in samples), default=0),
        "peak_queued": max((s.ti_states.get("queued", 0) for s in samples), default=0),
        "peak_deferred": max((s.ti_states.get("deferred", 0) for s in samples), default=0),
        "pod_samples": pod_samples,
        "pod_samples_ti_deferred_pct": round(100 * deferred / pod_samples, 1) if pod_samples else None,
        "pod_samples_by_ti_state": _sum_states([s.running_pod_ti_states for s in samples]),
        "samples_pods_above_parallelism": sum(s.pods_running > plan.parallelism for s in samples),
        "samples": len(samples),
        "peak_ingest_pods": ingest_peak,
        "serial_equivalent_s": round(plan.intervals * len(STAGES) * plan.stage_seconds, 1),
        "task_processes": len(m.worker_parse_ms),
        "worker_dag_parse_ms_median": statistics.median(m.worker_parse_ms) if m.worker_parse_ms else None,
        "worker_dag_parse_ms_max": max(m.worker_parse_ms, default=None),
        "task_instances_retried": sum(1 for r in runs for t in r["tasks"].values() if (t["tries"] or 0) > 1),
    }


def _sum_states(dicts: list[dict[str, int]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            total[k] = total.get(k, 0) + v
    return dict(sorted(total.items()))


def plan_for(cfg: BenchConfig) -> Plan:
    if cfg.smoke:  # proves the harness (2 intervals); not the numbers
        # Pods shorter than ~10 s hit Airflow's stale defer-exit race on a loaded machine (apache/airflow#67287):
        # a task goes up_for_retry and waits its 1-minute retry delay.
        return Plan(intervals=2, parallelism=2, stage_seconds=12, max_active_runs=2, timeout_seconds=420)
    return Plan(intervals=24, parallelism=4, stage_seconds=20, max_active_runs=24, timeout_seconds=2700)


def write_timeline(out: Path, m: Measurement, summary: dict[str, Any]) -> Path:
    folder = out / TIMELINES
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "concurrency.json"
    document = {
        "plan": asdict(m.plan),
        "startup": m.startup,
        "summary": summary,
        "runs": m.runs,
        "samples": [asdict(s) for s in m.samples],
    }
    path.write_text(json.dumps(document, indent=1, default=str) + "\n")
    return path


def _shown(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def _exit_on_sigterm() -> None:
    """SIGTERM ends the benchmark through SystemExit, so the cluster and the double are stopped (try/finally)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))


def run_concurrency(cfg: BenchConfig) -> Result:
    plan = plan_for(cfg)
    _exit_on_sigterm()
    with tempfile.TemporaryDirectory(prefix="bench-concurrency-") as tmp:
        m = measure(plan, Path(tmp))
    return build_result(cfg, m)


def build_result(cfg: BenchConfig, m: Measurement) -> Result:
    """The result and the timeline file of one measurement."""
    plan = m.plan
    result = Result(
        "concurrency", f"Concurrency: {plan.intervals} backfill intervals through the DAG with deferrable pods"
    )
    s = summarise(m)
    timeline = write_timeline(cfg.out, m, s)
    all_ok = s["runs_succeeded"] == plan.intervals
    result.runs = 1
    result.data = {
        "intervals": plan.intervals,
        "executor": f"LocalExecutor, parallelism {plan.parallelism} (worker slots)",
        "backfill": f"airflow backfill create --max-active-runs {plan.max_active_runs}",
        "pods": f"fake stage on the K8s API double: sleep {plan.stage_seconds:g} s, exit 0",
        "pool": f"{POOL} {plan.pool_slots} slot(s), include_deferred off (as the chart creates it)",
        "sample_every_s": plan.sample_seconds,
        "provider_preloaded": plan.preload_provider,
        "timeline": _shown(timeline, cfg.out.parent),
    }
    result.targets = [
        Target(
            f"intervals per minute ({plan.intervals} intervals, deferrable)",
            "report",
            s["intervals_per_minute"],
            "/min",
            all_ok,
            note=f"{s['runs_succeeded']}/{plan.intervals} runs succeeded in {s['span_s']} s from backfill creation; "
            f"{len(STAGES)} pods x {plan.stage_seconds:g} s each would take {s['serial_equivalent_s']} s one at a time",
        ),
        Target(
            "peak concurrent running pods vs executor slots",
            f"> parallelism ({plan.parallelism})",
            float(s["peak_pods_running"]),
            "pods",
            s["peak_pods_running"] > plan.parallelism,
            baseline=float(plan.parallelism),
            note=f"at the peak (t={s['peak_at_s']} s) {s['slots_used_at_peak']} task instance(s) ran in worker slots, "
            f"the others were deferred: {s['ti_states_at_peak']}",
        ),
        Target(
            "task instances in worker slots at once (peak, state running)",
            f"<= parallelism ({plan.parallelism})",
            float(s["peak_slots_used"]),
            "task instances",
            s["peak_slots_used"] <= plan.parallelism,
            note=f"up to {s['peak_queued']} more were queued for a slot (mostly resumes after a pod ended)",
        ),
        Target(
            "running pods whose task instance is deferred (share of pod samples)",
            ">= 90 %",
            s["pod_samples_ti_deferred_pct"],
            "%",
            (s["pod_samples_ti_deferred_pct"] or 0) >= 90,
            note=f"pod samples by task-instance state: {s['pod_samples_by_ti_state']}",
        ),
    ]
    result.tables["summary"] = [{k: v for k, v in s.items() if not isinstance(v, dict)}]
    result.tables["start-up (untimed)"] = [m.startup]
    result.tables["timeline (every 10th sample)"] = [
        {
            "t_s": x.t,
            "pods_running": x.pods_running,
            "slots_used": x.slots_used,
            "deferred": x.ti_states.get("deferred", 0),
            "running": x.ti_states.get("running", 0),
            "queued": x.ti_states.get("queued", 0),
            "scheduled": x.ti_states.get("scheduled", 0),
            "runs_done": x.runs_done,
            "pods_by_stage": " ".join(f"{k}={v}" for k, v in sorted(x.pods_running_by_stage.items())),
        }
        for x in m.samples[::10]
    ]
    result.notes = [
        "Real Airflow 3 components as subprocesses (api-server, scheduler + LocalExecutor, triggerer, "
        "dag-processor) on PostgreSQL; the real DAG in PIPELINE_RUNTIME=kubernetes, deferrable "
        "KubernetesPodOperator tasks against the Kubernetes API double; the intervals come from `airflow backfill "
        "create`. The pods run a fake stage (sleep, exit 0) so the numbers are orchestration and slot behaviour, "
        "not stage CPU.",
        f"slots_used = task instances in state running (the LocalExecutor runs at most parallelism at once); "
        f"queued ones wait for a slot; a deferred task instance waits in the triggerer. "
        f"Peak pods {s['peak_pods_running']} with parallelism {plan.parallelism}: "
        "pods that wait hold no worker slot.",
        f"Pool {POOL} ({plan.pool_slots} slot, include_deferred off, as charts/airflow creates it): peak "
        f"concurrent ingest pods {s['peak_ingest_pods']}. A deferred ingest does not count against the pool, so "
        "the pool bounds ingest task starts, not concurrent ingest pods (CoinGecko callers); "
        "`airflow pools set ... --include-deferred` would make it bound the pods.",
        "The DAG's max_active_runs=3 is fixed in dags/crypto_market_pipeline.py (no env override); backfill runs "
        "are limited by the backfill's own --max-active-runs instead (Airflow 3 scheduler), set here.",
    ]
    return result


if __name__ == "__main__":  # python -m bench.concurrency [--smoke]: the one benchmark, results in bench/results
    from bench.run import main

    sys.exit(main(["concurrency", *sys.argv[1:]]))

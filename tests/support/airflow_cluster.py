"""Real Airflow 3 components as subprocesses on 127.0.0.1: the harness for concurrency measurements.

Unlike :mod:`tests.support.airflow_env` (``dag.test()``: one task at a time, triggers run inline), this starts
what a deployment runs, each as its own process:

- PostgreSQL as the metadata DB (``tests.support.postgres.start_postgres``), schema by ``airflow db migrate``;
- ``airflow api-server`` (one worker): the REST API and the **execution API** that task runners talk to
  (``[core] execution_api_server_url`` points the LocalExecutor's task supervisors at it);
- ``airflow scheduler`` with the **LocalExecutor**; ``[core] parallelism`` is the number of worker slots;
- ``airflow triggerer``: runs the triggers of deferred tasks (a deferred task holds no worker slot);
- ``airflow dag-processor``: parses the DAGs folder and serializes the DAGs.

Every component gets the same environment: the caller's ``extra_env`` (connections ``AIRFLOW_CONN_*``,
deployment settings) plus the Airflow settings below; nothing is read from ``~/airflow``. Scheduled runs are
switched off (``[scheduler] use_job_schedule = False``) so only runs the caller creates (backfills, triggers)
exist. Each component starts in its own process group (its workers and children with it); :meth:`stop` ends
those groups by the PIDs this harness started, then PostgreSQL. Use as a context manager::

    with AirflowCluster(workdir, dags_folder=REPO / "dags", parallelism=4, extra_env={...}) as cluster:
        cluster.wait_for_dag("crypto_market_pipeline")
        cluster.airflow("pools", "set", "coingecko_api", "1", "CoinGecko API")
        cluster.airflow("backfill", "create", "--dag-id", "crypto_market_pipeline", ...)
        rows = cluster.query("SELECT state, count(*) FROM task_instance GROUP BY state")
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.net import free_port, venv_tool, wait_for
from tests.support.postgres import PostgresServer, start_postgres

COMPONENTS = ("api-server", "scheduler", "triggerer", "dag-processor")
# Variables of the caller's environment that must not leak into the components (other Airflow homes, settings
# of the pipeline read by the DAG file): the cluster's environment is exactly what the caller passes.
_DROPPED_PREFIXES = ("AIRFLOW", "PIPELINE_", "CRYPTOPIPE_")


class AirflowClusterError(RuntimeError):
    """A component failed to start or a CLI command failed; the message names it and quotes its log."""


@dataclass
class AirflowCluster:
    workdir: Path
    dags_folder: Path
    parallelism: int = 4
    extra_env: dict[str, str] = field(default_factory=dict)
    startup_timeout: float = 120.0
    # Modules every component imports at start-up (through airflow_local_settings.py): the LocalExecutor forks
    # its workers and they fork the task processes, which then find them imported instead of importing them for
    # every task start.
    preload_modules: tuple[str, ...] = ()
    postgres: PostgresServer | None = None
    api_port: int = 0
    db_url: str = ""
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    # --- environment -----------------------------------------------------------------------------------------

    @property
    def home(self) -> Path:
        return self.workdir / "airflow-home"

    @property
    def logs(self) -> Path:
        return self.workdir / "component-logs"

    def env(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(_DROPPED_PREFIXES)}
        api = f"http://127.0.0.1:{self.api_port}"
        airflow = {
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(self.home / "plugins"),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            # Task runners (LocalExecutor workers) report to the execution API of our api-server.
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.db_url,
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__BASE_URL": api,
            "AIRFLOW__API__WORKERS": "1",
            # Shared by every component: the scheduler signs the task tokens the api-server verifies.
            "AIRFLOW__API_AUTH__JWT_SECRET": self._secret("jwt"),
            "AIRFLOW__API__SECRET_KEY": self._secret("api"),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",  # loopback only, throwaway
            # Only the runs the caller creates: no cron runs appear when the DAG is unpaused.
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            # Ephemeral ports: another Airflow on this machine may hold the defaults 8793/8794.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self._port("worker_log")),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self._port("trigger_log")),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.home / "logs"),
        }
        return {**base, **self.extra_env, **airflow}

    def _secret(self, name: str) -> str:
        key = f"_secret_{name}"
        if key not in self.__dict__:
            self.__dict__[key] = secrets.token_urlsafe(64)
        return str(self.__dict__[key])

    def _port(self, name: str) -> int:
        key = f"_port_{name}"
        if key not in self.__dict__:
            self.__dict__[key] = free_port()
        return int(self.__dict__[key])

    # --- lifecycle -------------------------------------------------------------------------------------------

    def __enter__(self) -> AirflowCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """PostgreSQL, the schema, then the four components; returns when the api-server answers."""
        for path in (self.home / "plugins", self.home / "config", self.logs):
            path.mkdir(parents=True, exist_ok=True)
        if self.preload_modules:
            # AIRFLOW_HOME/config is on sys.path; Airflow imports airflow_local_settings when it starts.
            lines = [f"import {name}  # noqa: F401" for name in self.preload_modules]
            (self.home / "config" / "airflow_local_settings.py").write_text("\n".join(lines) + "\n")
        began = time.perf_counter()
        self.postgres = start_postgres()
        # Airflow's metadata DB through psycopg2 (its tested driver); the helper's URL names psycopg 3.
        self.db_url = self.postgres.new_database().replace("postgresql+psycopg://", "postgresql+psycopg2://")
        self.api_port = free_port()
        self.timings["postgres_s"] = round(time.perf_counter() - began, 2)
        began = time.perf_counter()
        self.airflow("db", "migrate", timeout=300)
        self.timings["db_migrate_s"] = round(time.perf_counter() - began, 2)
        began = time.perf_counter()
        for component in COMPONENTS:
            self._spawn(component)
        api = self.procs["api-server"]
        wait_for(self._api_healthy, self.startup_timeout, "airflow api-server", api)
        self.timings["components_ready_s"] = round(time.perf_counter() - began, 2)

    def _spawn(self, component: str) -> None:
        args = [self._airflow_bin(), component]
        if component == "api-server":
            args += ["--host", "127.0.0.1", "--port", str(self.api_port), "--workers", "1"]
        log = (self.logs / f"{component}.log").open("wb")
        try:
            self.procs[component] = subprocess.Popen(
                args,
                cwd=self.workdir,
                env=self.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: its workers are stopped with it
            )
        finally:
            log.close()

    def _api_healthy(self) -> bool:
        url = f"http://127.0.0.1:{self.api_port}/api/v2/monitor/health"
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)

    def check_alive(self) -> None:
        """Raise, naming the component and quoting its log, if a component has exited."""
        for component, proc in self.procs.items():
            if proc.poll() is not None:
                raise AirflowClusterError(
                    f"airflow {component} exited with code {proc.returncode}:\n{self.log_tail(component)}"
                )

    def log_tail(self, component: str, chars: int = 3000) -> str:
        path = self.logs / f"{component}.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"

    def stop(self) -> None:
        """End every process group this harness started (by PID), then PostgreSQL. Safe to call twice."""
        # The scheduler first: it stops handing tasks to new task processes.
        for component in sorted(self.procs, key=lambda c: c != "scheduler"):
            _stop_tree(self.procs[component])
        if self.postgres is not None:
            with contextlib.suppress(Exception):
                self.postgres.stop()
            shutil.rmtree(self.postgres.workdir, ignore_errors=True)
            self.postgres = None

    # --- using it --------------------------------------------------------------------------------------------

    @staticmethod
    def _airflow_bin() -> str:
        found = venv_tool("airflow")
        if found is None:
            raise AirflowClusterError("the airflow CLI is not installed next to this Python nor on PATH")
        return found

    def airflow(self, *args: str, timeout: float = 120) -> str:
        """Run an ``airflow`` CLI command against this cluster; its stdout, or an error quoting its output."""
        proc = subprocess.run(
            [self._airflow_bin(), *args],
            cwd=self.workdir,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode != 0:
            raise AirflowClusterError(
                f"`airflow {' '.join(args)}` exited {proc.returncode}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
            )
        return proc.stdout

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read-only SQL query on the metadata DB."""
        import psycopg2

        if self.postgres is None:
            raise AirflowClusterError("the cluster is not started")
        dsn = self.db_url.replace("postgresql+psycopg2://", "postgresql://")
        with contextlib.closing(psycopg2.connect(dsn)) as conn, conn.cursor() as cur:
            cur.execute(sql, params)
            return list(cur.fetchall())

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> float:
        """Wait until the dag-processor has serialized ``dag_id``; the seconds it took."""
        began = time.perf_counter()

        def serialized() -> bool:
            self.check_alive()
            return bool(self.query("SELECT 1 FROM serialized_dag WHERE dag_id = %s", (dag_id,)))

        deadline = time.monotonic() + timeout
        while not serialized():
            if time.monotonic() > deadline:
                errors = self.query("SELECT filename, stacktrace FROM import_error")
                raise AirflowClusterError(
                    f"DAG {dag_id!r} was not serialized after {timeout:.0f} s; import errors: {errors}\n"
                    f"{self.log_tail('dag-processor')}"
                )
            time.sleep(0.5)
        return round(time.perf_counter() - began, 2)


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # "pid (comm) state ppid ...": comm may contain spaces, so split after its closing parenthesis.
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(stat.parent.name))
    return children


def descendants(pid: int) -> list[int]:
    """PIDs of every live process below ``pid`` (Linux /proc)."""
    children, found, todo = _children_map(), [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _signal_groups(pgids: set[int], sig: signal.Signals) -> None:
    for pgid in pgids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)


def _stop_tree(proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    """Stop a component we started and everything below it, by PID.

    The component leads its own process group, but Airflow's task supervisors start each task process in a
    new session: those groups are found through the process tree (collected before anything is signalled).
    """
    groups = {proc.pid}
    for pid in descendants(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            groups.add(os.getpgid(pid))
    if proc.poll() is None:
        _signal_groups(groups, signal.SIGTERM)
        for pid in descendants(proc.pid):  # a task process started while the first list was taken
            with contextlib.suppress(ProcessLookupError):
                groups.add(os.getpgid(pid))
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=timeout)
    # What is left of the tree (the leader, executor workers, task processes) is killed.
    for pid in descendants(proc.pid) if proc.poll() is None else []:
        with contextlib.suppress(ProcessLookupError):
            groups.add(os.getpgid(pid))
    _signal_groups(groups, signal.SIGKILL)
    if proc.poll() is None:
        proc.wait(timeout=timeout)

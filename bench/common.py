"""What every benchmark shares: configuration, the machine description, timing, settings, the result record."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from tests.support.envvars import environment  # noqa: F401 - the benchmarks set settings through it

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
# A child process of a benchmark that runs longer than this is hung, not slow (the full year takes ~4 min): it is
# killed and the benchmark fails naming it, instead of holding `make bench` or a CI run forever.
CHILD_TIMEOUT_S = 3600.0
LIBRARIES = (
    "apache-airflow",
    "apache-airflow-providers-cncf-kubernetes",
    "pyarrow",
    "pandas",
    "numpy",
    "great-expectations",
    "ta-lib",
    "sqlalchemy",
    "pillow",
    "kubernetes",
)


@dataclass(frozen=True)
class BenchConfig:
    """One invocation of the suite. ``smoke``: tiny sizes, for CI (proves the harness, not the numbers)."""

    seed: int = 7
    coins: int = 250
    runs: int = 5
    baseline_runs: int = 3
    smoke: bool = False
    out: Path = RESULTS
    work: Path = REPO / "bench" / ".cache" / "work"
    cache: Path = REPO / "bench" / ".cache"


@dataclass
class Target:
    name: str
    target: str  # human-readable, e.g. "< 30 s"
    measured: float | None
    unit: str
    met: bool | None  # None: not measured
    baseline: float | None = None
    note: str = ""


@dataclass
class Result:
    benchmark: str
    title: str
    status: str = "measured"  # or "not_measured" / "partial"
    reason: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    runs: int = 0
    targets: list[Target] = field(default_factory=list)
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def machine() -> dict[str, Any]:
    """CPU model, cores, RAM, OS, Python and the versions of the libraries that do the work."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram_gib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    versions = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": ram_gib,
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "libraries": versions,
    }


def median(values: list[float]) -> float:
    return round(statistics.median(values), 4)


def timed(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall seconds, CPU seconds of this process, value) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    value = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, value


def repeat(fn: Callable[[], Any], runs: int, *, warmup: int = 1) -> tuple[list[float], list[float], Any]:
    """Wall and CPU seconds of ``runs`` calls after ``warmup`` untimed ones, and the last value.

    CPU time is reported next to wall time because the machine may be shared: wall time includes waiting for a
    core, CPU time is the work itself.
    """
    value = None
    for _ in range(warmup):
        value = fn()
    walls, cpus = [], []
    for _ in range(runs):
        wall, cpu, value = timed(fn)
        walls.append(round(wall, 4))
        cpus.append(round(cpu, 4))
    return walls, cpus, value


def load_average() -> list[float]:
    """1/5/15-minute load average: other work on the machine inflates wall times (2 cores here)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def pipeline_env(storage: Path, *, coins: int, warehouse: Path | None = None, **extra: str) -> dict[str, str]:
    """CRYPTOPIPE_* settings for a stage run on a file store (and an SQLite warehouse)."""
    env = {
        "CRYPTOPIPE_STORAGE__URI": f"file://{storage}",
        "CRYPTOPIPE_COINS__TOP_N": str(coins),
        "GX_ANALYTICS_ENABLED": "false",
        "MPLBACKEND": "Agg",
    }
    if warehouse is not None:
        env["CRYPTOPIPE_WAREHOUSE__URL"] = f"sqlite:///{warehouse}"
    env.update(extra)
    return env


def quiet_logger(name: str = "cryptopipe.bench") -> logging.Logger:
    """A stage logger that drops INFO lines: the benchmarks time the work, not log formatting to a terminal."""
    log = logging.getLogger(name)
    log.setLevel(logging.WARNING)
    log.propagate = False
    if not log.handlers:
        log.addHandler(logging.NullHandler())
    return log


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def dir_bytes(path: Path, pattern: str = "*") -> int:
    return sum(p.stat().st_size for p in path.rglob(pattern) if p.is_file())

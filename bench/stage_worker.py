"""Run one stage over consecutive hourly intervals in a fresh process and report times and peak memory.

``python -m bench.stage_worker STAGE START_ISO HOURS`` with the CRYPTOPIPE_* environment already set; prints
one JSON line: per-interval seconds (execute_stage, in-process), the stage's metrics, the import time and the
process's peak RSS (VmHWM). A separate process per stage is what makes the peak memory per stage.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from datetime import datetime

from bench.common import quiet_logger


def _peak_rss_kib() -> int:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the parent (the
    benchmark driver, which may have held gigabytes), while VmHWM belongs to this program's own address space."""
    try:
        for line in open("/proc/self/status", encoding="ascii"):  # noqa: SIM115 - tiny file, read once
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main(argv: list[str]) -> int:
    stage, start, hours = argv[0], datetime.fromisoformat(argv[1]), int(argv[2])
    began = time.perf_counter()
    from cryptopipe.cli import load_stage
    from cryptopipe.core.config import load_settings
    from cryptopipe.core.layout import HOUR, Interval
    from cryptopipe.core.stage import execute_stage

    fn = load_stage(stage)
    settings = load_settings()
    imported = time.perf_counter() - began
    log = quiet_logger()
    seconds, cpu, metrics = [], [], []
    for i in range(hours):
        interval = Interval.starting(start + i * HOUR)
        cpu_began = time.process_time()
        result = execute_stage(stage, fn, settings, interval, log)
        cpu.append(round(time.process_time() - cpu_began, 4))
        seconds.append(result.duration_seconds)
        metrics.append({k: v for k, v in result.metrics.items() if isinstance(v, int | float)})
    peak_kib = _peak_rss_kib()
    print(
        json.dumps(
            {
                "stage": stage,
                "seconds": seconds,
                "cpu_seconds": cpu,
                "metrics": metrics,
                "import_seconds": imported,
                "peak_rss_mib": round(peak_kib / 1024, 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""``python -m bench [names...] [--smoke] [--runs N] [--seed S] [--out DIR]``: run benchmarks, write results.

Each benchmark writes ``<out>/<name>.json``; afterwards ``RESULTS.md`` next to ``<out>`` is rebuilt from every
JSON file there. A benchmark that cannot run (a missing piece) is recorded as ``not_measured`` with the reason,
and the others still run.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

from bench.common import RESULTS, BenchConfig, Result, load_average, machine, now_iso
from bench.report import write_markdown, write_result

# name -> module; the order matters: storage measures what backfill's stages wrote.
BENCHMARKS = {
    "transform_cost": "bench.transform_cost",
    "backfill": "bench.backfill",
    "storage": "bench.storage",
    "dag_parse": "bench.dag_parse",
    "e2e_latency": "bench.dag_runs",
    "concurrency": "bench.concurrency",
}


def run_one(name: str, cfg: BenchConfig) -> Result:
    module = importlib.import_module(BENCHMARKS[name])
    runner = getattr(module, f"run_{name}", None) or module.run
    return runner(cfg)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all): {', '.join(BENCHMARKS)}")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: proves the harness (CI), not the numbers")
    parser.add_argument("--runs", type=int, default=None, help="timed runs per measurement (default 5; smoke 2)")
    parser.add_argument("--seed", type=int, default=7, help="data generator seed")
    parser.add_argument("--coins", type=int, default=None, help="coins (default 250; smoke 20)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory of the JSON results")
    parser.add_argument("--cache", type=Path, default=None, help="generated data cache (default bench/.cache)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    cfg = BenchConfig(seed=args.seed, smoke=args.smoke, out=args.out.resolve())
    if args.cache is not None:
        cfg = replace(cfg, cache=args.cache.resolve(), work=args.cache.resolve() / "work")
    if args.smoke:
        cfg = replace(cfg, runs=2, baseline_runs=1, coins=20)
    cfg = replace(cfg, runs=args.runs or cfg.runs, coins=args.coins or cfg.coins)
    if cfg.runs < 1 or cfg.coins < 1:
        print("--runs and --coins must be at least 1", file=sys.stderr)
        return 2
    host = machine()
    failed = []
    for name in args.names or list(BENCHMARKS):
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        started, load_start, began = now_iso(), load_average(), time.perf_counter()
        try:
            result = run_one(name, cfg)
        except Exception as exc:  # one broken benchmark must not hide the others' numbers
            traceback.print_exc()
            result = Result(name, name, status="failed", reason=f"{type(exc).__name__}: {exc}"[:500])
            failed.append(name)
        meta = {
            "machine": host,
            "config": {**asdict(cfg), "out": str(cfg.out), "work": str(cfg.work), "cache": str(cfg.cache)},
            "started_at": started,
            "duration_seconds": round(time.perf_counter() - began, 1),
            "load_average_start": load_start,
            "load_average_end": load_average(),
        }
        path = write_result(cfg.out, result, meta)
        print(f"[bench] {name}: {result.status} in {meta['duration_seconds']} s -> {path}", file=sys.stderr)
    markdown = write_markdown(cfg.out, cfg.out.parent / "RESULTS.md")
    print(f"[bench] results table: {markdown}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

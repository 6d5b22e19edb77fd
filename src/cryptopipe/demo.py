"""``make demo``: the whole pipeline end to end on embedded defaults, offline.

1. start the CoinGecko replay server on 127.0.0.1 (the only stand-in for CoinGecko; real HTTP);
2. backfill the transform lookback of hourly history through ``/coins/{id}/market_chart/range``;
3. run ingest → validate → transform → archive for the last few completed hourly intervals;
4. stop the server and print where everything is.

Storage is ``file://./data`` and the warehouse ``sqlite:///./data/warehouse.db`` unless CRYPTOPIPE_* say otherwise.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime, timedelta

from cryptopipe.core.config import load_settings
from cryptopipe.core.errors import PipelineError
from cryptopipe.core.layout import HOUR, hourly_intervals
from cryptopipe.core.logging import setup_logging


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m cryptopipe.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--intervals", type=int, default=3, help="hourly intervals to run (default 3)")
    parser.add_argument("--history-days", type=int, default=None, help="days to backfill (default: the lookback)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from cryptopipe.ingest.backfill import run_backfill
    from cryptopipe.replay.server import ReplayServer
    from cryptopipe.runner import run_pipeline

    log = setup_logging("demo", os.environ.get("CRYPTOPIPE_LOG_LEVEL", "WARNING"))
    started = time.perf_counter()
    with ReplayServer() as server:
        # The replay server is local: no need to ration calls as for the real API.
        os.environ["CRYPTOPIPE_API__BASE_URL"] = server.url
        os.environ.setdefault("CRYPTOPIPE_API__RATE_LIMIT_PER_MINUTE", "1000")
        try:
            settings = load_settings()
            now_hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
            first = now_hour - args.intervals * HOUR
            days = args.history_days or settings.transform.lookback_days
            print(f"replay server at {server.url}; backfilling {days} days of hourly history...", file=sys.stderr)
            run_backfill(settings, first - timedelta(days=days), first, log, progress=sys.stderr.isatty())
            print(f"running {args.intervals} hourly interval(s) up to {now_hour:%Y-%m-%d %H:%M}Z...", file=sys.stderr)
            summary = run_pipeline(settings, hourly_intervals(first, now_hour), list(_stages()), log)
        except PipelineError as exc:
            print(f"demo failed (exit {int(exc.exit_code)}): {exc.message}", file=sys.stderr)
            return int(exc.exit_code)
    print(summary.render())
    print(f"demo finished in {time.perf_counter() - started:.1f} s")
    return summary.exit_code


def _stages() -> tuple[str, ...]:
    from cryptopipe.cli import STAGE_ORDER

    return STAGE_ORDER


if __name__ == "__main__":
    sys.exit(main())

"""`cryptopipe replay-server`: serve the replay API until SIGTERM/SIGINT.

The main CLI wires this in with `add_arguments(subparser)` and `run(args)`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from .dataset import get_dataset
from .faults import load_rules_file
from .server import KEY_HEADERS, ReplayServer

KEY_ENV = "CRYPTOPIPE_REPLAY_API_KEY"
EXIT_OK, EXIT_CONFIG = 0, 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port to bind; 0 = an ephemeral port (default)")
    parser.add_argument("--clock", metavar="ISO", help="serve market states as of this UTC time (default: now)")
    parser.add_argument("--clock-running", action="store_true",
                        help="let the --clock time advance with the wall clock instead of staying fixed")  # fmt: skip
    parser.add_argument("--faults", metavar="FILE", help="fault rules, YAML or JSON (see docs/replay-server.md)")
    parser.add_argument("--require-key", choices=sorted(KEY_HEADERS), metavar="PLAN",
                        help=f"require a demo or pro API key header; the key is read from ${KEY_ENV}")  # fmt: skip
    parser.add_argument("--port-file", metavar="PATH",
                        help='write {"url", "port", "pid"} as JSON here once serving (removed on exit)')  # fmt: skip
    parser.add_argument("--max-hang-seconds", type=float, default=300.0,
                        help="a 'hang' fault gives up after this long (default 300)")  # fmt: skip


def _log(level: str, event: str, **fields: Any) -> None:
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    line = {"ts": now, "level": level, "stage": "replay-server", "event": event, **fields}
    print(json.dumps(line), flush=True)


def _build(args: argparse.Namespace) -> ReplayServer:
    """The server from the command line; ValueError names the bad option."""
    if args.port < 0 or args.port > 65535:
        raise ValueError(f"--port: {args.port} is not a TCP port (0-65535)")
    if args.clock_running and not args.clock:
        raise ValueError("--clock-running needs --clock")
    rules = load_rules_file(args.faults) if args.faults else None
    require_key = None
    if args.require_key:
        key = os.environ.get(KEY_ENV, "")
        if not key:
            raise ValueError(f"--require-key {args.require_key}: set the expected key in ${KEY_ENV}")
        require_key = (args.require_key, key)
    server = ReplayServer(clock=None, faults=rules, require_key=require_key, host=args.host, port=args.port,
                          max_hang_seconds=args.max_hang_seconds)  # fmt: skip
    if args.clock:
        try:
            server.set_clock(args.clock, running=args.clock_running)
        except ValueError as exc:
            raise ValueError(f"--clock: {exc}") from None
    return server


def _write_port_file(path: Path, server: ReplayServer) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"url": server.url, "port": server.port, "pid": os.getpid()}) + "\n")
    tmp.replace(path)  # atomic: a reader never sees a half-written file


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT; 0 on a clean stop, 2 on a bad option."""
    try:
        server = _build(args)
    except ValueError as exc:
        _log("error", "replay_server_config_error", error=str(exc))
        return EXIT_CONFIG
    get_dataset()  # build before announcing the URL, so the first request is fast
    stop = threading.Event()

    def _on_signal(signum: int, _frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    port_file = Path(args.port_file) if args.port_file else None
    try:
        try:
            server.start()
        except OSError as exc:
            _log("error", "replay_server_bind_error", error=f"cannot bind {args.host}:{args.port}: {exc.strerror}")
            return EXIT_CONFIG
        if port_file:
            _write_port_file(port_file, server)
        _log("info", "replay_server_started", url=server.url, port=server.port, clock=server.clock.describe(),
             fault_rules=len(server.faults.describe()), require_key=args.require_key)  # fmt: skip
        while not stop.wait(0.5):
            pass
        server.stop()
        _log("info", "replay_server_stopped", requests=len(server.requests))
        return EXIT_OK
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if port_file and port_file.exists():
            port_file.unlink()


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point: `python -m cryptopipe.replay.cli`."""
    parser = argparse.ArgumentParser(prog="cryptopipe replay-server", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

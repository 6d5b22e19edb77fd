"""The CoinGecko replay server as test suites share it: one server per session, reset before each test."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from cryptopipe.replay.server import ReplayServer


@contextlib.contextmanager
def running_replay(clock: str, **options: Any) -> Iterator[ReplayServer]:
    server = ReplayServer(clock=clock, **options)
    server.start()
    server.market()  # build the dataset once, before any timing-sensitive test
    try:
        yield server
    finally:
        server.stop()


def reset_replay(server: ReplayServer, clock: str) -> ReplayServer:
    """The shared server with the suite's fixed clock, no faults and an empty request log."""
    server.set_clock(clock)
    server.clear_faults()
    server.clear_requests()
    return server

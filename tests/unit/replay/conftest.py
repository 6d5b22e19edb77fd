"""A replay server shared by the replay tests (fixed clock), reset between tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cryptopipe.replay import ReplayServer

CLOCK = "2026-11-22T14:00:00Z"


@pytest.fixture(scope="session")
def replay_session() -> Iterator[ReplayServer]:
    server = ReplayServer(clock=CLOCK)
    server.start()
    server.market()  # build the dataset once, before any timing-sensitive test
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def replay(replay_session: ReplayServer) -> ReplayServer:
    """The shared server with the fixed clock, no faults and an empty request log."""
    replay_session.set_clock(CLOCK)
    replay_session.clear_faults()
    replay_session.clear_requests()
    return replay_session

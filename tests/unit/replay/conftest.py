"""A replay server shared by the replay tests (fixed clock), reset between tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cryptopipe.replay import ReplayServer
from tests.support.replay import reset_replay, running_replay

CLOCK = "2026-11-22T14:00:00Z"


@pytest.fixture(scope="session")
def replay_session() -> Iterator[ReplayServer]:
    with running_replay(CLOCK) as server:
        yield server


@pytest.fixture
def replay(replay_session: ReplayServer) -> ReplayServer:
    return reset_replay(replay_session, CLOCK)

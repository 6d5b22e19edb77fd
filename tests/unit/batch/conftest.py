"""Two identical pipeline roots per test: ``per`` runs interval by interval, ``batch`` runs the range mode."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cryptopipe.core.config import Settings, load_settings


@pytest.fixture
def quiet_log() -> logging.Logger:
    log = logging.getLogger("cryptopipe.tests.batch")
    log.propagate = False
    log.handlers[:] = [logging.NullHandler()]
    return log


@pytest.fixture
def settings_for(clean_env: pytest.MonkeyPatch) -> Iterator[object]:
    """settings_for(root, warehouse_url) -> Settings for that root (env as the stage images get it)."""

    def make(root: Path, warehouse_url: str | None = None, **env: str) -> Settings:
        for name in [n for n in os.environ if n.startswith("CRYPTOPIPE_")]:
            clean_env.delenv(name)
        clean_env.setenv("CRYPTOPIPE_STORAGE__URI", f"file://{root}")
        clean_env.setenv("CRYPTOPIPE_COINS__TOP_N", "20")
        clean_env.setenv("CRYPTOPIPE_WAREHOUSE__URL", warehouse_url or f"sqlite:///{root.parent / (root.name + '.db')}")
        for key, value in env.items():
            clean_env.setenv(f"CRYPTOPIPE_{key.upper()}", value)
        return load_settings()

    yield make

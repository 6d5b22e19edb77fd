"""Settings through the environment, as the stage images get them."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


@contextmanager
def pipeline_env(root: Path, ids: list[str] | None = None, **env: object) -> Iterator[None]:
    """CRYPTOPIPE_* settings for one scenario: storage under root, explicit ids (top_n 0) unless overridden."""
    values = {"CRYPTOPIPE_STORAGE__URI": f"file://{root}", "CRYPTOPIPE_COINS__TOP_N": "0"}
    if ids is not None:
        values["CRYPTOPIPE_COINS__IDS"] = ",".join(ids)
    values.update({f"CRYPTOPIPE_{k.upper()}": str(v) for k, v in env.items()})
    with pytest.MonkeyPatch.context() as mp:
        for name in [n for n in os.environ if n.startswith("CRYPTOPIPE_")]:
            mp.delenv(name)
        for name, value in values.items():
            mp.setenv(name, value)
        yield


@pytest.fixture
def configure(tmp_path: Path) -> Iterator[Callable[..., Path]]:
    """configure(ids, quality__price_max=...) -> the storage root; undone after the test."""
    stack: list[object] = []

    def _configure(ids: list[str] | None = None, **env: object) -> Path:
        ctx = pipeline_env(tmp_path, ids, **env)
        ctx.__enter__()
        stack.append(ctx)
        return tmp_path

    yield _configure
    while stack:
        stack.pop().__exit__(None, None, None)  # type: ignore[attr-defined]

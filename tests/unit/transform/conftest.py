from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from cryptopipe.core.config import Settings, load_settings


@pytest.fixture
def make_settings(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> Callable[..., Settings]:
    """Settings from the environment (as the stage gets them), storage in a temp dir; overrides as env values."""

    def build(root: Path | None = None, **overrides: object) -> Settings:
        clean_env.setenv("CRYPTOPIPE_STORAGE__URI", f"file://{root or tmp_path / 'data'}")
        for key, value in overrides.items():
            clean_env.setenv(f"CRYPTOPIPE_{key.upper()}", str(value))
        return load_settings()

    return build

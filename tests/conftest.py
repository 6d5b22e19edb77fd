"""Session fixtures shared by every test folder: real S3 and PostgreSQL servers, ../shared, tool checks."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.postgres import PostgresServer, start_postgres
from tests.support.s3_server import S3Server, start_s3_server

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def shared_path(*parts: str) -> Path:
    """A file under ../shared, or a skip that says exactly what is missing."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"reference data {path} is absent (../shared not beside the repository)")
    return path


def require(condition: bool, what: str) -> None:
    """A prerequisite that `make setup`/`make tools` installs: fail in CI, skip with the reason elsewhere."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"{what} (CI must provide it: see .ci/run)")
    pytest.skip(what)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = start_s3_server()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    try:
        server = start_postgres()
    except RuntimeError as exc:
        require(False, str(exc))
        raise
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.workdir, ignore_errors=True)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No CRYPTOPIPE_*/PIPELINE_* from the developer's shell leaks into a test."""
    for key in list(os.environ):
        if key.startswith(("CRYPTOPIPE_", "PIPELINE_")):
            monkeypatch.delenv(key)
    return monkeypatch


@pytest.fixture
def local_env(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Embedded defaults rooted in a temp dir: file:// storage and a SQLite warehouse."""
    data = tmp_path / "data"
    clean_env.setenv("CRYPTOPIPE_STORAGE__URI", f"file://{data}")
    clean_env.setenv("CRYPTOPIPE_WAREHOUSE__URL", f"sqlite:///{data}/warehouse.db")
    return data

"""Planted secret values never appear in logs, in storage or in the warehouse: the real CLI, real servers.

``cryptopipe run`` (ingest → validate → transform → archive) runs in a subprocess against the replay server
(``require_key``: the key is really sent, in its header), a real PostgreSQL whose role has a planted password,
and a Slack webhook URL whose path is a planted token. Then everything a person or a system could read is
searched for every planted value: stdout and stderr of each run, every object written to storage (gzip bodies
decompressed, Parquet decoded: sidecars hold response headers and request URLs), and every row of every
warehouse table. Runs: a clean one at DEBUG, the key rejected (exit 7), the warehouse password rejected
(exit 6), and a bad Slack URL (exit 2) plus ``config show``.
"""

from __future__ import annotations

import gzip
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cryptopipe.replay.server import ReplayServer
from tests.support.postgres import PASSWORD, PostgresServer

CLI = str(Path(sys.executable).with_name("cryptopipe"))
CLOCK = "2024-06-01T03:00:00Z"
INTERVAL = ("--start", "2024-06-01T01:00:00Z", "--end", "2024-06-01T02:00:00Z")


def _token(prefix: str) -> str:
    # Only [a-z0-9-]: the same text percent-encoded, JSON-escaped or in a header, so one grep finds every form.
    return f"{prefix}-{secrets.token_hex(10)}"


@dataclass(frozen=True)
class Planted:
    api_key: str
    wrong_key: str
    slack_token: str
    slack_url: str
    db_password: str
    warehouse_url: str

    def values(self) -> dict[str, str]:
        return {
            "api key": self.api_key,
            "rejected api key": self.wrong_key,
            "slack webhook url": self.slack_url,
            "slack webhook token": self.slack_token,
            "warehouse password": self.db_password,
            "warehouse url": self.warehouse_url,
        }


def _warehouse_role(postgres: PostgresServer, password: str) -> str:
    """A role and database of their own, the role's password the planted value: the URL really authenticates."""
    import psycopg

    name = f"leak_{secrets.token_hex(4)}"
    dsn = f"host=127.0.0.1 port={postgres.port} user={postgres.user} password={PASSWORD} dbname=postgres"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'")
        conn.execute(f"CREATE DATABASE {name} OWNER {name}")
    return f"postgresql+psycopg://{name}:{password}@127.0.0.1:{postgres.port}/{name}"


@pytest.fixture(scope="module")
def planted(postgres_server: PostgresServer) -> Planted:
    slack_token = _token("slacktoken")
    password = _token("dbpass")
    return Planted(
        api_key=_token("cg-key"),
        wrong_key=_token("cg-wrong"),
        slack_token=slack_token,
        slack_url=f"http://127.0.0.1:9/services/T0PLANT/B0PLANT/{slack_token}",
        db_password=password,
        warehouse_url=_warehouse_role(postgres_server, password),
    )


@pytest.fixture(scope="module")
def replay(planted: Planted) -> Iterator[ReplayServer]:
    with ReplayServer(clock=CLOCK, require_key=("demo", planted.api_key)) as server:
        yield server


def _env(planted: Planted, replay: ReplayServer, storage: Path, **overrides: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRYPTOPIPE_", "PIPELINE_"))}
    env |= {
        "CRYPTOPIPE_API__PLAN": "demo",
        "CRYPTOPIPE_API__KEY": planted.api_key,
        "CRYPTOPIPE_API__BASE_URL": replay.url,
        "CRYPTOPIPE_API__RATE_LIMIT_PER_MINUTE": "1000",
        "CRYPTOPIPE_API__RETRY__MAX_ATTEMPTS": "2",
        "CRYPTOPIPE_COINS__TOP_N": "20",
        "CRYPTOPIPE_STORAGE__URI": f"file://{storage}",
        "CRYPTOPIPE_WAREHOUSE__URL": planted.warehouse_url,
        "CRYPTOPIPE_ALERTS__SLACK_WEBHOOK_URL": planted.slack_url,
        "CRYPTOPIPE_REPLAY_API_KEY": "",  # the server's key is the in-process one, not the environment's
    }
    return env | overrides


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=240, check=False)


def _storage_text(root: Path) -> Iterator[tuple[str, str]]:
    """Every object under ``root`` as searchable text: gzip decompressed, Parquet decoded, the rest as bytes."""
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        texts = [data.decode("utf-8", "replace")]
        if path.name.endswith(".gz"):
            texts.append(gzip.decompress(data).decode("utf-8", "replace"))
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            texts.append(str(table.to_pylist()) + str(table.schema.metadata))
        yield str(path.relative_to(root)), "\n".join(texts)


def _warehouse_text(url: str) -> Iterator[tuple[str, str]]:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            for table in sa.inspect(conn).get_table_names():
                rows = conn.execute(sa.text(f'SELECT * FROM "{table}"')).fetchall()
                yield f"warehouse table {table}", repr(rows)
    finally:
        engine.dispose()


def _leaks(planted: Planted, sources: Iterator[tuple[str, str]] | list[tuple[str, str]]) -> list[str]:
    return [
        f"{what} in {where}" for where, text in sources for what, value in planted.values().items() if value in text
    ]


@pytest.fixture(scope="module")
def clean_run(planted: Planted, replay: ReplayServer, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    storage = tmp_path_factory.mktemp("secrets-run") / "data"
    proc = _cli(_env(planted, replay, storage), "--log-level", "DEBUG", "run", *INTERVAL)
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-3000:]
    return storage, proc.stdout + proc.stderr


def test_clean_run_sends_the_key_and_leaks_nothing(
    planted: Planted, replay: ReplayServer, clean_run: tuple[Path, str]
) -> None:
    storage, output = clean_run
    assert any(r.get("path", "").endswith("/coins/markets") for r in replay.requests)  # the key was accepted
    objects = list(_storage_text(storage))
    assert any(name.endswith(".meta.json") for name, _ in objects)  # sidecars (URLs, headers) were searched
    assert any(name.endswith(".parquet") for name, _ in objects)
    tables = list(_warehouse_text(planted.warehouse_url))
    assert any("pipeline_runs" in name and text != "[]" for name, text in tables)  # the warehouse was written
    assert _leaks(planted, [("stdout/stderr", output), *objects, *tables]) == []


def test_rejected_key_fails_clearly_and_leaks_nothing(planted: Planted, replay: ReplayServer, tmp_path: Path) -> None:
    storage = tmp_path / "data"
    proc = _cli(_env(planted, replay, storage, CRYPTOPIPE_API__KEY=planted.wrong_key), "run", *INTERVAL)
    assert proc.returncode == 7, proc.stderr[-3000:]
    assert "rejected the API key" in proc.stdout + proc.stderr
    objects = list(_storage_text(storage))
    assert any(name.endswith("ingest.json") for name, _ in objects)  # the failed run record was searched
    assert _leaks(planted, [("stdout/stderr", proc.stdout + proc.stderr), *objects]) == []


def test_rejected_warehouse_password_fails_clearly_and_leaks_nothing(
    planted: Planted, replay: ReplayServer, clean_run: tuple[Path, str]
) -> None:
    storage, _ = clean_run
    wrong = planted.warehouse_url.replace(planted.db_password, _token("dbwrong"))
    rejected = Planted(**{**planted.__dict__, "warehouse_url": wrong, "db_password": wrong.split(":")[2].split("@")[0]})
    env = _env(planted, replay, storage, CRYPTOPIPE_WAREHOUSE__URL=wrong)
    proc = _cli(env, "--log-level", "DEBUG", "run", *INTERVAL, "--stages", "archive")
    assert proc.returncode == 6, proc.stderr[-3000:]
    output = ("stdout/stderr", proc.stdout + proc.stderr)
    assert _leaks(rejected, [output, *_storage_text(storage)]) == []
    assert _leaks(planted, [output]) == []


def test_config_errors_and_config_show_leak_nothing(planted: Planted, replay: ReplayServer, tmp_path: Path) -> None:
    env = _env(planted, replay, tmp_path)
    bad_slack = env | {"CRYPTOPIPE_ALERTS__SLACK_WEBHOOK_URL": f"https://evil.example/services/{planted.slack_token}"}
    checked = _cli(bad_slack, "config", "check")
    assert checked.returncode == 2 and "alerts.slack_webhook_url" in checked.stdout + checked.stderr
    bad_dialect = env | {"CRYPTOPIPE_WAREHOUSE__URL": f"mysql://u:{planted.db_password}@127.0.0.1/x"}
    dialect = _cli(bad_dialect, "config", "check")
    assert dialect.returncode == 2 and "warehouse.url" in dialect.stdout + dialect.stderr
    shown = _cli(env, "config", "show")
    assert shown.returncode == 0 and '"key": "**********"' in shown.stdout
    outputs = [
        (f"config {name}", p.stdout + p.stderr)
        for name, p in [("check", checked), ("dialect", dialect), ("show", shown)]
    ]
    assert _leaks(planted, outputs) == []


def test_the_search_would_find_a_leak(planted: Planted, tmp_path: Path) -> None:
    """Not vacuous: a sidecar-like object holding the key, gzip- or Parquet-encoded, is found."""
    import pyarrow as pa

    (tmp_path / "a.json.gz").write_bytes(gzip.compress(f'{{"x-cg-demo-api-key": "{planted.api_key}"}}'.encode()))
    pq.write_table(pa.table({"url": [planted.warehouse_url]}), tmp_path / "b.parquet", compression="zstd")
    assert sorted(_leaks(planted, _storage_text(tmp_path))) == [
        "api key in a.json.gz",
        "warehouse password in b.parquet",
        "warehouse url in b.parquet",
    ]

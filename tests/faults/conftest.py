"""Fixtures of the fault matrix: one harness per session (servers, Airflow) and the clean reference run."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.airflow_env import (
    AirflowTestEnv,
    airflow_env,  # noqa: F401 - a pytest fixture
)
from tests.support.postgres import PostgresServer
from tests.support.s3_server import S3Server
from tests.support.slack_receiver import SlackReceiver

from .harness import DAGS_DIR, REGISTRY, Harness, aws_connection
from .s3_proxy import S3CuttingProxy


@pytest.fixture(scope="session")
def harness(
    airflow_env: AirflowTestEnv,  # noqa: F811 - the imported fixture
    s3_server: S3Server,
    postgres_server: PostgresServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Harness]:
    from cryptopipe.replay.server import ReplayServer

    with (
        pytest.MonkeyPatch.context() as mp,
        ReplayServer() as replay,
        SlackReceiver() as slack,
        S3CuttingProxy(s3_server.endpoint) as proxy,
    ):
        for key in [k for k in os.environ if k.startswith(("PIPELINE_", "CRYPTOPIPE_"))]:
            mp.delenv(key)
        airflow_env.use_dags_folder(DAGS_DIR)
        mp.syspath_prepend(str(DAGS_DIR))  # the DAG file imports its helper modules from its folder
        mp.setenv("PIPELINE_RUNTIME", "kubernetes")
        mp.setenv("PIPELINE_IMAGE_REGISTRY", "registry.faults.test:5000")
        mp.setenv("PIPELINE_IMAGE_TAG", "faults")
        bucket = s3_server.new_bucket()
        mp.setenv("PIPELINE_STORAGE_URI", f"s3://{bucket}")
        mp.setenv("AIRFLOW_CONN_SLACK_ALERTS", slack.connection_json())
        mp.setenv("AIRFLOW_CONN_AWS_DEFAULT", aws_connection(s3_server))
        from airflow.models.pool import Pool

        Pool.create_or_update_pool(
            name="coingecko_api", slots=1, description="CoinGecko (faults)", include_deferred=False
        )
        workdir = Path(tmp_path_factory.mktemp("faults"))
        h = Harness(airflow_env, s3_server, postgres_server, replay, slack, proxy, bucket, workdir, mp)
        try:
            yield h
        finally:
            h.stop_doubles()
            h.ensure_servers()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not REGISTRY:
        return
    tr = terminalreporter
    tr.section("fault matrix")
    for r in REGISTRY:
        flag = "ok " if r.passed else "BAD"
        tr.write_line(f"{flag} {r.id:<42} {r.seconds:6.1f}s  {r.outcome}")
    lost = sum(r.rows_lost for r in REGISTRY)
    dup = sum(r.rows_duplicated for r in REGISTRY)
    unclear = sum(1 for r in REGISTRY if r.clear_error is False)
    tr.write_line(
        f"scenarios {len(REGISTRY)} (passed {sum(r.passed for r in REGISTRY)}): "
        f"rows lost {lost}, rows duplicated {dup}, scenarios without a clear error {unclear}"
    )

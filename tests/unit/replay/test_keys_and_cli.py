"""API-key checks, and the `replay-server` command line as a real process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from cryptopipe.replay import ReplayServer

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    ("plan", "headers", "status", "code"),
    [
        ("demo", {}, 401, 10002),
        ("demo", {"x-cg-demo-api-key": "wrong"}, 401, 10002),
        ("demo", {"x-cg-demo-api-key": "k-1"}, 200, None),
        ("demo", {"x-cg-pro-api-key": "k-1"}, 401, 10010),
        ("pro", {"x-cg-demo-api-key": "k-1"}, 401, 10011),
        ("pro", {"x-cg-pro-api-key": "k-1"}, 200, None),
    ],
)
def test_required_keys(plan: str, headers: dict[str, str], status: int, code: int | None) -> None:
    with ReplayServer(require_key=(plan, "k-1")) as server:
        answer = requests.get(server.url + "/ping", headers=headers, timeout=10)
    assert answer.status_code == status
    if code is not None:
        body = answer.json()["status"]
        assert body["error_code"] == code and set(body) == {"timestamp", "error_code", "error_message"}


def test_demo_key_as_query_parameter_and_history_limit() -> None:
    with ReplayServer(clock="2026-11-22T14:00:00Z", require_key=("demo", "k-1")) as server:
        url = server.url + "/coins/bitcoin/market_chart/range"
        params = {"vs_currency": "usd", "from": "2025-01-01", "to": "2025-02-01", "x_cg_demo_api_key": "k-1"}
        assert requests.get(url, params=params, timeout=30).status_code == 401  # Demo: 365 days only
    with ReplayServer(clock="2026-11-22T14:00:00Z", require_key=("pro", "k-1")) as server:
        answer = requests.get(server.url + "/coins/bitcoin/market_chart/range", params=params,
                              headers={"x-cg-pro-api-key": "k-1"}, timeout=30)  # fmt: skip
        assert answer.status_code == 200


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRYPTOPIPE_")}
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_cli_serves_until_sigterm(tmp_path: Path) -> None:
    port_file = tmp_path / "replay.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "cryptopipe.replay.cli", "--port-file", str(port_file), "--clock", "2026-11-22T14:00Z"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        info = json.loads(port_file.read_text())
        assert info["pid"] == proc.pid and info["url"].endswith(f":{info['port']}/api/v3")
        assert requests.get(info["url"] + "/ping", timeout=10).status_code == 200
        clock = requests.get(info["url"].replace("/api/v3", "/__replay/clock"), timeout=10).json()
        assert clock == {"time": "2026-11-22T14:00:00.000Z", "mode": "fixed"}
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["event"] for e in events] == ["replay_server_started", "replay_server_stopped"]
    assert events[0]["url"] == info["url"] and not port_file.exists()


def test_cli_bad_option_exits_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cryptopipe.replay.cli", "--clock", "yesterday-ish"],
        capture_output=True, text=True, env=_env(), timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    event = json.loads(proc.stdout.splitlines()[-1])
    assert event["level"] == "error" and "--clock" in event["error"] and "yesterday-ish" in event["error"]

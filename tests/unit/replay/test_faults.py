"""Fault injection: every fault type, rule sequencing, runtime control, the request log."""

from __future__ import annotations

import email.utils
import json
import threading
import time
from pathlib import Path

import pytest
import requests

from cryptopipe.replay import ReplayServer
from cryptopipe.replay.faults import parse_fault, parse_rules
from tests.conftest import shared_path

MARKETS = "/coins/markets?vs_currency=usd&ids=bitcoin,ethereum,solana"


def _get(server: ReplayServer, path: str = MARKETS, timeout: float = 30) -> requests.Response:
    return requests.get(server.url + path, timeout=timeout)


def _fault(server: ReplayServer, *faults: str, path: str = "coins/markets", repeat: bool = False) -> None:
    server.set_faults([{"path": path, "faults": list(faults), "repeat": repeat}])


def test_rules_apply_in_sequence_then_fall_through(replay: ReplayServer) -> None:
    _fault(replay, "429", "500", "ok", "503")
    assert [_get(replay).status_code for _ in range(6)] == [429, 500, 200, 503, 200, 200]
    assert _get(replay, "/ping").status_code == 200  # path did not match


def test_repeat_cycles(replay: ReplayServer) -> None:
    _fault(replay, "500", "ok", repeat=True)
    assert [_get(replay).status_code for _ in range(4)] == [500, 200, 500, 200]


def test_path_regex_sees_the_query_string(replay: ReplayServer) -> None:
    _fault(replay, "502", path=r"coins/markets\?.*page=2")
    assert _get(replay, "/coins/markets?vs_currency=usd&page=1").status_code == 200
    assert _get(replay, "/coins/markets?vs_currency=usd&page=2").status_code == 502


def test_429_has_retry_after_and_the_real_body(replay: ReplayServer) -> None:
    _fault(replay, "429:7", "429:2:reset")
    first, second = _get(replay), _get(replay)
    assert first.status_code == 429 and first.headers["retry-after"] == "7"
    assert first.json() == json.loads(shared_path("coingecko", "error_429_rate_limit.json").read_text())
    assert "x-ratelimit-reset" not in first.headers
    reset = email.utils.parsedate_to_datetime(second.headers["x-ratelimit-reset"])
    assert reset.year == 2026 and second.headers["retry-after"] == "2"


def test_gateway_errors_are_cloudflare_html(replay: ReplayServer) -> None:
    _fault(replay, "500", "502", "503", "504")
    answers = [_get(replay) for _ in range(4)]
    assert [a.status_code for a in answers] == [500, 502, 503, 504]
    assert answers[0].json() == {"error": "Internal server error"}
    for answer in answers[1:]:
        assert answer.headers["content-type"].startswith("text/html") and "cloudflare" in answer.text


def test_html_pages(replay: ReplayServer) -> None:
    _fault(replay, "html", "html403")
    page, denied = _get(replay), _get(replay)
    assert page.status_code == 200 and page.text.startswith("<!DOCTYPE html>")
    assert "Cloudflare" in page.text and denied.status_code == 403
    with pytest.raises(ValueError):
        page.json()


def test_truncated_json_keeps_status_200(replay: ReplayServer) -> None:
    _fault(replay, "truncated")
    answer = _get(replay)
    assert answer.status_code == 200 and int(answer.headers["content-length"]) == len(answer.content)
    with pytest.raises(ValueError):
        json.loads(answer.content)
    assert answer.content.startswith(b'[{"id":"bitcoin"')


def test_empty_drop_and_key_rejected(replay: ReplayServer) -> None:
    _fault(replay, "empty", "drop:ethereum", "key_rejected")
    assert _get(replay).json() == []
    assert [r["id"] for r in _get(replay).json()] == ["bitcoin", "solana"]
    rejected = _get(replay)
    assert rejected.status_code == 401 and rejected.json()["status"]["error_code"] == 10002
    _fault(replay, "drop:solana", path="market_chart")
    chart = _get(replay, "/coins/solana/market_chart/range?vs_currency=usd&from=1795300000&to=1795356000")
    assert chart.status_code == 404


def test_drift(replay: ReplayServer) -> None:
    _fault(replay, "drift:missing=current_price", "drift:rename=total_volume:volume_24h", "drift:extra=new_field",
           "drift:string_numbers")  # fmt: skip
    missing, renamed, extra, strings = (_get(replay).json() for _ in range(4))
    assert all("current_price" not in r for r in missing)
    assert all("volume_24h" in r and "total_volume" not in r for r in renamed)
    assert list(renamed[0]).index("volume_24h") == list(missing[0]).index("total_volume") + 1
    assert all(r["new_field"] == "replay-extra" for r in extra)
    assert isinstance(strings[0]["current_price"], str) and float(strings[0]["current_price"]) > 0
    assert strings[0]["id"] == "bitcoin" and strings[0]["roi"] is None
    _fault(replay, "drift:missing=usd_24h_change", path="simple/price")
    simple = _get(replay, "/simple/price?ids=bitcoin,ethereum&vs_currencies=usd&include_24hr_change=true").json()
    assert set(simple) == {"bitcoin", "ethereum"} and all(set(v) == {"usd"} for v in simple.values())


def test_slow_delays_then_answers(replay: ReplayServer) -> None:
    _fault(replay, "slow:0.4")
    started = time.monotonic()
    answer = _get(replay)
    assert answer.status_code == 200 and time.monotonic() - started >= 0.4


def test_hang_times_out_the_client_without_blocking_others(replay: ReplayServer) -> None:
    _fault(replay, "hang")
    started = time.monotonic()
    with pytest.raises(requests.exceptions.ReadTimeout):
        _get(replay, timeout=0.5)
    assert time.monotonic() - started < 3
    assert _get(replay, "/ping", timeout=5).status_code == 200


def test_hang_does_not_block_stop() -> None:
    server = ReplayServer(faults=[{"path": "ping", "faults": ["hang"]}])
    server.start()
    outcome: list[object] = []

    def call() -> None:
        try:
            outcome.append(requests.get(server.url + "/ping", timeout=30).status_code)
        except requests.RequestException as exc:
            outcome.append(type(exc).__name__)

    client = threading.Thread(target=call)
    client.start()
    time.sleep(0.3)
    started = time.monotonic()
    server.stop()
    client.join(timeout=10)
    assert time.monotonic() - started < 2
    assert not client.is_alive() and outcome and outcome[0] != 200


def test_runtime_fault_endpoints_and_request_log(replay: ReplayServer) -> None:
    rules = {"rules": [{"path": "ping", "faults": ["503"]}]}
    put = requests.put(f"{replay.root_url}/__replay/faults", json=rules, timeout=10)
    assert put.status_code == 200 and put.json()["rules"][0]["faults"] == ["503"]
    assert _get(replay, "/ping").status_code == 503
    assert requests.get(f"{replay.root_url}/__replay/faults", timeout=10).json()["rules"][0]["used"] == 1
    bad = requests.put(f"{replay.root_url}/__replay/faults", json=[{"path": "x", "faults": ["explode"]}], timeout=10)
    assert bad.status_code == 400 and "rule 0 fault 0" in bad.json()["error"] and "explode" in bad.json()["error"]
    assert requests.delete(f"{replay.root_url}/__replay/faults", timeout=10).json() == {"rules": []}
    requests.get(replay.url + "/ping", headers={"x-cg-demo-api-key": "secret-key"}, timeout=10)
    log = requests.get(f"{replay.root_url}/__replay/requests", timeout=10).json()
    assert [(r["path"], r["status"], r["fault"]) for r in log] == [
        ("/api/v3/ping", 503, "503"),
        ("/api/v3/ping", 200, None),
    ]
    assert log[1]["headers"]["x-cg-demo-api-key"] == "***" and "secret-key" not in json.dumps(log)
    assert replay.requests == log


def test_faults_file(tmp_path: Path) -> None:
    path = tmp_path / "faults.yaml"
    path.write_text("- path: simple/price\n  faults: ['429:1', ok]\n")
    with ReplayServer(faults=path) as server:
        assert _get(server, "/simple/price?ids=bitcoin&vs_currencies=usd").status_code == 429
        assert _get(server, "/simple/price?ids=bitcoin&vs_currencies=usd").status_code == 200
    path.write_text("- path: '('\n  faults: [ok]\n")
    with pytest.raises(ValueError, match=r"faults\.yaml: rule 0: path is not a valid regex"):
        ReplayServer(faults=path)


@pytest.mark.parametrize(
    ("text", "message"),
    [("slow:abc", "bad fault 'slow:abc'"), ("429:1:later", "bad fault"), ("drift:rename=a", "OLD:NEW"),
     ("teapot", "unknown fault 'teapot'")],
)  # fmt: skip
def test_bad_fault_specs_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_fault(text)


def test_bad_rules_name_the_rule() -> None:
    with pytest.raises(ValueError, match="rule 1: faults must be a non-empty list"):
        parse_rules([{"path": "a", "faults": ["ok"]}, {"path": "b", "faults": []}])
    with pytest.raises(ValueError, match="unknown keys"):
        parse_rules([{"path": "a", "faults": ["ok"], "times": 3}])

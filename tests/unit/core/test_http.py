"""The HTTP client's policy with a fake clock and a scripted session (no real sleeping, no server).

The real-server behaviour (429 with a real Retry-After, hangs, HTML, truncated JSON) is in
tests/unit/ingest/test_ingest_replay.py.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
import requests

from cryptopipe.core.coingecko import classify_response
from cryptopipe.core.config import load_settings
from cryptopipe.core.errors import SourceInvalidError, SourceUnavailableError
from cryptopipe.core.http import HttpClient, TokenBucket, parse_retry_after, safe_headers

KEY = "CG-unit-test-secret-key"


class FakeClock:
    """Monotonic time that only moves when someone sleeps (or a fake request takes time)."""

    def __init__(self) -> None:
        self.t = 1000.0
        self.sleeps: list[float] = []
        self.lock = threading.Lock()

    def monotonic(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.sleeps.append(seconds)
            self.t += max(0.0, seconds)

    def now(self) -> datetime:
        return datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=self.t)


def response(status: int, body: bytes | str = b"[]", headers: dict[str, str] | None = None) -> requests.Response:
    resp = requests.Response()
    resp.status_code = status
    resp._content = body.encode() if isinstance(body, str) else body
    resp.headers.update({"Content-Type": "application/json", **(headers or {})})
    return resp


Step = requests.Response | Exception | Callable[[], requests.Response]


class ScriptedSession(requests.Session):
    """Answers each GET with the next scripted step; records what was asked."""

    def __init__(self, steps: list[Step], clock: FakeClock | None = None, takes: float = 0.0) -> None:
        super().__init__()
        self.steps = list(steps)
        self.calls: list[dict[str, Any]] = []
        self.clock, self.takes = clock, takes

    def get(self, url: str | bytes, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.calls.append({"url": url, "headers": dict(self.headers), **kwargs})
        if self.clock is not None:
            self.clock.t += self.takes
        step = self.steps.pop(0)
        if isinstance(step, Exception):
            raise step
        return step() if callable(step) else step


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> Any:
    for name, value in {
        "CRYPTOPIPE_STORAGE__URI": f"file://{tmp_path}",
        "CRYPTOPIPE_API__BASE_URL": "http://127.0.0.1:9/api/v3",
        "CRYPTOPIPE_API__PLAN": "demo",
        "CRYPTOPIPE_API__KEY": KEY,
        "CRYPTOPIPE_API__RATE_LIMIT_PER_MINUTE": "1000",
        "CRYPTOPIPE_API__RETRY__MAX_ATTEMPTS": "4",
        "CRYPTOPIPE_API__RETRY__BACKOFF_SECONDS": "1",
        "CRYPTOPIPE_API__RETRY__BACKOFF_MAX_SECONDS": "30",
        "CRYPTOPIPE_API__RETRY__TOTAL_TIMEOUT_SECONDS": "100",
    }.items():
        monkeypatch.setenv(name, value)
    return load_settings().api


class NoBucket:
    """The rate limiter out of the way, so the clock's sleeps are exactly the retry waits."""

    def acquire(self) -> float:
        return 0.0


def client_for(api: Any, steps: list[Step], takes: float = 0.0) -> tuple[HttpClient, ScriptedSession, FakeClock]:
    clock = FakeClock()
    session = ScriptedSession(steps, clock, takes)
    client = HttpClient(api, classify_response, clock=clock, rng=random.Random(7), session=session)
    client.bucket = NoBucket()  # type: ignore[assignment]
    return client, session, clock


def retry_sleeps(clock: FakeClock) -> list[float]:
    return [s for s in clock.sleeps if s > 0]


# --- token bucket ---


def test_token_bucket_spaces_requests_evenly() -> None:
    clock = FakeClock()
    bucket = TokenBucket(60, clock)  # one a second
    waits = [bucket.acquire() for _ in range(4)]
    assert waits == [0.0, 1.0, 1.0, 1.0]
    clock.t += 10  # idle time refills at most `capacity` tokens
    assert bucket.acquire() == 0.0
    assert bucket.acquire() == pytest.approx(1.0)


def test_token_bucket_is_thread_safe() -> None:
    clock = FakeClock()
    bucket = TokenBucket(120, clock)  # one every 0.5 s
    waits: list[float] = []
    lock = threading.Lock()

    def take() -> None:
        wait = bucket.acquire()
        with lock:
            waits.append(wait)

    threads = [threading.Thread(target=take) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # The fake clock advances by each sleep, so the reservations interleave; what matters is that no two
    # callers were given the same slot: 20 tokens at 2/s need 9.5 s of reserved waiting beyond the first.
    assert len(waits) == 20
    assert sum(1 for w in waits if w == 0.0) >= 1
    assert clock.t - 1000.0 >= 9.5 - 1e-9


# --- Retry-After ---


def test_parse_retry_after_seconds_date_and_garbage() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after("119", now) == 119
    assert parse_retry_after("1.5", now) == 1.5
    assert parse_retry_after("-3", now) == 0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=42), usegmt=True), now) == 42
    assert parse_retry_after(format_datetime(now - timedelta(seconds=42), usegmt=True), now) == 0
    assert parse_retry_after("soon", now) is None
    assert parse_retry_after(None, now) is None


# --- retries ---


def test_429_then_success_waits_retry_after(api: Any) -> None:
    client, _, clock = client_for(api, [response(429, "{}", {"Retry-After": "7"}), response(200, "[1]")])
    fetched = client.get("/coins/markets", {"vs_currency": "usd"})
    assert fetched.payload == [1]
    assert fetched.attempts == 2
    assert retry_sleeps(clock) == [7.0]
    assert client.stats.requests == 2 and client.stats.retries == 1


def test_retry_after_http_date_and_cap(api: Any) -> None:
    clock_probe = FakeClock()
    later = format_datetime(clock_probe.now() + timedelta(seconds=12), usegmt=True)
    client, _, clock = client_for(
        api,
        [response(429, "{}", {"Retry-After": later}), response(503, "{}", {"Retry-After": "500"}), response(200)],
    )
    client.get("/coins/markets")
    first, second = retry_sleeps(clock)
    assert first == pytest.approx(12, abs=0.1)
    assert second == 30.0  # capped by backoff_max_seconds


def test_full_jitter_backoff_bounds(api: Any) -> None:
    client, _, clock = client_for(api, [response(500, "{}"), response(502, "{}"), response(504, "{}"), response(200)])
    client.get("/coins/markets")
    # full jitter: uniform in [0, min(cap, base * 2**(n-1))], drawn from the injected generator
    reference = random.Random(7)
    assert clock.sleeps == [reference.uniform(0, 1), reference.uniform(0, 2), reference.uniform(0, 4)]
    assert len(set(clock.sleeps)) == 3


def test_5xx_exhausted_is_source_unavailable(api: Any) -> None:
    client, session, _ = client_for(api, [response(503, "<html>busy</html>")] * 4)
    with pytest.raises(SourceUnavailableError, match=r"gave up after 4 attempt\(s\).*HTTP 503"):
        client.get("/coins/markets", {"vs_currency": "usd"})
    assert len(session.calls) == 4


def test_timeouts_and_connection_errors_are_retried(api: Any) -> None:
    client, session, _ = client_for(
        api, [requests.ReadTimeout("read timed out"), requests.ConnectionError("refused"), response(200, "[]")]
    )
    assert client.get("/ping").payload == []
    assert len(session.calls) == 3
    assert session.calls[0]["timeout"] == (api.timeout_seconds, api.timeout_seconds)
    assert session.calls[0]["allow_redirects"] is False


def test_total_time_is_bounded(api: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRYPTOPIPE_API__RETRY__TOTAL_TIMEOUT_SECONDS", "25")
    monkeypatch.setenv("CRYPTOPIPE_API__RETRY__MAX_ATTEMPTS", "20")
    api = load_settings().api
    # every attempt takes 10 s and then fails: the budget allows at most 3 attempts
    client, session, clock = client_for(api, [requests.ReadTimeout("slow")] * 20, takes=10.0)
    with pytest.raises(SourceUnavailableError, match="gave up"):
        client.get("/coins/markets")
    assert len(session.calls) <= 3
    assert clock.t - 1000.0 <= 25 + 10  # never starts an attempt after the budget
    # and a per-request timeout never exceeds what is left of the budget
    assert all(call["timeout"][0] <= 25 for call in session.calls)


def test_html_with_200_is_retried_then_invalid(api: Any) -> None:
    html = "<!DOCTYPE html><html><head><title>Just a moment...</title></head></html>"
    client, session, _ = client_for(api, [response(200, html, {"Content-Type": "text/html"})] * 4)
    with pytest.raises(SourceInvalidError, match=r"HTML page instead of JSON \('Just a moment...'"):
        client.get("/coins/markets")
    assert len(session.calls) == 4


def test_truncated_json_then_success(api: Any) -> None:
    client, _, _ = client_for(api, [response(200, '[{"id": "bitc'), response(200, "[]")])
    assert client.get("/coins/markets").payload == []


def test_html_403_is_not_retried(api: Any) -> None:
    client, session, _ = client_for(api, [response(403, "<html><title>Access denied</title></html>")])
    with pytest.raises(SourceInvalidError, match="not retried"):
        client.get("/coins/markets")
    assert len(session.calls) == 1


@pytest.mark.parametrize("code", [10002, 10010, 10011])
def test_rejected_key_is_not_retried_and_not_leaked(api: Any, code: int) -> None:
    body = f'{{"status": {{"error_code": {code}, "error_message": "Invalid API Key"}}}}'
    client, session, _ = client_for(api, [response(401, body)])
    with pytest.raises(SourceInvalidError) as info:
        client.get("/coins/markets", {"vs_currency": "usd"})
    assert "rejected the API key" in str(info.value) and str(code) in str(info.value)
    assert KEY not in str(info.value)
    assert len(session.calls) == 1
    assert session.calls[0]["headers"]["x-cg-demo-api-key"] == KEY  # sent in the header only
    assert KEY not in session.calls[0]["url"]


def test_redirect_not_followed(api: Any) -> None:
    client, session, _ = client_for(api, [response(302, "", {"Location": "https://evil.example/"})])
    with pytest.raises(SourceInvalidError, match=r"redirect to https://evil\.example/ not followed"):
        client.get("/coins/markets")
    assert len(session.calls) == 1


def test_recorded_headers_and_url_hold_no_secret(api: Any) -> None:
    headers = {"Set-Cookie": "session=abc", "X-Echo": f"key={KEY}", "Server": "cloudflare", "Age": "12"}
    client, _, _ = client_for(api, [response(200, "[]", headers)])
    fetched = client.get("/coins/markets", {"vs_currency": "usd", "ids": "bitcoin,ethereum"})
    assert fetched.headers == {"age": "12", "content-type": "application/json", "server": "cloudflare"}
    assert fetched.url == "http://127.0.0.1:9/api/v3/coins/markets?vs_currency=usd&ids=bitcoin%2Cethereum"
    assert safe_headers({"Authorization": "Bearer x", "X-Cg-Pro-Api-Key": "k"}, None) == {}

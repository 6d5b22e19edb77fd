"""The HTTP client every CoinGecko caller shares: rate-limited, retrying, time-bounded, key-safe.

- A token bucket spaces requests to ``api.rate_limit_per_minute`` across threads, so ingest and backfill
  stay under the plan's limit instead of discovering it through 429s.
- Retries (tenacity) on 429, 408, 5xx, timeouts, connection errors and transient invalid bodies, with
  exponential backoff and full jitter; a ``Retry-After`` (seconds or HTTP date) is honoured, capped by
  ``retry.backoff_max_seconds``. All attempts of one request share ``retry.total_timeout_seconds``.
- Every body goes through a classifier (``cryptopipe.core.coingecko.classify_response``) that returns the
  decoded JSON or raises a typed error: nothing that is not data reaches a parser.
- Time is injectable (``Clock``): unit tests run the retry policy without really sleeping.
- The API key travels only in its header; it is never put in a URL, a message or a recorded header, and
  redirects are not followed (a custom key header would be forwarded to wherever a redirect points).
"""

from __future__ import annotations

import email.utils
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import requests
import tenacity

from cryptopipe import __version__
from cryptopipe.core.config import ApiSettings
from cryptopipe.core.errors import SourceInvalidError, SourceUnavailableError

log = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({408, 429}) | frozenset(range(500, 600))
# Response headers never recorded in sidecars: they can carry credentials or session state.
_SECRET_HEADER_WORDS = ("cookie", "authorization", "api-key", "apikey", "token", "secret")


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...

    def now(self) -> datetime: ...


class SystemClock:
    """The real clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)

    def now(self) -> datetime:
        return datetime.now(UTC)


class TokenBucket:
    """Thread-safe token bucket: ``rate_per_minute`` tokens a minute, at most ``capacity`` saved up.

    A caller that finds no token reserves the next one (the balance goes negative) and sleeps outside the
    lock until it is due, so concurrent callers queue fairly and never exceed the rate together.
    The default capacity of 1 means evenly spaced requests: CoinGecko counts per minute, bursts invite 429s.
    """

    def __init__(self, rate_per_minute: float, clock: Clock, capacity: float = 1.0) -> None:
        if rate_per_minute <= 0 or capacity < 1:
            raise ValueError("rate_per_minute must be > 0 and capacity >= 1")
        self.rate = rate_per_minute / 60.0
        self.capacity = capacity
        self.clock = clock
        self._tokens = capacity
        self._stamp = clock.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token, sleeping until it is available; return the seconds waited."""
        with self._lock:
            now = self.clock.monotonic()
            self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= 1.0
            wait = 0.0 if self._tokens >= 0 else -self._tokens / self.rate
        self.clock.sleep(wait)
        return wait


class RetryableError(Exception):
    """A transient failure of one attempt: retried, then reported as a typed error.

    ``invalid`` marks a body that was not data (HTML with 200, truncated JSON): if it is still the last
    outcome when the retries run out, the failure is SourceInvalidError (7), otherwise SourceUnavailableError (4).
    """

    def __init__(self, message: str, *, retry_after: float | None = None, invalid: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.invalid = invalid


# (status, headers, body, where) -> decoded JSON; raises SourceInvalidError or RetryableError.
Classifier = Callable[[int, Mapping[str, str], bytes, str], Any]


@dataclass(frozen=True)
class Fetched:
    """One successful response, with what a raw-page sidecar records."""

    path: str
    url: str  # full request URL with query string; never contains the key
    params: dict[str, str]
    status: int
    headers: dict[str, str]  # response headers minus secrets
    body: bytes
    payload: Any
    fetched_at: datetime
    attempts: int


@dataclass
class ClientStats:
    requests: int = 0
    retries: int = 0
    rate_limit_wait_seconds: float = 0.0
    retry_wait_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **amounts: float) -> None:
        with self._lock:
            for name, amount in amounts.items():
                setattr(self, name, getattr(self, name) + amount)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date; None if absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def safe_headers(headers: Mapping[str, str], secret: str | None) -> dict[str, str]:
    """Response headers fit to store: lower-cased names, sorted, credentials and the key's value removed."""
    kept = {}
    for name, value in headers.items():
        lower = name.lower()
        if any(word in lower for word in _SECRET_HEADER_WORDS):
            continue
        if secret and secret in value:
            continue
        kept[lower] = value
    return dict(sorted(kept.items()))


class HttpClient:
    """GET JSON from the configured CoinGecko base URL; see the module docstring for the policy."""

    def __init__(
        self,
        api: ApiSettings,
        classify: Classifier,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        session: requests.Session | None = None,
    ) -> None:
        self.api = api
        self.base_url = api.effective_base_url.rstrip("/")
        self.classify = classify
        self.clock: Clock = clock or SystemClock()
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self.bucket = TokenBucket(api.rate_limit_per_minute, self.clock)
        self.stats = ClientStats()
        self._key = api.key.get_secret_value() if api.key is not None else None
        self.session = session or requests.Session()
        self.session.headers.update({"Accept": "application/json", "User-Agent": f"cryptopipe/{__version__}"})
        if self._key and api.key_header:
            self.session.headers[api.key_header] = self._key

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.session.close()

    def url_for(self, path: str, params: Mapping[str, str]) -> str:
        prepared = requests.Request("GET", self.base_url + path, params=dict(params)).prepare()
        return str(prepared.url)

    # --- the retry policy (tenacity callbacks) ---

    def _wait(self, state: tenacity.RetryCallState) -> float:
        retry = self.api.retry
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RetryableError) and exc.retry_after is not None:
            return min(exc.retry_after, retry.backoff_max_seconds)
        ceiling = min(retry.backoff_max_seconds, retry.backoff_seconds * 2 ** (state.attempt_number - 1))
        return self.rng.uniform(0, ceiling)  # full jitter: spreads out clients that failed together

    def _stop(self, deadline: float) -> Callable[[tenacity.RetryCallState], bool]:
        def stop(state: tenacity.RetryCallState) -> bool:
            if state.attempt_number >= self.api.retry.max_attempts:
                return True
            # tenacity computes the wait first: give up now rather than sleep past the total budget.
            return self.clock.monotonic() + (state.upcoming_sleep or 0.0) >= deadline

        return stop

    def _before_sleep(self, path: str) -> Callable[[tenacity.RetryCallState], None]:
        def note(state: tenacity.RetryCallState) -> None:
            exc = state.outcome.exception() if state.outcome else None
            self.stats.add(retries=1, retry_wait_seconds=state.upcoming_sleep)
            log.warning(
                "retrying request",
                extra={
                    "path": path,
                    "attempt": state.attempt_number,
                    "max_attempts": self.api.retry.max_attempts,
                    "wait_seconds": round(state.upcoming_sleep, 3),
                    "reason": str(exc),
                },
            )

        return note

    # --- one request ---

    def get(
        self, path: str, params: Mapping[str, str] | None = None, check: Callable[[Any], None] | None = None
    ) -> Fetched:
        """GET ``base_url + path``; the decoded, classified JSON or a typed error.

        ``check`` may inspect the decoded payload and raise RetryableError (e.g. an empty first page of a
        ranking, which is a glitch, not data) or a typed error.
        """
        query = {k: str(v) for k, v in (params or {}).items()}
        url = self.url_for(path, query)
        deadline = self.clock.monotonic() + self.api.retry.total_timeout_seconds
        started = self.clock.monotonic()
        attempts = 0

        def attempt() -> Fetched:
            nonlocal attempts
            attempts += 1
            return self._attempt(path, url, query, deadline, attempts, check=check)

        retrying = tenacity.Retrying(
            sleep=self.clock.sleep,
            stop=self._stop(deadline),
            wait=self._wait,
            retry=tenacity.retry_if_exception_type(RetryableError),
            before_sleep=self._before_sleep(path),
            reraise=True,
        )
        try:
            return retrying(attempt)
        except RetryableError as exc:
            elapsed = self.clock.monotonic() - started
            summary = f"GET {url}: gave up after {attempts} attempt(s) in {elapsed:.1f} s; last: {exc.message}"
            if exc.invalid:
                raise SourceInvalidError(summary, path=path) from None
            raise SourceUnavailableError(summary, path=path) from None

    def _attempt(
        self,
        path: str,
        url: str,
        query: dict[str, str],
        deadline: float,
        attempt_no: int,
        *,
        check: Callable[[Any], None] | None,
    ) -> Fetched:
        self.stats.add(rate_limit_wait_seconds=self.bucket.acquire())
        remaining = deadline - self.clock.monotonic()
        if remaining <= 0:
            raise RetryableError(f"total time budget of {self.api.retry.total_timeout_seconds} s used up")
        timeout = min(self.api.timeout_seconds, remaining)
        self.stats.add(requests=1)
        try:
            response = self.session.get(
                self.base_url + path, params=query, timeout=(timeout, timeout), allow_redirects=False
            )
            body = response.content  # read inside the try: a body that stalls is a read timeout
        except requests.Timeout:
            raise RetryableError(f"no response within {timeout:.1f} s (timeout)") from None
        except requests.ConnectionError as exc:
            reason = "timed out" if "timed out" in str(exc).lower() else f"connection error ({type(exc).__name__})"
            raise RetryableError(f"{reason} talking to {self.base_url}") from None
        except requests.RequestException as exc:
            raise RetryableError(f"request failed ({type(exc).__name__})") from None
        status = response.status_code
        where = f"GET {url} (HTTP {status})"
        if status in RETRY_STATUSES:
            retry_after = parse_retry_after(response.headers.get("Retry-After"), self.clock.now())
            hint = f", Retry-After {retry_after:g} s" if retry_after is not None else ""
            label = "rate limited" if status == 429 else "server error" if status >= 500 else "request timeout"
            raise RetryableError(f"HTTP {status} {label}{hint}", retry_after=retry_after)
        payload = self.classify(status, response.headers, body, where)  # raises typed errors
        if check is not None:
            check(payload)
        return Fetched(
            path=path,
            url=url,
            params=query,
            status=status,
            headers=safe_headers(response.headers, self._key),
            body=body,
            payload=payload,
            fetched_at=self.clock.now(),
            attempts=attempt_no,
        )

"""The replay HTTP server: CoinGecko API v3 under /api/v3, admin endpoints under /__replay/."""

from __future__ import annotations

import datetime as dt
import email.utils
import json
import select
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from . import api
from .api import BadRequestError, Market, Reply
from .dataset import get_dataset
from .faults import Fault, FaultPlan, Rule, apply_drift, apply_drop, load_rules_file, parse_rules
from .timeutil import check_served, iso_ms_z, parse_iso, to_ms

BASE_PATH = "/api/v3"
ADMIN_PATH = "/__replay"
KEY_HEADERS = {"demo": "x-cg-demo-api-key", "pro": "x-cg-pro-api-key"}
KEY_QUERY = {"demo": "x_cg_demo_api_key", "pro": "x_cg_pro_api_key"}
MAX_ADMIN_BODY = 1 << 20

_DATA_DIR = Path(__file__).parent / "data"
ERROR_429_BODY = {
    "status": {
        "error_code": 429,
        "error_message": "You've exceeded the Rate Limit. Please visit https://www.coingecko.com/en/api/pricing "
        "to subscribe to our API plans for higher rate limits.",
    }
}
KEY_MISSING_MESSAGE = (
    "API Key Missing. Please make sure you're using the right authentication method. For Pro API, please "
    "visit: https://docs.coingecko.com/reference/authentication. For Public/Demo API, please visit: "
    "https://docs.coingecko.com/v3.0.1/reference/authentication"
)
KEY_INVALID_MESSAGE = "Invalid API Key. Please check your key in the developer dashboard."
KEY_WRONG_HOST = {
    "demo": (10010, "If you are using Pro API key, please change your root URL from api.coingecko.com to "
             "pro-api.coingecko.com"),
    "pro": (10011, "If you are using Demo API key, please change your root URL from pro-api.coingecko.com "
            "to api.coingecko.com"),
}  # fmt: skip
_GATEWAY_TITLES = {502: "502 Bad Gateway", 503: "503 Service Temporarily Unavailable", 504: "504 Gateway Time-out"}
CLOUDFLARE_ACCESS_DENIED = """<!DOCTYPE html>
<!--[if lt IE 7]> <html class="no-js ie6 oldie" lang="en-US"> <![endif]-->
<!--[if IE 7]>    <html class="no-js ie7 oldie" lang="en-US"> <![endif]-->
<!--[if IE 8]>    <html class="no-js ie8 oldie" lang="en-US"> <![endif]-->
<!--[if gt IE 8]><!--> <html class="no-js" lang="en-US"> <!--<![endif]-->
<head>
<title>Access denied | api.coingecko.com used Cloudflare to restrict access</title>
<meta charset="UTF-8" />
<meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
<meta name="robots" content="noindex, nofollow" />
</head>
<body>
<div id="cf-wrapper">
<div id="cf-error-details" class="cf-error-details-wrapper">
<h1 data-translate="block_headline">Sorry, you have been blocked</h1>
<h2 class="cf-subheadline"><span data-translate="unable_to_access">You are unable to access</span> api.coingecko.com</h2>
<p>Error code: 1020</p>
<span class="cf-footer-item">Performance &amp; security by Cloudflare</span>
</div>
</div>
</body>
</html>
"""  # noqa: E501


def gateway_html(status: int) -> str:
    """A Cloudflare gateway error page (what a 502/503/504 from CoinGecko's CDN looks like)."""
    title = _GATEWAY_TITLES[status]
    return (
        f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n<center><h1>{title}</h1></center>\r\n"
        "<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n"
    )


class Clock:
    """The server clock: the wall clock (UTC), a fixed time, or a time that runs from a set point."""

    def __init__(self, value: dt.datetime | str | None = None, running: bool = False) -> None:
        self._lock = threading.Lock()
        self._fixed: int | None = None
        self._set_at = 0.0
        self._running = False
        self.set(value, running)

    def set(self, value: dt.datetime | str | int | None, running: bool = False) -> None:
        """None = wall clock; a datetime, ISO string or epoch ms = that time (fixed, or running from it)."""
        if value is None:
            ms = None
        elif isinstance(value, int):
            ms = value
        elif isinstance(value, dt.datetime):
            ms = to_ms(value)
        elif isinstance(value, str):
            ms = to_ms(parse_iso(value, "clock"))
        else:
            raise ValueError(f"clock: expected an ISO time, a datetime or null, got {type(value).__name__}")
        if ms is not None:
            check_served(ms, "clock")
        with self._lock:
            self._fixed, self._running, self._set_at = ms, running and ms is not None, time.monotonic()

    def now_ms(self) -> int:
        with self._lock:
            if self._fixed is None:
                return int(time.time() * 1000)
            if self._running:
                return self._fixed + int((time.monotonic() - self._set_at) * 1000)
            return self._fixed

    def describe(self) -> dict[str, Any]:
        with self._lock:
            mode = "wall" if self._fixed is None else ("running" if self._running else "fixed")
        return {"time": iso_ms_z(self.now_ms()), "mode": mode}


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 64
    replay: ReplayServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "cloudflare"
    sys_version = ""
    server: _HTTPServer

    def version_string(self) -> str:
        return "cloudflare"  # the real API's `server` header

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: requests are recorded in ReplayServer.requests instead."""

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # --- plumbing --------------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        self._method = method
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        query = parse_qs(parts.query, keep_blank_values=True)
        replay = self.server.replay
        try:
            if path == ADMIN_PATH or path.startswith(ADMIN_PATH + "/"):
                try:
                    reply = replay._admin(method, path, self._read_body())
                except BadRequestError as exc:
                    reply = exc.reply
                self._send_reply(reply)
            else:
                self._api(path, query)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_ADMIN_BODY:
            raise BadRequestError({"error": f"request body too large ({length} bytes)"}, 413)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes, content_type: str, headers: Mapping[str, str] = {}) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self._method != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def _send_reply(self, reply: Reply) -> None:
        body = reply.body if isinstance(reply.body, str | bytes) else _dumps(reply.body)
        data = body.encode() if isinstance(body, str) else body
        self._send(reply.status, data, reply.content_type, reply.headers)

    def _wait(self, seconds: float | None) -> bool:
        """Wait up to `seconds` (None = until the client leaves); False if the server stops or the
        client hung up first. Never blocks other requests or shutdown."""
        stop = self.server.replay._stopping
        deadline = time.monotonic() + (self.server.replay.max_hang_seconds if seconds is None else seconds)
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return seconds is not None
            if stop.wait(min(0.05, left)):
                break
            if seconds is None and self._client_gone():
                break
        self.close_connection = True
        return False

    def _client_gone(self) -> bool:
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            return bool(readable) and self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    # --- the API ----------------------------------------------------------------------------------

    def _api(self, path: str, query: dict[str, list[str]]) -> None:
        replay = self.server.replay
        now = replay.clock.now_ms()
        fault = replay.faults.next_fault(self.path) if path.startswith(BASE_PATH) else None
        record = replay._record(self, path, query, now, fault)
        self._record_entry: dict[str, Any] | None = record
        try:
            status = self._api_with_fault(path, query, now, fault)
        finally:
            self._record_entry = None
        replay._finish(record, status)

    def send_response(self, code: int, message: str | None = None) -> None:
        # Record the status before the client can read the response: a test that inspects the request log
        # right after its call returns must see it (recording after the body was sent raced with the client).
        entry = getattr(self, "_record_entry", None)
        if entry is not None:
            self.server.replay._finish(entry, code)
        super().send_response(code, message)

    def _api_with_fault(self, path: str, query: dict[str, list[str]], now: int, fault: Fault | None) -> int | None:
        """Serve one API request under an optional fault; the status sent (None if nothing was)."""
        kind = fault.kind if fault else "ok"
        if kind == "hang":
            self._wait(None)
            return None
        if kind == "slow" and fault and not self._wait(fault.seconds):
            return None
        early = _early_fault_reply(fault, now) if fault else None
        reply = early or self._serve(path, query, now)
        if fault and reply.status == 200 and not early:
            reply = _late_fault(reply, fault)
        if fault and fault.kind == "truncated" and reply.status == 200:
            data = _dumps(reply.body).encode()
            self._send(200, data[: max(1, len(data) // 2)], api.JSON_TYPE, reply.headers)
            return 200
        self._send_reply(reply)
        return reply.status

    def _serve(self, path: str, query: dict[str, list[str]], now: int) -> Reply:
        replay = self.server.replay
        if not path.startswith(BASE_PATH + "/"):
            return Reply(404, {"error": "Not Found"})
        rejected = replay._check_key(self.headers, query, now)
        if rejected:
            return rejected
        route = path[len(BASE_PATH) :].rstrip("/")
        market = replay.market()
        try:
            if route == "/ping":
                return api.ping()
            if route == "/coins/markets":
                return api.coins_markets(market, query, now)
            if route == "/simple/price":
                return api.simple_price(market, query, now)
            if route == "/simple/supported_vs_currencies":
                return api.supported_vs_currencies()
            if route == "/coins/list":
                return api.coins_list(market, query)
            pieces = route.split("/")
            if len(pieces) == 5 and pieces[1] == "coins" and pieces[3:] == ["market_chart", "range"]:
                limited = replay._history_limited(self.headers, query)
                return api.market_chart_range(market, pieces[2], query, now, limited)
        except BadRequestError as exc:
            return exc.reply
        return Reply(404, {"error": "Not Found"})


def _dumps(body: Any) -> str:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _early_fault_reply(fault: Fault, now: int) -> Reply | None:
    """Faults answered instead of the data (the request never reaches the API)."""
    if fault.kind == "429":
        headers = {"retry-after": f"{fault.seconds:g}"}
        if fault.reset:
            reset_ms = now + int(fault.seconds * 1000)
            headers["x-ratelimit-reset"] = email.utils.formatdate(reset_ms / 1000, usegmt=True)
        return Reply(429, dict(ERROR_429_BODY), headers)
    if fault.kind == "500":
        return Reply(500, {"error": "Internal server error"})
    if fault.kind in ("502", "503", "504"):
        return Reply(int(fault.kind), gateway_html(int(fault.kind)), content_type="text/html")
    if fault.kind in ("html", "html403"):
        status = 200 if fault.kind == "html" else 403
        return Reply(status, CLOUDFLARE_ACCESS_DENIED, content_type="text/html; charset=UTF-8")
    if fault.kind == "key_rejected":
        return Reply(401, api.error_status_body(10002, KEY_INVALID_MESSAGE, now))
    return None


def _late_fault(reply: Reply, fault: Fault) -> Reply:
    """Faults applied to a good answer's body."""
    if fault.kind == "empty":
        return Reply(200, [], reply.headers)
    if fault.kind == "drift":
        return Reply(200, apply_drift(reply.body, fault), reply.headers)
    if fault.kind == "drop":
        if isinstance(reply.body, dict) and "prices" in reply.body:
            return Reply(404, dict(api.COIN_NOT_FOUND))  # the coin's chart is gone too
        return Reply(200, apply_drop(reply.body, fault.coin), reply.headers)
    return reply


RulesInput = Iterable[Rule] | list[dict[str, Any]] | dict[str, Any] | str | Path | None


class ReplayServer:
    """A CoinGecko-compatible HTTP server on a background thread.

    >>> with ReplayServer(clock="2026-11-22T14:00:00Z") as server:
    ...     requests.get(f"{server.url}/coins/markets", params={"vs_currency": "usd"})
    """

    def __init__(
        self,
        clock: dt.datetime | str | None = None,
        faults: RulesInput = None,
        require_key: tuple[str, str] | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_hang_seconds: float = 300.0,
    ) -> None:
        if require_key is not None:
            plan, key = require_key
            if plan not in KEY_HEADERS or not key:
                raise ValueError(f"require_key: expected ('demo'|'pro', KEY), got plan {plan!r}")
        self.require_key = require_key
        self.host, self.port = host, port
        self.max_hang_seconds = max_hang_seconds
        self.clock = Clock(clock)
        self.faults = FaultPlan(_rules(faults))
        self._requests: list[dict[str, Any]] = []
        self._requests_lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._market: Market | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    def start(self) -> str:
        """Bind, serve on a daemon thread, warm the dataset in the background; return the base URL."""
        if self._httpd is not None:
            raise RuntimeError("replay server already started")
        self._stopping.clear()
        httpd = _HTTPServer((self.host, self.port), _Handler)
        httpd.replay = self
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"replay-server:{self.port}", daemon=True)  # fmt: skip
        self._thread.start()
        threading.Thread(target=self.market, name="replay-dataset-warmup", daemon=True).start()
        return self.url

    def stop(self) -> None:
        """Stop serving; hanging and slow requests are released at once."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()
        httpd.shutdown()
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ReplayServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def root_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def url(self) -> str:
        """The base URL clients use, e.g. http://127.0.0.1:PORT/api/v3."""
        return self.root_url + BASE_PATH

    def market(self) -> Market:
        """The market model (builds the shared dataset on first use, ~1-3 s per process)."""
        if self._market is None:
            self._market = Market(get_dataset())
        return self._market

    # --- runtime control -------------------------------------------------------------------------

    def set_clock(self, value: dt.datetime | str | None, running: bool = False) -> None:
        self.clock.set(value, running)

    def set_faults(self, rules: RulesInput) -> None:
        self.faults.replace(_rules(rules))

    def clear_faults(self) -> None:
        self.faults.replace([])

    @property
    def requests(self) -> list[dict[str, Any]]:
        """The API requests served so far (oldest first), as recorded (key values masked)."""
        with self._requests_lock:
            return [dict(r) for r in self._requests]

    def clear_requests(self) -> None:
        with self._requests_lock:
            self._requests.clear()

    # --- internals ---------------------------------------------------------------------------------

    def _record(self, handler: _Handler, path: str, query: dict[str, list[str]], now: int,
                fault: Fault | None) -> dict[str, Any]:  # fmt: skip
        headers = {k.lower(): ("***" if k.lower() in KEY_HEADERS.values() else v) for k, v in handler.headers.items()}
        masked = {k: ("***" if k in KEY_QUERY.values() else v[-1]) for k, v in query.items()}
        with self._requests_lock:
            entry = {
                "seq": len(self._requests) + 1,
                "method": handler.command,
                "path": path,
                "query": masked,
                "headers": headers,
                "clock": iso_ms_z(now),
                "received_at": iso_ms_z(int(time.time() * 1000)),
                "fault": fault.text if fault else None,
                "status": None,
            }
            self._requests.append(entry)
        return entry

    def _finish(self, entry: dict[str, Any], status: int | None) -> None:
        with self._requests_lock:
            entry["status"] = status

    def _presented(self, headers: Any, query: Mapping[str, list[str]]) -> dict[str, str | None]:
        return {
            plan: headers.get(KEY_HEADERS[plan]) or (query.get(KEY_QUERY[plan]) or [None])[-1] for plan in KEY_HEADERS
        }

    def _check_key(self, headers: Any, query: Mapping[str, list[str]], now: int) -> Reply | None:
        """401 with CoinGecko's bodies when a required key is missing, wrong, or of the other plan."""
        if self.require_key is None:
            return None
        plan, key = self.require_key
        presented = self._presented(headers, query)
        other = "pro" if plan == "demo" else "demo"
        if presented[plan] is None and presented[other] is not None:
            code, message = KEY_WRONG_HOST[plan]
            return Reply(401, api.error_status_body(code, message, now))
        if presented[plan] is None:
            return Reply(401, api.error_status_body(10002, KEY_MISSING_MESSAGE, now))
        if presented[plan] != key:
            return Reply(401, api.error_status_body(10002, KEY_INVALID_MESSAGE, now))
        return None

    def _history_limited(self, headers: Any, query: Mapping[str, list[str]]) -> bool:
        """Keyless and Demo callers get 365 days of history; Pro (required, or a pro key sent) all of it."""
        if self.require_key is not None:
            return self.require_key[0] != "pro"
        return self._presented(headers, query)["pro"] is None

    def _admin(self, method: str, path: str, body: bytes) -> Reply:
        route = path[len(ADMIN_PATH) :].rstrip("/")
        try:
            payload = json.loads(body) if body.strip() else None
        except ValueError as exc:
            return Reply(400, {"error": f"admin body is not JSON: {exc}"})
        try:
            return self._admin_route(method, route, payload)
        except (ValueError, TypeError) as exc:
            return Reply(400, {"error": str(exc)})

    def _admin_route(self, method: str, route: str, payload: Any) -> Reply:
        if route == "/clock" and method == "GET":
            return Reply(200, self.clock.describe())
        if route == "/clock" and method == "PUT":
            if not isinstance(payload, dict) or "time" not in payload:
                raise ValueError('clock: expected a JSON body {"time": ISO or null, "running": false}')
            self.clock.set(payload["time"], bool(payload.get("running", False)))
            return Reply(200, self.clock.describe())
        if route == "/faults" and method == "GET":
            return Reply(200, {"rules": self.faults.describe()})
        if route == "/faults" and method == "PUT":
            self.faults.replace(parse_rules(payload, "PUT /__replay/faults"))
            return Reply(200, {"rules": self.faults.describe()})
        if route == "/faults" and method == "DELETE":
            self.clear_faults()
            return Reply(200, {"rules": []})
        if route == "/requests" and method == "GET":
            return Reply(200, self.requests)
        if route == "/requests" and method == "DELETE":
            self.clear_requests()
            return Reply(200, [])
        if route == "/health" and method == "GET":
            return Reply(200, {"ok": True, "clock": self.clock.describe(), "dataset_ready": self._market is not None})
        return Reply(404, {"error": f"no admin endpoint {method} {ADMIN_PATH}{route}"})


def _rules(spec: RulesInput) -> list[Rule]:
    if spec is None:
        return []
    if isinstance(spec, str | Path):
        return load_rules_file(spec)
    if isinstance(spec, list) and all(isinstance(r, Rule) for r in spec):
        return list(spec)  # type: ignore[arg-type]
    return parse_rules(spec)

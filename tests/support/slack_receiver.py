"""A local Slack incoming-webhook receiver for tests (HTTP on 127.0.0.1, ephemeral port).

Records every POSTed JSON payload and answers like Slack (`200 ok`). Use as a context manager::

    with SlackReceiver() as slack:
        conn_uri = slack.connection_json()       # for AIRFLOW_CONN_SLACK_ALERTS
        ...
        assert slack.texts() == ["..."]
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

WEBHOOK_PATH = "/services/T000/B000/XXXX"


@dataclass(frozen=True)
class ReceivedMessage:
    path: str
    payload: dict[str, Any]

    @property
    def text(self) -> str:
        return str(self.payload.get("text", ""))


class _Handler(BaseHTTPRequestHandler):
    receiver: ClassVar[SlackReceiver]

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        try:
            payload = json.loads(body or b"{}")
        except json.JSONDecodeError:
            self._answer(400, b"invalid_payload")
            return
        if self.path != WEBHOOK_PATH:
            self._answer(404, b"no_service")
            return
        self.receiver._record(ReceivedMessage(self.path, payload))
        self._answer(200, b"ok")

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


class SlackReceiver:
    """Threaded HTTP server that records Slack webhook payloads."""

    def __init__(self) -> None:
        handler = type("SlackHandler", (_Handler,), {"receiver": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="slack-receiver", daemon=True)
        self._lock = threading.Lock()
        self._messages: list[ReceivedMessage] = []

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{WEBHOOK_PATH}"

    def connection_json(self) -> str:
        """An Airflow connection (JSON form for AIRFLOW_CONN_<ID>) of type slackwebhook pointing here."""
        return json.dumps({"conn_type": "slackwebhook", "password": self.url})

    def _record(self, message: ReceivedMessage) -> None:
        with self._lock:
            self._messages.append(message)

    @property
    def messages(self) -> list[ReceivedMessage]:
        with self._lock:
            return list(self._messages)

    def texts(self) -> list[str]:
        return [m.text for m in self.messages]

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[ReceivedMessage]:
        """The messages once at least ``count`` arrived; raises TimeoutError naming what did arrive."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            messages = self.messages
            if len(messages) >= count:
                return messages
            time.sleep(0.02)
        raise TimeoutError(f"expected {count} Slack messages within {timeout}s, got {self.texts()!r}")

    def start(self) -> SlackReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> SlackReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""An HTTP proxy in front of the S3 server that can cut a write half way (tests only, 127.0.0.1).

Stages point ``CRYPTOPIPE_STORAGE__S3_ENDPOINT_URL`` at the proxy. Requests are forwarded verbatim (the Host
header too, so SigV4 signatures stay valid). ``cut_after_puts(n)`` lets ``n`` more PUTs through; the next PUT
is forwarded to S3 with only half of its body and then both connections are closed (a connection dying mid-
upload), and every later request is refused (its connection closed without an answer) until ``heal()``.
"""

from __future__ import annotations

import http.client
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "trailer", "upgrade"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    proxy: ClassVar[S3CuttingProxy]

    def _body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self) -> None:
        body = self._body()
        action = self.proxy._decide(self.command)
        if action == "refuse":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if action == "cut":
            self._send_half(body)
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._forward(body)

    def _headers_for_upstream(self, body: bytes) -> list[tuple[str, str]]:
        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"content-length"}]
        if body or self.command in ("PUT", "POST"):
            headers.append(("Content-Length", str(len(body))))
        return headers

    def _send_half(self, body: bytes) -> None:
        """Send the request head and half the body to S3, then drop the connection."""
        with socket.create_connection((self.proxy.upstream_host, self.proxy.upstream_port), timeout=5) as up:
            head = f"{self.command} {self.path} HTTP/1.1\r\n" + "".join(
                f"{k}: {v}\r\n" for k, v in self._headers_for_upstream(body)
            )
            up.sendall(head.encode("latin-1") + b"\r\n" + body[: len(body) // 2])
        self.proxy.cut_requests.append(self.path)

    def _forward(self, body: bytes) -> None:
        conn = http.client.HTTPConnection(self.proxy.upstream_host, self.proxy.upstream_port, timeout=60)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for key, value in self._headers_for_upstream(body):
                conn.putheader(key, value)
            conn.endheaders(body or None)
            response = conn.getresponse()
            data = response.read()
        except OSError:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        finally:
            conn.close()
        self.send_response_only(response.status, response.reason)
        for key, value in response.getheaders():
            if key.lower() not in HOP_BY_HOP | {"content-length"}:
                self.send_header(key, value)
        length = response.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
        self.send_header("Content-Length", length or "0")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle  # noqa: N815 - http.server names

    def log_message(self, format: str, *args: Any) -> None:
        return


class S3CuttingProxy:
    """Forwarding proxy to ``upstream`` (``http://127.0.0.1:PORT``) with a one-shot half-way write cut."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.upstream_host, self.upstream_port = parts.hostname or "127.0.0.1", int(parts.port or 80)
        handler = type("S3ProxyHandler", (_Handler,), {"proxy": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="s3-proxy", daemon=True)
        self._lock = threading.Lock()
        self._puts_left: int | None = None  # None: not armed
        self._broken = False
        self.cut_requests: list[str] = []
        self.refused = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def cut_after_puts(self, puts: int) -> None:
        with self._lock:
            self._puts_left, self._broken = puts, False

    def heal(self) -> None:
        with self._lock:
            self._puts_left, self._broken = None, False

    def _decide(self, method: str) -> str:
        with self._lock:
            if self._broken:
                self.refused += 1
                return "refuse"
            if self._puts_left is not None and method == "PUT":
                if self._puts_left == 0:
                    self._broken = True
                    return "cut"
                self._puts_left -= 1
            return "forward"

    def __enter__(self) -> S3CuttingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

"""The CoinGecko and Slack URLs cannot point data or keys anywhere but the expected hosts (or loopback).

Adversarial spellings go through the real loader (environment -> ``load_settings``), so what is proven is what
a pod would do with a bad value in its ConfigMap or Secret. And the HTTP client never follows a redirect: a
real server that redirects to another origin gets the request, the other origin gets nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from cryptopipe.core.coingecko import classify_response
from cryptopipe.core.config import COINGECKO_HOSTS, SLACK_HOSTS, ApiSettings, check_outbound_url, load_settings
from cryptopipe.core.errors import ConfigError, SourceInvalidError
from cryptopipe.core.http import HttpClient

# Each must be refused for the CoinGecko base URL: a parser/client disagreement, another host, or plain http.
BAD_API_URLS = [
    "https://api.coingecko.com@evil.com/api/v3",  # userinfo: the host is evil.com
    "https://api.coingecko.com:443@evil.com/api/v3",
    "https://evil.com@api.coingecko.com/api/v3",  # credentials in the URL at all
    "https://user:pw@api.coingecko.com/api/v3",
    "https://@api.coingecko.com/api/v3",
    "https://api.coingecko.com\\@evil.com/api/v3",  # backslash: browsers and parsers disagree
    "https://api.coingecko.com.evil.com/api/v3",  # suffix tricks
    "https://evilapi.coingecko.com/api/v3",
    "https://api.coingecko.com%2eevil.com/api/v3",
    "https://api.coingecko.com./api/v3",  # trailing dot: another name as far as TLS/SNI and our allow-list go
    "https://xn--pi-coingecko-xyz.com/api/v3",  # punycode
    "https://xn--api-coingecko-7fc.com/api/v3",
    "https://аpi.coingecko.com/api/v3",  # Cyrillic а (IDNA homograph)
    "https://api.coingecko.com:8443/api/v3",  # the right host, an unexpected port
    "https://api.coingecko.com:abc/api/v3",  # a port no client can use
    "https://api.coingecko.com:99999/api/v3",
    "http://api.coingecko.com/api/v3",  # http to the real host: the key would travel in clear
    "HTTP://API.COINGECKO.COM/api/v3",
    "http://localhost.evil.com/api/v3",  # not loopback, only looks like it
    "http://127.0.0.1.nip.io/api/v3",
    "http://127.0.0.1@evil.com/api/v3",
    "http://evil.com#@127.0.0.1/api/v3",
    "http://evil.com?@127.0.0.1/api/v3",
    "http://[::ffff:7f00:1]/api/v3",  # IPv4-mapped loopback: refused rather than trusted
    "http://0.0.0.0:8080/api/v3",  # every interface, not loopback
    "http://[::]:8080/api/v3",
    "http://2130706433/api/v3",  # 127.0.0.1 as one integer
    "http://0x7f.0.0.1/api/v3",
    " https://api.coingecko.com/api/v3",  # whitespace and control characters
    "https://api.coingecko.com/api/v3 ",
    "https://api.coingecko.com\t/api/v3",
    "https://api.coingecko.com/api/v3\r\nHost: evil.com",
    "https://api.coingecko.com\n.evil.com/api/v3",
    "https://api.coingecko.com/api/v3?x_cg_demo_api_key=leak",  # a query or fragment the client would mangle
    "https://api.coingecko.com/api/v3#frag",
    "ftp://api.coingecko.com/api/v3",
    "file:///etc/passwd",
    "//api.coingecko.com/api/v3",
    "https:api.coingecko.com/api/v3",
    "https://hooks.slack.com/api/v3",  # an allowed host, but for the other purpose
]
GOOD_API_URLS = {
    "https://api.coingecko.com/api/v3": "https://api.coingecko.com/api/v3",
    "https://api.coingecko.com/api/v3/": "https://api.coingecko.com/api/v3",
    "https://API.CoinGecko.com/api/v3": "https://API.CoinGecko.com/api/v3",  # hostnames are case-insensitive
    "https://api.coingecko.com:443/api/v3": "https://api.coingecko.com:443/api/v3",
    "http://127.0.0.1:8080/api/v3": "http://127.0.0.1:8080/api/v3",  # the replay server
    "http://localhost:8080/api/v3": "http://localhost:8080/api/v3",
    "http://LOCALHOST:8080/api/v3": "http://LOCALHOST:8080/api/v3",
    "http://[::1]:8080/api/v3": "http://[::1]:8080/api/v3",  # IPv6 loopback
    "http://127.5.6.7/api/v3": "http://127.5.6.7/api/v3",  # all of 127/8 is loopback
}
BAD_SLACK_URLS = [
    "https://hooks.slack.com@evil.com/services/T/B/SECRETPATH",
    "https://hooks.slack.com.evil.com/services/T/B/SECRETPATH",
    "https://hooks.slack.com./services/T/B/SECRETPATH",
    "http://hooks.slack.com/services/T/B/SECRETPATH",
    "https://hooks.slack.com:444/services/T/B/SECRETPATH",
    "https://xn--hooks-slack-com.evil/services/T/B/SECRETPATH",
    "https://hooks.slack.com/services/T/B/SECRETPATH ",
    "https://api.coingecko.com/services/T/B/SECRETPATH",
    "http://localhost.evil.com/services/T/B/SECRETPATH",
    "https://example.com/services/T/B/SECRETPATH",
]


@pytest.mark.parametrize("url", BAD_API_URLS)
def test_bad_api_base_url_is_a_config_error(clean_env: pytest.MonkeyPatch, url: str) -> None:
    clean_env.setenv("CRYPTOPIPE_API__BASE_URL", url)
    with pytest.raises(ConfigError, match=r"api\.base_url: .*\[from environment CRYPTOPIPE_API__BASE_URL\]"):
        load_settings()


@pytest.mark.parametrize(("url", "effective"), GOOD_API_URLS.items())
def test_expected_api_base_urls_are_accepted(clean_env: pytest.MonkeyPatch, url: str, effective: str) -> None:
    clean_env.setenv("CRYPTOPIPE_API__BASE_URL", url)
    assert load_settings().api.effective_base_url == effective


@pytest.mark.parametrize("url", BAD_SLACK_URLS)
def test_bad_slack_webhook_is_a_config_error_that_does_not_echo_it(clean_env: pytest.MonkeyPatch, url: str) -> None:
    clean_env.setenv("CRYPTOPIPE_ALERTS__SLACK_WEBHOOK_URL", url)
    with pytest.raises(ConfigError, match=r"alerts\.slack_webhook_url: ") as info:
        load_settings()
    assert "SECRETPATH" not in str(info.value)  # the webhook path is the secret


@pytest.mark.parametrize(
    "url", ["https://hooks.slack.com/services/T0/B0/abc", "http://127.0.0.1:5000/services/T0/B0/abc"]
)
def test_slack_webhook_on_slack_or_loopback_is_accepted(clean_env: pytest.MonkeyPatch, url: str) -> None:
    clean_env.setenv("CRYPTOPIPE_ALERTS__SLACK_WEBHOOK_URL", url)
    webhook = load_settings().alerts.slack_webhook_url
    assert webhook is not None and webhook.get_secret_value() == url


@pytest.mark.parametrize("url", BAD_API_URLS + BAD_SLACK_URLS)
def test_no_url_is_accepted_for_a_host_it_does_not_name(url: str) -> None:
    """Whatever check_outbound_url accepts, the host the HTTP client would dial is an allowed one or loopback."""
    from urllib.parse import urlsplit

    import requests

    for hosts in (COINGECKO_HOSTS, SLACK_HOSTS):
        try:
            accepted = check_outbound_url(url, hosts)
        except ValueError:
            continue
        dialed = urlsplit(requests.Request("GET", accepted + "/x").prepare().url).hostname
        assert dialed in hosts or dialed in {"127.0.0.1", "::1", "localhost"}, (url, dialed)


# --- redirects over real HTTP ---


class _Recorder(ThreadingHTTPServer):
    def __init__(self, redirect_to: str | None, status: int) -> None:
        self.redirect_to, self.status, self.seen = redirect_to, status, []  # type: ignore[var-annotated]
        super().__init__(("127.0.0.1", 0), _Handler)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: _Recorder

    def do_GET(self) -> None:
        self.server.seen.append({"path": self.path, "headers": dict(self.headers)})
        if self.server.redirect_to:
            self.send_response(self.server.status)
            self.send_header("Location", self.server.redirect_to + self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            body = b'{"gecko_says": "elsewhere"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def _serving(server: _Recorder) -> threading.Thread:
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def elsewhere() -> Iterator[_Recorder]:
    server = _Recorder(None, 200)
    _serving(server)
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_client_does_not_follow_a_redirect_to_another_origin(elsewhere: _Recorder, status: int) -> None:
    origin = _Recorder(elsewhere.base + "/api/v3", status)
    _serving(origin)
    try:
        api = ApiSettings(plan="demo", key="CG-planted-redirect-key", base_url=origin.base + "/api/v3")
        with HttpClient(api, classify_response) as client, pytest.raises(SourceInvalidError, match=r"redirect to "):
            client.get("/ping")
    finally:
        origin.shutdown()
        origin.server_close()
    assert [r["path"] for r in origin.seen] == ["/api/v3/ping"]
    assert origin.seen[0]["headers"].get("x-cg-demo-api-key") == "CG-planted-redirect-key"  # the key was sent
    assert elsewhere.seen == []  # ... and nothing, key included, reached the other origin

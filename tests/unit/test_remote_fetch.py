"""http(s) image URIs: SSRF guard, pinned address, deadline and size cap, on a real local server.

The server runs on loopback, which the guard refuses by default: tests that
need a successful fetch allow private addresses, and the tests of the guard
check that the server never saw a request. The only stand-in is DNS
(``RemoteFetch.resolve``), to give a name the answers a rebinding attack would.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from streams.image_source import ImageSourceError, read_image_bytes
from streams.remote_fetch import FetchError, RemoteFetch, address_allowed, fetch, parse_networks
from streams.schemas import ImageUploaded

BODY = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 8  # 2056 bytes
MAX = 4096
ALLOW = RemoteFetch(timeout_s=2.0, allow_private=True)


class _Handler(BaseHTTPRequestHandler):
    requests: list[tuple[str, str]]

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        self.requests.append((self.path, self.headers.get("Host", "")))
        if self.path == "/img":
            self._send(200, BODY)
        elif self.path == "/big":
            self.send_response(200)
            self.send_header("Content-Length", str(10 * MAX))
            self.end_headers()
            self.wfile.write(b"x" * MAX)
        elif self.path == "/unannounced":  # no Content-Length: read until close
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            for _ in range(4):
                self.wfile.write(b"y" * MAX)
        elif self.path == "/slow":
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            try:
                for _ in range(100):  # a byte every 0.1 s: each read is quick, the whole is not
                    self.wfile.write(b"z")
                    self.wfile.flush()
                    time.sleep(0.1)
            except ConnectionError:
                pass  # the client gave up at its deadline, as it should
        elif self.path == "/slow-headers":  # status line and headers, a byte at a time
            try:
                for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\nX-Padding: " + b"p" * 60:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.05)
            except ConnectionError:
                pass  # the client gave up at its deadline, as it should
        elif self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/img")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self._send(404, b"no")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, list[tuple[str, str]]]]:
    requests: list[tuple[str, str]] = []
    handler = type("Handler", (_Handler,), {"requests": requests})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", requests
    httpd.shutdown()
    httpd.server_close()


def _code(url: str, policy: RemoteFetch, max_bytes: int = MAX) -> str:
    with pytest.raises(FetchError) as info:
        fetch(url, max_bytes, policy)
    return info.value.code


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata service
        "100.64.0.1",  # carrier-grade NAT
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "192.0.2.1",  # documentation range
        "::1",
        "::",
        "fe80::1%eth0",
        "fc00::1",
        "::ffff:127.0.0.1",  # IPv4-mapped loopback
        "::ffff:169.254.169.254",
        "ff02::1",
        "64:ff9b::7f00:1",  # NAT64 to 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 to the metadata service
        "64:ff9b:1::1",  # local-use NAT64
        "::7f00:1",  # IPv4-compatible 127.0.0.1
        "::ffff:0:7f00:1",  # IPv4-translated 127.0.0.1
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "2002:c0a8:101::1",  # 6to4 of 192.168.1.1
        "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
    ],
)
def test_internal_addresses_are_refused(address: str) -> None:
    assert not address_allowed(address, allow_private=False)


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "151.101.1.69", "2606:4700:4700::1111", "64:ff9b::808:808", "2002:808:808::1"],
)
def test_global_addresses_are_allowed(address: str) -> None:
    assert address_allowed(address, allow_private=False)


def test_allow_private_still_refuses_unspecified_and_multicast() -> None:
    assert address_allowed("127.0.0.1", allow_private=True)
    assert address_allowed("10.0.0.7", allow_private=True)
    assert not address_allowed("0.0.0.0", allow_private=True)
    assert not address_allowed("224.0.0.1", allow_private=True)


def test_allowed_networks_open_only_themselves() -> None:
    networks = parse_networks("127.0.0.1/32, fd00:1::/64")
    assert address_allowed("127.0.0.1", False, networks)
    assert address_allowed("fd00:1::5", False, networks)
    assert address_allowed("8.8.8.8", False, networks)
    for refused in ("127.0.0.2", "10.0.0.1", "169.254.169.254", "64:ff9b::a9fe:a9fe", "fd00:2::1"):
        assert not address_allowed(refused, False, networks), refused
    with pytest.raises(ValueError):
        parse_networks("10.0.0.0/33")


def test_loopback_url_is_refused_before_any_request(server) -> None:
    base, requests = server
    before = len(requests)
    assert _code(f"{base}/img", RemoteFetch(timeout_s=2.0)) == "forbidden_address"
    port = base.rsplit(":", 1)[1]
    assert _code(f"http://localhost:{port}/img", RemoteFetch(timeout_s=2.0)) == "forbidden_address"
    assert len(requests) == before


def test_allowed_fetch_returns_the_body(server) -> None:
    base, _ = server
    assert fetch(f"{base}/img", MAX, ALLOW) == BODY


def test_resolves_once_and_connects_to_the_checked_address(server) -> None:
    base, requests = server
    port = int(base.rsplit(":", 1)[1])
    calls: list[str] = []

    def resolve(host: str, _port: int) -> list[str]:
        calls.append(host)
        return ["127.0.0.1"]

    policy = RemoteFetch(timeout_s=2.0, allow_private=True, resolve=resolve)
    assert fetch(f"http://images.example:{port}/img", MAX, policy) == BODY
    assert calls == ["images.example"]
    assert requests[-1] == ("/img", f"images.example:{port}")  # Host is the name, not the IP


def test_dns_rebinding_cannot_reach_loopback(server) -> None:
    """First answer public (passes the check), every later answer loopback."""
    base, requests = server
    port = int(base.rsplit(":", 1)[1])
    answers = iter([["8.8.8.8"]])

    def rebinding(host: str, _port: int) -> list[str]:
        return next(answers, ["127.0.0.1"])

    before = len(requests)
    policy = RemoteFetch(timeout_s=0.5, resolve=rebinding)
    # The connection goes to 8.8.8.8 (unreachable here), never to the rebound loopback.
    assert _code(f"http://evil.example:{port}/img", policy) in ("fetch_failed", "fetch_timeout")
    assert len(requests) == before


def test_a_mixed_answer_is_refused() -> None:
    policy = RemoteFetch(timeout_s=0.5, resolve=lambda host, port: ["8.8.8.8", "10.0.0.1"])
    assert _code("http://mixed.example/img", policy) == "forbidden_address"


def test_size_cap_with_and_without_content_length(server) -> None:
    base, _ = server
    assert _code(f"{base}/big", ALLOW) == "too_many_bytes"
    assert _code(f"{base}/unannounced", ALLOW) == "too_many_bytes"
    assert len(fetch(f"{base}/unannounced", 4 * MAX, ALLOW)) == 4 * MAX


def test_one_deadline_for_the_whole_body(server) -> None:
    base, _ = server
    started = time.monotonic()
    assert _code(f"{base}/slow", RemoteFetch(timeout_s=0.5, allow_private=True)) == "fetch_timeout"
    assert time.monotonic() - started < 2.0


def test_the_deadline_covers_a_status_line_and_headers_sent_a_byte_at_a_time(server) -> None:
    """Each byte comes well inside the socket timeout; only the whole-fetch deadline ends it
    (a 3 s deadline used to return after 15.6 s)."""
    base, _ = server
    started = time.monotonic()
    policy = RemoteFetch(timeout_s=0.5, allow_private=True)
    assert _code(f"{base}/slow-headers", policy) == "fetch_timeout"
    assert time.monotonic() - started < 2.0


def test_the_deadline_covers_a_slow_name_lookup() -> None:
    def slow(host: str, port: int) -> list[str]:
        time.sleep(2.0)
        return ["8.8.8.8"]

    started = time.monotonic()
    assert _code("http://slow.example/img", RemoteFetch(timeout_s=0.3, resolve=slow)) == (
        "fetch_timeout"
    )
    assert time.monotonic() - started < 1.5


def test_errors_redirects_and_unsupported_urls(server) -> None:
    base, requests = server
    assert _code(f"{base}/nothing", ALLOW) == "fetch_failed"
    before = len(requests)
    assert _code(f"{base}/redirect", ALLOW) == "fetch_failed"
    assert len(requests) == before + 1  # not followed
    assert _code(f"http://user:pw@{base[7:]}/img", ALLOW) == "unsupported_uri"
    assert _code("ftp://example.com/x.png", ALLOW) == "unsupported_uri"
    assert _code("http:///no-host", ALLOW) == "unsupported_uri"
    assert _code("http://[::1/x", ALLOW) == "unsupported_uri"  # urllib raises on these
    assert _code("https://[zz]/x", ALLOW) == "unsupported_uri"
    assert _code("http://example.com:99999/x", ALLOW) == "unsupported_uri"
    assert _code("http://name.invalid/x", ALLOW) == "fetch_failed"  # does not resolve


def _event(uri: str = "", image_b64: str = "") -> ImageUploaded:
    return ImageUploaded(
        image_id="img-1", owner_id="o", uploaded_at=1.0, uri=uri, image_b64=image_b64
    )


def test_image_source_uses_the_policy(server, tmp_path) -> None:
    base, _ = server
    event = _event(uri=f"{base}/img")
    assert read_image_bytes(event, [tmp_path], MAX, remote=ALLOW) == BODY
    with pytest.raises(ImageSourceError) as refused:
        read_image_bytes(event, [tmp_path], MAX, remote=RemoteFetch(timeout_s=1.0))
    assert refused.value.code == "forbidden_address"
    with pytest.raises(ImageSourceError) as unsupported:
        read_image_bytes(event, [tmp_path], MAX)  # no policy: http is off
    assert unsupported.value.code == "unsupported_uri"


def test_inline_images_have_their_own_limit(tmp_path) -> None:
    import base64

    event = _event(image_b64=base64.b64encode(b"x" * 300).decode())
    assert read_image_bytes(event, [tmp_path], MAX, max_inline_bytes=300) == b"x" * 300
    with pytest.raises(ImageSourceError) as info:
        read_image_bytes(event, [tmp_path], MAX, max_inline_bytes=299)
    assert info.value.code == "too_many_bytes"

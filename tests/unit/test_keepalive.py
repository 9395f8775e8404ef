"""The scatter's keep-alive connections, against a real local HTTP/1.1 server:
reused between requests, renewed when the server closed an idle one, an
unreachable server is an OSError; and the answer reader on real sockets."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from streams.broker import free_port
from streams.keepalive import Answer, ClosedEarlyError, KeepAliveError, KeepAlivePool, read_answer


class Echo(BaseHTTPRequestHandler):
    """Answers a POST with its body reversed; counts connections."""

    protocol_version = "HTTP/1.1"
    connections: list[int] = []
    close_after_answer = False

    def setup(self) -> None:
        super().setup()
        Echo.connections.append(self.client_address[1])

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-test")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[::-1])
        if Echo.close_after_answer:  # as a server whose keep-alive timeout ran out
            self.close_connection = True

    def do_GET(self) -> None:  # answers with the path it was asked, as the server read it
        body = self.path.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Echo.connections, Echo.close_after_answer = [], False
    httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Echo)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_connections_are_kept_between_requests(server: str) -> None:
    pool = KeepAlivePool(server, timeout_s=5)
    answers = [pool.post("/x", f"body-{n}".encode(), "application/x-test") for n in range(5)]
    assert [a.body for a in answers] == [f"body-{n}".encode()[::-1] for n in range(5)]
    assert answers[0].status == 200 and answers[0].content_type == "application/x-test"
    assert len(Echo.connections) == 1
    pool.close()


def test_gets_share_the_kept_connection_with_posts(server: str) -> None:
    pool = KeepAlivePool(server, timeout_s=5)
    assert pool.post("/x", b"ab", "application/x-test").body == b"ba"
    answer = pool.get("/v1/shard/images/a%2Fb%0D%0AX-Injected%3A%201")
    assert answer.status == 200 and answer.body == b"/v1/shard/images/a%2Fb%0D%0AX-Injected%3A%201"
    assert len(Echo.connections) == 1
    pool.close()


@pytest.mark.parametrize(
    "path", ["/images/a b", "/images/a\r\nX-Injected: 1", "images/a", "/images/\u00e9", "/a\x7f"]
)
def test_a_path_that_could_break_the_request_line_is_refused(server: str, path: str) -> None:
    pool = KeepAlivePool(server, timeout_s=5)
    with pytest.raises(ValueError, match="quoted printable ASCII"):
        pool.get(path)
    with pytest.raises(ValueError, match="quoted printable ASCII"):
        pool.post(path, b"", "application/x-test")
    assert Echo.connections == []  # nothing was sent
    pool.close()


def test_a_connection_the_server_closed_is_renewed(server: str) -> None:
    pool = KeepAlivePool(server, timeout_s=5)
    Echo.close_after_answer = True  # the server closes silently after each answer
    for n in range(3):
        assert pool.post("/x", b"ab%d" % n, "application/x-test").body == b"%dba" % n
    assert len(Echo.connections) == 3
    pool.close()


def test_threads_share_the_pool(server: str) -> None:
    pool = KeepAlivePool(server, timeout_s=5, idle=4)
    bodies: list[bytes] = []

    def ask(n: int) -> None:
        for m in range(10):
            bodies.append(pool.post("/x", b"%d-%d" % (n, m), "application/x-test").body)

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(bodies) == sorted((b"%d-%d" % (n, m))[::-1] for n in range(6) for m in range(10))
    assert len(Echo.connections) <= 6
    pool.close()


def test_an_unreachable_server_is_an_oserror() -> None:
    pool = KeepAlivePool(f"http://127.0.0.1:{free_port()}", timeout_s=2)
    with pytest.raises(KeepAliveError):
        pool.post("/x", b"a", "application/x-test")
    with pytest.raises(ValueError, match="http://host:port"):
        KeepAlivePool("https://example.com", timeout_s=1)


def _answer_of(raw: bytes, pieces: int = 1) -> tuple[Answer, bool]:
    """``read_answer`` over a real socket pair, the bytes sent in ``pieces`` parts
    and the sending side shut after them."""
    mine, theirs = socket.socketpair()
    mine.settimeout(10)
    step = -(-len(raw) // pieces)

    def send() -> None:
        for i in range(0, len(raw), step):
            theirs.sendall(raw[i : i + step])
        theirs.shutdown(socket.SHUT_WR)

    with mine, theirs:
        sender = threading.Thread(target=send)
        sender.start()
        try:
            return read_answer(mine)
        finally:
            sender.join()


def test_answers_are_read_whole_and_strictly() -> None:
    body = b"x" * 100_000
    raw = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-a\r\ncontent-length: %d\r\n\r\n" % len(
        body
    )
    answer, keep = _answer_of(raw + body, pieces=7)
    assert (answer.status, answer.content_type, answer.body, keep) == (
        200,
        "application/x-a",
        body,
        True,
    )
    closing = (
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 2\r\nConnection: close\r\n\r\nno"
    )
    assert _answer_of(closing) == (Answer(500, "", b"no"), False)
    for broken, message in [
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n", "chunked"),
        (b"HTTP/1.1 200 OK\r\n\r\n", "Content-Length"),
        (b"SSH-2.0-OpenSSH\r\n\r\n", "status line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nab", "more bytes"),
    ]:
        with pytest.raises(KeepAliveError, match=message):
            _answer_of(broken)
    with pytest.raises(ClosedEarlyError):
        _answer_of(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")

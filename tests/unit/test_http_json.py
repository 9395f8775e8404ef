"""request_json against a real local HTTP server: body, headers, answers that are not objects."""

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from streams.http_json import request_json


class Echo(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self._answer(
            {"method": "POST", "type": self.headers["Content-Type"], "body": body.decode()}
        )

    def do_GET(self) -> None:
        self._answer([1, 2] if self.path == "/list" else {"method": "GET"})

    def _answer(self, payload: object) -> None:
        data = json.dumps(payload).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_json_body_is_encoded_with_its_content_type(url: str) -> None:
    answer = request_json(url + "/x", "POST", json_body={"a": [1]})
    assert answer == {"method": "POST", "type": "application/json", "body": '{"a": [1]}'}


def test_raw_data_keeps_the_callers_content_type(url: str) -> None:
    answer = request_json(
        url + "/x",
        "POST",
        data=b"k=3",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert answer["type"] == "application/x-www-form-urlencoded" and answer["body"] == "k=3"


def test_an_answer_that_is_not_an_object_is_refused(url: str) -> None:
    assert request_json(url + "/obj") == {"method": "GET"}
    with pytest.raises(ValueError, match="not a JSON object"):
        request_json(url + "/list")

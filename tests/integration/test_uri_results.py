"""Images a backend published straight to Kafka: results carry their URI, and they have
thumbnails, fetched from the URI (served here by a local HTTP server) or kept by the
worker for inline bytes; updates from the log hide and delete them, copies included."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Producer
from PIL import Image
from playwright.sync_api import Page

from visearch.catalog.store import ORIGIN_LOG
from visearch.client import Client
from visearch.local.stack import LocalStack

pytestmark = pytest.mark.integration
# The image server of these tests is on loopback: open it, and it alone.
STACK_SETTINGS = {"image_fetch_allow_networks": "127.0.0.0/8"}
TIMEOUT_S = 60.0


class ImageServer:
    """A local http server of photos by path, counting the requests for each."""

    def __init__(self, photos: dict[str, bytes]) -> None:
        self.photos = dict(photos)
        self.requests: dict[str, int] = {}
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests[self.path] = server.requests.get(self.path, 0) + 1
                body = server.photos.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args: Any) -> None:
                pass

        self._http = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._http.server_port}"
        threading.Thread(target=self._http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()


@pytest.fixture(scope="module")
def photos(photo_paths: list[Path]) -> dict[str, bytes]:
    return {f"/photo-{n}.jpg": photo_paths[20 + n].read_bytes() for n in range(5)}


@pytest.fixture(scope="module")
def server(photos: dict[str, bytes]) -> Iterator[ImageServer]:
    running = ImageServer(photos)
    yield running
    running.close()


@pytest.fixture(scope="module")
def backend(stack: LocalStack) -> Callable[[str, dict[str, Any]], None]:
    """Publish a record as a backend team would: confluent-kafka, keyed by image id."""
    producer = Producer({"bootstrap.servers": stack.settings.kafka.bootstrap_servers})

    def publish(topic: str, record: dict[str, Any]) -> None:
        producer.produce(topic, key=record["image_id"].encode(), value=json.dumps(record).encode())
        assert producer.flush(10) == 0, "the broker did not acknowledge"

    return publish


def _upload(image_id: str, **source: Any) -> dict[str, Any]:
    return {"image_id": image_id, "owner_id": "shop9", "uploaded_at": time.time(), **source}


def _update(image_id: str, action: str) -> dict[str, Any]:
    return {"image_id": image_id, "action": action, "updated_at": time.time()}


def _eventually(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _results(site: str, photo: bytes, k: int = 5) -> list[dict[str, Any]]:
    answer = httpx.post(f"{site}/v1/search", files={"image": photo}, data={"k": str(k)})
    assert answer.status_code == 200, answer.text
    return answer.json()["results"]


def _thumbnail(site: str, image_id: str) -> httpx.Response:
    return httpx.get(f"{site}/v1/images/{image_id}/thumbnail", timeout=30)


def test_kafka_published_images_have_uris_thumbnails_and_obey_the_log(
    stack: LocalStack, site: str, server: ImageServer, photos: dict[str, bytes], backend
) -> None:
    topics = stack.settings.topics
    backend(topics.uploads, _upload("remote-1", uri=f"{server.url}/photo-0.jpg"))
    backend(topics.uploads, _upload("remote-2", uri=f"{server.url}/photo-1.jpg"))
    inline = photos["/photo-2.jpg"]
    backend(topics.uploads, _upload("inline-1", image_b64=base64.b64encode(inline).decode()))
    assert stack.wait_searchable(["remote-1", "remote-2", "inline-1"], TIMEOUT_S) == set()

    # results carry the URI the image was published with; an inline one has none
    top = _results(site, photos["/photo-0.jpg"])[0]
    assert (top["image_id"], top["uri"]) == ("remote-1", f"{server.url}/photo-0.jpg")
    inline_hit = _results(site, inline)[0]
    assert (inline_hit["image_id"], inline_hit["uri"]) == ("inline-1", None)
    with Client(site) as client:  # the Python client's typed results carry it too
        hit = client.search(photos["/photo-0.jpg"], k=1).results[0]
    assert (hit.image_id, hit.uri) == ("remote-1", f"{server.url}/photo-0.jpg")

    # a thumbnail fetched from the URI once (the worker fetched it once before), then cached
    assert server.requests["/photo-0.jpg"] == 1
    for _ in range(2):
        answer = _thumbnail(site, "remote-1")
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/jpeg"
        assert max(Image.open(io.BytesIO(answer.content)).size) <= 160
    assert server.requests["/photo-0.jpg"] == 2

    # more like this one, and a crop of it: the index's vector, then the URI's bytes
    by_id = httpx.post(f"{site}/v1/search", data={"image_id": "remote-1", "k": "3"})
    assert by_id.status_code == 200 and "remote-1" not in str(by_id.json()["results"])
    crop = {"image_id": "remote-1", "crop": "0.1,0.1,0.8,0.8", "crop_units": "relative"}
    assert httpx.post(f"{site}/v1/search", data=crop, timeout=30).status_code == 200
    assert server.requests["/photo-0.jpg"] == 3

    # the inline upload was kept by the worker: a thumbnail without any URI
    assert stack.store.metadata("inline-1").origin == ORIGIN_LOG
    assert stack.store.get("inline-1") == inline
    assert _thumbnail(site, "inline-1").status_code == 200

    # a URI that stopped answering: a clean 502 with its code, counted
    del server.photos["/photo-1.jpg"]
    gone = _thumbnail(site, "remote-2")
    assert gone.status_code == 502, gone.text
    assert gone.json()["detail"]["code"] == "image_unreachable"
    assert "fetch_failed" in gone.json()["detail"]["message"]
    assert "HTTP 404" in gone.json()["detail"]["message"]
    metrics = httpx.get(f"{site}/metrics").text
    assert 'visearch_image_uri_fetch_failures_total{code="fetch_failed"} 1.0' in metrics

    # the log's updates: private hides the URI image's thumbnail and results (it was
    # cached: the cache is consulted only after visibility), delete removes the copy
    backend(topics.updates, _update("remote-1", "private"))
    backend(topics.updates, _update("inline-1", "delete"))
    _eventually(lambda: _thumbnail(site, "remote-1").status_code == 404, "private thumbnail")
    _eventually(lambda: "inline-1" not in stack.store, "the kept copy is deleted")
    assert _thumbnail(site, "inline-1").status_code == 404
    assert "remote-1" not in [hit["image_id"] for hit in _results(site, photos["/photo-0.jpg"])]
    hidden = httpx.post(f"{site}/v1/search", data={"image_id": "remote-1"})
    assert hidden.status_code == 404


def test_the_page_shows_uri_results_with_their_thumbnails(
    stack: LocalStack,
    site: str,
    server: ImageServer,
    photos: dict[str, bytes],
    backend,
    page: Page,
    tmp_path: Path,
) -> None:
    backend(stack.settings.topics.uploads, _upload("remote-3", uri=f"{server.url}/photo-3.jpg"))
    assert stack.wait_searchable(["remote-3"], TIMEOUT_S) == set()
    query = tmp_path / "query.jpg"
    query.write_bytes(photos["/photo-3.jpg"])
    page.goto(site)
    with page.expect_response("**/v1/search"):
        page.set_input_files("#file", str(query))  # choosing a file searches
    tile = page.locator('#results .result[data-image-id="remote-3"]')
    tile.wait_for()
    source = tile.locator("a.source")
    assert source.get_attribute("href") == f"{server.url}/photo-3.jpg"
    assert source.inner_text() == server.url.removeprefix("http://")
    page.wait_for_function(
        "() => { const img = document.querySelector("
        "'#results .result[data-image-id=\"remote-3\"] img');"
        " return img && img.complete && img.naturalWidth > 0; }"
    )
    assert server.requests["/photo-3.jpg"] == 2  # the worker's fetch and the thumbnail's

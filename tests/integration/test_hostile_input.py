"""The holes found by probing a running stack from outside, each replayed against the
real server (uvicorn with the guarded protocol, the real broker, worker and shards).

Rows follow the probe's table: 1 EPS through Ghostscript, 2 huge interaction
lists, 3 decode memory, 4 slow image servers, 5 hidden images by id, 6 model
version labels, 7 bodies before the token, 8 non-ASCII tokens, 9 file URIs
naming another image, 10 IPv6 forms of IPv4 (unit-tested in test_remote_fetch,
here against the worker), 11 information in errors and headers, 12 thumbnail
caching, 13 small ones (tiny crops, auth scheme case, negative offsets,
half-sent requests). The timing rows assert the outcome (which answer, which
dead letter, what was searchable while a fetch hung), never a duration.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from bench.abuse import (
    EPS,
    HeldImageServer,
    huge_rgba_png,
    huge_sixteen_bit_png,
    raw_http,
)
from streams.dead_letters import read_dead_letters
from streams.image_source import file_uri
from streams.schemas import ImageUploaded
from visearch.local.stack import LocalStack

pytestmark = pytest.mark.integration

TOKEN = "hostile-test-token"
STACK_SETTINGS = {
    "api_token": TOKEN,
    "http_header_timeout_s": 1.0,
    "http_body_timeout_s": 2.0,
    "image_fetch_allow_networks": "127.0.0.1/32",
    "image_fetch_timeout_s": 60.0,
    "embed_event_timeout_s": 120.0,
    "max_upload_bytes": 2_000_000,
}
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _jpeg(path: Path) -> bytes:
    buffer = io.BytesIO()
    Image.open(path).convert("RGB").save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def client(site: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=site, timeout=60) as http:
        yield http


@pytest.fixture(scope="module")
def public_ids(stack: LocalStack, photo_paths: list[Path], publish) -> list[str]:  # type: ignore[no-untyped-def]
    ids = publish(stack, photo_paths[:8], "pub")
    assert stack.wait_searchable(ids, 90) == set()
    return ids


@pytest.fixture
def no_server_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """No traceback in the server's log during the test."""
    with caplog.at_level(logging.ERROR):
        yield
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert errors == [], [r.getMessage() for r in errors]


def _running_ghostscripts() -> int:
    count = 0
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            count += comm.read_text().strip() == "gs"
        except OSError:
            continue
    return count


# -------------------------------------------------------------------- row 1


def test_1_eps_is_refused_and_ghostscript_never_runs(
    client: httpx.Client, no_server_errors: None
) -> None:
    if shutil.which("gs") is None:
        pytest.fail("Ghostscript is missing: `make test` installs Debian's ghostscript")
    before = _running_ghostscripts()
    for _ in range(5):
        response = client.post("/v1/search", files={"image": ("x.eps", EPS, "image/x-eps")})
        assert response.status_code == 400
        detail = response.json()["detail"]
        assert detail["code"] == "undecodable" and "/tmp" not in detail["message"]
    assert _running_ghostscripts() == before
    assert client.get("/healthz").status_code == 200


# -------------------------------------------------------------------- row 2


def test_2_huge_interaction_lists_get_a_short_answer(
    client: httpx.Client, site: str, no_server_errors: None
) -> None:
    body = b'{"events": [' + b",".join([b"0"] * 200_000) + b"]}"
    response = client.post(
        "/v1/interactions", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422 and len(response.content) < 10_000
    assert response.json()["detail"]["code"] == "bad_request"
    # 10^6 elements (2 MB) are over the body cap: 413 before parsing.
    big = b'{"events": [' + b",".join([b"0"] * 1_000_000) + b"]}"
    response = client.post(
        "/v1/interactions", content=big, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413 and response.json()["detail"]["code"] == "too_large"
    # 500 bad events: each reason is not echoed back, the first ten are listed.
    many = {"events": [{"event_id": str(i)} for i in range(500)]}
    response = client.post("/v1/interactions", json=many)
    assert response.status_code == 422
    assert len(response.json()["detail"]["errors"]) == 10 and len(response.content) < 10_000


# -------------------------------------------------------------------- row 3


def test_3_images_beyond_the_decode_budget_are_refused_before_decoding(
    client: httpx.Client, no_server_errors: None
) -> None:
    sixteen, rgba = huge_sixteen_bit_png(), huge_rgba_png()
    assert len(sixteen) < 100_000 and len(rgba) < 200_000  # tiny files, huge images
    for data in (sixteen, rgba):
        response = client.post("/v1/search", files={"image": ("x.png", data, "image/png")})
        assert response.status_code == 400, response.text
        detail = response.json()["detail"]
        assert detail["code"] == "too_many_pixels" and "decode memory" in detail["message"]
    # One that fits the budget decodes (reduced right away) and is searched with.
    fits = huge_sixteen_bit_png(4000)
    response = client.post("/v1/search", files={"image": ("x.png", fits, "image/png")})
    assert response.status_code == 200, response.text


# -------------------------------------------------------------------- row 4


def test_4_a_slow_image_server_never_holds_back_other_uploads(
    stack: LocalStack, photo_paths: list[Path], publish
) -> None:  # type: ignore[no-untyped-def]
    """The held upload is fetched while the others, published after it, become searchable;
    released, it is embedded too, exactly once."""
    assert stack.publisher is not None
    held = HeldImageServer(_jpeg(photo_paths[20]))
    try:
        slow = ImageUploaded(
            image_id="slow-uri", owner_id="o", uploaded_at=time.time(), uri=held.url
        )
        stack.publisher.publish(stack.settings.topics.uploads, slow.image_id, slow)
        stack.publisher.flush()
        assert held.requested.wait(60)
        others = publish(stack, photo_paths[21:29], "beside-slow")
        assert stack.wait_searchable(others, 90) == set()
        assert stack.searchable_at("slow-uri") is None and not held.release.is_set()
        held.release.set()
        assert stack.wait_searchable(["slow-uri"], 90) == set()
    finally:
        held.close()


# -------------------------------------------------------------------- row 5


def test_5_hidden_images_cannot_be_searched_by_id_nor_measured(
    stack: LocalStack,
    client: httpx.Client,
    photo_paths: list[Path],
    publish,
    no_server_errors: None,
) -> None:  # type: ignore[no-untyped-def]
    private_id, flagged_id = publish(stack, photo_paths[30:32], "hidden")
    assert stack.wait_searchable([private_id, flagged_id], 90) == set()
    assert (
        client.patch(
            f"/v1/images/{private_id}", json={"action": "private"}, headers=AUTH
        ).status_code
        == 202
    )
    assert (
        client.patch(f"/v1/images/{flagged_id}", json={"action": "flag"}, headers=AUTH).status_code
        == 202
    )
    for image_id in (private_id, flagged_id, "never-uploaded"):
        for extra in ({}, {"crop": "0,0,99999,99999"}):
            response = client.post("/v1/search", data={"image_id": image_id, **extra})
            assert response.status_code == 404, response.text
            detail = response.json()["detail"]  # the same answer as an unknown id: no size
            assert detail == {"code": "unknown_image", "message": f"no image with id {image_id!r}"}


# -------------------------------------------------------------------- row 6


def test_6_unregistered_model_versions_are_one_label(
    stack: LocalStack, client: httpx.Client, public_ids: list[str], no_server_errors: None
) -> None:
    serving = client.post("/v1/search", data={"image_id": public_ids[0]}).json()["model_version"]
    now = time.time()
    events = [
        {
            "event_id": uuid.uuid4().hex,
            "user_id": "u",
            "search_id": f"s-{n}",
            "query_image_id": public_ids[0],
            "displayed_image_id": public_ids[1],
            "position": 0,
            "type": "impression",
            "timestamp": now,
            "model_version": f"junk-{n}" if n else serving,
        }
        for n in range(400)
    ]
    for start in range(0, 400, 100):
        response = client.post("/v1/interactions", json={"events": events[start : start + 100]})
        assert response.status_code == 202, response.text
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        models = {row["key"] for row in client.get("/v1/feedback").json()["by_model"]}
        if "other" in models:
            break
        time.sleep(0.2)
    assert models <= {serving, "other", ""} and "other" in models
    metrics = client.get("/metrics").text
    assert "junk-" not in metrics and 'model_version="other"' in metrics


# -------------------------------------------------------------------- row 7


def test_7_bodies_are_not_read_before_the_token_or_past_the_cap(
    site: str, no_server_errors: None
) -> None:
    boundary = b"x" * 16
    head = (
        b"POST /v1/images HTTP/1.1\r\nHost: t\r\nContent-Type: multipart/form-data; boundary="
        + boundary
        + b"\r\nContent-Length: 536870912\r\n"
    )
    # No token: 401 with the body never sent (the server does not wait for it).
    answer = raw_http(site, head + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 401") and b"unauthorized" in answer
    # With the token: 413 from the declared length, still without the body.
    answer = raw_http(site, head + f"Authorization: Bearer {TOKEN}\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 413") and b"too_large" in answer
    # A 30 MB JSON PATCH.
    patch = b"PATCH /v1/images/x HTTP/1.1\r\nHost: t\r\nContent-Length: 31457280\r\n"
    answer = raw_http(site, patch + f"Authorization: Bearer {TOKEN}\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 413")
    # Chunked, no length: cut off at the cap (2 MB + framing), not read to its end.
    chunk = b"%x\r\n%s\r\n" % (65536, b"z" * 65536)
    part = (
        b"--" + boundary + b'\r\nContent-Disposition: form-data; name="image"; filename="x"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n"
    )
    chunked = (
        b"POST /v1/search HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: multipart/form-data; boundary="
        + boundary
        + b"\r\n\r\n"
        + b"%x\r\n%s\r\n" % (len(part), part)
    )
    host, port = site.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(chunked)
        sent = 0
        try:
            while sent < 64 * 2**20:  # would be 64 MB
                sock.sendall(chunk)
                sent += 65536
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413") and sent < 16 * 2**20


# -------------------------------------------------------------------- row 8


def test_8_a_non_ascii_token_is_401_not_500(site: str, no_server_errors: None) -> None:
    request = (
        b"DELETE /v1/images/x HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer \xff\xfe"
        + TOKEN.encode()
        + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    assert raw_http(site, request).startswith(b"HTTP/1.1 401")


# ---------------------------------------------------------------- rows 9, 10


def test_9_10_upload_events_cannot_borrow_a_stored_image_or_reach_internal_addresses(
    stack: LocalStack, public_ids: list[str]
) -> None:
    assert stack.publisher is not None
    before = len(read_dead_letters(stack.settings))
    borrowed = file_uri(stack.store.path_of(public_ids[0]))
    events = {
        "borrow": ImageUploaded(
            image_id="borrower", owner_id="o", uploaded_at=time.time(), uri=borrowed
        ),
        "nat64": ImageUploaded(
            image_id="nat64",
            owner_id="o",
            uploaded_at=time.time(),
            uri="http://[64:ff9b::a9fe:a9fe]/x",
        ),
        "6to4": ImageUploaded(
            image_id="sixtofour",
            owner_id="o",
            uploaded_at=time.time(),
            uri="http://[2002:a00:1::]/x",
        ),
        "compat": ImageUploaded(
            image_id="compat", owner_id="o", uploaded_at=time.time(), uri="http://[::a00:1]/x"
        ),
    }
    for event in events.values():
        stack.publisher.publish(stack.settings.topics.uploads, event.image_id, event)
    stack.publisher.flush()
    ids = {event.image_id for event in events.values()}
    letters: dict[str, str] = {}
    deadline = time.monotonic() + 60
    while set(letters) != ids and time.monotonic() < deadline:
        for _, letter in read_dead_letters(stack.settings, from_offset=before, idle_s=0.5):
            original = json.loads(base64.b64decode(letter.original_b64))
            letters[original["image_id"]] = letter.error_code
    assert letters == {
        "borrower": "forbidden_path",
        "nat64": "forbidden_address",
        "sixtofour": "forbidden_address",
        "compat": "forbidden_address",
    }
    assert stack.searchable_at("borrower") is None


# -------------------------------------------------------------------- row 11


def test_11_answers_disclose_no_paths_addresses_or_server(
    client: httpx.Client, site: str, no_server_errors: None
) -> None:
    models = client.get("/v1/models").json()
    assert all("model_dir" not in v for v in models["versions"])
    assert all("model_dir" in v for v in client.get("/v1/models", headers=AUTH).json()["versions"])
    ready = client.get("/readyz")
    assert "127.0.0.1" not in ready.text and "bootstrap" not in ready.text
    page = client.get("/")
    assert "server" not in page.headers
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


# -------------------------------------------------------------------- row 12


def test_12_thumbnails_are_not_kept_by_shared_caches(
    client: httpx.Client, public_ids: list[str]
) -> None:
    response = client.get(f"/v1/images/{public_ids[0]}/thumbnail")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "private, no-store"


# -------------------------------------------------------------------- row 13


def test_13_small_ones(
    client: httpx.Client, site: str, public_ids: list[str], no_server_errors: None
) -> None:
    tiny = client.post("/v1/search", data={"image_id": public_ids[0], "crop": "0.1,0.1,0.9,0.9"})
    assert tiny.status_code == 422 and "crop_units=relative" in tiny.json()["detail"]["message"]
    relative = client.post(
        "/v1/search",
        data={"image_id": public_ids[0], "crop": "0.1,0.1,0.9,0.9", "crop_units": "relative"},
    )
    assert relative.status_code == 200
    lower = {"Authorization": f"bearer {TOKEN}"}
    assert (
        client.patch(
            f"/v1/images/{public_ids[0]}", json={"action": "public"}, headers=lower
        ).status_code
        == 202
    )
    assert client.get("/v1/corpus", params={"offset": -3}).status_code == 422
    # Half-sent requests are closed at the header deadline (1 s here).
    answer = raw_http(site, b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Slow: ", timeout_s=20)
    assert answer == b""
    # ... and a body that never comes gets 408 at the body deadline (2 s here).
    answer = raw_http(
        site,
        b"POST /v1/interactions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: 100\r\n\r\n{",
        timeout_s=20,
    )
    assert answer.startswith(b"HTTP/1.1 408")
    assert client.get("/healthz").status_code == 200

"""The HTTP API over a running stack: upload, search with crops, errors, token, metrics."""

from __future__ import annotations

import io
import os
import signal
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from visearch.api.from_stack import stack_api
from visearch.local.stack import LocalStack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def client(stack: LocalStack) -> TestClient:
    return TestClient(stack_api(stack))


def _upload(client: TestClient, path: Path, image_id: str, **headers: str) -> int:
    response = client.post(
        "/v1/images",
        files={"image": (path.name, path.read_bytes(), "image/png")},
        data={"image_id": image_id},
        headers=headers,
    )
    return response.status_code


def _as_jpeg(path: Path) -> bytes:
    buffer = io.BytesIO()
    Image.open(path).convert("RGB").save(buffer, "JPEG", quality=70)
    return buffer.getvalue()


def test_upload_then_search_by_crop_finds_it(
    client: TestClient, stack: LocalStack, photo_paths: list[Path]
) -> None:
    ids = [f"api-{i}" for i in range(6)]
    for image_id, path in zip(ids, photo_paths[30:36], strict=True):
        assert _upload(client, path, image_id) == 202
    assert stack.wait_searchable(ids, 90) == set()
    for image_id, path in zip(ids, photo_paths[30:36], strict=True):
        response = client.post(
            "/v1/search",
            files={"image": ("q.jpg", _as_jpeg(path), "image/jpeg")},
            data={"crop": "0.1,0.1,0.85,0.85", "crop_units": "relative", "k": "5"},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["results"][0]["image_id"] == image_id
        assert body["model_version"] == stack.search.encoder.version
        assert len(body["search_id"]) == 32
        assert body["timings_ms"]["total"] > 0
        thumb = client.get(body["results"][0]["thumbnail_url"])
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
        assert max(Image.open(io.BytesIO(thumb.content)).size) <= 160


def test_search_by_stored_id_excludes_the_query_itself(
    client: TestClient, stack: LocalStack, photo_paths: list[Path]
) -> None:
    assert _upload(client, photo_paths[36], "byid-0") == 202
    assert _upload(client, photo_paths[37], "byid-1") == 202
    assert stack.wait_searchable(["byid-0", "byid-1"], 90) == set()
    response = client.post("/v1/search", data={"image_id": "byid-0", "k": "50"})
    assert response.status_code == 200, response.text
    returned = [hit["image_id"] for hit in response.json()["results"]]
    assert "byid-0" not in returned and "byid-1" in returned
    # Indexed and current: its indexed vector is the query, no encoder pass.
    assert response.json()["timings_ms"]["embed"] == 0 and response.json()["embedded"] == 0
    # A crop of a stored image needs its pixels: embedded.
    cropped = client.post("/v1/search", data={"image_id": "byid-0", "crop": "0,0,20,20"})
    assert cropped.status_code == 200 and cropped.json()["timings_ms"]["embed"] > 0
    assert cropped.json()["embedded"] >= 1


@pytest.mark.parametrize(
    ("data", "files", "status", "code"),
    [
        ({"image_id": "no-such-image"}, None, 404, "unknown_image"),
        ({"image_id": "byid-0", "crop": "0,0,99999,10"}, None, 422, "bad_crop"),
        ({"image_id": "byid-0", "crop": "5,5,5,5"}, None, 422, "bad_crop"),
        ({"image_id": "byid-0", "crop": "a,b"}, None, 422, "bad_crop"),
        ({"image_id": "byid-0", "k": "1000"}, None, 422, "bad_k"),
        ({}, None, 422, "bad_query"),
        ({}, {"image": ("x.png", b"definitely not an image", "image/png")}, 400, "undecodable"),
        ({}, {"image": ("x.png", b"", "image/png")}, 400, "empty"),
    ],
)
def test_bad_search_requests_get_a_precise_4xx(client, data, files, status, code) -> None:
    response = client.post("/v1/search", data=data, files=files)
    assert response.status_code == status, response.text
    assert response.json()["detail"]["code"] == code
    assert response.json()["detail"]["message"]


def test_bad_uploads_are_refused(client: TestClient, photo_paths: list[Path]) -> None:
    bad_id = client.post(
        "/v1/images",
        files={"image": ("x.png", photo_paths[0].read_bytes(), "image/png")},
        data={"image_id": "../etc/passwd"},
    )
    assert bad_id.status_code == 422 and bad_id.json()["detail"]["code"] == "bad_image_id"
    corrupt = client.post("/v1/images", files={"image": ("x.png", b"GIF89a trash", "image/gif")})
    assert corrupt.status_code == 400 and corrupt.json()["detail"]["code"] == "undecodable"
    assert client.get("/v1/images/nope/thumbnail").status_code == 404


def test_write_endpoints_require_the_token_when_configured(
    stack: LocalStack, photo_paths: list[Path]
) -> None:
    settings = stack.settings.with_overrides(api_token="s3cret-token")
    guarded = TestClient(stack_api(stack, settings=settings))
    assert _upload(guarded, photo_paths[40], "tok-0") == 401
    assert _upload(guarded, photo_paths[40], "tok-0", authorization="Bearer wrong") == 401
    assert _upload(guarded, photo_paths[40], "tok-0", authorization="Bearer s3cret-token") == 202
    # Reads stay open.
    assert guarded.post("/v1/search", data={"image_id": "tok-0"}).status_code == 200


def test_health_readiness_and_metrics(client: TestClient, stack: LocalStack) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert stack.search is not None
    before = stack.search.size  # uploads of earlier tests may still be arriving
    ready = client.get("/readyz").json()
    assert 0 < before <= ready["indexed"] <= stack.search.size
    client.post("/v1/search", data={"image_id": "byid-0"})
    text = client.get("/metrics").text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    searches = families["visearch_searches"]
    ok = [
        s.value
        for s in searches.samples
        if s.labels.get("outcome") == "ok" and s.name.endswith("_total")
    ]
    assert ok and ok[0] >= 1
    assert "visearch_search_duration_seconds" in families
    assert "/v1/search" in client.get("/openapi.json").json()["paths"]
    corpus = client.get("/v1/corpus?limit=5").json()
    assert corpus["total"] >= 1 and len(corpus["image_ids"]) <= 5


def _wait_until(predicate, timeout_s: float = 30.0) -> bool:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def _returned(client: TestClient, path: Path) -> list[str]:
    response = client.post(
        "/v1/search", files={"image": ("q.png", path.read_bytes(), "image/png")}, data={"k": "50"}
    )
    assert response.status_code == 200, response.text
    return [hit["image_id"] for hit in response.json()["results"]]


def test_private_flagged_and_deleted_images_leave_results_and_come_back(
    client: TestClient, stack: LocalStack, photo_paths: list[Path]
) -> None:
    paths = dict(zip(["vis-priv", "vis-flag", "vis-del"], photo_paths[41:44], strict=True))
    for image_id, path in paths.items():
        assert _upload(client, path, image_id) == 202
    assert stack.wait_searchable(list(paths), 90) == set()
    for image_id, path in paths.items():
        assert _returned(client, path)[0] == image_id

    assert client.patch("/v1/images/vis-priv", json={"action": "private"}).status_code == 202
    assert client.patch("/v1/images/vis-flag", json={"action": "flag"}).status_code == 202
    assert client.delete("/v1/images/vis-del").status_code == 202
    for image_id, path in paths.items():
        assert _wait_until(lambda i=image_id, p=path: i not in _returned(client, p)), image_id
    assert client.get("/v1/images/vis-priv/thumbnail").status_code == 404
    assert client.get("/v1/images/vis-del/thumbnail").status_code == 404
    assert "vis-del" not in stack.store

    assert client.patch("/v1/images/vis-priv", json={"action": "public"}).status_code == 202
    assert client.patch("/v1/images/vis-flag", json={"action": "unflag"}).status_code == 202
    for image_id in ("vis-priv", "vis-flag"):
        assert _wait_until(lambda i=image_id: _returned(client, paths[i])[0] == i), image_id
    assert "vis-del" not in _returned(client, paths["vis-del"])


def test_bad_updates_are_refused(client: TestClient) -> None:
    assert client.delete("/v1/images/never-uploaded").status_code == 404
    unknown = client.patch("/v1/images/never-uploaded", json={"action": "flag"})
    assert unknown.status_code == 404 and unknown.json()["detail"]["code"] == "unknown_image"
    assert client.patch("/v1/images/api-0", json={"action": "explode"}).status_code == 422


def test_readiness_checks_broker_shards_lag_worker_and_feedback(stack: LocalStack) -> None:
    checked = TestClient(stack_api(stack))
    ready = checked.get("/readyz")
    assert ready.status_code == 200, ready.text
    checks = ready.json()["checks"]
    assert set(checks) == {"broker", "shards", "index_lag", "worker", "embedding", "feedback"}
    assert all(check["ok"] for check in checks.values())
    assert checks["index_lag"]["records"] <= checks["index_lag"]["max"]

    assert stack.feedback is not None
    stack.feedback.stop()  # a dead component makes the API unready, with the reason
    try:
        unready = checked.get("/readyz")
        assert unready.status_code == 503
        detail = unready.json()["detail"]
        assert detail["code"] == "not_ready" and "feedback" in detail["message"]
        assert detail["checks"]["feedback"] == {"ok": False}
        assert detail["checks"]["broker"]["ok"] is True
    finally:
        stack.feedback.start()
    assert checked.get("/readyz").status_code == 200


def test_a_frozen_worker_makes_the_api_unready_until_it_moves_again(stack: LocalStack) -> None:
    """Alive is not enough: a worker that makes no progress (here stopped by SIGSTOP, as a
    stuck batch or a starved process would be) stops reporting, and /readyz says so."""
    assert stack.worker is not None
    checked = TestClient(stack_api(stack))

    def embedding_check() -> dict:
        body = checked.get("/readyz").json()
        return body.get("detail", body)["checks"]["embedding"]

    assert embedding_check() == {"ok": True}
    os.kill(stack.worker.pid, signal.SIGSTOP)
    try:
        deadline = time.monotonic() + 60
        while (check := embedding_check())["ok"] and time.monotonic() < deadline:
            time.sleep(0.5)
        assert check["ok"] is False and "not reported" in check["reason"]
    finally:
        os.kill(stack.worker.pid, signal.SIGCONT)
    deadline = time.monotonic() + 60
    while checked.get("/readyz").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert checked.get("/readyz").status_code == 200

"""A model rollout on the real stack: deploy beside, backfill, refuse early switch, switch.

The second version is the same network saved again with another producer
string: a different file, hence a different content-hash version, with the
same embeddings, so rank-1 checks stay meaningful after the switch.
"""

from __future__ import annotations

import dataclasses
import io
import shutil
import time
from pathlib import Path

import onnx
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from encoders.model_dir import ONNX_FILE, content_version, read_metadata, write_metadata
from visearch.api.from_stack import stack_api
from visearch.local.stack import LocalStack
from visearch.models.backfill import BackfillError, backfill

pytestmark = pytest.mark.integration


def second_version(model_dir: Path, out: Path) -> str:
    shutil.copytree(model_dir, out)
    model = onnx.load(out / ONNX_FILE)
    model.producer_version = f"{model.producer_version}+v2-test"
    onnx.save(model, out / ONNX_FILE)
    version = content_version(out / ONNX_FILE)
    write_metadata(out, dataclasses.replace(read_metadata(model_dir), version=version))
    return version


@pytest.fixture(scope="module")
def client(stack: LocalStack) -> TestClient:
    return TestClient(stack_api(stack))


def versions(client: TestClient) -> dict[str, dict]:
    return {v["version"]: v for v in client.get("/v1/models").json()["versions"]}


def wait_until(condition, timeout_s: float = 60.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def rank_one(client: TestClient, path: Path) -> tuple[str, str]:
    buffer = io.BytesIO()
    Image.open(path).convert("RGB").save(buffer, "JPEG", quality=80)
    body = client.post(
        "/v1/search", files={"image": ("q.jpg", buffer.getvalue(), "image/jpeg")}
    ).json()
    return body["results"][0]["image_id"], body["model_version"]


def test_deploy_backfill_switch(
    client: TestClient,
    stack: LocalStack,
    model_dir: Path,
    photo_paths: list[Path],
    publish,
    tmp_path: Path,
) -> None:
    old_version = stack.search.encoder.version
    before = publish(stack, photo_paths[:10], "mv")
    assert stack.wait_searchable(before, 90) == set()

    new_dir = tmp_path / "v2"
    new_version = second_version(model_dir, new_dir)
    deployed = client.post("/v1/models", json={"model_dir": str(new_dir)})
    assert deployed.status_code == 202, deployed.text
    assert deployed.json()["version"] == new_version
    status = versions(client)
    assert status[old_version]["state"] == "serving"
    assert status[new_version]["state"] == "candidate"
    assert status[new_version]["missing"] == 10

    # too early: its index lacks the older images
    early = client.post(f"/v1/models/{new_version}/switch")
    assert early.status_code == 409 and early.json()["detail"]["code"] == "backfill_incomplete"

    # live uploads during the rollout reach both indexes, once the worker has loaded the
    # candidate: the deploy's 202 says the API's candidate index runs, and the worker
    # learns of the deploy from the models topic on its own (uploads before that are
    # the backfill's); its log says when
    loaded = f"loaded encoder {new_version}"
    assert wait_until(lambda: loaded in stack.worker_log.read_text(errors="replace")), loaded
    during = publish(stack, photo_paths[10:12], "mv", start=10)
    assert stack.wait_searchable(during, 90) == set()
    assert wait_until(lambda: versions(client)[new_version]["indexed"] == 2)

    report = backfill(stack.settings, new_version, rate_per_s=100, progress=False)
    assert report.published == 12 and report.failed == {} and report.skipped_done == 0
    assert wait_until(lambda: versions(client)[new_version]["missing"] == 0)
    assert versions(client)[new_version]["indexed"] == 12  # the same image twice is one entry
    again = backfill(stack.settings, new_version, rate_per_s=100, progress=False)
    assert again.published == 0 and again.skipped_done == 12  # resumable: nothing left

    assert rank_one(client, photo_paths[3]) == ("mv-0003", old_version)
    switched = client.post(f"/v1/models/{new_version}/switch")
    assert switched.status_code == 200, switched.text
    assert rank_one(client, photo_paths[3]) == ("mv-0003", new_version)
    assert rank_one(client, photo_paths[11]) == ("mv-0011", new_version)
    status = versions(client)
    assert status[new_version]["state"] == "serving"
    assert status[old_version]["state"] == "retired" and "indexed" not in status[old_version]

    # after the switch, uploads are embedded with the new version only and searchable
    after = publish(stack, photo_paths[12:13], "mv", start=12)
    assert stack.wait_searchable(after, 90) == set()
    assert rank_one(client, photo_paths[12]) == ("mv-0012", new_version)


def test_bad_model_requests(client: TestClient, stack: LocalStack, tmp_path: Path) -> None:
    missing = client.post("/v1/models", json={"model_dir": str(tmp_path / "nothing")})
    assert missing.status_code == 422 and missing.json()["detail"]["code"] == "bad_model"
    unknown = client.post("/v1/models/0123456789abcdef/switch")
    assert unknown.status_code == 404
    serving = stack.search.encoder.version
    retire = client.delete(f"/v1/models/{serving}")
    assert retire.status_code == 409 and "switch away first" in retire.json()["detail"]["message"]
    with pytest.raises(BackfillError, match="not a deployed candidate"):
        backfill(stack.settings, serving, progress=False)


def test_a_switch_survives_a_restart_on_a_fresh_embedded_broker(
    make_settings, model_dir: Path, photo_paths: list[Path], publish, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path / "data", model_dir)
    new_version = second_version(model_dir, tmp_path / "v2")
    with LocalStack(settings) as first:
        assert first.rollout is not None
        ids = publish(first, photo_paths[:3], "rs")
        assert first.wait_searchable(ids, 90) == set()
        assert first.rollout.deploy(tmp_path / "v2") == new_version
        backfill(settings, new_version, rate_per_s=100, progress=False)
        assert wait_until(lambda: first.rollout.status()["versions"][-1]["missing"] == 0)
        first.rollout.switch(new_version)
        assert first.search.encoder.version == new_version

    # a new embedded broker (new port, empty topics), the same data directory
    restarted_settings = settings.with_overrides(
        broker_port=make_settings(tmp_path, model_dir).broker_port
    )
    with LocalStack(restarted_settings) as second:
        assert second.search is not None and second.rollout is not None
        assert second.search.encoder.version == new_version
        states = {v["version"]: v["state"] for v in second.rollout.status()["versions"]}
        assert states[new_version] == "serving" and len(states) == 2

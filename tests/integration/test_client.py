"""visearch.client against the real API, server and stack: typed results, the API's error
codes, the token, sync and async alike."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from visearch.client import ApiError, AsyncClient, Client, RetryPolicy

pytestmark = pytest.mark.integration
TOKEN = "client-test-token"
STACK_SETTINGS = {"api_token": TOKEN}


def _until_found(api: Client, image: bytes, image_id: str) -> list[str]:
    deadline = time.monotonic() + 60
    while True:
        ids = api.search(image, k=5).ids
        if ids and ids[0] == image_id:
            return ids
        assert time.monotonic() < deadline, ids
        time.sleep(0.1)


def test_upload_search_crop_visibility_and_delete(site: str, photo_paths: list[Path]) -> None:
    photo = photo_paths[3]
    with Client(site, token=TOKEN) as api:
        assert api.upload(photo, image_id="client-1", owner_id="tests").image_id == "client-1"
        assert _until_found(api, photo.read_bytes(), "client-1")[0] == "client-1"

        by_id = api.search(image_id="client-1", k=5)
        assert by_id.model_version and "client-1" not in by_id.ids  # never finds itself
        pil = Image.open(photo)
        cropped = api.search(pil, crop=(0.2, 0.2, 0.8, 0.8))
        assert cropped.ids[0] == "client-1" and not cropped.partial
        assert api.thumbnail("client-1")[:2] == b"\xff\xd8"  # a JPEG

        api.set_visibility("client-1", "private")
        assert "client-1" not in api.search(photo, k=10).ids
        with pytest.raises(ApiError) as hidden:
            api.search(image_id="client-1")
        assert (hidden.value.status, hidden.value.code) == (404, "unknown_image")
        api.set_visibility("client-1", "public")
        _until_found(api, photo.read_bytes(), "client-1")
        api.delete("client-1")
        assert "client-1" not in api.search(photo, k=10).ids


def test_errors_carry_the_api_codes(site: str, photo_paths: list[Path]) -> None:
    with Client(site) as anonymous, pytest.raises(ApiError) as refused:
        anonymous.upload(photo_paths[0], image_id="nope")
    assert (refused.value.status, refused.value.code) == (401, "unauthorized")
    with Client(site, token=TOKEN) as api:
        with pytest.raises(ApiError) as bad_crop:
            api.search(photo_paths[0], crop=(0.5, 0.5, 0.4, 0.9))
        assert (bad_crop.value.status, bad_crop.value.code) == (422, "bad_crop")
        with pytest.raises(ApiError) as not_an_image:
            api.search(b"definitely not an image")
        assert (not_an_image.value.status, not_an_image.value.code) == (400, "undecodable")
        with pytest.raises(ValueError, match="one of"):
            api.search()
        with pytest.raises(ApiError) as bad_events:
            api.send_interactions([{"type": "click"}])
        assert bad_events.value.code == "bad_interactions"


def test_connection_failures_are_retried_then_raised() -> None:
    retry = RetryPolicy(attempts=3, first_s=0.01)
    with Client("http://127.0.0.1:9", retry=retry) as api, pytest.raises(httpx.ConnectError):
        api.search(b"x")


def test_the_async_client_does_the_same(site: str, photo_paths: list[Path]) -> None:
    async def run() -> None:
        async with AsyncClient(site, token=TOKEN) as api:
            await api.upload(photo_paths[5], image_id="client-async")
            deadline = time.monotonic() + 60
            while (await api.search(photo_paths[5], k=3)).ids[:1] != ["client-async"]:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
            with pytest.raises(ApiError) as bad_k:
                await api.search(photo_paths[5], k=0)
            assert bad_k.value.status == 422
            await api.delete("client-async")

    asyncio.run(run())

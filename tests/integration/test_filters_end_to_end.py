"""Filtered search end to end: tags and owners from uploads over HTTP, a tags update,
the filter through the API, the Python client and a remote shard process, and the
filters surviving a SIGKILL of that shard and a replay of the log from offset 0."""

from __future__ import annotations

import random
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from shard_process import remote_shard_settings, start_shard_process, wait_images

from index.filters import SearchFilter
from visearch.catalog.corpus import DEMO_CORPUS, find_images
from visearch.catalog.uploads import accept_upload, publish_update
from visearch.client import ApiError, Client
from visearch.local.stack import LocalStack

pytestmark = pytest.mark.integration
TIMEOUT_S = 60.0


def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.1)


def _owner(number: int) -> str:
    return "shop-a" if number % 3 == 0 else "shop-b"


def _tags(number: int) -> list[str]:
    return ["red"] if number % 2 == 0 else ["blue", "sale"]


def test_filters_over_http_follow_uploads_updates_and_privacy(
    site: str, photo_paths: list[Path]
) -> None:
    photos = photo_paths[:12]
    ids = [f"filter-{n}" for n in range(len(photos))]
    with Client(site) as api:
        for number, (image_id, photo) in enumerate(zip(ids, photos, strict=True)):
            api.upload(photo, image_id=image_id, owner_id=_owner(number), tags=_tags(number))
        query = photos[0].read_bytes()
        _until(lambda: len(api.search(query, k=50).ids) >= len(ids), "every upload is indexed")

        shop_a = SearchFilter.of(owner_ids=["shop-a"])
        found = api.search(query, k=10, where=shop_a).ids
        assert sorted(found) == sorted(i for n, i in enumerate(ids) if _owner(n) == "shop-a")
        on_sale = api.search(query, k=10, where=SearchFilter.of(tags_all=["blue", "sale"])).ids
        assert sorted(on_sale) == sorted(i for n, i in enumerate(ids) if n % 2)
        red_a = api.search(query, k=10, where=SearchFilter.of(["shop-a"], tags_any=["red"])).ids
        assert sorted(red_a) == sorted(i for n, i in enumerate(ids) if n % 6 == 0)
        future = SearchFilter.of(uploaded_after=time.time() + 3600)
        assert api.search(query, k=10, where=future).ids == []

        api.set_tags("filter-1", ["red", "clearance"])  # a shop-b image gains "clearance"
        clearance = SearchFilter.of(tags_any=["clearance"])
        _until(lambda: api.search(query, k=10, where=clearance).ids == ["filter-1"], "retagged")
        sale = SearchFilter.of(tags_any=["sale"])
        assert "filter-1" not in api.search(query, k=10, where=sale).ids

        api.set_visibility("filter-3", "private")  # shop-a: never again in shop-a's results
        assert "filter-3" not in api.search(query, k=10, where=shop_a).ids

        refused = httpx.post(  # the raw form, as a client in another language sends it
            f"{site}/v1/search", data={"image_id": "filter-0", "uploaded_before": "nan"}
        )
        assert refused.status_code == 422 and refused.json()["detail"]["code"] == "bad_filter"
        with pytest.raises(ApiError) as bad_tags:
            api.upload(photos[0], image_id="filter-x", tags=["x" * 65])
        assert (bad_tags.value.status, bad_tags.value.code) == (422, "bad_tags")


def _filtered_results(stack: LocalStack, queries: list[str]) -> dict[tuple[str, str], list[str]]:
    """Every query image under every filter of the test, as the search service answers."""
    assert stack.search is not None
    filters = {
        "owner": SearchFilter.of(owner_ids=["shop-a"]),
        "tags": SearchFilter.of(tags_any=["red"]),
        "retagged": SearchFilter.of(tags_all=["moved"]),
        "both": SearchFilter.of(owner_ids=["shop-b"], tags_all=["blue", "sale"]),
    }
    results = {}
    for image_id in queries:
        data = stack.store.get(image_id)
        for name, where in filters.items():
            hits = stack.search.search_bytes(data, 10, where=where).hits
            results[(image_id, name)] = [hit.image_id for hit in hits]
    return results


def test_filters_survive_a_sigkilled_shard_and_a_replay_from_offset_zero(
    tmp_path: Path, model_dir: Path, make_settings
) -> None:
    settings = remote_shard_settings(make_settings, tmp_path, model_dir)
    paths = random.Random(11).sample(find_images(DEMO_CORPUS), 30)
    log_path = tmp_path / "shard.log"
    with LocalStack(settings) as stack:
        assert stack.search is not None and stack.publisher is not None
        shard = start_shard_process(settings, log_path)
        try:
            ids = []
            for number, path in enumerate(paths):
                image_id = f"keep-{number:02d}"
                accept_upload(
                    settings, stack.store, stack.publisher, image_id, path.read_bytes(),
                    _owner(number), tags=_tags(number),
                )  # fmt: skip
                ids.append(image_id)
            stack.publisher.flush()
            assert wait_images(settings, len(ids)) == len(ids)
            for image_id in ids[:5]:
                publish_update(settings, stack.store, stack.publisher, image_id, "tags", ["moved"])
            publish_update(settings, stack.store, stack.publisher, ids[6], "private")
            queries = ids[::7]
            _until(
                lambda: len(_filtered_results(stack, queries[:1])[(queries[0], "retagged")]) == 5,
                "the tags updates are applied",
            )
            _until(
                lambda: ids[6] not in _filtered_results(stack, [ids[0]])[(ids[0], "owner")],
                "the private image is hidden",
            )
            before = _filtered_results(stack, queries)
            assert all(before.values()), before
            assert sorted(before[(queries[0], "retagged")]) == sorted(ids[:5])

            shard.send_signal(signal.SIGKILL)
            shard.wait(10)
            shard = start_shard_process(settings, log_path)
            assert wait_images(settings, len(ids)) == len(ids)
            _until(lambda: _filtered_results(stack, queries) == before, "the restart answers alike")

            shard.send_signal(signal.SIGKILL)
            shard.wait(10)
            snapshots = settings.data_dir / "index"
            shutil.rmtree(snapshots)  # nothing to restore: the log is replayed from offset 0
            shard = start_shard_process(settings, log_path)
            assert wait_images(settings, len(ids)) == len(ids)
            _until(lambda: _filtered_results(stack, queries) == before, "the replay answers alike")
        finally:
            shard.kill()
            shard.wait(10)

"""A local cluster on the real broker: 4 shard processes x 2 copies, the worker and the
search service. One copy SIGKILLed under steady searches and uploads: no failed search,
complete results. Both copies of a shard down: answers within the deadline, flagged
partial. The copies back: complete again, nothing lost."""

from __future__ import annotations

import json
import random
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from bench.support import ShardProcess, shard_processes, wait_shard_images
from index.scatter import ShardsUnavailableError
from streams.settings import Settings
from visearch.api.from_stack import stack_api
from visearch.catalog.corpus import DEMO_CORPUS, find_images
from visearch.local.stack import LocalStack
from visearch.processes.shards import remote_shards, search_service

pytestmark = pytest.mark.integration
TIMEOUT_S = 120.0
SHARDS, COPIES = 4, 2
DEADLINE_MS = 1500


@pytest.fixture
def cluster(
    tmp_path: Path, model_dir: Path, make_settings: Callable[..., Settings]
) -> Iterator[tuple[LocalStack, list[list[ShardProcess]]]]:
    root = tmp_path
    base = make_settings(root / "api", model_dir, index_shards=SHARDS)
    copies = [[ShardProcess(base, k, r, root) for r in range(COPIES)] for k in range(SHARDS)]
    urls = ",".join("|".join(c.url for c in shard) for shard in copies)
    settings = base.with_overrides(shard_urls=urls, search_deadline_ms=DEADLINE_MS)
    with LocalStack(settings) as stack, shard_processes(copies):
        yield stack, copies


def test_copies_fail_over_and_a_shard_without_copies_gives_a_flagged_partial_answer(
    cluster: tuple[LocalStack, list[list[ShardProcess]]], publish: Callable[..., list[str]]
) -> None:
    stack, copies = cluster
    assert stack.search is not None
    search = stack.search
    paths = random.Random(3).sample(find_images(DEMO_CORPUS), 70)
    ids = publish(stack, paths[:40], "cluster")
    wait_shard_images(copies, len(ids))
    for shard in copies:  # each copy measured upload -> searchable for every image it holds
        for copy in shard:
            with urllib.request.urlopen(f"{copy.url}/metrics", timeout=5) as response:
                metrics = response.read().decode()
            applied = re.search(r"^visearch_shard_freshness_seconds_count\S* (\S+)$", metrics, re.M)
            assert applied and float(applied.group(1)) == copy.images() > 0
    queries = [(image_id, stack.store.get(image_id)) for image_id in ids[:12]]

    def search_all() -> list[tuple[str, list[str], list[int], float]]:
        answers = []
        for image_id, data in queries:
            result = search.search_bytes(data, 10)
            hits = [hit.image_id for hit in result.hits]
            answers.append((image_id, hits, result.missing_shards, result.timings_ms["total"]))
        return answers

    complete = search_all()
    for image_id, hits, missing, _ in complete:
        assert hits[0] == image_id and missing == []

    # Steady load: searches in a loop and uploads at ~20/s while a copy is killed.
    stop, failed, done = threading.Event(), [], [0]

    def keep_searching() -> None:
        while not stop.is_set():
            for image_id, hits, missing, _ in search_all():
                done[0] += 1
                if missing or hits[0] != image_id:
                    failed.append((image_id, hits[:3], missing))

    searcher = threading.Thread(target=keep_searching)
    searcher.start()
    try:
        for n, path in enumerate(paths[40:]):
            ids += publish(stack, [path], "cluster", 40 + n)
            if n == 10:
                copies[0][0].kill()  # one copy of shard 0, as the OOM killer would
            time.sleep(0.05)
        time.sleep(1.0)
    finally:
        stop.set()
        searcher.join()
    assert done[0] >= 24 and failed == []  # nothing failed, nothing lost
    wait_shard_images([[copies[0][1]], *copies[1:]], len(ids))
    assert search.size == len(ids)
    complete = search_all()  # with every upload, from the copies still up
    assert all(missing == [] and hits[0] == image_id for image_id, hits, missing, _ in complete)

    copies[0][1].kill()  # the whole of shard 0
    elsewhere = {image_id for image_id in ids if any(_on(s[0], image_id) for s in copies[1:])}
    assert 0 < len(elsewhere) < len(ids)
    for image_id, hits, missing, total_ms in search_all():
        assert missing == [0]
        assert total_ms < DEADLINE_MS + 1000  # within the deadline (killed: refused at once)
        assert set(hits) <= elsewhere  # the answering shards' images, nothing else
        assert (hits[0] == image_id) == (image_id in elsewhere)
    with TestClient(stack_api(stack)) as client:  # over HTTP: flagged and counted
        image_id, data = queries[0]
        answer = client.post("/v1/search", files={"image": ("q.png", data, "image/png")})
        assert answer.status_code == 200
        assert answer.json()["partial"] is True and answer.json()["missing_shards"] == [0]
        assert 'visearch_searches_total{outcome="partial"} 1.0' in client.get("/metrics").text
    strict = search_service(
        stack.settings.with_overrides(search_strict=True),
        search.encoder,
        remote_shards(stack.settings, search.encoder.dim),
    )
    with pytest.raises(ShardsUnavailableError, match=r"shard\(s\) 0"):
        strict.search_bytes(queries[0][1], 10)

    for copy in copies[0]:  # both back: recovered from their snapshots and the log
        copy.start()
        copy.wait_up()
    wait_shard_images(copies, len(ids))
    for (image_id, hits, missing, _), before in zip(search_all(), complete, strict=True):
        assert missing == [] and hits == before[1], image_id


def _on(copy: ShardProcess, image_id: str) -> bool:
    """Whether ``copy``'s shard holds ``image_id``."""
    with urllib.request.urlopen(f"{copy.url}/v1/shard/images/{image_id}", timeout=2) as response:
        return bool(json.loads(response.read())["visible"])

"""Privacy under churn: after an acknowledged update, no search returns the image.

Random sequences of upload / private / public / flag / unflag / delete /
re-upload on real photos go through the real HTTP API while threads search:
one over HTTP, two through the API's own search service with the query
embeddings computed once. Those fast probes are what makes the test sharp:
an HTTP search spends most of its time embedding the query, and by the time
it reaches the index the update has usually been applied anyway. A result
is a leak when the image was hidden for the whole search for sure
(:mod:`bench.privacy_audit`). The corpus is small and k large, so every
search ranks nearly every visible image: a hidden one that slipped through
would be seen. The index applies each update milliseconds after the 202; the
store's denylist covers that window (``bench/privacy.py`` counts what the
index alone would leak).
"""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.privacy_audit import ApiChurn
from encoders.preprocess import preprocess
from feedback.simulate import ApiClient
from index.search import SearchService
from visearch.catalog.hidden import ACTIONS, FLAGGED
from visearch.local.stack import LocalStack

pytestmark = pytest.mark.integration

CHURNED, STABLE, K = 8, 14, 24
Probe = tuple[float, float, list[str]]


def _http_probes(stop: threading.Event, client: ApiClient, queries: list[str]) -> list[Probe]:
    rng, probes = random.Random(), []
    while not stop.is_set():
        began = time.monotonic()
        results = client.search(rng.choice(queries), K)["results"]
        probes.append((began, time.monotonic(), [hit["image_id"] for hit in results]))
    return probes


def _fast_probes(
    stop: threading.Event, search: SearchService, queries: list[np.ndarray]
) -> list[Probe]:
    rng, probes = random.Random(), []
    while not stop.is_set():
        began = time.monotonic()
        hits = search.search_vector(rng.choice(queries), K)
        probes.append((began, time.monotonic(), [hit.image_id for hit in hits]))
        time.sleep(0.001)  # leave the churn and the index their share of the GIL
    return probes


def _index_shows(stack: LocalStack, image_id: str) -> bool:
    return any(
        part.is_visible(image_id) for shard in stack.shards for part in shard.partitions.values()
    )


def test_no_search_returns_an_image_after_its_hiding_update_is_acknowledged(
    stack: LocalStack, site: str, photo_paths: list[Path]
) -> None:
    churned = [f"churn-{n}" for n in range(CHURNED)]
    stable = [f"stable-{n}" for n in range(STABLE)]
    photos = dict(zip(churned + stable, (p.read_bytes() for p in photo_paths), strict=False))
    churn = ApiChurn(httpx.Client(base_url=site, timeout=30), photos)
    for image_id in photos:
        assert churn.change(image_id, "upload") == 202
    assert stack.wait_searchable(list(photos), 90) == set()
    client = ApiClient(site, timeout_s=30)
    search = stack.search
    assert search is not None
    vectors = [search.encoder.embed(preprocess(photos[i])[None])[0] for i in churned]
    exposures = searches = 0

    @settings(
        max_examples=12,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(st.lists(st.tuples(st.sampled_from(churned), st.sampled_from(ACTIONS)), max_size=16))
    def churn_while_searching(changes: list[tuple[str, str]]) -> None:
        nonlocal exposures, searches
        stop = threading.Event()
        results: list[list[Probe]] = [[] for _ in range(3)]

        def searcher(n: int) -> None:
            if n == 0:
                results[n] = _http_probes(stop, client, stable)
            else:
                results[n] = _fast_probes(stop, search, vectors)

        threads = [threading.Thread(target=searcher, args=(n,)) for n in range(3)]
        for thread in threads:
            thread.start()
        try:
            for image_id in churned:  # every example starts from all public
                bits = churn.audit.bits(image_id)
                if bits:
                    assert churn.change(image_id, "upload") == 202
                if bits & FLAGGED:
                    assert churn.change(image_id, "unflag") == 202
            for image_id, action in changes:
                status = churn.change(image_id, action)
                stored = image_id in stack.store
                assert status == 202 or (status == 404 and not stored), (action, status)
            time.sleep(0.2)
        finally:
            stop.set()
            for thread in threads:
                thread.join(60)
        probes = [probe for found in results for probe in found]
        leaks = [
            (began, ended, leaked)
            for began, ended, ids in probes
            if (leaked := churn.audit.leaks(ids, began, ended))
        ]
        assert leaks == [], f"{len(leaks)} of {len(probes)} searches leaked: {leaks[:5]}"
        searches += len(probes)
        exposures += sum(churn.audit.exposures(b, e) for b, e, _ in probes)

    churn_while_searching()
    # The check was exercised: searches ran while images were hidden...
    assert searches > 100 and exposures > 50, (searches, exposures)
    # ...and the audit's rules are the index's: once the log is applied, they agree.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        disagree = [i for i in churned if _index_shows(stack, i) != (churn.audit.bits(i) == 0)]
        if not disagree:
            break
        time.sleep(0.1)
    assert disagree == []

"""Online recall: sampled live queries searched again exactly, in the background."""

from __future__ import annotations

import random

import numpy as np

from index.faiss_index import SearchParams
from index.partition import Hit, Partition
from index.recall_monitor import RecallMonitor
from index.shard import IndexShard

DIM = 16


def _clustered(count: int, rng: np.random.Generator) -> np.ndarray:
    centres = rng.standard_normal((20, DIM)).astype(np.float32)
    vectors = centres[rng.integers(0, 20, count)] + 0.3 * rng.standard_normal((count, DIM))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def _ann_shard(rng: np.random.Generator, share: float) -> tuple[IndexShard, np.ndarray]:
    """One IVF partition past its ANN threshold, two images hidden."""
    shard = IndexShard(
        DIM,
        "m",
        [0],
        # No scan floor: nprobe 1 must miss neighbours for the monitor to see it.
        lambda: Partition(
            DIM, "IVF16,Flat", ann_threshold=500, background=False, min_scanned_rows=0
        ),
        recall_share=share,
    )
    vectors = _clustered(1200, rng)
    part = shard.partitions[0]
    for n, vector in enumerate(vectors):
        part.upsert(f"img-{n}", vector, 1.0)
    part.update("img-3", "private", 2.0)
    part.update("img-4", "delete", 2.0)
    assert part.kind == "ann"
    return shard, vectors


def test_exact_search_is_the_true_top_k_of_visible_images() -> None:
    rng = np.random.default_rng(1)
    shard, vectors = _ann_shard(rng, share=0.0)
    visible = np.ones(len(vectors), bool)
    visible[[3, 4]] = False
    for query in _clustered(10, rng):
        scores = np.where(visible, vectors @ query, -np.inf)
        truth = [f"img-{i}" for i in np.argsort(-scores)[:10]]
        found = shard.exact_search(query, 10)
        assert [h.image_id for h in found] == truth
        assert np.allclose([h.score for h in found], np.sort(scores)[::-1][:10], atol=1e-5)


def test_the_monitor_measures_what_the_ann_search_missed() -> None:
    rng = np.random.default_rng(2)
    shard, _ = _ann_shard(rng, share=1.0)
    assert shard.recall is not None
    narrow = SearchParams(nprobe=1)  # one list of 16: misses neighbours in the next list
    expected = []
    for query in _clustered(40, rng):
        answered = [h.image_id for h in shard.search(query, 10, narrow)]
        truth = [h.image_id for h in shard.exact_search(query, 10)]
        expected.append(len(set(answered) & set(truth)) / 10)
        shard.recall.drain()  # one at a time: none dropped by the bounded queue
    assert shard.recall.samples == 40
    assert shard.recall.recall() == np.mean(expected)
    assert 0 < np.mean(expected) < 1  # the case worth watching


def test_sampling_is_a_share_of_queries_and_short_answers_are_not_sampled() -> None:
    truth = [Hit(f"t{i}", 1.0) for i in range(10)]
    monitor = RecallMonitor(lambda q, k: truth, share=0.25, rng=random.Random(0))
    query = np.zeros(DIM, np.float32)
    for _ in range(400):
        monitor.offer(query, truth)
        monitor.drain()
    assert 70 < monitor.samples < 130 and monitor.recall() == 1.0
    monitor.offer(query, truth[:5])  # fewer than 10 answers: recall@10 is undefined
    monitor.drain()
    off = RecallMonitor(lambda q, k: truth, share=0.0)
    off.offer(query, truth)
    assert off.samples == 0 and off.recall() is None

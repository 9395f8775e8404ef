"""Curves against pytrec_eval, raw-pixel vectors, the index built for evaluation, SVG charts."""

import numpy as np
import pytest
import pytrec_eval
from aiokafka.partitioner import DefaultPartitioner

from index.shard import partition_for
from streams.settings import Settings
from visearch.evaluation.curves import (
    RECALL_LEVELS,
    precision_recall_curve,
    recall_curve,
    relevance_matrix,
)
from visearch.evaluation.dataset import EvalSetError
from visearch.evaluation.embedding import RawPixelEncoder
from visearch.evaluation.ir_metrics import recall_at_k
from visearch.evaluation.searching import build_search, index_kinds
from visearch.evaluation.svg import line_chart


def _random_run(seed):
    rng = np.random.default_rng(seed)
    pool = [f"d{i:02d}" for i in range(30)]
    qrels, run = {}, {}
    for q in range(6):
        judged = rng.choice(pool, size=int(rng.integers(1, 10)), replace=False)
        qrels[f"q{q}"] = {str(d): int(rng.integers(0, 3)) for d in judged}
        ranked = rng.permutation(pool)[: int(rng.integers(0, 25))]
        run[f"q{q}"] = [str(d) for d in ranked]
    return run, qrels


@pytest.mark.parametrize("seed", range(10))
def test_precision_recall_curve_matches_trec_eval(seed):
    run, qrels = _random_run(seed)
    # pytrec_eval answers NaN at recall 0 for an empty ranking (trec_eval: 0); compare
    # the others, and the empty case on its own below.
    queries = [q for q in run if run[q]]
    hits, totals = relevance_matrix(run, qrels, queries)
    ours = precision_recall_curve(hits, totals)
    scored = {q: {d: float(len(docs) - r) for r, d in enumerate(docs)} for q, docs in run.items()}
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"iprec_at_recall"})
    reference = evaluator.evaluate(scored)
    for j, level in enumerate(RECALL_LEVELS):
        key = f"iprec_at_recall_{level:.2f}"
        expected = np.mean([reference[q][key] for q in queries])
        assert ours[j] == pytest.approx(expected, abs=1e-9), key


def test_an_empty_ranking_has_zero_precision_everywhere():
    hits, totals = relevance_matrix({"q": []}, {"q": {"a": 1}}, ["q"])
    assert precision_recall_curve(hits, totals) == [0.0] * len(RECALL_LEVELS)
    assert recall_curve(hits, totals) == []


def test_recall_curve_is_recall_at_k_for_every_k():
    run, qrels = _random_run(3)
    queries = list(run)
    curve = recall_curve(*relevance_matrix(run, qrels, queries))
    for k in (1, 5, len(curve)):
        assert curve[k - 1] == pytest.approx(recall_at_k(run, qrels, k).mean, abs=1e-12)


def test_raw_pixel_vectors_are_unit_length_and_ignore_brightness_offsets():
    encoder = RawPixelEncoder(grid=8)
    rng = np.random.default_rng(0)
    inputs = rng.normal(size=(3, 3, 224, 224)).astype(np.float32)
    vectors = encoder.embed(np.concatenate([inputs, inputs + 0.5]))
    assert vectors.shape == (6, encoder.dim) == (6, 3 * 8 * 8)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(vectors[:3], vectors[3:], atol=1e-5)


def test_partition_for_is_the_partition_kafka_gives_their_key():
    partitioner = DefaultPartitioner()  # aiokafka's: what Faust's producers use
    for image_id in ("a", "animals-cat", "fmnist-t10k-00042"):
        expected = partitioner(image_id.encode(), list(range(8)), list(range(8)))
        assert partition_for(image_id, 8) == expected


class _Encoder:
    version = "test"
    dim = 32


def _vectors(n, per_image=1, seed=0):
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, per_image, _Encoder.dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=2, keepdims=True)


def test_exact_and_ann_indexes_find_each_vector_itself():
    ids = [f"img{i:03d}" for i in range(300)]
    vectors = _vectors(len(ids), per_image=2)
    for spec in ("service", "exact", "HNSW16"):
        service = build_search(_Encoder(), ids, vectors, Settings(), spec, partitions=4)
        assert service.size == len(ids)
        assert index_kinds(service) == (["ann"] if spec == "HNSW16" else ["exact"])
        for i in (0, 150, 299):
            # A tile row (index 1) must find its image too: max over an image's rows.
            hits = service.search_vector(vectors[i, 1], 3)
            assert hits[0].image_id == ids[i]
            others = service.search_vector(vectors[i, 0], 3, exclude_image_id=ids[i])
            assert ids[i] not in {h.image_id for h in others}


def test_an_index_faiss_cannot_build_or_train_is_a_clear_error():
    ids = [f"img{i}" for i in range(20)]
    with pytest.raises(EvalSetError, match="index 'NoSuchIndex'"):
        build_search(_Encoder(), ids, _vectors(20), Settings(), "NoSuchIndex", partitions=2)
    with pytest.raises(EvalSetError, match="index 'IVF1024,Flat' over 2 partitions"):
        build_search(_Encoder(), ids, _vectors(20), Settings(), "IVF1024,Flat", partitions=2)


def test_line_chart_draws_one_polyline_per_series_with_a_legend():
    svg = line_chart(
        {"fp32": ([1, 10, 100], [0.2, 0.5, 0.9]), "raw <pixels>": ([1, 10, 100], [0.0, 0.1, 0.3])},
        "k",
        "recall@k",
        log_x=True,
        x_range=(1, 100),
    )
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count("<polyline") == 2
    assert "raw &lt;pixels&gt;" in svg and ">100<" in svg

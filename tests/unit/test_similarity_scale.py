"""Similarity scales: a base-scale threshold expressed on a trained model's similarities."""

import itertools
from types import SimpleNamespace

import numpy as np
import pytest

from encoders.similarity_scale import calibrate_scale, translate_threshold
from index.partition import Hit
from index.search import SearchService

DIM = 32


def _normalised(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def _clustered(rng: np.random.Generator, spread: float) -> np.ndarray:
    """20 classes of 10 images; a smaller ``spread`` pulls each class tighter."""
    centres = rng.standard_normal((20, DIM))
    return _normalised(np.repeat(centres, 10, axis=0) + spread * rng.standard_normal((200, DIM)))


def _pair_share(vectors: np.ndarray, threshold: float) -> float:
    similarity = vectors @ vectors.T
    return float(np.mean(similarity[np.triu_indices(len(vectors), k=1)] >= threshold))


def test_a_translated_threshold_collapses_the_same_share_of_pairs() -> None:
    rng = np.random.default_rng(0)
    base = _clustered(rng, spread=0.6)
    tighter = _clustered(np.random.default_rng(0), spread=0.3)  # same classes, pulled together
    scale = calibrate_scale(base, tighter)
    threshold = float(np.quantile(base @ base.T, 0.99))  # collapses ~1 % of pairs on the base
    translated = translate_threshold(threshold, scale)
    assert translated > threshold  # the trained model's classes are tighter
    assert _pair_share(tighter, threshold) > 2 * _pair_share(base, threshold)
    assert _pair_share(tighter, translated) == pytest.approx(_pair_share(base, threshold), abs=2e-3)


def test_no_scale_or_collapse_off_is_left_alone_and_the_map_is_monotone() -> None:
    rng = np.random.default_rng(1)
    scale = calibrate_scale(_clustered(rng, 0.6), _clustered(rng, 0.2))
    assert translate_threshold(0.96, None) == translate_threshold(0.96, {}) == 0.96
    assert translate_threshold(1.01, scale) == 1.01  # > 1: the collapse stays off
    assert translate_threshold(1.0, scale) == 1.0  # identical pixels stay duplicates
    thresholds = np.linspace(-1.0, 1.0, 201)
    translated = [translate_threshold(float(t), scale) for t in thresholds]
    assert all(a <= b for a, b in itertools.pairwise(translated))


def test_calibration_needs_the_same_images_under_both_models() -> None:
    vectors = _normalised(np.random.default_rng(2).standard_normal((5, DIM)))
    with pytest.raises(ValueError, match="same two or more images"):
        calibrate_scale(vectors, vectors[:4])


class _Shard:
    """One shard holding fixed hits, best first."""

    def __init__(self, hits: list[Hit]) -> None:
        self.hits = hits

    def __len__(self) -> int:
        return len(self.hits)

    def search(self, query, k, params=None, with_vectors=False):  # type: ignore[no-untyped-def]
        return self.hits[:k]


def test_the_service_collapses_on_the_serving_models_scale() -> None:
    a = np.zeros(DIM, np.float32)
    a[0] = 1.0
    near = np.zeros(DIM, np.float32)
    near[0], near[1] = 0.97, np.sqrt(1 - 0.97**2)  # cosine 0.97 to a
    shard = _Shard([Hit("a", 0.9, a), Hit("a-sibling", 0.8, near)])
    pretrained = SimpleNamespace(version="p", metadata=SimpleNamespace(similarity_scale={}))
    # a trained model on which the base's 0.96 corresponds to 0.98
    scale = {"base": [0.0, 0.96], "trained": [0.0, 0.98]}
    trained = SimpleNamespace(version="t", metadata=SimpleNamespace(similarity_scale=scale))
    service = SearchService(pretrained, [shard], dedup_threshold=0.96)  # type: ignore[arg-type]
    assert [h.image_id for h in service.search_vector(a, 2)] == ["a"]  # 0.97 >= 0.96
    service.use(trained, [shard])  # type: ignore[arg-type]
    assert service.model_dedup_threshold == pytest.approx(0.98)
    assert [h.image_id for h in service.search_vector(a, 2)] == ["a", "a-sibling"]

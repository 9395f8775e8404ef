"""Re-ranking: near-duplicate collapse and merging of per-shard lists."""

import numpy as np
import pytest

from index.partition import Hit
from index.rerank import collapse_near_duplicates, merge_best

DIM = 16


def _unit(vector):
    vector = np.asarray(vector, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def _near(base, cosine, rng):
    """A unit vector at exactly ``cosine`` from unit ``base``."""
    other = rng.standard_normal(DIM).astype(np.float32)
    other -= (other @ base) * base
    other = _unit(other)
    return _unit(cosine * base + np.sqrt(1 - cosine**2) * other)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def _hits(pairs):
    """Best-first hits from (image id, vector) pairs with decreasing scores."""
    return [Hit(image_id, 1.0 - 0.01 * i, vector) for i, (image_id, vector) in enumerate(pairs)]


def test_near_duplicates_collapse_to_the_best_ranked(rng):
    a = _unit(rng.standard_normal(DIM))
    b = _unit(rng.standard_normal(DIM))
    hits = _hits(
        [
            ("a", a),
            ("a-copy", _near(a, 0.99, rng)),
            ("b", b),
            ("a-resized", _near(a, 0.97, rng)),
            ("b-copy", _near(b, 0.965, rng)),
            ("a-cousin", _near(a, 0.9, rng)),
        ]
    )
    kept = collapse_near_duplicates(hits, threshold=0.96, limit=10)
    assert [hit.image_id for hit in kept] == ["a", "b", "a-cousin"]
    assert kept[0] is hits[0]  # the hits themselves, scores untouched


def test_duplicate_of_a_dropped_hit_is_compared_only_with_kept_ones():
    # In one plane: a at 0, a-copy at theta, c at 2 theta, cos(theta) = 0.97.
    theta = np.arccos(0.97)

    def at(angle):
        vector = np.zeros(DIM, dtype=np.float32)
        vector[0], vector[1] = np.cos(angle), np.sin(angle)
        return vector

    hits = _hits([("a", at(0.0)), ("a-copy", at(theta)), ("c", at(2 * theta))])
    assert float(hits[1].vector @ hits[2].vector) >= 0.96  # c duplicates the dropped one
    kept = collapse_near_duplicates(hits, threshold=0.96, limit=10)
    assert [hit.image_id for hit in kept] == ["a", "c"]


def test_threshold_boundary_is_inclusive(rng):
    a = _unit(rng.standard_normal(DIM))
    exact_copy = a.copy()
    hits = _hits([("a", a), ("copy", exact_copy)])
    assert [h.image_id for h in collapse_near_duplicates(hits, 0.9999, 10)] == ["a"]
    near = _hits([("a", a), ("near", _near(a, 0.95, rng))])
    cosine = float(a @ near[1].vector)
    assert [h.image_id for h in collapse_near_duplicates(near, cosine, 10)] == ["a"]
    above = np.nextafter(np.float32(cosine), np.float32(2))
    assert len(collapse_near_duplicates(near, float(above), 10)) == 2


def test_threshold_above_one_disables_collapsing(rng):
    a = _unit(rng.standard_normal(DIM))
    hits = _hits([("a", a), ("copy", a.copy()), ("other", _near(a, 0.999, rng))])
    kept = collapse_near_duplicates(hits, threshold=1.01, limit=10)
    assert [hit.image_id for hit in kept] == ["a", "copy", "other"]


def test_hit_without_a_vector_is_an_error(rng):
    a = _unit(rng.standard_normal(DIM))
    hits = [Hit("a", 0.9, a), Hit("no-vector", 0.8)]
    with pytest.raises(ValueError, match="no-vector"):
        collapse_near_duplicates(hits, threshold=0.96, limit=10)


def test_limit_is_honoured_and_stops_early(rng):
    vectors = [_unit(rng.standard_normal(DIM)) for _ in range(10)]
    hits = _hits([(f"img-{i}", v) for i, v in enumerate(vectors)])
    kept = collapse_near_duplicates(hits, threshold=0.96, limit=3)
    assert [hit.image_id for hit in kept] == ["img-0", "img-1", "img-2"]

    def stream():
        yield from hits[:3]
        raise AssertionError("read past the limit")

    assert len(collapse_near_duplicates(stream(), threshold=0.96, limit=3)) == 3


def test_limit_counts_kept_hits_not_seen_ones(rng):
    a = _unit(rng.standard_normal(DIM))
    b = _unit(rng.standard_normal(DIM))
    hits = _hits([("a", a), ("a1", a.copy()), ("a2", a.copy()), ("b", b)])
    kept = collapse_near_duplicates(hits, threshold=0.96, limit=2)
    assert [hit.image_id for hit in kept] == ["a", "b"]


def test_empty_input():
    assert collapse_near_duplicates([], threshold=0.96, limit=5) == []
    assert merge_best([]) == []
    assert merge_best([[], []]) == []


def test_merge_best_keeps_the_max_score_per_image_sorted():
    shard_a = [Hit("x", 0.9), Hit("y", 0.5), Hit("z", 0.1)]
    shard_b = [Hit("y", 0.7), Hit("w", 0.6), Hit("x", 0.2)]
    merged = merge_best([shard_a, shard_b])
    assert [(hit.image_id, hit.score) for hit in merged] == [
        ("x", 0.9),
        ("y", 0.7),
        ("w", 0.6),
        ("z", 0.1),
    ]


def test_merge_best_keeps_the_winning_hit_with_its_vector():
    low, high = np.zeros(DIM, dtype=np.float32), np.ones(DIM, dtype=np.float32)
    merged = merge_best([[Hit("x", 0.3, low)], [Hit("x", 0.8, high)]])
    assert len(merged) == 1
    assert merged[0].score == 0.8
    np.testing.assert_array_equal(merged[0].vector, high)


def test_merge_best_accepts_any_iterable_of_lists():
    merged = merge_best(iter([[Hit("a", 0.1)], [Hit("b", 0.2)]]))
    assert [hit.image_id for hit in merged] == ["b", "a"]

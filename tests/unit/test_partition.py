"""Image ids and one partition's exact index, checked against brute force."""

import hashlib
import itertools

import numpy as np
import pytest

import index.partition
from index.ids import image_key
from index.partition import Hit, IdCollisionError, Partition

DIM = 16


def _unit(rng, n, dim=DIM):
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_image_key_is_stable_and_63_bit():
    # Pinned value: every replica and every restart must map an id to the same label.
    assert image_key("cat-1") == image_key("cat-1")
    digest = hashlib.blake2b(b"cat-1", digest_size=8).digest()
    assert image_key("cat-1") == int.from_bytes(digest, "little") & (2**63 - 1)
    assert image_key("cat-1") == 5550202474468860392
    keys = {image_key(f"img-{i}") for i in range(2000)}
    assert len(keys) == 2000
    assert all(0 <= key < 2**63 for key in keys)
    assert image_key("é-ünïcode") >= 0


def test_upsert_same_id_twice_is_one_entry_and_last_vector_wins():
    rng = np.random.default_rng(0)
    first, second = _unit(rng, 2)
    partition = Partition(DIM)
    partition.upsert("a", first)
    partition.upsert("a", second)
    assert len(partition) == 1
    assert "a" in partition
    [hits] = partition.search(second, 5)
    assert [hit.image_id for hit in hits] == ["a"]
    assert hits[0].score == pytest.approx(1.0, abs=1e-5)
    [hits] = partition.search(first, 5)
    assert hits[0].score == pytest.approx(float(first @ second), abs=1e-5)


def test_delete():
    rng = np.random.default_rng(1)
    partition = Partition(DIM)
    a, b = _unit(rng, 2)
    partition.upsert("a", a)
    partition.upsert("b", b)
    assert partition.delete("a") is True
    assert partition.delete("a") is False
    assert partition.delete("never-added") is False
    assert "a" not in partition
    assert len(partition) == 1
    [hits] = partition.search(a, 5)
    assert [hit.image_id for hit in hits] == ["b"]


def test_empty_partition_returns_empty_lists():
    partition = Partition(DIM)
    assert partition.search(np.zeros((3, DIM), dtype=np.float32), 5) == [[], [], []]


def test_private_entries_are_never_returned_even_when_nearest():
    rng = np.random.default_rng(2)
    vectors = _unit(rng, 20)
    query = vectors[0]
    partition = Partition(DIM)
    for i, vector in enumerate(vectors):
        partition.upsert(f"img-{i}", vector, private=i < 5)
    # The three nearest are private copies of the query.
    for i in range(3):
        partition.upsert(f"secret-{i}", query, private=True)
    [hits] = partition.search(query, 10)
    assert len(hits) == 10
    ids = [hit.image_id for hit in hits]
    assert not any(image_id.startswith("secret") for image_id in ids)
    assert not {f"img-{i}" for i in range(5)} & set(ids)


def test_private_then_public_upsert_makes_image_visible():
    rng = np.random.default_rng(3)
    [vector] = _unit(rng, 1)
    partition = Partition(DIM)
    partition.upsert("a", vector, private=True)
    assert partition.search(vector, 3) == [[]]
    partition.upsert("a", vector, private=False)
    assert [hit.image_id for hit in partition.search(vector, 3)[0]] == ["a"]


def test_all_private_returns_nothing():
    rng = np.random.default_rng(4)
    partition = Partition(DIM)
    for i, vector in enumerate(_unit(rng, 4)):
        partition.upsert(f"p{i}", vector, private=True)
    assert partition.search(_unit(rng, 1), 10) == [[]]


def test_results_match_brute_force_cosine_top_k():
    rng = np.random.default_rng(42)
    vectors = _unit(rng, 500)
    ids = [f"img-{i}" for i in range(500)]
    partition = Partition(DIM)
    for image_id, vector in zip(ids, vectors, strict=True):
        partition.upsert(image_id, vector)
    queries = _unit(rng, 7)
    k = 10
    results = partition.search(queries, k)
    assert len(results) == len(queries)
    for query, hits in zip(queries, results, strict=True):
        scores = vectors @ query
        expected = np.argsort(-scores)[:k]
        assert [hit.image_id for hit in hits] == [ids[i] for i in expected]
        np.testing.assert_allclose([hit.score for hit in hits], scores[expected], atol=1e-5)
        assert all(a.score >= b.score for a, b in itertools.pairwise(hits))


def test_k_larger_than_partition():
    rng = np.random.default_rng(5)
    partition = Partition(DIM)
    for i, vector in enumerate(_unit(rng, 3)):
        partition.upsert(f"i{i}", vector)
    [hits] = partition.search(_unit(rng, 1)[0], 50)
    assert sorted(hit.image_id for hit in hits) == ["i0", "i1", "i2"]
    assert all(isinstance(hit, Hit) for hit in hits)


@pytest.mark.parametrize("shape", [(DIM - 1,), (DIM + 1,), (2, DIM)])
def test_dimension_mismatch_raises_value_error(shape):
    partition = Partition(DIM)
    with pytest.raises(ValueError, match="dimensions"):
        partition.upsert("a", np.ones(shape, dtype=np.float32))
    assert len(partition) == 0


def test_id_collision_is_refused(monkeypatch):
    monkeypatch.setattr(index.partition, "image_key", lambda image_id: 7)
    rng = np.random.default_rng(6)
    a, b = _unit(rng, 2)
    partition = Partition(DIM)
    partition.upsert("a", a)
    with pytest.raises(IdCollisionError, match="share label 7"):
        partition.upsert("b", b)
    assert len(partition) == 1
    assert "a" in partition
    assert "b" not in partition
    assert partition.delete("b") is False
    assert [hit.image_id for hit in partition.search(b, 5)[0]] == ["a"]


@pytest.mark.parametrize("factory", ["HNSW32", "IVF100,Flat", "flat", ""])
def test_unsupported_factory(factory):
    with pytest.raises(ValueError, match="not supported"):
        Partition(DIM, factory)

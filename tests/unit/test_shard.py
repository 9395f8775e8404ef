"""Index shards: partition ownership, applying embedding records, merged search."""

import time

import numpy as np
import pytest

from index.shard import IndexShard, owned_partitions
from streams.schemas import ImageEmbedded, vector_to_b64

DIM = 8


def _unit(vector):
    vector = np.asarray(vector, dtype=np.float32)
    return vector / np.linalg.norm(vector)


def _record(image_id, vector, model_version="m1", dim=DIM, private=False):
    return ImageEmbedded(
        image_id=image_id,
        model_version=model_version,
        dim=dim,
        vector_b64=vector_to_b64(vector),
        uploaded_at=1.0,
        embedded_at=2.0,
        source_partition=0,
        source_offset=0,
        private=private,
    )


@pytest.mark.parametrize(
    ("count", "shard", "shards", "expected"),
    [
        (8, 0, 1, list(range(8))),
        (8, 0, 3, [0, 3, 6]),
        (8, 1, 3, [1, 4, 7]),
        (8, 2, 3, [2, 5]),
        (2, 3, 4, []),
    ],
)
def test_owned_partitions(count, shard, shards, expected):
    assert owned_partitions(count, shard, shards) == expected


def test_every_partition_has_exactly_one_owner():
    owners = [p for k in range(3) for p in owned_partitions(10, k, 3)]
    assert sorted(owners) == list(range(10))


@pytest.mark.parametrize(("shard", "shards"), [(-1, 2), (2, 2), (0, 0)])
def test_bad_shard_id(shard, shards):
    with pytest.raises(ValueError, match="shard_id"):
        owned_partitions(8, shard, shards)


def test_apply_adds_and_records_offsets():
    shard = IndexShard(DIM, "m1", [0, 2])
    vector = _unit(np.arange(1, DIM + 1))
    before = time.time()
    assert shard.apply(_record("a", vector), partition=2, offset=10) is True
    assert "a" in shard
    assert len(shard) == 1
    assert "a" in shard.partitions[2]
    assert "a" not in shard.partitions[0]
    assert shard.consumed_offsets == {2: 11}
    assert before <= shard.searchable_at["a"] <= time.time()
    assert shard.skipped_records == 0


@pytest.mark.parametrize(("version", "dim"), [("m2", DIM), ("m1", DIM + 1)])
def test_apply_skips_other_model_version_or_dim(version, dim):
    shard = IndexShard(DIM, "m1", [0])
    vector = _unit(np.ones(dim))
    assert shard.apply(_record("a", vector, version, dim), partition=0, offset=4) is False
    assert shard.skipped_records == 1
    assert len(shard) == 0
    assert "a" not in shard.searchable_at
    assert shard.consumed_offsets == {0: 5}


def test_apply_to_unowned_partition_raises():
    shard = IndexShard(DIM, "m1", [1])
    with pytest.raises(ValueError, match="not owned"):
        shard.apply(_record("a", _unit(np.ones(DIM))), partition=0, offset=0)
    assert shard.consumed_offsets == {}


def test_apply_private_record_is_not_searchable():
    shard = IndexShard(DIM, "m1", [0])
    vector = _unit(np.ones(DIM))
    assert shard.apply(_record("p", vector, private=True), 0, 0) is True
    assert "p" in shard
    assert shard.search(vector, 5) == []


def test_search_merges_partitions_best_first():
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((30, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    shard = IndexShard(DIM, "m1", [1, 3, 5])
    for i, vector in enumerate(vectors):
        partition = [1, 3, 5][i % 3]
        assert shard.apply(_record(f"img-{i}", vector), partition, offset=i)
    assert shard.consumed_offsets == {1: 28, 3: 29, 5: 30}
    query = vectors[7]
    hits = shard.search(query, 6)
    scores = vectors @ query
    expected = np.argsort(-scores)[:6]
    assert [hit.image_id for hit in hits] == [f"img-{i}" for i in expected]
    assert hits[0].image_id == "img-7"
    assert [hit.score for hit in hits] == sorted((hit.score for hit in hits), reverse=True)


def test_offsets_only_move_to_the_latest_applied():
    shard = IndexShard(DIM, "m1", [0])
    vector = _unit(np.ones(DIM))
    shard.apply(_record("a", vector), 0, 3)
    shard.apply(_record("b", vector, model_version="old"), 0, 4)
    assert shard.consumed_offsets[0] == 5
    assert len(shard) == 1

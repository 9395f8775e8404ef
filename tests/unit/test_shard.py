"""Index shards: ownership, applying vector-log records, snapshots and recovery."""

import time

import numpy as np
import pytest

from index.partition import Partition
from index.shard import IndexShard, owned_partitions
from index.snapshot import MAGIC, snapshot_path
from streams.schemas import ImageEmbedded, ImageUpdated, decode_vector_log, encode, vector_to_b64

DIM = 8
MODEL = "m1"


def _unit(rng, n, dim=DIM):
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _embedded(image_id, vector, tiles=None, model_version=MODEL, dim=DIM, at=1.0, private=False):
    tiles = np.empty((0, dim), dtype=np.float32) if tiles is None else np.asarray(tiles)
    return ImageEmbedded(
        image_id=image_id,
        model_version=model_version,
        dim=dim,
        vector_b64=vector_to_b64(vector),
        uploaded_at=at,
        embedded_at=at + 0.5,
        source_partition=0,
        source_offset=0,
        private=private,
        tile_count=len(tiles),
        tiles_b64=vector_to_b64(tiles) if len(tiles) else "",
    )


def _updated(image_id, action, at):
    return ImageUpdated(image_id=image_id, action=action, updated_at=at)


def _shard(partitions=(0, 2), snapshot_dir=None):
    return IndexShard(
        DIM,
        MODEL,
        partitions,
        make_partition=lambda: Partition(DIM, "Flat", background=False),
        snapshot_dir=snapshot_dir,
    )


# --------------------------------------------------------------- ownership


@pytest.mark.parametrize(
    ("count", "shard", "shards", "expected"),
    [
        (8, 0, 1, list(range(8))),
        (8, 0, 3, [0, 3, 6]),
        (8, 1, 3, [1, 4, 7]),
        (8, 2, 3, [2, 5]),
        (2, 3, 4, []),
        (0, 0, 2, []),
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


def test_default_partitions_are_built_for_the_shard_dimension():
    shard = IndexShard(DIM, MODEL, [1, 3])
    assert sorted(shard.partitions) == [1, 3]
    assert all(part.dim == DIM for part in shard.partitions.values())
    assert shard.partitions[1] is not shard.partitions[3]


# ----------------------------------------------------------------- applying


def test_apply_embedded_with_tiles():
    rng = np.random.default_rng(0)
    vector, *tiles = _unit(rng, 3)
    shard = _shard()
    before = time.time()
    assert shard.apply(_embedded("a", vector, tiles), partition=2, offset=10) is True
    after = time.time()
    assert "a" in shard
    assert "a" in shard.partitions[2]
    assert "a" not in shard.partitions[0]
    assert len(shard) == 1
    assert shard.partitions[2].memory().rows == 3  # global vector + 2 tiles
    assert shard.consumed_offsets == {2: 11}
    assert before <= shard.searchable_at["a"] <= after
    assert shard.skipped_records == 0
    np.testing.assert_allclose(shard.vector_of("a"), vector, atol=1e-6)
    for query in (vector, *tiles):  # a crop matching one tile finds the image
        [hit] = shard.search(query, 5)
        assert hit.image_id == "a"
        assert hit.score == pytest.approx(1.0, abs=1e-5)


def test_apply_a_record_decoded_from_the_wire():
    rng = np.random.default_rng(1)
    vector, *tiles = _unit(rng, 4)
    shard = _shard()
    record = decode_vector_log(encode(_embedded("wire", vector, tiles, private=True)))
    assert isinstance(record, ImageEmbedded)
    assert shard.apply(record, partition=0, offset=0)
    assert shard.partitions[0].memory().rows == 4
    assert "wire" not in shard  # private
    update = decode_vector_log(encode(_updated("wire", "public", 2.0)))
    assert isinstance(update, ImageUpdated)
    assert shard.apply(update, partition=0, offset=1)
    assert [hit.image_id for hit in shard.search(tiles[2], 1)] == ["wire"]


@pytest.mark.parametrize(("version", "dim"), [("m2", DIM), (MODEL, DIM + 1)])
def test_apply_skips_another_model_version_or_dimension(version, dim):
    rng = np.random.default_rng(2)
    shard = _shard()
    record = _embedded("a", _unit(rng, 1, dim)[0], model_version=version, dim=dim)
    assert shard.apply(record, partition=0, offset=4) is False
    assert shard.skipped_records == 1
    assert len(shard) == 0
    assert "a" not in shard
    assert "a" not in shard.searchable_at
    assert shard.consumed_offsets == {0: 5}


def test_apply_updated_hides_and_shows():
    rng = np.random.default_rng(3)
    a, b = _unit(rng, 2)
    shard = _shard()
    shard.apply(_embedded("a", a), partition=0, offset=0)
    shard.apply(_embedded("b", b), partition=0, offset=1)
    assert shard.apply(_updated("a", "private", 2.0), partition=0, offset=2) is True
    assert "a" not in shard
    assert [hit.image_id for hit in shard.search(a, 5)] == ["b"]
    assert shard.vector_of("a") is None
    assert shard.consumed_offsets == {0: 3}
    shard.apply(_updated("a", "public", 3.0), partition=0, offset=3)
    assert shard.search(a, 5)[0].image_id == "a"
    shard.apply(_updated("a", "delete", 4.0), partition=0, offset=4)
    assert "a" not in shard
    assert len(shard) == 1
    assert [hit.image_id for hit in shard.search(a, 5)] == ["b"]
    # A replayed (older) embedding of the deleted image changes nothing.
    assert shard.apply(_embedded("a", a, at=1.0), partition=0, offset=5) is False
    assert "a" not in shard
    assert shard.consumed_offsets == {0: 6}


def test_update_that_overtakes_its_embedding_hides_it():
    rng = np.random.default_rng(4)
    shard = _shard()
    shard.apply(_updated("late", "flag", 5.0), partition=2, offset=0)
    assert shard.apply(_embedded("late", _unit(rng, 1)[0], at=4.0), partition=2, offset=1)
    assert "late" not in shard
    assert len(shard) == 1


def test_replayed_record_is_idempotent_and_keeps_searchable_at():
    rng = np.random.default_rng(5)
    shard = _shard()
    record = _embedded("a", _unit(rng, 1)[0])
    assert shard.apply(record, partition=0, offset=0) is True
    first_seen = shard.searchable_at["a"]
    rows = shard.partitions[0].memory().rows
    assert shard.apply(record, partition=0, offset=1) is False
    assert shard.searchable_at["a"] == first_seen
    assert shard.partitions[0].memory().rows == rows
    assert shard.consumed_offsets == {0: 2}


def test_apply_to_a_partition_not_owned_raises():
    rng = np.random.default_rng(6)
    shard = _shard()
    with pytest.raises(ValueError, match="not owned"):
        shard.apply(_embedded("a", _unit(rng, 1)[0]), partition=1, offset=0)
    assert shard.consumed_offsets == {}


def test_skip_counts_and_consumes():
    shard = _shard()
    shard.skip(partition=2, offset=41)
    assert shard.skipped_records == 1
    assert shard.consumed_offsets == {2: 42}
    assert len(shard) == 0


def test_search_merges_partitions_best_first():
    rng = np.random.default_rng(7)
    shard = _shard()
    vectors = _unit(rng, 20)
    for i, vector in enumerate(vectors):
        shard.apply(_embedded(f"img-{i}", vector), partition=(0, 2)[i % 2], offset=i // 2)
    query = vectors[3]
    hits = shard.search(query, 6)
    expected = np.argsort(-(vectors @ query))[:6]
    assert [hit.image_id for hit in hits] == [f"img-{i}" for i in expected]
    assert shard.search(query, 50)[-1].score == pytest.approx(float(np.min(vectors @ query)))
    with_vectors = shard.search(query, 3, with_vectors=True)
    for hit in with_vectors:
        np.testing.assert_allclose(hit.vector, vectors[int(hit.image_id[4:])], atol=1e-6)


# ---------------------------------------------------------------- snapshots


def _fill(shard, rng):
    """Partition 0: five images, then a delete of one (offsets 0-5); partition 2: an image
    with a tile and a flagged one (offsets 0-2)."""
    vectors = _unit(rng, 8)
    for i in range(5):
        shard.apply(_embedded(f"p0-{i}", vectors[i]), partition=0, offset=i)
    shard.apply(_updated("p0-1", "delete", 2.0), partition=0, offset=5)
    shard.apply(_embedded("p2-0", vectors[5], [vectors[6]]), partition=2, offset=0)
    shard.apply(_embedded("p2-1", vectors[7]), partition=2, offset=1)
    shard.apply(_updated("p2-1", "flag", 2.0), partition=2, offset=2)
    return vectors


def test_snapshot_without_a_directory_writes_nothing():
    shard = _shard()
    assert shard.recover("e1") == {0: 0, 2: 0}
    assert shard.snapshot() == []
    assert shard.snapshot(force=True) == []


def test_snapshot_writes_only_changed_partitions(tmp_path):
    rng = np.random.default_rng(8)
    shard = _shard(snapshot_dir=tmp_path)
    shard.recover("e1")
    _fill(shard, rng)
    written = shard.snapshot()
    assert sorted(written) == [snapshot_path(tmp_path, 0), snapshot_path(tmp_path, 2)]
    assert shard.snapshot() == []  # nothing changed since
    shard.apply(_embedded("p2-new", _unit(rng, 1)[0]), partition=2, offset=3)
    assert shard.snapshot() == [snapshot_path(tmp_path, 2)]
    shard.skip(partition=0, offset=6)  # consumed, even if unreadable: a new snapshot
    assert shard.snapshot() == [snapshot_path(tmp_path, 0)]
    assert sorted(shard.snapshot(force=True)) == sorted(written)


def test_recover_same_epoch_starts_at_snapshot_offsets_with_content(tmp_path):
    rng = np.random.default_rng(9)
    first = _shard(snapshot_dir=tmp_path)
    first.recover("e1")
    vectors = _fill(first, rng)
    first.snapshot()

    second = _shard(snapshot_dir=tmp_path)
    assert second.recover("e1") == {0: 6, 2: 3}
    assert second.epoch == "e1"
    assert second.consumed_offsets == {0: 6, 2: 3}
    assert second.recovered_offsets == {0: 6, 2: 3}
    assert len(second) == len(first) == 6  # flagged images count, deleted ones do not
    assert "p0-1" not in second
    assert "p2-1" not in second
    assert "p2-0" in second
    for query in vectors:
        assert second.search(query, 5) == first.search(query, 5)
    assert second.partitions[2].memory().rows == first.partitions[2].memory().rows
    assert second.snapshot() == []  # already on disk at these offsets
    # Records after the snapshot continue from there.
    second.apply(_embedded("p0-5", _unit(rng, 1)[0]), partition=0, offset=6)
    assert second.consumed_offsets[0] == 7
    assert second.snapshot() == [snapshot_path(tmp_path, 0)]


def test_recover_other_epoch_keeps_content_and_reads_from_zero(tmp_path):
    rng = np.random.default_rng(10)
    first = _shard(snapshot_dir=tmp_path)
    first.recover("e1")
    vectors = _fill(first, rng)
    first.snapshot()

    second = _shard(snapshot_dir=tmp_path)
    assert second.recover("e2") == {0: 0, 2: 0}
    assert second.epoch == "e2"
    assert second.recovered_offsets == {}
    assert second.consumed_offsets == {}
    assert len(second) == 6
    assert "p0-0" in second
    assert "p0-1" not in second
    assert "p2-1" not in second
    # The new log replays the same records: nothing changes.
    for i in range(5):
        assert second.apply(_embedded(f"p0-{i}", vectors[i]), partition=0, offset=i) is False
    assert len(second) == 6
    assert "p0-1" not in second
    assert second.consumed_offsets == {0: 5}
    # Snapshots written now carry the new epoch.
    second.snapshot(force=True)
    third = _shard(snapshot_dir=tmp_path)
    assert third.recover("e2") == {0: 5, 2: 0}


def _snapshotted(tmp_path, seed):
    """A shard of epoch e1, filled by ``_fill`` and snapshotted; and its generator."""
    rng = np.random.default_rng(seed)
    shard = _shard(snapshot_dir=tmp_path)
    shard.recover("e1")
    _fill(shard, rng)
    shard.snapshot()
    return shard, rng


def test_new_epoch_while_running_keeps_content_and_snapshots_the_new_epoch(tmp_path):
    """The embedded broker restarted under a running shard: old offsets must not survive."""
    shard, rng = _snapshotted(tmp_path, 12)
    assert shard.begin_epoch("e2") == {0: 0, 2: 0}
    assert shard.epoch == "e2" and len(shard) == 6 and "p0-0" in shard
    assert shard.consumed_offsets == {0: 0, 2: 0}
    # Nothing new was read, yet the snapshots are rewritten: they still say epoch e1.
    assert sorted(shard.snapshot()) == [snapshot_path(tmp_path, 0), snapshot_path(tmp_path, 2)]
    shard.apply(_embedded("new-0", _unit(rng, 1)[0]), partition=2, offset=0)
    shard.snapshot()
    restarted = _shard(snapshot_dir=tmp_path)
    assert restarted.recover("e2") == {0: 0, 2: 1}
    assert "new-0" in restarted and "p0-0" in restarted


def test_recover_ignores_a_corrupt_snapshot(tmp_path):
    _snapshotted(tmp_path, 11)
    path = snapshot_path(tmp_path, 0)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))

    second = _shard(snapshot_dir=tmp_path)
    assert second.recover("e1") == {0: 0, 2: 3}
    assert len(second.partitions[0]) == 0
    assert second.partitions[0].memory().rows == 0
    assert len(second.partitions[2]) == 2
    assert "p2-0" in second
    assert 0 not in second.consumed_offsets
    assert second.consumed_offsets == {2: 3}


@pytest.mark.parametrize("damage", ["magic", "truncate", "model"])
def test_recover_starts_empty_at_zero_for_untrusted_snapshots(tmp_path, damage):
    rng = np.random.default_rng(12)
    first = _shard(snapshot_dir=tmp_path)
    first.recover("e1")
    _fill(first, rng)
    first.snapshot()
    path = snapshot_path(tmp_path, 2)
    data = path.read_bytes()
    if damage == "magic":
        path.write_bytes(b"X" * len(MAGIC) + data[len(MAGIC) :])
    elif damage == "truncate":
        path.write_bytes(data[: len(data) - 10])
    second = IndexShard(
        DIM,
        "m2" if damage == "model" else MODEL,
        [0, 2],
        make_partition=lambda: Partition(DIM, "Flat", background=False),
        snapshot_dir=tmp_path,
    )
    starts = second.recover("e1")
    assert starts[2] == 0
    assert len(second.partitions[2]) == 0
    if damage == "model":
        assert starts[0] == 0  # every snapshot is for the other model
    else:
        assert starts[0] == 6
        assert len(second.partitions[0]) == 4


def test_recover_without_snapshots_starts_at_zero(tmp_path):
    shard = _shard(snapshot_dir=tmp_path / "never-written")
    assert shard.recover("e1") == {0: 0, 2: 0}
    assert len(shard) == 0
    assert shard.consumed_offsets == {}


def test_read_back_rows_are_ranked_best_first_in_two_steps() -> None:
    from index.shard import _best_first

    scores = np.random.default_rng(5).standard_normal(200).astype(np.float32)
    steps = list(_best_first(scores, 12))
    assert [len(step) for step in steps] == [12, 188]
    order = np.concatenate(steps)
    assert sorted(order.tolist()) == list(range(200))
    assert np.array_equal(scores[order], np.sort(scores)[::-1])
    assert [len(step) for step in _best_first(scores, 500)] == [200]

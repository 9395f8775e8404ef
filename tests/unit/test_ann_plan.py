"""The shard-wide index plan: one exact -> ANN decision for a shard's partitions,
one trained template they copy, IVF cells found once per query, batch writes with
explicit results, and the index usable as a library without Kafka or Faust."""

import subprocess
import sys

import numpy as np
import pytest

from index.ann_plan import AnnPlan, nlist_for
from index.faiss_index import SearchParams
from index.partition import Partition, Upsert, WriteResult
from index.shard import IndexShard, partition_for
from index.snapshot import SnapshotInfo, load_snapshot, save_snapshot, snapshot_path

DIM = 16
PARTITIONS = 4


def _mixture(rng, n, centres=40):
    means = np.random.default_rng(99).standard_normal((centres, DIM)).astype(np.float32)
    x = means[rng.integers(0, centres, n)] + 0.3 * rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _shard(threshold, factory="IVF{nlist},Flat", partitions=PARTITIONS):
    return IndexShard(
        DIM,
        "m",
        range(partitions),
        lambda: Partition(DIM, factory, ann_threshold=threshold, background=False),
    )


def _fill(shard, vectors, start=0):
    for i, vector in enumerate(vectors, start):
        image_id = f"img-{i}"
        partition = partition_for(image_id, len(shard.partitions))
        shard.apply_vectors(partition, i, image_id, vector, 1.0)


def _brute(vectors, query, k):
    return [f"img-{i}" for i in np.argsort(-(vectors @ query))[:k]]


@pytest.mark.parametrize(
    ("live", "nlist"), [(0, 16), (1_000, 128), (20_000, 512), (100_000, 1024), (10**6, 4096)]
)
def test_nlist_is_the_power_of_two_nearest_four_root_n(live, nlist):
    assert nlist_for(live) == nlist


def test_the_shard_moves_to_ann_on_its_total_not_per_partition():
    rng = np.random.default_rng(1)
    shard = _shard(threshold=800)
    _fill(shard, _mixture(rng, 799))
    assert {p.kind for p in shard.partitions.values()} == {"exact"}
    # Every partition holds ~200 vectors, far below 800: the shard's total decides.
    _fill(shard, _mixture(rng, 1), start=799)
    assert {p.kind for p in shard.partitions.values()} == {"ann"}
    assert max(p.live_rows for p in shard.partitions.values()) < 400
    keys = {p.coarse_key for p in shard.partitions.values()}
    assert len(keys) == 1 and None not in keys  # one template: shared centroids
    assert shard.plan.template is not None
    assert shard.plan.template.factory == f"IVF{nlist_for(800)},Flat"
    assert shard.plan.trainings == 1


def test_shared_cells_find_what_each_partition_finds_alone():
    rng = np.random.default_rng(2)
    vectors = _mixture(rng, 1200)
    shard = _shard(threshold=1000)
    _fill(shard, vectors)
    params = SearchParams(nprobe=8)
    for query in _mixture(rng, 25):
        shared = shard.search(query, 10, params)
        alone = sorted(
            (hit for p in shard.partitions.values() for hit in p.search(query, 10, params)[0]),
            key=lambda hit: hit.score,
            reverse=True,
        )[:10]
        assert [h.image_id for h in shared] == [h.image_id for h in alone]
        np.testing.assert_allclose([h.score for h in shared], [h.score for h in alone], rtol=1e-5)


def test_shared_cells_keep_recall_and_hidden_images_out():
    rng = np.random.default_rng(3)
    vectors = _mixture(rng, 1500)
    shard = _shard(threshold=1000)
    _fill(shard, vectors)
    hidden = {f"img-{i}" for i in range(0, 1500, 3)}
    for image_id in hidden:
        shard.apply_update(partition_for(image_id, PARTITIONS), 0, image_id, "private", 2.0)
    visible = np.array([i % 3 != 0 for i in range(1500)])
    found = 0
    for query in _mixture(rng, 30):
        hits = shard.search(query, 10, SearchParams(nprobe=16))
        assert len(hits) == 10
        assert not {h.image_id for h in hits} & hidden
        scores = np.where(visible, vectors @ query, -np.inf)
        truth = {f"img-{i}" for i in np.argsort(-scores)[:10]}
        found += len(truth & {h.image_id for h in hits})
    assert found / 300 >= 0.95


def test_the_plan_retrains_as_the_shard_grows_and_returns_to_exact_below_the_threshold():
    rng = np.random.default_rng(4)
    shard = _shard(threshold=300)
    vectors = _mixture(rng, 1300)
    _fill(shard, vectors[:300])
    first = shard.plan.template
    assert first is not None and first.nlist == nlist_for(300) == 64
    _fill(shard, vectors[300:], start=300)  # nlist_for(1300) = 128: doubled, retrained
    assert shard.plan.template.nlist == 128
    assert shard.plan.trainings == 2
    assert {p.coarse_key for p in shard.partitions.values()} == {shard.plan.template.key}
    for i in range(1300 - 200):  # down to 200 live vectors: below 0.8 x 300
        image_id = f"img-{i}"
        shard.apply_update(partition_for(image_id, PARTITIONS), 0, image_id, "delete", 3.0)
    assert shard.plan.template is None
    assert {p.kind for p in shard.partitions.values()} == {"exact"}
    assert len(shard) == 200


def test_a_fixed_factory_is_trained_once_and_hnsw_searches_each_partition():
    rng = np.random.default_rng(5)
    for factory, shared in (("IVF32,Flat", True), ("HNSW16", False)):
        shard = _shard(threshold=500, factory=factory)
        vectors = _mixture(rng, 2000)
        _fill(shard, vectors)
        assert shard.plan.trainings == 1
        assert shard.plan.template.factory == factory
        assert (shard.plan.template.key is not None) is shared
        query = vectors[7]
        assert shard.search(query, 1, SearchParams(nprobe=32))[0].image_id == "img-7"


def test_recovered_partitions_share_cells_again(tmp_path):
    rng = np.random.default_rng(6)
    vectors = _mixture(rng, 1200)
    shard = _shard(threshold=1000)
    _fill(shard, vectors)
    for number, part in shard.partitions.items():
        save_snapshot(tmp_path, part, SnapshotInfo(number, 5, "e", "m"))
    restored = _shard(threshold=1000)
    for number, part in restored.partitions.items():
        load_snapshot(snapshot_path(tmp_path, number), part, "m")
    assert restored.plan.template is not None
    assert restored.plan.template.key == shard.plan.template.key
    assert {p.coarse_key for p in restored.partitions.values()} == {shard.plan.template.key}
    for query in _mixture(rng, 10):
        assert [h.image_id for h in restored.search(query, 10)] == [
            h.image_id for h in shard.search(query, 10)
        ]


def test_a_partition_restored_from_another_plan_is_rebuilt_into_the_shards():
    rng = np.random.default_rng(7)
    shard = _shard(threshold=1000)
    _fill(shard, _mixture(rng, 1200))
    odd = shard.partitions[0]
    stranger = Partition(DIM, "IVF{nlist},Flat", ann_threshold=10, background=False)
    stranger.upsert_many([Upsert(f"s{i}", v, 1.0) for i, v in enumerate(_mixture(rng, 200))])
    blob, state = stranger.export_state()
    odd.import_state(blob, state)  # other centroids than the shard's template
    assert shard.plan.stale(odd)
    shard.plan.check()
    assert not shard.plan.stale(odd)
    assert odd.coarse_key == shard.plan.template.key
    assert len(odd) == 200


# ----------------------------------------------------------- library surface


def test_upsert_many_is_one_write_with_a_result_per_item():
    rng = np.random.default_rng(8)
    part = Partition(DIM, "Flat")
    a, b, c = _mixture(rng, 3)
    assert part.upsert("old", a, 5.0) is WriteResult.APPLIED
    results = part.upsert_many(
        [
            Upsert("x", a, 1.0),
            Upsert("old", b, 4.0),  # older than what is indexed
            Upsert("y", np.stack([b, c]), 1.0),  # a global vector and a tile
            Upsert("x", c, 2.0),  # the same image again, newer: wins within the batch
        ]
    )
    assert results == [
        WriteResult.APPLIED,
        WriteResult.SUPERSEDED,
        WriteResult.APPLIED,
        WriteResult.APPLIED,
    ]
    assert len(part) == 3 == len(part.image_ids())
    np.testing.assert_allclose(part.vector_of("x"), c, atol=1e-6)
    assert part.search(c, 1)[0][0].image_id == "x"
    assert part.memory().live_rows == 4  # old, y (2 rows), x; the first x retired


def test_delete_many_and_updates_say_what_they_did():
    rng = np.random.default_rng(9)
    part = Partition(DIM, "Flat")
    vectors = _mixture(rng, 3)
    part.upsert_many([Upsert(f"i{n}", v, 5.0) for n, v in enumerate(vectors)])
    assert part.delete_many(["i0", "i1"], 6.0) == [WriteResult.APPLIED, WriteResult.APPLIED]
    assert part.update("i2", "delete", 4.0) is WriteResult.SUPERSEDED  # older than the upload
    assert part.update("i2", "private", 7.0) is WriteResult.APPLIED
    assert part.update("i2", "public", 6.5) is WriteResult.SUPERSEDED  # older than private@7
    assert part.update("later", "flag", 1.0) is WriteResult.PENDING  # no vectors yet
    assert part.upsert("later", vectors[0], 0.5) is WriteResult.APPLIED
    assert not part.is_visible("later")  # the remembered flag applies
    assert len(part) == 2 == len(part.image_ids())


def test_len_is_kept_not_counted():
    rng = np.random.default_rng(10)
    part = Partition(DIM, "Flat", min_compact_rows=4, background=False)
    ids = [f"i{n}" for n in range(60)]
    for step in range(400):
        image_id = ids[rng.integers(len(ids))]
        if rng.random() < 0.6:
            part.upsert(image_id, _mixture(rng, 1)[0], float(step))
        else:
            part.update(image_id, "delete", float(step))
        assert len(part) == len(part.image_ids())


def test_a_lone_partition_is_a_plan_of_one():
    part = Partition(DIM)
    assert isinstance(part.plan, AnnPlan)
    assert part.plan.partitions() == [part]
    assert part.factory == "IVF{nlist},Flat"


def test_the_index_imports_without_kafka_consumers_or_faust():
    code = (
        "import sys, index.shard, index.partition;"
        "assert 'faust' not in sys.modules, 'faust';"
        "assert 'streams.log_follower' not in sys.modules, 'consumer'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_bulk_load_ends_on_the_plan_its_final_size_wants():
    rng = np.random.default_rng(11)
    shard = IndexShard(
        DIM,
        "m",
        range(PARTITIONS),
        lambda: Partition(DIM, ann_threshold=300, background=True),
    )
    vectors = _mixture(rng, 4000)
    owner = np.array([partition_for(f"img-{i}", PARTITIONS) for i in range(len(vectors))])
    for number, part in shard.partitions.items():  # partition after partition, as fast as it goes
        rows = np.flatnonzero(owner == number).tolist()
        part.upsert_many([Upsert(f"img-{i}", vectors[i], 1.0) for i in rows])
    shard.wait_idle(timeout_s=120)
    # No write came after the last batch: the background re-plan itself caught up.
    assert shard.plan.current() == f"IVF{nlist_for(4000)},Flat" == "IVF256,Flat"
    assert not any(shard.plan.stale(p) for p in shard.partitions.values())
    assert shard.search(vectors[9], 1, SearchParams(nprobe=16))[0].image_id == "img-9"


def test_vectors_are_not_read_for_an_image_hidden_after_it_was_found():
    rng = np.random.default_rng(12)
    part = Partition(DIM, "Flat")
    a, b = _mixture(rng, 2)
    part.upsert_many([Upsert("a", a, 1.0), Upsert("b", b, 1.0)])
    found = part.top(a[None, :], 2, SearchParams())[0]
    assert {image_id for _, image_id in found} == {"a", "b"}
    part.update("a", "private", 2.0)  # lands between the scan and the vector read
    hits = part.hits_with_vectors(found)
    assert [hit.image_id for hit in hits] == ["b"]
    np.testing.assert_allclose(hits[0].vector, b, atol=1e-6)
    assert [hit.image_id for hit in part.search(a, 2, with_vectors=True)[0]] == ["b"]


def test_search_many_has_the_partitions_shape_and_the_single_searches_results():
    rng = np.random.default_rng(13)
    shard = _shard(threshold=1000)
    _fill(shard, _mixture(rng, 1500))
    queries = _mixture(rng, 6)
    batch = shard.search_many(queries, 5)
    assert len(batch) == 6 and all(len(hits) == 5 for hits in batch)
    for query, hits in zip(queries, batch, strict=True):
        single = shard.search(query, 5)
        assert [h.image_id for h in hits] == [h.image_id for h in single]
    part = shard.partitions[0]
    assert [len(hits) for hits in part.search(queries, 5)] == [5] * 6  # the same shape
    with_vectors = shard.search_many(queries[:2], 3, with_vectors=True)
    assert all(hit.vector is not None for hits in with_vectors for hit in hits)


def test_short_lists_are_probed_until_a_search_scans_the_minimum():
    """nlist grows as 4·sqrt(n), so a shard just past the threshold has short lists and
    nprobe 16 would scan a few hundred rows: nprobe is raised to scan ~min_scanned_rows."""
    rng = np.random.default_rng(3)
    vectors = _mixture(rng, 2_000)
    shard = _shard(threshold=800)
    _fill(shard, vectors)
    plan = shard.plan
    assert plan.template is not None and plan.template.nlist == nlist_for(2_000) == 128
    assert plan.min_scanned_rows == 1_250  # the default
    assert plan.probing(SearchParams(nprobe=16)).nprobe == 80  # 1,250 rows of 2,000 in 128 lists
    assert plan.probing(SearchParams(nprobe=100)).nprobe == 100  # more is kept
    # the shard's searches use it: the same hits as asking for 80 probes with no floor
    query = vectors[7]
    raised = [h.image_id for h in shard.search(query, 10, SearchParams(nprobe=16))]
    plan.min_scanned_rows = 0
    assert plan.probing(SearchParams(nprobe=16)).nprobe == 16
    assert [h.image_id for h in shard.search(query, 10, SearchParams(nprobe=80))] == raised
    # an exact group (below the threshold) is left alone
    small = _shard(threshold=800)
    _fill(small, vectors[:100])
    assert small.plan.probing(SearchParams(nprobe=16)).nprobe == 16

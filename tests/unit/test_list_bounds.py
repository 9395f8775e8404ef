"""IVF list bounds: radii that hold for every row, and a shard's pruned scan that
answers exactly what the scan of every list answers while scanning fewer lists,
whether its partitions are scanned in one faiss call (index/joint_scan.py) or
one by one."""

import dataclasses
import gc
import time
import weakref

import faiss
import numpy as np
import pytest

import index.shard as shard_module
from index.faiss_index import CoarseCells, SearchParams, cell_finder
from index.joint_scan import JointLists
from index.list_bounds import KthScoreGuess, ListRadii, SlidingWindow, score_bounds
from index.partition import Partition, Placement, Upsert, WriteResult
from index.shard import IndexShard, partition_for
from index.snapshot import SnapshotInfo, load_snapshot, save_snapshot, snapshot_path

DIM = 16
PARTITIONS = 4
PARAMS = SearchParams(nprobe=16)


def _mixture(rng, n, centres=40, spread=0.15):
    means = np.random.default_rng(99).standard_normal((centres, DIM)).astype(np.float32)
    noise = spread * rng.standard_normal((n, DIM)).astype(np.float32)
    x = means[rng.integers(0, centres, n)] + noise
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _ivf(vectors, nlist=32):
    index = faiss.index_factory(DIM, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
    index.train(vectors)
    index.make_direct_map()
    return index


def _brute_radii(index, vectors):
    _, lists = index.quantizer.search(vectors, 1)
    centroids = index.quantizer.reconstruct_n(0, index.nlist)
    radii = np.zeros(index.nlist, dtype=np.float32)
    np.maximum.at(radii, lists[:, 0], np.linalg.norm(vectors - centroids[lists[:, 0]], axis=1))
    return radii


def test_radii_match_a_brute_force_as_rows_arrive_in_pieces():
    rng = np.random.default_rng(1)
    vectors = _mixture(rng, 3000)
    index = _ivf(vectors)
    index.add(vectors[:1000])
    radii = ListRadii(index)
    assert radii.current() and radii.covered == 1000
    np.testing.assert_allclose(radii.radii, _brute_radii(index, vectors[:1000]), rtol=1e-5)
    index.add(vectors[1000:])
    assert not radii.current()  # rows it has not counted: its bounds do not hold
    radii.catch_up()
    assert radii.current() and radii.covered == 3000
    np.testing.assert_allclose(radii.radii, _brute_radii(index, vectors), rtol=1e-5)


def test_no_row_scores_above_its_lists_bound():
    rng = np.random.default_rng(2)
    vectors = _mixture(rng, 2000)
    index = _ivf(vectors)
    index.add(vectors)
    radii = ListRadii(index)
    queries = np.concatenate([_mixture(rng, 20), 3.0 * rng.standard_normal((20, DIM))])
    queries = queries.astype(np.float32)
    cell_scores, cells = index.quantizer.search(queries, index.nlist)  # every list
    norms = np.linalg.norm(queries, axis=1, keepdims=True)
    bounds = score_bounds(radii.radii, cells, cell_scores, norms)
    _, lists = index.quantizer.search(vectors, 1)
    for number, query in enumerate(queries):
        bound_of = dict(zip(cells[number].tolist(), bounds[number].tolist(), strict=True))
        row_bounds = np.array([bound_of[int(cell)] for cell in lists[:, 0]])
        assert np.all(vectors @ query <= row_bounds + 1e-5)


def test_cells_scored_by_the_float16_copy_still_bound_every_row():
    """The shard finds cells with a float16 copy of the centroids; with its error
    added, no row scores above its list's bound, even for long queries (the
    copy's score error grows with the query's norm)."""
    rng = np.random.default_rng(12)
    vectors = _mixture(rng, 2000)
    index = _ivf(vectors)
    index.add(vectors)
    radii = ListRadii(index)
    half, error = cell_finder(index.quantizer)
    assert isinstance(faiss.downcast_index(half), faiss.IndexScalarQuantizer)
    assert 0 < error < 1e-3  # float16 rounds unit-scale centroids by ~1e-4
    queries = np.concatenate([_mixture(rng, 20), 50.0 * rng.standard_normal((20, DIM))])
    queries = queries.astype(np.float32)
    cell_scores, cells = half.search(queries, index.nlist)  # every list
    exact = queries @ index.quantizer.reconstruct_n(0, index.nlist).T
    norms = np.linalg.norm(queries, axis=1, keepdims=True)
    gap = np.abs(np.take_along_axis(exact, cells, axis=1) - cell_scores)
    assert np.all(gap <= norms * error * 1.001 + 1e-4)
    bounds = score_bounds(radii.radii, cells, cell_scores, norms, error)
    _, lists = index.quantizer.search(vectors, 1)
    for number, query in enumerate(queries):
        bound_of = dict(zip(cells[number].tolist(), bounds[number].tolist(), strict=True))
        row_bounds = np.array([bound_of[int(cell)] for cell in lists[:, 0]])
        assert np.all(vectors @ query <= row_bounds + 1e-6 * norms[number, 0])


def test_the_float16_error_is_what_keeps_a_tight_bound_true():
    """A row placed where its list's bound is tight (``x = c + R·u`` with the query
    along ``u``), ``u`` pointing from the float16 centroid to the exact one: the
    copy's cell score alone falls short of the row's score; with the error added
    it does not."""
    rng = np.random.default_rng(13)
    centroids = rng.standard_normal((8, DIM)).astype(np.float32)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    quantizer = faiss.IndexFlatIP(DIM)
    quantizer.add(centroids)
    index = faiss.IndexIVFFlat(quantizer, DIM, 8, faiss.METRIC_INNER_PRODUCT)
    index.make_direct_map()
    half, error = cell_finder(quantizer)
    drift = centroids[0] - half.reconstruct(0)
    along = drift / np.linalg.norm(drift)
    row = (centroids[0] + 0.01 * along).astype(np.float32)
    index.add(row[None])
    radii = ListRadii(index)
    query = (1000.0 * along).astype(np.float32)[None]
    cell_scores, cells = half.search(query, 8)
    first = int(np.flatnonzero(cells[0] == 0)[0])
    score = float(row @ query[0])
    norms = np.linalg.norm(query, axis=1, keepdims=True)
    widened = score_bounds(radii.radii, cells, cell_scores, norms, error)[0, first]
    bare = score_bounds(radii.radii, cells, cell_scores, norms)[0, first]
    tolerance = 1e-5 * 1000  # float rounding of a score at this norm
    assert widened >= score - tolerance
    assert bare < score - 10 * tolerance


def test_a_non_flat_quantizer_is_its_own_cell_finder():
    quantizer = faiss.IndexHNSWFlat(DIM, 8, faiss.METRIC_INNER_PRODUCT)
    assert cell_finder(quantizer) == (quantizer, 0.0)


def test_only_a_plain_ivf_with_a_flat_quantizer_gets_radii():
    assert ListRadii.of(faiss.IndexFlatIP(DIM)) is None
    assert ListRadii.of(faiss.IndexHNSWFlat(DIM, 8, faiss.METRIC_INNER_PRODUCT)) is None
    rng = np.random.default_rng(3)
    vectors = _mixture(rng, 500)
    index = _ivf(vectors, nlist=8)
    index.add(vectors)
    assert ListRadii.of(index) is not None


@pytest.mark.parametrize("size", [1, 2, 17, 256])
@pytest.mark.parametrize("share", [0.0, 0.5, 0.9, 0.95, 1.0])
def test_the_guess_quantile_is_numpys_over_the_last_values(size, share):
    values = np.random.default_rng(size).normal(size=3 * size)
    values[size] = values[0]  # a repeated value: the right copy leaves the window
    window = SlidingWindow(size)
    for count, value in enumerate(values.tolist(), start=1):
        window.add(value)
        last = values[max(0, count - size) : count]
        assert len(window) == len(last)
        assert window.quantile(share) == pytest.approx(float(np.quantile(last, share)), abs=1e-12)


def test_the_kth_guess_waits_for_answers_then_takes_the_gap_quantile():
    rng = np.random.default_rng(4)
    centroids = _mixture(rng, 8)
    quantizer = faiss.IndexFlatIP(DIM)
    quantizer.add(centroids)
    guess = KthScoreGuess(quantile=0.5, min_seen=4, every=4)
    queries = _mixture(rng, 4)
    cells = CoarseCells("key", queries, quantizer, 2)
    assert guess.floor(cells, 10) is None  # nothing learnt yet
    nearest = quantizer.search(queries, 1)[0][:, 0]
    guess.learn(cells, 10, nearest)  # cells not found yet: nothing to learn from
    assert guess.floor(cells, 10) is None
    cells.pointers()
    guess.learn(cells, 10, nearest - np.array([0.1, 0.2, 0.3, np.nan], dtype=np.float32))
    assert guess.floor(cells, 10) is None  # 3 gaps: a short answer teaches nothing
    guess.learn(cells, 10, nearest - np.float32(0.4))
    floor = guess.floor(cells, 10)
    assert floor is not None
    gaps = [0.1, 0.2, 0.3, 0.4, 0.4, 0.4, 0.4]
    np.testing.assert_allclose(floor, nearest - np.quantile(gaps, 0.5), rtol=1e-5)
    assert guess.floor(cells, 5) is None  # learnt per k


def _shard(threshold=1000, min_scanned_rows=1250, factory="IVF{nlist},Flat"):
    return IndexShard(
        DIM,
        "m",
        range(PARTITIONS),
        lambda: Partition(
            DIM,
            factory,
            ann_threshold=threshold,
            background=False,
            min_scanned_rows=min_scanned_rows,
        ),
    )


def _fill(shard, vectors, start=0):
    for i, vector in enumerate(vectors, start):
        image_id = f"img-{i}"
        shard.apply_vectors(partition_for(image_id, PARTITIONS), i, image_id, vector, 1.0)


def _one_pass(monkeypatch, search, *args):
    """``search(*args)`` with list skipping off: what a pruned scan must answer."""
    with monkeypatch.context() as patch:
        patch.setattr(shard_module, "PRUNE_MIN_SHARE", 2.0)  # never prune
        return search(*args)


@pytest.fixture(params=["joint", "one by one"])
def scan_path(request, monkeypatch):
    """The shard's two ways to scan its partitions' lists: in one faiss call, or
    one partition at a time (where the partitions cannot be scanned together)."""
    if request.param != "joint":
        monkeypatch.setattr(IndexShard, "_scan_joint", lambda self, *args: None)
    return request.param


@pytest.fixture()
def scanned_lists(monkeypatch):
    """How many (partition, list) scans the pruned passes made, either way."""
    counter = {"lists": 0, "passes": 0, "joint passes": 0}
    original = Partition.top_in_lists
    original_joint = JointLists.best

    def counting(self, queries, k, params, cells, radii):
        counter["lists"] += int((cells.cells >= 0).sum())
        counter["passes"] += 1
        return original(self, queries, k, params, cells, radii)

    def counting_joint(self, cells, skip, fetch):
        cells.pointers()
        scanned = np.broadcast_to(cells.cells >= 0, (len(self._offsets), *cells.cells.shape))
        counter["lists"] += int((scanned if skip is None else scanned & ~skip).sum())
        counter["joint passes"] += 1
        return original_joint(self, cells, skip, fetch)

    monkeypatch.setattr(Partition, "top_in_lists", counting)
    monkeypatch.setattr(JointLists, "best", counting_joint)
    return counter


def _learnt(shard, rng, k=10):
    for query in _mixture(rng, 32):  # the shard learns where its k-th scores land
        shard.search(query, k, PARAMS)
    cells = CoarseCells("x", _mixture(rng, 1), shard.plan.template.quantizer, 1)
    assert shard.kth_guess.floor(cells, k) is not None


def test_pruned_answers_are_the_one_pass_answers_over_fewer_lists(
    monkeypatch, scanned_lists, scan_path
):
    rng = np.random.default_rng(5)
    shard = _shard()
    _fill(shard, _mixture(rng, 4000))
    assert all(p.list_radii() is not None for p in shard.partitions.values())
    template = shard.plan.template
    assert template.cell_error > 0  # cells come from the float16 copy, bounds widened
    assert isinstance(faiss.downcast_index(template.cell_quantizer), faiss.IndexScalarQuantizer)
    _learnt(shard, rng)
    pruned_lists = 0
    queries = _mixture(rng, 40)
    for query in queries:
        before = scanned_lists["lists"]
        pruned = shard.search(query, 10, PARAMS)
        pruned_lists += scanned_lists["lists"] - before
        whole = _one_pass(monkeypatch, shard.search, query, 10, PARAMS)
        assert [h.image_id for h in pruned] == [h.image_id for h in whole]
        np.testing.assert_allclose([h.score for h in pruned], [h.score for h in whole], rtol=1e-5)
    # 40 queries x 4 partitions x 16 lists in one pass: far fewer were scanned.
    assert 0 < pruned_lists < 0.5 * len(queries) * PARTITIONS * PARAMS.nprobe
    # ...in one faiss call a pass, or one a partition.
    assert (scanned_lists["joint passes"] > 0) == (scan_path == "joint")
    assert (scanned_lists["passes"] > 0) == (scan_path != "joint")
    # Several queries at once (a search's views): each skips its own lists.
    batch = shard.search_many(queries[:6], 10, PARAMS)
    whole_batch = _one_pass(monkeypatch, shard.search_many, queries[:6], 10, PARAMS)
    assert [[h.image_id for h in row] for row in batch] == [
        [h.image_id for h in row] for row in whole_batch
    ]


def test_a_guess_too_high_scans_the_lists_it_skipped(monkeypatch, scanned_lists, scan_path):
    rng = np.random.default_rng(6)
    shard = _shard()
    _fill(shard, _mixture(rng, 4000))
    _learnt(shard, rng)
    shard.kth_guess.every = 10**9  # keep the planted margin
    shard.kth_guess._margins[10] = -1.0  # a floor above every bound: skip all lists
    for query in _mixture(rng, 10):
        scanned_lists["lists"] = 0
        pruned = shard.search(query, 10, PARAMS)
        assert scanned_lists["lists"] > 0  # the check found the k-th short and scanned
        assert [h.image_id for h in pruned] == [
            h.image_id for h in _one_pass(monkeypatch, shard.search, query, 10, PARAMS)
        ]


def test_hidden_images_stay_out_of_pruned_answers(monkeypatch, scan_path):
    rng = np.random.default_rng(7)
    shard = _shard()
    vectors = _mixture(rng, 3000)
    _fill(shard, vectors)
    hidden = {f"img-{i}" for i in range(0, 3000, 4)}
    for image_id in hidden:
        shard.apply_update(partition_for(image_id, PARTITIONS), 0, image_id, "private", 2.0)
    _learnt(shard, rng)
    for query in vectors[:40:2]:  # half of them are hidden images themselves
        pruned = shard.search(query, 10, PARAMS)
        assert len(pruned) == 10 and not {h.image_id for h in pruned} & hidden
        assert [h.image_id for h in pruned] == [
            h.image_id for h in _one_pass(monkeypatch, shard.search, query, 10, PARAMS)
        ]


def test_lists_too_short_for_k_hand_the_search_to_the_one_pass_that_widens(monkeypatch, scan_path):
    rng = np.random.default_rng(10)
    shard = _shard(min_scanned_rows=0)  # nprobe as asked: two short lists
    vectors = _mixture(rng, 3000)
    _fill(shard, vectors)
    _learnt(shard, rng)
    for i in range(3000):  # 1 image in 100 left: the probed lists hold fewer than 10
        if i % 100:
            image_id = f"img-{i}"
            shard.apply_update(partition_for(image_id, PARTITIONS), 0, image_id, "private", 2.0)
    narrow = SearchParams(nprobe=2)
    for query in _mixture(rng, 10):
        pruned = shard.search(query, 10, narrow)
        whole = _one_pass(monkeypatch, shard.search, query, 10, narrow)
        assert len(pruned) == 10
        assert [h.image_id for h in pruned] == [h.image_id for h in whole]


def test_a_row_upserted_into_an_ivf_widens_its_lists_radius_at_once():
    rng = np.random.default_rng(8)
    shard = _shard()
    _fill(shard, _mixture(rng, 3000))
    # Between two clusters: far from any centroid, so its list's radius must grow.
    outlier = _mixture(rng, 2).sum(axis=0)
    outlier /= np.linalg.norm(outlier)
    part = shard.partitions[partition_for("outlier", PARTITIONS)]
    quantizer = shard.plan.template.quantizer
    _, cell = shard.plan.template.cell_quantizer.search(outlier[None], 1)  # its list
    distance = np.linalg.norm(outlier - quantizer.reconstruct(int(cell[0, 0])))
    before = part.list_radii().radii[cell[0, 0]]
    assert before < distance  # no row of its list lay that far out
    part.upsert_many([Upsert("outlier", outlier, 5.0)])
    radii = part.list_radii()  # counted under the write lock: current again
    assert radii is not None
    assert radii.radii[cell[0, 0]] == pytest.approx(distance, rel=1e-5)
    _learnt(shard, rng)
    assert shard.search(outlier, 1, PARAMS)[0].image_id == "outlier"


def test_rows_inserted_into_an_ivf_take_their_lists_from_the_cell_finder(monkeypatch):
    """After the move to IVF, inserts are assigned by the shard's cell finder (warm
    from searches), not by the partition's own quantizer. A coarse finder (the
    centroids rounded to one decimal, its error declared) makes that visible:
    rows sit in the lists it picks, some not the nearest float32 centroid's,
    each is found by its own vector, and with the error in the bounds the
    pruned scan still answers what the one-pass scan answers."""
    rng = np.random.default_rng(14)
    shard = _shard()
    _fill(shard, _mixture(rng, 3000))
    template = shard.plan.template
    centroids = template.quantizer.reconstruct_n(0, template.nlist)
    rounded = np.round(centroids, 1)
    coarse = faiss.IndexFlatIP(DIM)
    coarse.add(rounded)
    error = float(np.linalg.norm(centroids - rounded, axis=1).max())
    shard.plan.template = dataclasses.replace(template, cell_quantizer=coarse, cell_error=error)
    fresh = _mixture(rng, 200)
    _fill(shard, fresh, start=3000)
    _, picked = coarse.search(fresh, 1)
    _, exact = template.quantizer.search(fresh, 1)
    assert np.any(picked != exact)  # the finder, not the float32 quantizer, placed them
    for i, vector in enumerate(fresh):
        image_id = f"img-{3000 + i}"
        part = shard.partitions[partition_for(image_id, PARTITIONS)]
        index = part._index
        entries = faiss.rev_swig_ptr(index.direct_map.array.data(), index.ntotal)
        assert entries[part.state_of(image_id).first_row] >> 32 == picked[i, 0]
        assert part.search(vector, 1, PARAMS)[0][0].image_id == image_id
    _learnt(shard, rng)
    for query in _mixture(rng, 20):
        assert [h.image_id for h in shard.search(query, 10, PARAMS)] == [
            h.image_id for h in _one_pass(monkeypatch, shard.search, query, 10, PARAMS)
        ]


def test_lists_found_before_the_write_lock_are_used_only_for_the_same_centroids(monkeypatch):
    """An insert's lists are found before the partition's write lock is taken; a
    partition that moved to other centroids meanwhile must not file rows by the
    old ones. A placement that puts every row in list 0 shows which was used:
    under its own key the rows land there, under another key in their nearest."""
    rng = np.random.default_rng(15)
    shard = _shard()
    _fill(shard, _mixture(rng, 3000))
    fresh = _mixture(rng, 2)
    _, nearest = shard.plan.template.cell_quantizer.search(fresh, 1)
    assert np.all(nearest[:, 0] != 0)
    image_id = "placed"
    part = shard.partitions[partition_for(image_id, PARTITIONS)]

    def list_of(row: int) -> int:
        index = part._index
        return int(faiss.rev_swig_ptr(index.direct_map.array.data(), index.ntotal)[row] >> 32)

    for key, expected in ((part.coarse_key, 0), ("other centroids", int(nearest[0, 0]))):
        zeros = Placement(key, [np.zeros(1, dtype=np.int64)])
        monkeypatch.setattr(part, "_placement", lambda vectors, z=zeros: z)
        assert part.upsert_many([Upsert(image_id, fresh[0], time.time())]) == [WriteResult.APPLIED]
        assert list_of(part.state_of(image_id).first_row) == expected
    monkeypatch.undo()
    # A batch with a superseded item: the lists of the items written, in order.
    placed = part._placement([fresh[:1], fresh[1:]])
    assert placed is not None and [int(x[0]) for x in placed.lists] == nearest[:, 0].tolist()
    other = next(
        f"placed-{n}"
        for n in range(2, 100)
        if partition_for(f"placed-{n}", PARTITIONS) == partition_for(image_id, PARTITIONS)
    )
    results = part.upsert_many(
        [Upsert(image_id, fresh[0], 1.0), Upsert(other, fresh[1], time.time())]
    )
    assert results == [WriteResult.SUPERSEDED, WriteResult.APPLIED]
    assert list_of(part.state_of(other).first_row) == nearest[1, 0]
    assert part.upsert_many([]) == []  # nothing to place, nothing written


def test_restored_and_tiled_partitions(tmp_path, monkeypatch, scan_path):
    rng = np.random.default_rng(9)
    shard = _shard()
    _fill(shard, _mixture(rng, 3000))
    for number, part in shard.partitions.items():
        save_snapshot(tmp_path, part, SnapshotInfo(number, 5, "e", "m"))
    restored = _shard()
    for number, part in restored.partitions.items():
        load_snapshot(snapshot_path(tmp_path, number), part, "m")
    assert all(p.list_radii() is not None for p in restored.partitions.values())
    _learnt(restored, rng)
    for query in _mixture(rng, 10):
        assert [h.image_id for h in restored.search(query, 10, PARAMS)] == [
            h.image_id for h in _one_pass(monkeypatch, shard.search, query, 10, PARAMS)
        ]
    # An image with several rows (tiles): a row's bound is not the image's, no skipping.
    part = restored.partitions[partition_for("tiled", PARTITIONS)]
    part.upsert_many([Upsert("tiled", _mixture(rng, 3), 6.0)])
    assert part.list_radii() is None


def _filled_and_learnt(seed, n=3000):
    """A shard of ``n`` mixture vectors that has learnt where its k-th scores land."""
    rng = np.random.default_rng(seed)
    shard = _shard()
    vectors = _mixture(rng, n)
    _fill(shard, vectors)
    _learnt(shard, rng)
    return rng, shard, vectors


def _nearest(vectors, query, count):
    return [f"img-{i}" for i in np.argsort(-(vectors @ query))[:count]]


def test_hidden_rows_crowding_a_joint_fetch_leave_the_answer_to_the_bitmap_scan(
    monkeypatch, scanned_lists
):
    _, shard, vectors = _filled_and_learnt(11)
    query = vectors[7]
    hidden = set(_nearest(vectors, query, 25))  # more than k plus the joint margin
    for image_id in hidden:
        shard.apply_update(partition_for(image_id, PARTITIONS), 0, image_id, "delete", 2.0)
    scanned_lists.update({"joint passes": 0, "passes": 0})
    hits = shard.search(query, 10, PARAMS)
    assert scanned_lists["joint passes"] > 0  # tried first, and found too few visible
    assert len(hits) == 10 and not {h.image_id for h in hits} & hidden
    assert [h.image_id for h in hits] == [
        h.image_id for h in _one_pass(monkeypatch, shard.search, query, 10, PARAMS)
    ]
    shown = shard.search(vectors[2000], 10, PARAMS)  # far from them: joint, no fallback
    assert not {h.image_id for h in shown} & hidden and len(shown) == 10


def test_a_rebuilt_partition_gets_a_new_joint_view_and_its_old_index_is_freed(
    monkeypatch, scanned_lists
):
    rng, shard, _ = _filled_and_learnt(12)
    view = shard._joint
    assert view is not None
    part = shard.partitions[0]
    old = weakref.ref(part._index)
    for i in range(0, 3000, 3):  # enough deletes for a compaction: a new index
        image_id = f"img-{i}"
        if partition_for(image_id, PARTITIONS) == 0:
            shard.apply_update(0, 0, image_id, "delete", 2.0)
    assert part.rebuild()
    gc.collect()
    assert old() is None  # the view kept no strong reference to the replaced index
    scanned_lists["joint passes"] = 0
    for query in _mixture(rng, 10):
        assert [h.image_id for h in shard.search(query, 10, PARAMS)] == [
            h.image_id for h in _one_pass(monkeypatch, shard.search, query, 10, PARAMS)
        ]
    assert scanned_lists["joint passes"] > 0 and shard._joint is not view


def test_a_shard_whose_lists_never_fall_away_bounds_one_search_in_sixteen(monkeypatch):
    rng = np.random.default_rng(13)
    shard = _shard()
    _fill(shard, _mixture(rng, 3000))
    _learnt(shard, rng)
    bounded = {"searches": 0}
    original = shard_module.score_bounds

    def counting(*args):
        bounded["searches"] += 1
        return original(*args)

    monkeypatch.setattr(shard_module, "score_bounds", counting)
    monkeypatch.setattr(shard_module, "PRUNE_MIN_SHARE", 2.0)  # no list ever worth skipping
    shard._prune_misses = 0
    queries = _mixture(rng, 64 + 160)
    for query in queries:
        shard.search(query, 10, PARAMS)
    # Every search bounded until 64 in a row found nothing, then one in 16.
    assert bounded["searches"] == 64 + 160 // shard_module.PRUNE_RETRY_EVERY
    monkeypatch.setattr(shard_module, "PRUNE_MIN_SHARE", 0.25)  # the lists fall away again
    for query in queries[:16]:
        shard.search(query, 10, PARAMS)
    for query in queries[16:32]:
        before = bounded["searches"]
        hits = shard.search(query, 10, PARAMS)
        assert bounded["searches"] == before + 1  # back to bounding every search
        assert [h.image_id for h in hits] == [
            h.image_id for h in _one_pass(monkeypatch, shard.search, query, 10, PARAMS)
        ]


def _partition_by_partition(monkeypatch, search, *args):
    """``search(*args)`` scanning one partition at a time through the bitmaps, no
    skipping: what a joint scan must answer."""
    with monkeypatch.context() as patch:
        patch.setattr(IndexShard, "_scan_joint", lambda self, *rest: None)
        patch.setattr(shard_module, "PRUNE_MIN_SHARE", 2.0)
        return search(*args)


def test_images_with_tiles_are_ranked_once_by_their_best_row(monkeypatch, scanned_lists):
    rng = np.random.default_rng(14)
    shard = _shard()
    _fill(shard, _mixture(rng, 3000))
    queries = _mixture(rng, 12)
    for n, query in enumerate(queries):  # an image of three rows near each query
        rows = query + 0.005 * rng.normal(size=(3, DIM)).astype(np.float32)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        image_id = f"tiled-{n}"
        part = shard.partitions[partition_for(image_id, PARTITIONS)]
        part.upsert_many([Upsert(image_id, rows, 3.0)])
    hidden = "tiled-0"
    shard.apply_update(partition_for(hidden, PARTITIONS), 0, hidden, "private", 4.0)
    assert all(
        p.list_radii() is None for p in shard.partitions.values() if p._max_rows_per_image > 1
    )
    scanned_lists["joint passes"] = 0
    for n, query in enumerate(queries):
        ids = [h.image_id for h in shard.search(query, 10, PARAMS)]
        assert len(ids) == len(set(ids)) == 10  # each image once, however many rows matched
        assert (ids[0] == f"tiled-{n}") == (n > 0) and hidden not in ids
        assert ids == [
            h.image_id
            for h in _partition_by_partition(monkeypatch, shard.search, query, 10, PARAMS)
        ]
    assert scanned_lists["joint passes"] > 0


def test_an_ivf_that_is_not_flat_is_searched_partition_by_partition_without_retrying(
    monkeypatch, scanned_lists
):
    rng = np.random.default_rng(15)
    shard = _shard(factory="IVF{nlist},SQ8")
    _fill(shard, _mixture(rng, 3000))
    assert shard.plan.template is not None and shard.plan.template.quantizer is not None
    tried = {"locks": 0}
    original = Partition.reading

    def counting(self):
        tried["locks"] += 1
        return original(self)

    monkeypatch.setattr(Partition, "reading", counting)
    for query in _mixture(rng, 5):
        assert len(shard.search(query, 10, PARAMS)) == 10
    assert scanned_lists["joint passes"] == 0
    assert tried["locks"] == PARTITIONS  # the first search found out; the others did not try
    assert shard._unstackable_key == shard.plan.template.key


def test_a_partition_reuses_its_joint_member_until_a_write():
    """What a joint scan reads of a partition is made once per write, not per search:
    the same object until a delete, then one that counts the hidden row."""
    _, shard, _ = _filled_and_learnt(21)
    part = next(iter(shard.partitions.values()))
    key = part.coarse_key
    with part.reading():
        first = part.joint_member(key)
        assert first is not None and part.joint_member(key) is first
    victim = part._row_image[0]
    part.delete_many([victim], 1e9)
    with part.reading():
        after = part.joint_member(key)
    assert after is not None and after is not first
    assert after.hidden_rows == first.hidden_rows + 1

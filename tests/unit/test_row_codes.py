"""8-bit row codes (index/row_codes.py): how close their scores are, how they follow the
index, and a shard's filtered search through them: a shortlist by the codes,
rescored exactly, answering what an exact filtered search answers."""

import faiss
import numpy as np
import pytest

from index.defaults import RESCORE_PER_K
from index.faiss_index import SearchParams
from index.filters import SearchFilter
from index.partition import MatchingRows, Partition
from index.row_codes import TRAIN_ROWS, RowCodes
from index.shard import IndexShard, partition_for

DIM = 16


def _unit(rng, n):
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _codes_of(vectors):
    """Row codes of a flat index of ``vectors``, every row encoded."""
    index = faiss.IndexFlatIP(DIM)
    index.add(vectors)
    codes = RowCodes(index)
    codes.catch_up()
    return codes


def test_a_code_score_is_within_half_a_level_a_dimension_of_the_inner_product():
    rng = np.random.default_rng(0)
    vectors = _unit(rng, 3000)
    codes = _codes_of(vectors)
    assert codes.current() and codes.nbytes == 3000 * DIM
    queries = _unit(rng, 5)
    rows = np.sort(rng.choice(3000, 500, replace=False))
    approximate = codes.scores(rows, queries)
    exact = queries @ vectors[rows].T
    # every row was among those the ranges came from: no value was clamped
    step = (vectors.max(axis=0) - vectors.min(axis=0)) / 255
    bound = 0.5 * np.abs(queries) @ step + 1e-5
    assert np.all(np.abs(approximate - exact) <= bound[:, None])
    assert np.abs(approximate - exact).max() > 0  # codes, not the vectors


def test_codes_appended_row_by_row_equal_codes_built_at_once():
    """Appends retrain while the index is small (each time it doubles) and stop once
    the ranges come from TRAIN_ROWS rows: the same codes a build over all rows makes."""
    rng = np.random.default_rng(1)
    total = TRAIN_ROWS + 2000
    vectors = _unit(rng, total) * rng.uniform(0.5, 2.0, (total, 1)).astype(np.float32)
    index = faiss.IndexFlatIP(DIM)
    incremental = RowCodes(index)
    for start in range(0, total, 7):
        batch = vectors[start : start + 7]
        index.add(batch)
        incremental.append(batch)
        assert incremental.current()
    built = RowCodes(index)
    built.catch_up(limit=100)
    assert built.covered == 100 and not built.current()
    built.catch_up()
    assert np.array_equal(incremental._codes[:total], built._codes[:total])
    index.add(vectors[:3])
    with pytest.raises(ValueError, match="codes cover"):
        incremental.append(vectors[:1])  # 3 rows were added, 1 is said to be


def _owner(i):
    return "many" if i % 2 else "few"  # "few": half the images, ~500 rows a partition


def _shard(n, background=False, seed=2):
    rng = np.random.default_rng(seed)
    vectors = _unit(rng, n)
    shard = IndexShard(
        DIM,
        "m",
        range(4),
        lambda: Partition(DIM, "IVF{nlist},Flat", 400, background=background),
    )
    for i, vector in enumerate(vectors):
        image_id = f"img-{i}"
        shard.apply_vectors(
            partition_for(image_id, 4), i, image_id, vector, 1.0 + i, False, _owner(i)
        )
    shard.wait_idle()
    for part in shard.partitions.values():
        assert part.kind == "ann"
        part.filter_exact_rows = 10**6  # read the matching rows back
        # A shard keeps its rows in shared arrays instead (test_shard_rows.py), from
        # ROWS_MIN rows on; these shards are smaller, and their partitions' own
        # codes (what a partition used alone builds) are what is tested here.
        part.codes_allowed = True
    return shard, vectors


def _filtered_truth(vectors, query, k, hidden=(), few_from=None):
    """The exact top ``k`` of the images owned by "few" (all from ``few_from`` on)."""
    scores = vectors @ query

    def few(i):
        return _owner(i) == "few" or (few_from is not None and i >= few_from)

    keep = [i for i in np.argsort(-scores) if few(i) and f"img-{i}" not in hidden]
    return [(f"img-{i}", float(scores[i])) for i in keep[:k]]


FEW = SearchParams(where=SearchFilter.of(owner_ids=["few"]))


def test_a_shard_answers_a_filter_through_codes_with_the_exact_top_k():
    shard, vectors = _shard(4000)
    queries = _unit(np.random.default_rng(3), 30)
    shard.search(queries[0], 10, FEW)  # asks for the codes: built at once here
    for part in shard.partitions.values():
        assert part._codes is not None and part._codes.current()
        found = part.top_or_rows(queries[:1], 10, FEW)
        # of ~500 matching rows, the best 2 x k by the codes, scored exactly
        assert isinstance(found, MatchingRows) and len(found.rows) == RESCORE_PER_K * 10
        exact = queries[:1] @ vectors[[int(found.row_image[r][4:]) for r in found.rows]].T
        assert np.allclose(found.scores, exact, atol=1e-5)
    part = next(iter(shard.partitions.values()))
    elsewhere = {f"img-{i}" for i in range(len(vectors))} - part.image_ids()
    for query in queries:
        hits = shard.search(query, 10, FEW)
        truth = _filtered_truth(vectors, query, 10)
        assert [h.image_id for h in hits] == [image_id for image_id, _ in truth]
        assert np.allclose([h.score for h in hits], [score for _, score in truth], atol=1e-5)
        # a partition searched alone shortlists and rescores under its own lock
        alone = part.search(query, 10, FEW)[0]
        truth = _filtered_truth(vectors, query, 10, hidden=elsewhere)
        assert [(h.image_id, round(h.score, 5)) for h in alone] == [
            (image_id, round(score, 5)) for image_id, score in truth
        ]


def test_codes_follow_inserts_deletes_and_a_compaction():
    shard, vectors = _shard(4000)
    query = _unit(np.random.default_rng(4), 1)[0]
    shard.search(query, 10, FEW)
    # New images after the codes were built: appended to them as they come.
    extra = _unit(np.random.default_rng(5), 400)
    for j, vector in enumerate(extra):
        i = 4000 + j
        shard.apply_vectors(partition_for(f"img-{i}", 4), i, f"img-{i}", vector, 9e3, False, "few")
    for part in shard.partitions.values():
        assert part._codes is not None and part._codes.current()  # no catching up
        assert part._codes.covered == part._index.ntotal > 1000
    everything = np.concatenate([vectors, extra])
    truth = _filtered_truth(everything, query, 10, few_from=4000)
    assert [h.image_id for h in shard.search(query, 10, FEW)] == [i for i, _ in truth]
    # Deleting the best half: the codes still hold their rows, the answer must not.
    gone = {image_id for image_id, _ in truth[:5]}
    for image_id in gone:
        shard.apply_update(partition_for(image_id, 4), 1, image_id, "delete", 1e4)
    expected = [i for i, _ in _filtered_truth(everything, query, 10, gone, few_from=4000)]
    assert [h.image_id for h in shard.search(query, 10, FEW)] == expected
    for part in shard.partitions.values():
        part.rebuild()  # drops the deleted rows: renumbered, with new codes
        assert part._codes is not None and part._codes.index is part._index
        assert part._codes.current()
    assert [h.image_id for h in shard.search(query, 10, FEW)] == expected


def test_a_batch_of_queries_reads_back_each_querys_shortlist():
    shard, vectors = _shard(4000)
    queries = _unit(np.random.default_rng(6), 3)
    part = next(iter(shard.partitions.values()))
    part.top_or_rows(queries, 10, FEW)  # the codes, at once
    found = part.top_or_rows(queries, 10, FEW)
    assert isinstance(found, MatchingRows)
    assert RESCORE_PER_K * 10 < len(found.rows) <= 3 * RESCORE_PER_K * 10
    images = [int(found.row_image[r][4:]) for r in found.rows]
    mine = [i for i in range(len(vectors)) if f"img-{i}" in part and _owner(i) == "few"]
    for query, scores in zip(queries, found.scores, strict=True):
        best = {f"img-{i}" for i in sorted(mine, key=lambda i: -(vectors[i] @ query))[:10]}
        assert best <= {found.row_image[r] for r in found.rows}  # each query's own top 10
        assert np.allclose(scores, vectors[images] @ query, atol=1e-5)


def test_codes_are_built_in_the_background_and_counted_in_memory():
    shard, vectors = _shard(4000, background=True)
    query = _unit(np.random.default_rng(7), 1)[0]
    before = sum(part.memory().map_bytes for part in shard.partitions.values())
    first = shard.search(query, 10, FEW)  # exact meanwhile: the codes are not ready yet
    shard.wait_idle()
    parts = list(shard.partitions.values())
    assert all(part._codes is not None and part._codes.current() for part in parts)
    after = sum(part.memory().map_bytes for part in parts)
    assert after - before == 4000 * DIM  # a byte a dimension a row
    truth = [i for i, _ in _filtered_truth(vectors, query, 10)]
    assert [h.image_id for h in first] == truth
    assert [h.image_id for h in shard.search(query, 10, FEW)] == truth


def test_a_failed_build_is_logged_and_a_later_search_builds_again(monkeypatch, caplog):
    shard, vectors = _shard(4000, background=True)
    query = _unit(np.random.default_rng(8), 1)[0]
    truth = [i for i, _ in _filtered_truth(vectors, query, 10)]

    def fail(self, limit=None):
        raise MemoryError("no room for codes")

    with monkeypatch.context() as patch:
        patch.setattr(RowCodes, "catch_up", fail)
        assert [h.image_id for h in shard.search(query, 10, FEW)] == truth
        shard.wait_idle()
    parts = list(shard.partitions.values())
    assert all(part._codes is None for part in parts)  # dropped, not left half-built
    assert "building the rows' codes failed" in caplog.text
    assert [h.image_id for h in shard.search(query, 10, FEW)] == truth  # starts a new build
    shard.wait_idle()
    assert all(part._codes is not None and part._codes.current() for part in parts)


def test_the_best_rows_by_codes_are_the_top_of_their_approximate_scores():
    """CodeScale.best (faiss's scanner over the codes) keeps, per query, the rows whose
    approximate scores (CodeScale.scores, numpy) are the highest; their union, sorted."""
    rng = np.random.default_rng(9)
    codes = _codes_of(_unit(rng, 5000))
    queries = _unit(rng, 3)
    rows = np.sort(rng.choice(5000, 1200, replace=False))  # several chunks of codes
    best = codes.best(rows, queries, 20)
    approximate = codes.scores(rows, queries)
    expected = np.unique(rows[np.argsort(-approximate, axis=1)[:, :20]])
    assert np.array_equal(best, expected)
    assert np.array_equal(codes.best(rows[:15], queries, 20), rows[:15])  # fewer than few

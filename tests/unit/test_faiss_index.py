"""faiss helpers: factory strings, per-call search parameters, reading rows back."""

import faiss
import numpy as np
import pytest

from index.faiss_index import (
    SearchParams,
    build_index,
    index_bytes,
    needs_training,
    reconstruct_rows,
    search_parameters,
    train_and_add,
)

DIM = 32
FACTORIES = ["Flat", "HNSW32", "IVF64,Flat", "IVF64,SQ8", "HNSW32,SQ8"]


def _unit(rng, n, dim=DIM):
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def vectors():
    return _unit(np.random.default_rng(0), 2000)


@pytest.fixture(scope="module")
def built(vectors):
    """One trained and filled index per factory, shared (searches never mutate it)."""
    cache = {}

    def get(factory):
        if factory not in cache:
            cache[factory] = train_and_add(build_index(DIM, factory), vectors)
        return cache[factory]

    return get


def _bitmap(rows, allowed_rows):
    bits = np.zeros((rows + 7) // 8, dtype=np.uint8)
    for row in allowed_rows:
        bits[row >> 3] |= 1 << (row & 7)
    return bits


@pytest.mark.parametrize("factory", FACTORIES)
def test_build_index_is_empty_inner_product(factory):
    index = build_index(DIM, factory)
    assert index.d == DIM
    assert index.ntotal == 0
    assert index.metric_type == faiss.METRIC_INNER_PRODUCT
    assert needs_training(factory, DIM) == (factory != "Flat" and factory != "HNSW32")


@pytest.mark.parametrize("factory", ["NoSuchIndex", "IVF64,Bogus", "PQ7"])
def test_unbuildable_factory_raises_value_error(factory):
    with pytest.raises(ValueError, match="faiss cannot build"):
        build_index(DIM, factory)


@pytest.mark.parametrize("factory", FACTORIES)
def test_train_and_add_then_reconstruct(factory, vectors, built):
    index = built(factory)
    assert index.is_trained
    assert index.ntotal == len(vectors)
    tolerance = 0.05 if "SQ8" in factory else 1e-6
    contiguous = np.arange(100, 150)
    np.testing.assert_allclose(
        reconstruct_rows(index, contiguous), vectors[100:150], atol=tolerance
    )
    scattered = np.array([1999, 3, 500, 4])
    np.testing.assert_allclose(
        reconstruct_rows(index, scattered), vectors[scattered], atol=tolerance
    )
    empty = reconstruct_rows(index, np.array([], dtype=np.int64))
    assert empty.shape == (0, DIM)
    assert empty.dtype == np.float32


def test_train_and_add_with_no_vectors_leaves_an_empty_index():
    index = train_and_add(build_index(DIM, "Flat"), np.empty((0, DIM), dtype=np.float32))
    assert index.ntotal == 0


@pytest.mark.parametrize("factory", FACTORIES)
def test_search_parameters_filter_with_a_bitmap(factory, vectors, built):
    index = built(factory)
    allowed = set(range(0, len(vectors), 3))
    bits = _bitmap(len(vectors), allowed)
    selector = faiss.IDSelectorBitmap(len(vectors), faiss.swig_ptr(bits))
    params = search_parameters(index, selector, SearchParams(ef_search=128, nprobe=64))
    # Query with hidden rows themselves: they are the nearest but must not come back.
    queries = vectors[[1, 2, 4, 5]]
    _, found = index.search(queries, 10, params=params)
    returned = {int(row) for row in found.ravel() if row >= 0}
    assert returned
    assert returned <= allowed


@pytest.mark.parametrize(
    ("factory", "kind"),
    [
        ("Flat", faiss.SearchParameters),
        ("HNSW32", faiss.SearchParametersHNSW),
        ("HNSW32,SQ8", faiss.SearchParametersHNSW),
        ("IVF64,Flat", faiss.SearchParametersIVF),
        ("IVF64,SQ8", faiss.SearchParametersIVF),
    ],
)
def test_search_parameters_type_and_values(factory, kind, built):
    index = built(factory)
    bits = _bitmap(index.ntotal, range(index.ntotal))
    selector = faiss.IDSelectorBitmap(index.ntotal, faiss.swig_ptr(bits))
    params = search_parameters(index, selector, SearchParams(ef_search=77, nprobe=9))
    assert type(params) is kind
    if kind is faiss.SearchParametersHNSW:
        assert params.efSearch == 77
    if kind is faiss.SearchParametersIVF:
        assert params.nprobe == 9


def test_nprobe_is_honoured_per_call(vectors, built):
    index = built("IVF64,Flat")
    bits = _bitmap(len(vectors), range(len(vectors)))
    selector = faiss.IDSelectorBitmap(len(vectors), faiss.swig_ptr(bits))
    queries = _unit(np.random.default_rng(1), 50)
    truth = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]

    def recall(nprobe):
        params = search_parameters(index, selector, SearchParams(nprobe=nprobe))
        _, found = index.search(queries, 10, params=params)
        return np.mean([len(set(f) & set(t)) / 10 for f, t in zip(found, truth, strict=True)])

    assert recall(64) == 1.0  # every list probed: exact
    assert recall(1) < 0.8
    # The shared index is not mutated by per-call parameters.
    assert faiss.extract_index_ivf(index).nprobe == 1


def test_index_bytes_grows_with_content(vectors, built):
    empty = build_index(DIM, "Flat")
    full = built("Flat")
    assert index_bytes(full) - index_bytes(empty) == pytest.approx(len(vectors) * DIM * 4, rel=0.01)

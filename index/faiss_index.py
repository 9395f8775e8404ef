"""faiss specifics in one place: building from a factory string, per-call search
parameters, reading vectors back.

Indexes hold dense row numbers (0, 1, 2, ...) rather than hashed 64-bit labels.
That choice lets filters be a bitmap over rows (``IDSelectorBitmap``: O(1) to
hand to a search, one bit per row) instead of an ``IDSelectorBatch`` rebuilt
from a hash set on every query, and it lets every index type, HNSW included,
be used the same way: a delete clears a bit; compaction renumbers rows.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import faiss
import numpy as np

from index.filters import SearchFilter

# Training reads at most this many vectors: k-means on more moves the centroids
# little, and 100k 1280-d vectors are already 512 MB.
MAX_TRAINING_VECTORS = 100_000
# ...and at most this many per IVF list (faiss asks for at least 39).
TRAINING_VECTORS_PER_LIST = 64


@dataclass(frozen=True)
class SearchParams:
    """Per-call search knobs; shared index state is never mutated per request."""

    ef_search: int = 64
    nprobe: int = 16
    # Which images the search may return besides visible ones (index/filters.py).
    where: SearchFilter | None = None

    def __post_init__(self) -> None:
        # A filter that selects every image is the search without one: one form, so
        # that callers test ``where is not None`` alone.
        if self.where is not None and self.where.empty:
            object.__setattr__(self, "where", None)


def build_index(dim: int, factory: str) -> faiss.Index:
    """An empty inner-product index from a faiss factory string."""
    try:
        index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        raise ValueError(f"faiss cannot build {factory!r} for {dim} dimensions: {exc}") from exc
    return index


def needs_training(factory: str, dim: int) -> bool:
    return not build_index(dim, factory).is_trained


def training_size(index: faiss.Index) -> int:
    """How many vectors training ``index`` should read (0: it needs none)."""
    if index.is_trained:
        return 0
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is None:
        return MAX_TRAINING_VECTORS
    return min(MAX_TRAINING_VECTORS, TRAINING_VECTORS_PER_LIST * ivf.nlist)


def train(index: faiss.Index, vectors: np.ndarray) -> faiss.Index:
    """Train ``index`` if it needs it, on at most :func:`training_size` of ``vectors``."""
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None and hasattr(faiss.downcast_index(ivf), "do_polysemous_training"):
        # Polysemous codes speed up Hamming filtering we do not use, and cost
        # 5x the training time (measured 61 s vs 12 s at 100k vectors).
        faiss.downcast_index(ivf).do_polysemous_training = False  # type: ignore[attr-defined]
    wanted = training_size(index)
    if wanted:
        sample = vectors
        if len(vectors) > wanted:
            rng = np.random.default_rng(0)
            sample = vectors[rng.choice(len(vectors), wanted, replace=False)]
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
    return index


def train_and_add(index: faiss.Index, vectors: np.ndarray) -> faiss.Index:
    """Train if needed, enable reconstruction, add ``vectors``."""
    train(index, vectors)
    if len(vectors) and coarse_quantizer(index) is not None and index.ntotal == 0:
        add_list_by_list(index, vectors)
        return index
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.make_direct_map()  # rows are never removed, so an array map suffices
    if len(vectors):
        index.add(vectors)
    return index


def add_list_by_list(index: faiss.Index, vectors: np.ndarray) -> None:
    """Fill an empty plain IVF with ``vectors`` (ids 0..n-1), one append per list.

    faiss's ``add`` appends a vector at a time to its list's ``std::vector``,
    which doubles its capacity as it grows: lists ended up holding ~1.5x their
    codes on average (a shard of 100,000 256-d vectors measured 2,588 bytes per
    vector of resident memory). Grouping the codes by list first allocates
    each list once at its final size.
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(vectors)
    _, assigned = index.quantizer.search(vectors, 1)  # type: ignore[attr-defined]
    lists = np.ascontiguousarray(assigned[:, 0])
    codes = np.empty((n, index.code_size), dtype=np.uint8)  # type: ignore[attr-defined]
    index.encode_vectors(  # type: ignore[attr-defined]
        n, faiss.swig_ptr(vectors), faiss.swig_ptr(lists), faiss.swig_ptr(codes), False
    )
    order = np.argsort(lists, kind="stable")
    ids = np.ascontiguousarray(order.astype(np.int64))
    codes = np.ascontiguousarray(codes[order])
    sorted_lists = lists[order]
    starts = np.flatnonzero(np.r_[True, sorted_lists[1:] != sorted_lists[:-1]])
    ends = np.r_[starts[1:], n]
    invlists = index.invlists  # type: ignore[attr-defined]
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        invlists.add_entries(
            int(sorted_lists[start]),
            end - start,
            faiss.swig_ptr(ids[start:end]),
            faiss.swig_ptr(codes[start:end]),
        )
    index.ntotal = n
    index.make_direct_map()  # type: ignore[attr-defined]  # rows are never removed


def coarse_quantizer(index: faiss.Index) -> faiss.Index | None:
    """The coarse quantizer of a plain IVF index (no pre-transform), else ``None``.

    Only then can a query's cells be found once and scanned in several
    partitions with :func:`search_preassigned`.
    """
    concrete = faiss.downcast_index(index)
    if isinstance(concrete, faiss.IndexIVF):
        return concrete.quantizer
    return None


def centroids_key(quantizer: faiss.Index) -> str:
    """A digest of a coarse quantizer's centroids: equal keys, interchangeable cells."""
    centroids = quantizer.reconstruct_n(0, quantizer.ntotal)
    return hashlib.blake2b(centroids.tobytes(), digest_size=12).hexdigest()


def centroids_key_of(index: faiss.Index) -> str | None:
    """:func:`centroids_key` of a plain IVF's quantizer; ``None`` for other indexes."""
    quantizer = coarse_quantizer(index)
    return None if quantizer is None else centroids_key(quantizer)


def cell_finder(quantizer: faiss.Index) -> tuple[faiss.Index, float]:
    """A float16 copy of a flat inner-product coarse quantizer, to find a query's cells
    with, and the largest distance between a centroid and its copy (``quantizer``
    itself and 0 for any other quantizer).

    Why: a search in a busy process finds the centroids out of cache, and their
    scan is then memory-bound. At 1M vectors (IVF4096, 256-d: 4 MB of float32
    centroids) one query's scan took 0.31 ms after 10 ms of sleep against
    0.15 ms from the float16 copy, and 0.085 ms either way back to back
    (measured on 2 vCPUs). A cell's score from the copy is within
    ``‖q‖ · error`` of the exact one (Cauchy-Schwarz), which the list bounds
    add (:func:`index.list_bounds.score_bounds`); the scan of the cells' rows
    is exact as before. Near-ties between cells may order differently.
    """
    flat = faiss.downcast_index(quantizer)
    if not isinstance(flat, faiss.IndexFlat) or flat.metric_type != faiss.METRIC_INNER_PRODUCT:
        return quantizer, 0.0
    centroids = flat.reconstruct_n(0, flat.ntotal)
    half = faiss.IndexScalarQuantizer(
        flat.d, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
    )
    half.train(centroids)  # nothing to learn for float16; marks it trained
    half.add(centroids)
    if not len(centroids):
        return half, 0.0
    decoded = half.reconstruct_n(0, half.ntotal)
    return half, float(np.sqrt(((centroids - decoded) ** 2).sum(axis=1)).max())


class CoarseCells:
    """Queries and their IVF cells, found once by a shard's shared quantizer and
    scanned in each of its partitions (with pointers made once, not per partition).

    Found on first use: a filtered search whose partitions all read their few
    matching rows back exactly never asks for them.
    """

    def __init__(
        self,
        key: str,
        queries: np.ndarray,
        quantizer: faiss.Index | None,
        nprobe: int,
        error: float = 0.0,
    ) -> None:
        self.key = key  # centroids digest: only indexes built on these centroids may use them
        self.queries = np.ascontiguousarray(queries, dtype=np.float32)
        self.nprobe = nprobe
        # How far ``quantizer``'s centroids may be from the key's (cell_finder): a
        # cell's score is within ``error`` times the query's norm of its exact score.
        self.error = error
        self._quantizer: faiss.Index | None = quantizer
        self.cells = np.empty((0, 0), dtype=np.int64)  # (queries, nprobe), once found
        self.scores = np.empty((0, 0), dtype=np.float32)
        self._pointers: tuple[Any, Any, Any] | None = None
        # Result buffers by k, reused partition after partition (each reads its
        # results out before the next scan): one allocation per query, not eight.
        self._results: dict[int, tuple[np.ndarray, np.ndarray, Any, Any]] = {}
        self._narrowed: dict[int, CoarseCells] = {}

    def pointers(self) -> tuple[Any, Any, Any]:
        """Pointers to the queries, their cells and the cells' scores (found now if not yet)."""
        if self._pointers is None:
            if self._quantizer is not None:
                # search_c, not faiss's Python search: its checks and allocations
                # cost ~7 us a query of a ~30 us quantizer search.
                n = len(self.queries)
                scores = np.empty((n, self.nprobe), dtype=np.float32)
                cells = np.empty((n, self.nprobe), dtype=np.int64)
                self._quantizer.search_c(  # type: ignore[attr-defined]
                    n,
                    faiss.swig_ptr(self.queries),
                    self.nprobe,
                    faiss.swig_ptr(scores),
                    faiss.swig_ptr(cells),
                    None,
                )
                self._set(scores, cells)
            assert self._pointers is not None
        return self._pointers

    def _set(self, scores: np.ndarray, cells: np.ndarray) -> None:
        self.cells = np.ascontiguousarray(cells, dtype=np.int64)
        self.scores = np.ascontiguousarray(scores, dtype=np.float32)
        self._pointers = (
            faiss.swig_ptr(self.queries),
            faiss.swig_ptr(self.cells),
            faiss.swig_ptr(self.scores),
        )

    def narrowed(self, nprobe: int) -> CoarseCells:
        """The same queries' first ``nprobe`` cells (cells are sorted nearest first): a
        filtered search finds them once with its largest budget, and each partition
        scans as many as its filter's selectivity asks for."""
        if nprobe >= self.nprobe:
            return self
        narrowed = self._narrowed.get(nprobe)
        if narrowed is None:
            self.pointers()
            narrowed = CoarseCells(self.key, self.queries, None, nprobe, self.error)
            narrowed._set(self.scores[:, :nprobe], self.cells[:, :nprobe])
            self._narrowed[nprobe] = narrowed
        return narrowed

    def without(self, skipped: np.ndarray) -> CoarseCells:
        """The same queries and cells, those where ``skipped`` (queries x nprobe) is
        true set to -1 (faiss passes over a -1 cell): lists a search leaves out."""
        self.pointers()
        fewer = CoarseCells(self.key, self.queries, None, self.nprobe, self.error)
        fewer._set(self.scores, np.where(skipped, -1, self.cells))
        fewer._results = self._results  # scanned one after another: the same buffers
        return fewer

    def results(self, k: int) -> tuple[np.ndarray, np.ndarray, Any, Any]:
        buffers = self._results.get(k)
        if buffers is None:
            n = len(self.queries)
            scores = np.empty((n, k), dtype=np.float32)
            found = np.empty((n, k), dtype=np.int64)
            buffers = (scores, found, faiss.swig_ptr(scores), faiss.swig_ptr(found))
            self._results[k] = buffers
        return buffers


def search_preassigned(
    index: faiss.Index, k: int, cells: CoarseCells, params: faiss.SearchParameters
) -> tuple[np.ndarray, np.ndarray]:
    """Scan the IVF lists ``cells`` found for ``cells.queries`` by a shared quantizer.

    ``index`` must be the IVF itself (:func:`coarse_quantizer` found one in it).
    faiss's Python wrapper of ``search_preassigned`` refuses search parameters,
    and the filter bitmap travels in them, so the C++ method is called directly.
    ``params.nprobe`` must equal ``cells.nprobe``. The arrays returned
    are ``cells``' buffers, overwritten by its next scan: read them first.
    """
    scores, found, scores_ptr, found_ptr = cells.results(k)
    queries, assigned, assigned_scores = cells.pointers()
    index.search_preassigned_c(  # type: ignore[attr-defined]
        len(cells.queries),
        queries,
        k,
        assigned,
        assigned_scores,
        scores_ptr,
        found_ptr,
        False,
        params,
    )
    return scores, found


@contextlib.contextmanager
def one_omp_thread() -> Iterator[None]:
    """Run faiss on this thread alone for the block (OpenMP's setting is per thread).

    A single-vector add or single-query search gains nothing from a parallel
    region and pays for it: 1,500 single adds to a 100k IVF1024 on this 2-core
    machine, idle, took p50 0.027 / p99 0.22 / worst 2.65 ms with two OpenMP
    threads and 0.019 / 0.15 / 0.25 ms with one.
    """
    before = faiss.omp_get_max_threads()
    if before == 1:
        yield
        return
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def search_parameters(
    index: faiss.Index, selector: faiss.IDSelector, params: SearchParams
) -> faiss.SearchParameters:
    """The right SearchParameters subclass for ``index`` carrying ``selector``."""
    concrete = faiss.downcast_index(index)
    if isinstance(concrete, faiss.IndexHNSW):
        return faiss.SearchParametersHNSW(sel=selector, efSearch=params.ef_search)  # type: ignore[attr-defined]
    if faiss.try_extract_index_ivf(index) is not None:
        return faiss.SearchParametersIVF(sel=selector, nprobe=params.nprobe)  # type: ignore[call-arg]
    return faiss.SearchParameters(sel=selector)  # type: ignore[call-arg]


def reconstruct_rows(
    index: faiss.Index, rows: np.ndarray, ivf: bool | None = None, out: np.ndarray | None = None
) -> np.ndarray:
    """Vectors of ``rows`` (exact for Flat/HNSW/IVF-Flat, decoded for PQ/SQ).

    ``ivf``: whether ``index`` is an IVF, when the caller knows (a filtered
    search reads back from 8 partitions a query; each faiss call it saves is a
    few microseconds). ``out``: a float32 C-order array of one row each to read
    them into (a shard reads a shortlist from each partition into one array).
    """
    if len(rows) == 0:
        return np.empty((0, index.d), dtype=np.float32) if out is None else out
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    if ivf is None:
        ivf = faiss.try_extract_index_ivf(index) is not None
    # A run of rows in one call, except from an IVF: its reconstruct_n walks every
    # list whatever the range (34 us for a few rows of a 12k-row IVF512 partition,
    # measured), only worth it for most rows.
    if (
        out is None
        and (not ivf or 4 * len(rows) >= index.ntotal)
        and int(rows[-1]) - int(rows[0]) == len(rows) - 1
        and np.all(np.diff(rows) == 1)
    ):
        return index.reconstruct_n(int(rows[0]), len(rows))
    # The C call itself: faiss's Python wrapper of it checks and converts again, and
    # a 0.1 % filter at 1M reads back from 8 partitions per query (~5 us each, measured).
    vectors = np.empty((len(rows), index.d), dtype=np.float32) if out is None else out
    index.reconstruct_batch_c(len(rows), faiss.swig_ptr(rows), faiss.swig_ptr(vectors))  # type: ignore[attr-defined]
    return vectors


def index_bytes(index: faiss.Index) -> int:
    """Serialized size of ``index``: what it occupies in memory, within a few %."""
    return int(faiss.serialize_index(index).nbytes)

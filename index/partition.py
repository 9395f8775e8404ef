"""One faiss index for one partition of the embeddings topic.

The partition is the unit of ownership, snapshot and recovery: its content is
exactly what its topic partition says (the log is the source of truth).

Rows, not labels: every vector gets the next dense row number; an image owns
a contiguous run of rows (its global vector, then its tile vectors). Whether
a row may be returned is one bit in ``_allowed``, handed to faiss as an
``IDSelectorBitmap`` on every search, so deleted, private and flagged images
are filtered inside the index scan, for every index type, HNSW included.
Owner, tags and upload time per row (``index/filters.py``) narrow a search
the same way, inside the scan or by reading the few matching rows back. An
upsert or delete only retires rows; a background rebuild drops retired rows
once they pass ``compact_ratio`` of the index (bounded memory under churn),
and the same rebuild moves a partition from exact search (Flat) to the
configured ANN factory once it holds ``ann_threshold`` live vectors. Rebuilds
run outside the lock and searches continue on the old index meanwhile; only
the final swap (transfer of rows added during the build, row renumbering)
holds the lock.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import math
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import faiss
import numpy as np

from index.ann_plan import AnnPlan
from index.defaults import (
    DEFAULT_ANN_THRESHOLD,
    DEFAULT_FACTORY,
    DEFAULT_MIN_SCANNED_ROWS,
    EXACT_FACTORY,
    FILTER_BOOST_EXPONENT,
    FILTER_CACHED_BYTES,
    FILTER_LIST_US,
    FILTER_MAX_BOOST,
    FILTER_READ_CODES_US,
    FILTER_READ_UNCACHED_US,
    FILTER_READ_US,
    FILTER_ROW_TEST_US,
    RESCORE_PER_K,
)
from index.faiss_index import (
    CoarseCells,
    SearchParams,
    build_index,
    centroids_key_of,
    index_bytes,
    one_omp_thread,
    reconstruct_rows,
    search_parameters,
    search_preassigned,
    train_and_add,
)
from index.filters import RowAttributes, RowSet, SearchFilter
from index.joint_scan import JointMember
from index.list_bounds import ListRadii
from index.row_codes import CODES_MIN_ROWS, ENCODE_CHUNK, RowCodes
from index.rwlock import RWLock
from index.shard_rows import RowFacts, ShardRows
from index.visibility import ImageState
from streams.malloc_tuning import release_free_memory

log = logging.getLogger(__name__)

__all__ = [
    "EXACT_FACTORY",
    "CoarseCells",
    "Hit",
    "MatchingRows",
    "MemoryReport",
    "Partition",
    "Placement",
    "ScannedRows",
    "Upsert",
    "WriteResult",
]


# Adds of fewer rows than this run on the calling thread alone (see one_omp_thread).
SMALL_BATCH = 64


class WriteResult(enum.Enum):
    """What a write did; truthy only when the index changed."""

    APPLIED = "applied"
    # A newer upload or delete of the image already won: nothing changed.
    SUPERSEDED = "superseded"
    # An update for an image with no vectors yet: remembered, obeyed when they arrive.
    PENDING = "pending"

    def __bool__(self) -> bool:
        return self is WriteResult.APPLIED


class Placement(NamedTuple):
    """Rows' IVF lists found before a write: per item of the batch, its rows' lists,
    valid while the partition's coarse centroids are those of ``key``."""

    key: str
    lists: list[np.ndarray]


@dataclass(frozen=True)
class Upsert:
    """One image's vectors for :meth:`Partition.upsert_many`."""

    image_id: str
    vectors: np.ndarray  # global vector first, then tiles; (rows, dim) or (dim,)
    uploaded_at: float
    private: bool = False
    owner_id: str = ""
    tags: tuple[str, ...] = ()
    uri: str = ""  # the upload's http(s) URI, if it had one


@dataclass(frozen=True)
class Hit:
    """One search result: an image and its best similarity over its vectors."""

    image_id: str
    score: float
    # The image's global vector, when asked for: re-ranking compares results
    # with each other, and a remote shard ships it with the hit.
    vector: np.ndarray | None = field(default=None, compare=False, repr=False)
    # Where the image lives when it came by http(s) URI ("" otherwise): a
    # backend that published it straight to Kafka gets its own address back.
    uri: str = field(default="", compare=False)


@dataclass(frozen=True)
class IndexedImage:
    """A visible image as the index holds it: what a search by id and a thumbnail need."""

    vector: np.ndarray  # the global vector
    uploaded_at: float  # event time of the upload it came from
    uri: str = ""


@dataclass(frozen=True)
class MatchingRows:
    """A partition's visible rows that match a filter, scored against the queries.

    Scored as soon as they are read, while the vectors are still in the cache:
    a shard that scored them later paid for a second pass over ~1 MB a query
    (1,000 rows at 1M) and for one small matrix product per partition.
    """

    scores: np.ndarray  # (queries, rows)
    rows: np.ndarray  # the rows' numbers
    # The partition's row -> image list when they were read: a compaction replaces
    # the list rather than changing it, so it maps these rows right ever after.
    # Looked up only for the rows that win (an id read is a cache miss per row).
    row_image: list[str]


class ScannedRows(NamedTuple):
    """A partition's best rows in some of its lists, one row per image: per query, scores
    and row numbers best first (-1 rows pad a short answer), and the row -> image
    list to name the winners by (a compaction replaces it rather than changing it).
    A shard merges these before naming anything: a row's image id is a cache miss
    to read, and of ~8 x k rows a query only k win."""

    scores: np.ndarray  # (queries, k)
    rows: np.ndarray  # (queries, k)
    row_image: list[str]


@dataclass(frozen=True)
class FilterPlan:
    """How a partition searches the rows a filter selects."""

    selected: RowSet  # visible matching rows
    count: int
    boost: int  # the walk's budget multiplier (filter_boost)
    read_back: bool  # reading the rows back and scoring them beats the walk


@dataclass(frozen=True)
class MemoryReport:
    """What a partition occupies; ``bytes_per_vector`` includes the id map."""

    kind: str
    rows: int
    live_rows: int
    images: int
    index_bytes: int
    map_bytes: int

    @property
    def bytes_per_vector(self) -> float:
        return (self.index_bytes + self.map_bytes) / max(1, self.live_rows)


class Partition:
    """Upsert, update visibility, and search one partition's vectors; thread-safe.

    Example (a partition used as a library; a shard groups several)::

        part = Partition(dim=256)
        part.upsert("cat-1", vector, uploaded_at=time.time())
        hits = part.search(query, k=10)[0]  # [Hit(image_id, score), ...]
    """

    def __init__(
        self,
        dim: int,
        factory: str = DEFAULT_FACTORY,
        ann_threshold: int = DEFAULT_ANN_THRESHOLD,
        compact_ratio: float = 0.25,
        # Small partitions are exact and rebuild in milliseconds, so dead rows need
        # not pile up: with 1024, a partition of 625 live images held up to 2.6x its
        # rows (the soak's RSS grew by that much before the first rebuild). At ANN
        # sizes compact_ratio is the bound that counts.
        min_compact_rows: int = 128,
        background: bool = True,
        min_scanned_rows: int = DEFAULT_MIN_SCANNED_ROWS,
    ) -> None:
        self.dim = dim
        # Alone, a partition is a group of one; IndexShard.join_plan shares one plan.
        self.plan = AnnPlan(dim, factory, ann_threshold, background, min_scanned_rows)
        self.plan.register(self)
        self.compact_ratio = compact_ratio
        self.min_compact_rows = min_compact_rows
        self.background = background
        self.kind = "exact"
        self.index_factory = EXACT_FACTORY  # what the index now is (a resolved factory)
        self.coarse_key: str | None = None  # centroids digest when it is a shareable IVF
        self._index: faiss.Index = build_index(dim, EXACT_FACTORY)
        self._row_image: list[str] = []
        # Per row: alive (not retired); allowed, the packed bitmap faiss scans
        # through; visible, the same flags unpacked, for filters to test rows.
        self._alive, self._allowed, self._visible = _row_arrays(1024)
        # (key, bitmap, selector, parameters) of the last _filter call.
        self._filter_cache: (
            tuple[Any, np.ndarray, faiss.IDSelector, faiss.SearchParameters] | None
        ) = None
        # Per IVF list, how far its rows lie from the centroid (None unless the
        # index is a plain IVF): bounds that let a shard skip lists (list_bounds).
        self._radii: ListRadii | None = None
        # 8-bit codes of the rows, kept once a filtered search has read rows back
        # from an IVF (index/row_codes.py); built a chunk at a time in the background.
        self._codes: RowCodes | None = None
        self._codes_thread: threading.Thread | None = None
        self._codes_start = threading.Lock()
        # False: never build them (a shard that keeps every partition's rows in
        # shared arrays scores a selective filter's rows there: index/shard_rows.py).
        self.codes_allowed = True
        # The shard's rows this partition's rows are kept in too, and its slot there.
        self._shard_rows: tuple[ShardRows, int] | None = None
        self._dead_rows = 0
        self._allowed_rows = 0  # rows whose bit is set: what a search can return
        self._images = 0  # images with rows (never deleted ones: a delete retires rows)
        self._states: dict[str, ImageState] = {}
        # Owner, tags and upload time per row, for filtered searches.
        self._attributes = RowAttributes()
        # A filter matching at most this many visible rows is searched exactly over
        # them; None: whichever the cost model (_exact_is_cheaper) says is cheaper.
        self.filter_exact_rows: int | None = None
        self._nlist = 0  # the IVF's list count; 0 when the index is no IVF
        # The index as an inner-product IVF-Flat (a shard's joint scan stacks its
        # lists: index/joint_scan.py), else None.
        self._flat_ivf: faiss.IndexIVFFlat | None = None
        # (the lock's write count, the JointMember made then): reused until a write.
        self._member: tuple[int, JointMember] | None = None
        self._max_rows_per_image = 1
        self._lock = RWLock()
        self._rebuild_lock = threading.Lock()  # one rebuild at a time (compaction or plan)
        self._compaction_thread: threading.Thread | None = None
        self.rebuilds = 0

    @property
    def factory(self) -> str:
        """The ANN factory the partition's plan moves to (``{nlist}`` may be open)."""
        return self.plan.factory

    @property
    def ann_threshold(self) -> int:
        return self.plan.threshold

    def join_plan(self, plan: AnnPlan) -> None:
        """Decide the index with ``plan`` (a shard's, shared by its partitions) from now on."""
        self.plan.unregister(self)
        self.plan = plan
        plan.register(self)

    # ----------------------------------------------------------------- queries

    def __len__(self) -> int:
        """Images with vectors in the index (visible or not); O(1)."""
        return self._images

    @property
    def live_rows(self) -> int:
        """Vectors not retired (what an index rebuild keeps); O(1)."""
        return len(self._row_image) - self._dead_rows

    def image_ids(self) -> set[str]:
        """Ids of the images counted by ``len`` (indexed and not deleted)."""
        with self._lock.read():
            return {i for i, s in self._states.items() if s.row_count}

    def __contains__(self, image_id: str) -> bool:
        return self.is_visible(image_id)

    def is_visible(self, image_id: str) -> bool:
        with self._lock.read():
            state = self._states.get(image_id)
            return state is not None and state.visible

    def visible_ids(self, image_ids: Iterable[str]) -> set[str]:
        """Those of ``image_ids`` this partition holds visible (one lock, no vectors)."""
        with self._lock.read():
            states = self._states
            return {i for i in image_ids if (s := states.get(i)) is not None and s.visible}

    def state_of(self, image_id: str) -> ImageState | None:
        with self._lock.read():
            state = self._states.get(image_id)
            return None if state is None else ImageState.from_list(state.to_list())

    def search(
        self,
        queries: np.ndarray,
        k: int,
        params: SearchParams | None = None,
        with_vectors: bool = False,
        cells: CoarseCells | None = None,
    ) -> list[list[Hit]]:
        """Top ``k`` visible images per query row, best first (max over an image's vectors).

        ``cells``: the queries' IVF cells, found once by a shard whose partitions
        share centroids; used when this partition's index has them, else ignored.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if queries.ndim == 1:
            queries = queries.reshape(1, -1)
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise ValueError(f"queries have shape {queries.shape}, index has {self.dim} dimensions")
        params = params or SearchParams()
        if cells is None:  # cells found by a shard were found for the shard's nprobe
            params = self.plan.probing(params)
        if not with_vectors:
            return [
                [Hit(image_id, score, uri=self.uri_of(image_id)) for score, image_id in top]
                for top in self.top(queries, k, params, cells)
            ]
        # Two holds of the lock, never nested (a waiting writer would block the
        # inner one); hits_with_vectors drops what was hidden in between.
        return [self.hits_with_vectors(top) for top in self.top(queries, k, params, cells)]

    def top(
        self,
        queries: np.ndarray,
        k: int,
        params: SearchParams,
        cells: CoarseCells | None = None,
    ) -> list[list[tuple[float, str]]]:
        """Per query, the best ``k`` visible images as ``(score, image_id)``, best first:
        :meth:`search` without building hits (a shard merges partitions first)."""
        found = self._top(queries, k, params, cells, rows_if_cheaper=False)
        assert not isinstance(found, MatchingRows)
        return found

    def top_or_rows(
        self,
        queries: np.ndarray,
        k: int,
        params: SearchParams,
        cells: CoarseCells | None = None,
    ) -> list[list[tuple[float, str]]] | MatchingRows:
        """:meth:`top`, except that a filtered search for which reading the matching rows
        back is cheaper than the index walk returns those rows and their vectors: a
        shard scores what its partitions read back in one pass, not one per partition."""
        return self._top(queries, k, params, cells, rows_if_cheaper=True)

    def _top(
        self,
        queries: np.ndarray,
        k: int,
        params: SearchParams,
        cells: CoarseCells | None,
        rows_if_cheaper: bool,
    ) -> list[list[tuple[float, str]]] | MatchingRows:
        where = params.where
        with self._lock.read():
            rows = len(self._row_image)
            if rows == 0:
                return [[] for _ in range(len(queries))]
            if where is not None:
                plan = self._filter_plan(where, params)
                if rows_if_cheaper and plan.read_back:
                    return self._read_back(plan, queries, k)
                scores, found = self._search_where(queries, k, params, plan, cells)
            else:
                fetch = min(rows, k * self._max_rows_per_image)
                scores, found = self._search_filtered(queries, fetch, params, cells)
            return self._pairs(scores, found, k)

    def _pairs(
        self, scores: np.ndarray, found: np.ndarray, k: int
    ) -> list[list[tuple[float, str]]]:
        """Under the lock: faiss's rows as the best ``k`` distinct images per query."""
        row_image = self._row_image
        results = []
        for row_scores, row_ids in zip(scores.tolist(), found.tolist(), strict=True):
            if self._max_rows_per_image == 1:  # one row per image: no duplicates
                top = [
                    (score, row_image[row])
                    for score, row in zip(row_scores, row_ids, strict=True)
                    if row >= 0
                ]
                results.append(top[:k])
                continue
            best: dict[str, float] = {}
            for score, row in zip(row_scores, row_ids, strict=True):
                if row < 0:
                    break
                image_id = row_image[row]
                if image_id not in best:  # results are sorted: first is the max
                    best[image_id] = score
                    if len(best) == k:
                        break
            results.append([(score, image_id) for image_id, score in best.items()])
        return results

    def reading(self) -> contextlib.AbstractContextManager[None]:
        """A read hold on the partition: its index and rows stay as they are while
        held (a shard holds every partition's for a joint scan)."""
        return self._lock.read()

    @property
    def stacks_lists(self) -> bool:
        """The index is an inner-product IVF-Flat, whose lists a joint scan stacks."""
        return self._flat_ivf is not None

    def joint_member(self, key: str) -> JointMember | None:
        """Under :meth:`reading`, held for as long as the result is used: what a
        shard's joint scan reads of this partition (index/joint_scan.py), or
        ``None`` when it cannot join one (not an inner-product IVF-Flat on the
        centroids ``key``). Radii only while they bound every row and images
        have one row each (a row's bound is not a tiled image's)."""
        if self._flat_ivf is None or self.coarse_key != key:
            return None
        writes = self._lock.writes
        cached = self._member
        if cached is not None and cached[0] == writes:  # nothing written since
            return cached[1]
        hidden = len(self._row_image) - self._allowed_rows
        member = JointMember(
            self._flat_ivf,
            self._row_image,
            self._visible,
            hidden,
            self._max_rows_per_image,
            self.list_radii(),
        )
        # Racing readers may both make one; either is right.
        self._member = (writes, member)
        return member

    def list_radii(self) -> ListRadii | None:
        """The IVF lists' radii while they count every row of the index, else ``None``.

        Read without the lock: :meth:`top_in_lists` checks under it that they
        are still this index's, and a shard that gets ``None`` either way
        scans every list.
        """
        radii = self._radii
        if radii is None or not radii.current() or self._max_rows_per_image > 1:
            return None  # with tiles, a row's bound is not an image's: no skipping
        return radii

    def top_in_lists(
        self,
        queries: np.ndarray,
        k: int,
        params: SearchParams,
        cells: CoarseCells,
        radii: ListRadii,
    ) -> ScannedRows | None:
        """Per query, the best ``k`` visible rows in exactly ``cells``' lists (a -1
        cell is skipped), short when they hold fewer: one pass of a shard's
        pruned scan (``params.nprobe`` must equal ``cells.nprobe``).

        ``None`` when the index is no longer the one ``radii`` (from
        :meth:`list_radii`) describe, or has rows they do not count.
        Images have one row each here (:meth:`list_radii`), so rows are images.
        """
        with self._lock.read():
            if self._radii is not radii or not radii.current() or cells.key != self.coarse_key:
                return None
            fetch = min(len(self._row_image), k)
            if fetch == 0:
                return ScannedRows(*_no_rows(len(queries)), [])
            scores, found = search_preassigned(self._index, fetch, cells, self._filter(params))
            # Copies: the arrays are cells' buffers, overwritten by the next scan.
            return ScannedRows(scores.copy(), found.copy(), self._row_image)

    def hits_with_vectors(self, scored: list[tuple[float, str]]) -> list[Hit]:
        """Hits for ``(score, image_id)`` pairs of this partition, with global vectors;
        an image deleted or hidden since the pairs were found is left out."""
        with self._lock.read():
            visible = {i: score for score, i in scored if self._states.get(i, _NO_ROWS).visible}
            return self._hits_with_vectors(visible)

    def exact_search(self, query: np.ndarray, k: int, chunk: int = 65_536) -> list[Hit]:
        """The true top ``k`` visible images for one query (what :meth:`search` should
        find), by reading the rows back: the online recall monitor's ground truth.

        An exact partition's own search is already exact. An ANN partition's rows
        are reconstructed a chunk at a time (exact for HNSW/IVF-Flat, the decoded
        approximation for PQ/SQ) and scored on the CPU: ~1 s per million 1280-d
        rows, which is why the monitor samples.
        """
        if self.kind == "exact":
            return self.search(query, k)[0]
        query = np.ascontiguousarray(query, dtype=np.float32).reshape(-1)
        with self._lock.read():
            rows = len(self._row_image)
            allowed = self._visible[:rows]
            best: dict[str, float] = {}
            for start in range(0, rows, chunk):
                picked = np.flatnonzero(allowed[start : start + chunk]) + start
                if not len(picked):
                    continue
                scores = reconstruct_rows(self._index, picked, self._nlist > 0) @ query
                top = np.argsort(-scores)[: k * self._max_rows_per_image]
                for row, score in zip(picked[top].tolist(), scores[top].tolist(), strict=True):
                    image_id = self._row_image[row]
                    if score > best.get(image_id, -np.inf):
                        best[image_id] = score
        ranked = sorted(best.items(), key=lambda item: item[1], reverse=True)[:k]
        return [Hit(image_id, score, uri=self.uri_of(image_id)) for image_id, score in ranked]

    def _search_filtered(
        self,
        queries: np.ndarray,
        fetch: int,
        params: SearchParams,
        cells: CoarseCells | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """faiss search through the visibility bitmap, with effort raised as needed."""
        wanted = min(fetch, self._allowed_rows)
        if cells is not None and cells.key == self.coarse_key:
            scores, found = search_preassigned(self._index, fetch, cells, self._filter(params))
            if _enough(found, wanted):
                return scores, found
        return self._search_until_enough(queries, fetch, wanted, params, self._filter)

    def _search_until_enough(
        self,
        queries: np.ndarray,
        fetch: int,
        wanted: int,
        params: SearchParams,
        parameters: Callable[[SearchParams], faiss.SearchParameters],
    ) -> tuple[np.ndarray, np.ndarray]:
        """faiss search with the selector ``parameters`` makes, effort raised as needed.

        A graph or cluster walk with a fixed budget (efSearch, nprobe) finds
        fewer than ``fetch`` results when filtered rows crowd the query's
        neighbourhood; rather than return short, the budget is quadrupled
        until ``wanted`` rows are found or none are left to find: for an IVF,
        once every list is probed (its efSearch says nothing; stopping on it
        left a search probing 32 of 256 lists short of visible rows that
        existed); for a graph, once efSearch reaches the row count.
        """
        rows = len(self._row_image)
        while True:
            scores, found = self._index.search(queries, fetch, params=parameters(params))
            exhausted = params.nprobe >= self._nlist if self._nlist else params.ef_search >= rows
            if _enough(found, wanted) or self.kind == "exact" or exhausted:
                return scores, found
            params = SearchParams(
                ef_search=min(4 * params.ef_search, max(rows, 1)),
                nprobe=min(4 * params.nprobe, self._nlist) if self._nlist else 4 * params.nprobe,
            )

    def _search_where(
        self,
        queries: np.ndarray,
        k: int,
        params: SearchParams,
        plan: FilterPlan,
        cells: CoarseCells | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """A search restricted to the visible rows that match ``where`` (under the lock).

        The matching rows go to the index walk as a bitmap, with the walk's
        budget (nprobe, efSearch) raised by the inverse of the filter's
        selectivity (up to ``FILTER_MAX_BOOST``): the filtered top ``k`` lie as
        far out as the unfiltered top ``k / selectivity``, while rows outside
        the bitmap cost only a bit test each. When reading the matching rows
        back and scoring them is cheaper than that walk (few rows: a selective
        filter), they are searched exactly instead; either way never short.
        """
        selected, boost = plan.selected, plan.boost
        fetch = min(plan.count, k * self._max_rows_per_image)
        if fetch == 0:
            return _no_rows(len(queries))
        if plan.read_back:
            read = self._read_back(plan, queries, k)
            return _best_of(read.scores, read.rows, fetch)
        bitmap = selected.bitmap(len(self._allowed))
        selector = faiss.IDSelectorBitmap(8 * len(bitmap), faiss.swig_ptr(bitmap))
        boosted = SearchParams(params.ef_search * boost, params.nprobe * boost)

        def parameters(budget: SearchParams) -> faiss.SearchParameters:
            return search_parameters(self._index, selector, budget)

        if cells is not None and cells.key == self.coarse_key:
            mine = cells.narrowed(min(boosted.nprobe, self._nlist))
            width = SearchParams(nprobe=mine.nprobe)
            scores, found = search_preassigned(self._index, fetch, mine, parameters(width))
            if _enough(found, fetch):
                return scores, found
        return self._search_until_enough(queries, fetch, fetch, boosted, parameters)

    def _read_back(self, plan: FilterPlan, queries: np.ndarray, k: int) -> MatchingRows:
        """Under the lock: the plan's rows, scored exactly against ``queries``; from
        an IVF whose rows' 8-bit codes are ready, only the best ``RESCORE_PER_K`` x
        ``k`` (x an image's most rows) by the codes, per query, are read back."""
        rows = plan.selected.sorted_rows()
        codes = self._codes
        few = RESCORE_PER_K * k * self._max_rows_per_image
        if len(rows) > max(CODES_MIN_ROWS, 2 * few) and codes is not None and codes.current():
            rows = codes.best(rows, queries, few)
        return MatchingRows(queries @ self.read_rows(rows).T, rows, self._row_image)

    def read_rows(self, rows: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Under the read lock (the caller's): the vectors of ``rows``; into ``out``
        (float32, one row each, C order) when given: a shard reads a shortlist from
        each partition into one array, one faiss call a partition."""
        return reconstruct_rows(self._index, rows, self._nlist > 0, out)

    @property
    def row_images(self) -> list[str]:
        """Under the read lock: the image of each row. A compaction replaces the list
        rather than changing it, so one read under the lock names those rows ever after."""
        return self._row_image

    @property
    def max_rows_per_image(self) -> int:
        """The most rows one image has had here (a global vector and its tiles)."""
        return self._max_rows_per_image

    @property
    def rows(self) -> int:
        """Rows of the index, retired ones included (read under the lock)."""
        return len(self._row_image)

    def _want_codes(self) -> None:
        """Under the read lock, from a filtered search of an IVF that would read its
        rows back by their codes: have the codes built if nobody has started to
        (in the background, a chunk under the read lock at a time, so writers
        wait ~2.5 ms at most; at once, under this search's hold, for a partition
        without background work)."""
        if not self.codes_allowed:
            return
        if self._codes is not None or not self._codes_start.acquire(blocking=False):
            return
        try:
            if self._codes is not None:
                return
            codes = self._codes = RowCodes(self._index)
            if not self.background:
                codes.catch_up()
                return
            self._codes_thread = threading.Thread(
                target=self._build_codes, args=(codes,), name="partition-codes", daemon=True
            )
            self._codes_thread.start()
        finally:
            self._codes_start.release()

    def _build_codes(self, codes: RowCodes) -> None:
        """Encode every row into ``codes``, a chunk per read hold, until they are
        current or no longer this partition's (a rebuild replaced them). A failure
        (memory, say) is logged and drops them: filters read rows back exactly
        meanwhile, and a later filtered search starts a new build."""
        try:
            while True:
                with self._lock.read():
                    if self._codes is not codes:
                        return
                    codes.catch_up(ENCODE_CHUNK)
                    if codes.current():
                        return
        except Exception:
            log.exception("building the rows' codes failed; filters read rows back meanwhile")
            with self._lock.write():
                if self._codes is codes:
                    self._codes = None

    def _filter_plan(self, where: SearchFilter, params: SearchParams) -> FilterPlan:
        """Under the lock: how to search the visible rows that match ``where``."""
        selected = self._attributes.matching_rows(where, len(self._row_image))
        selected = selected.where(self._visible)  # visible ones only
        count = selected.count
        if count == 0:
            return FilterPlan(selected, 0, 1, True)
        boost = filter_boost(self._allowed_rows / count)
        return FilterPlan(
            selected, count, boost, self._exact_is_cheaper(count, params.nprobe * boost)
        )

    def _exact_is_cheaper(self, matching: int, nprobe: int) -> bool:
        """Reading ``matching`` rows back costs less than the walk: an IVF walk visits
        ``nprobe`` of its lists and tests every row in them, any other index every
        row (a graph walk with a raised efSearch visits a large share of a filtered
        graph). Costs in microseconds, measured (index/defaults.py). An IVF whose
        rows would be read back by their codes has them built (once)."""
        by_codes = self._nlist > 0 and matching > CODES_MIN_ROWS
        if self.filter_exact_rows is not None:
            cheaper = matching <= self.filter_exact_rows
            if cheaper and by_codes and self._codes is None:
                self._want_codes()
            return cheaper
        rows = len(self._row_image)
        walk = self.walk_us(nprobe)
        cached = rows * self.dim * 4 <= FILTER_CACHED_BYTES
        read = FILTER_READ_US if cached else FILTER_READ_UNCACHED_US
        if by_codes and matching * FILTER_READ_CODES_US <= walk:
            codes = self._codes
            if codes is None:
                self._want_codes()  # read back exactly until they are ready
            elif codes.current():
                read = min(read, FILTER_READ_CODES_US)
        return matching * read <= walk

    def walk_us(self, nprobe: int) -> float:
        """Under the lock: the estimated cost of a filtered index walk at ``nprobe``
        (an IVF tests every row of the lists it visits, any other index every row)."""
        rows = len(self._row_image)
        if not self._nlist:
            return rows * FILTER_ROW_TEST_US
        lists = min(nprobe, self._nlist)
        return lists * (FILTER_LIST_US + FILTER_ROW_TEST_US * rows / self._nlist)

    def _filter(self, params: SearchParams) -> faiss.SearchParameters:
        """faiss search parameters carrying the ``_allowed`` bitmap as a selector.

        Kept between searches: building them is five faiss calls, each a GIL
        round trip that waits behind ingest and Kafka threads on a busy
        process. The selector covers the bitmap's whole capacity (bits past
        the last row are 0), so it stays valid while rows are appended; a new
        bitmap (growth, compaction) or a new index (rebuild) makes new ones.
        Racing searches may both build them; either result is right. The
        bitmap is known by its ``id`` (its address took ~1 us a call to read)
        and kept alive with the entry, so no other array can take that ``id``.
        """
        allowed = self._allowed
        key = (id(self._index), self.kind, id(allowed), len(allowed), params)
        cached = self._filter_cache
        if cached is not None and cached[0] == key:
            return cached[3]
        selector = faiss.IDSelectorBitmap(8 * len(allowed), faiss.swig_ptr(allowed))
        search_params = search_parameters(self._index, selector, params)
        # The selector must outlive the parameters that point at it: kept together.
        self._filter_cache = (key, allowed, selector, search_params)
        return search_params

    def _hits_with_vectors(self, best: dict[str, float]) -> list[Hit]:
        """Hits with their global vectors, read in one faiss call.

        One ``reconstruct`` per hit cost a GIL round trip each; on a busy
        process (ingest, feedback and Kafka threads wanting the GIL) each
        round trip waited, and 128 of them per search (8 partitions x 16 hits)
        were a third of a search's time in the soak.
        """
        states = [self._states[i] for i in best]
        rows = np.fromiter((state.first_row for state in states), np.int64, len(best))
        vectors = reconstruct_rows(self._index, rows, self._nlist > 0)
        return [
            Hit(image_id, score, np.asarray(vector, dtype=np.float32), state.uri)
            for (image_id, score), vector, state in zip(best.items(), vectors, states, strict=True)
        ]

    def _global_vector(self, state: ImageState) -> np.ndarray:
        """An image's first row: its global vector (tiles follow it)."""
        return np.asarray(self._index.reconstruct(state.first_row), dtype=np.float32)

    def indexed_image(self, image_id: str) -> IndexedImage | None:
        """A visible image's global vector, upload time and URI; None when hidden or absent."""
        with self._lock.read():
            state = self._states.get(image_id)
            if state is None or not state.visible:
                return None
            return IndexedImage(self._global_vector(state), state.uploaded_at, state.uri)

    def uri_of(self, image_id: str) -> str:
        """The http(s) URI of an image's indexed upload ("" when none or unknown).

        A dict lookup without the lock: a hit's URI is read after its search,
        and a racing re-upload gives the old or the new one, both the image's.
        """
        state = self._states.get(image_id)
        return "" if state is None else state.uri

    def vector_of(self, image_id: str) -> np.ndarray | None:
        """The global vector of a visible image (for near-duplicate checks)."""
        found = self.indexed_image(image_id)
        return None if found is None else found.vector

    def memory(self, exact_index_bytes: bool = True) -> MemoryReport:
        """Memory accounting; ``exact_index_bytes`` serializes the index to measure it."""
        with self._lock.read():
            rows = len(self._row_image)
            live = rows - self._dead_rows
            size = index_bytes(self._index) if exact_index_bytes else rows * self.dim * 4
            # Row map (8-byte pointer per row), alive + allowed + visible flags, and
            # the Python objects of each image state (~320 bytes measured with an id).
            flags = len(self._alive) + len(self._allowed) + len(self._visible)
            map_bytes = rows * 8 + flags + 320 * len(self._states)
            # an http(s) URI is a str of its own: 49 bytes of header plus its characters
            map_bytes += sum(49 + len(state.uri) for state in self._states.values() if state.uri)
            map_bytes += self._attributes.nbytes()
            if self._codes is not None:
                map_bytes += self._codes.nbytes
            return MemoryReport(self.kind, rows, live, self._images, size, map_bytes)

    # ----------------------------------------------------------------- writes

    def upsert(
        self,
        image_id: str,
        vectors: np.ndarray,
        uploaded_at: float,
        private: bool = False,
        owner_id: str = "",
        tags: Iterable[str] = (),
        uri: str = "",
    ) -> WriteResult:
        """Index an image's vectors (global first, then tiles); the same upload twice is
        one entry. SUPERSEDED when a newer upload or a delete already won."""
        item = Upsert(image_id, vectors, uploaded_at, private, owner_id, tuple(tags), uri)
        return self.upsert_many([item])[0]

    def upsert_many(self, items: Sequence[Upsert]) -> list[WriteResult]:
        """Index several images under one lock and one faiss add; one result per item,
        in order. Later items of the batch win over earlier ones for the same image."""
        batch = [(item, self._checked_vectors(item.vectors)) for item in items]
        placed = self._placement([vectors for _, vectors in batch])
        results: list[WriteResult] = []
        added: list[np.ndarray] = []
        added_lists: list[np.ndarray] = []
        with self._lock.write():
            first = len(self._row_image)
            self._grow(first + sum(len(vectors) for _, vectors in batch))
            for item, vectors in batch:
                state = self._states.setdefault(item.image_id, ImageState())
                if not state.accepts_upload(item.uploaded_at):
                    results.append(WriteResult.SUPERSEDED)
                    continue
                self._retire(state)
                start = len(self._row_image)
                added.append(vectors)
                if placed is not None:
                    added_lists.append(placed.lists[len(results)])
                self._row_image.extend([item.image_id] * len(vectors))
                self._alive[start : start + len(vectors)] = True
                state.first_row, state.row_count = start, len(vectors)
                self._images += 1
                self._max_rows_per_image = max(self._max_rows_per_image, len(vectors))
                state.record_upload(
                    item.uploaded_at, item.private, item.owner_id, item.tags, item.uri
                )
                # state.tags: a tags update newer than the upload keeps its tags
                self._attributes.add(
                    start, len(vectors), item.owner_id, state.tags, item.uploaded_at
                )
                results.append(WriteResult.APPLIED)
            if added:
                stacked = added[0] if len(added) == 1 else np.concatenate(added)
                lists = None
                if placed is not None and placed.key == self.coarse_key:  # still those cells
                    lists = np.ascontiguousarray(np.concatenate(added_lists))
                small = len(stacked) < SMALL_BATCH
                codes = self._codes
                codes_current = codes is not None and codes.current()
                with one_omp_thread() if small else contextlib.nullcontext():
                    self._add(stacked, lists)
                if codes_current:  # else their builder catches up
                    assert codes is not None
                    codes.append(stacked)
                if self._shard_rows is not None:
                    self._keep_shard_rows(first, stacked)
                if self._radii is not None:
                    self._radii.catch_up()
                for item, _ in batch:
                    self._refresh(self._states[item.image_id])
        if added:
            self._after_write()
        return results

    def _placement(self, vectors: list[np.ndarray]) -> Placement | None:
        """Before the write lock: the IVF list of every row of ``vectors`` (one array
        per item), when this partition is an IVF on the plan's centroids.

        The lists come from the float16 copy of the centroids that the shard
        finds search cells with (:func:`~index.faiss_index.cell_finder`): the
        copy is half the bytes and warm from the searches, where this
        partition's own float32 quantizer is read from memory again on each
        insert of a busy process (4 MB at 1M vectors). Found outside the lock,
        so searches do not wait for it; the write uses them only if the
        partition still has those centroids then. A row near two centroids may
        go to either list; its list's radius counts it wherever it goes, so the
        bounds stay true.
        """
        template = self.plan.template
        if template is None or template.cell_quantizer is None or template.key is None:
            return None
        if template.key != self.coarse_key or not vectors:
            return None
        stacked = vectors[0] if len(vectors) == 1 else np.concatenate(vectors)
        _, nearest = template.cell_quantizer.search(stacked, 1)
        ends = np.cumsum([len(v) for v in vectors])[:-1]
        return Placement(template.key, np.split(nearest[:, 0], ends))

    def _add(self, vectors: np.ndarray, lists: np.ndarray | None) -> None:
        """Under the write lock: append ``vectors`` as the index's next rows, into
        ``lists`` (their IVF lists, from :meth:`_placement`) when given."""
        if lists is None:
            self._index.add(vectors)
            return
        self._index.add_core(  # type: ignore[attr-defined]
            len(vectors), faiss.swig_ptr(vectors), None, faiss.swig_ptr(lists)
        )

    def _checked_vectors(self, vectors: np.ndarray) -> np.ndarray:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim == 1:
            vectors = vectors.reshape(1, -1)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or len(vectors) == 0:
            raise ValueError(f"vectors have shape {vectors.shape}, index has {self.dim} dimensions")
        return vectors

    def update(
        self, image_id: str, action: str, at: float, tags: Iterable[str] = ()
    ) -> WriteResult:
        """Apply delete / private / public / flag / unflag, or ``tags`` (replace the
        image's tags with ``tags``), at event time ``at``.

        An update for an image not indexed yet is remembered (PENDING), so an
        embedding that arrives later (reordered, or replayed) obeys it.
        """
        return self.update_many([image_id], action, at, tags)[0]

    def delete_many(self, image_ids: Iterable[str], at: float) -> list[WriteResult]:
        """Delete several images at event time ``at`` under one lock."""
        return self.update_many(image_ids, "delete", at)

    def update_many(
        self, image_ids: Iterable[str], action: str, at: float, tags: Iterable[str] = ()
    ) -> list[WriteResult]:
        """Apply one update action (``tags``: with ``tags``) to several images under one lock."""
        results = []
        new_tags = tuple(tags)
        with self._lock.write():
            for image_id in image_ids:
                state = self._states.setdefault(image_id, ImageState())
                indexed = state.row_count > 0
                if action == "tags":
                    won = self._retag(state, new_tags, at)
                else:
                    won = state.apply(action, at)
                if state.deleted:
                    self._retire(state)
                else:
                    self._refresh(state)
                if not won:
                    results.append(WriteResult.SUPERSEDED)
                else:
                    results.append(WriteResult.APPLIED if indexed else WriteResult.PENDING)
        self._after_write()
        return results

    def _retag(self, state: ImageState, tags: tuple[str, ...], at: float) -> bool:
        old = state.tags
        won = state.set_tags(tags, at)
        if won and state.row_count:
            self._attributes.retag(state.first_row, state.row_count, old, tags)
            if self._shard_rows is not None:
                shard_rows, slot = self._shard_rows
                shard_rows.retag(slot, state.first_row, state.row_count, old, tags)
        return won

    def _after_write(self) -> None:
        self._maybe_compact()
        self.plan.check()

    def wait_idle(self, timeout_s: float | None = None) -> None:
        """Wait for background rebuilds to finish (tests, benchmarks, shutdown)."""
        self.plan.wait_idle(timeout_s)
        for thread in (self._compaction_thread, self._codes_thread):
            if thread is not None:
                thread.join(timeout_s)

    # ----------------------------------------------------------- row bookkeeping

    def _grow(self, rows: int) -> None:
        if rows <= len(self._alive):
            return
        alive, allowed, visible = _row_arrays(max(rows, 2 * len(self._alive)))
        alive[: len(self._alive)] = self._alive
        allowed[: len(self._allowed)] = self._allowed
        visible[: len(self._visible)] = self._visible
        self._alive, self._allowed, self._visible = alive, allowed, visible

    def _retire(self, state: ImageState) -> None:
        if state.row_count:
            self._set_allowed(state.rows, False)
            self._alive[state.first_row : state.first_row + state.row_count] = False
            self._dead_rows += state.row_count
            self._images -= 1
            state.first_row, state.row_count = -1, 0

    def _refresh(self, state: ImageState) -> None:
        self._set_allowed(state.rows, state.visible)

    def _set_allowed(self, rows: range, allowed: bool) -> None:
        bits = self._allowed
        self._visible[rows.start : rows.stop] = allowed
        if self._shard_rows is not None:
            shard_rows, slot = self._shard_rows
            shard_rows.set_visible(slot, rows.start, len(rows), allowed)
        for row in rows:
            mask = 1 << (row & 7)
            if bool(bits[row >> 3] & mask) == allowed:
                continue
            if allowed:
                bits[row >> 3] |= mask
                self._allowed_rows += 1
            else:
                bits[row >> 3] &= ~mask & 0xFF
                self._allowed_rows -= 1

    # ---------------------------------------------------------------- rebuilds

    def _compaction_due(self) -> bool:
        rows = len(self._row_image)
        return (
            self._dead_rows >= self.min_compact_rows and self._dead_rows > self.compact_ratio * rows
        )

    def _maybe_compact(self) -> None:
        if not self._compaction_due() or self._rebuild_lock.locked():
            return
        if not self.background:
            self.rebuild()
            return
        thread = self._compaction_thread
        if thread is not None and thread.is_alive():
            return
        self._compaction_thread = threading.Thread(
            target=self._compact_in_background, name="partition-compact", daemon=True
        )
        self._compaction_thread.start()

    def _compact_in_background(self) -> None:
        faiss.omp_set_num_threads(1)  # this thread only: leave a core to serve
        self.rebuild(blocking=False)

    def sample_vectors(self, share: float, rng: np.random.Generator) -> np.ndarray:
        """About ``share`` of the live vectors, at random (training the plan's template)."""
        with self._lock.read():
            live = np.flatnonzero(self._alive[: len(self._row_image)])
            picked = np.sort(rng.choice(live, round(share * len(live)), replace=False))
            return reconstruct_rows(self._index, picked)

    def rebuild(self, blocking: bool = True) -> bool:
        """Rebuild into the plan's index (exact, or a copy of its template), dropping
        retired rows; False when another rebuild holds the partition and
        ``blocking`` is False."""
        if not self._rebuild_lock.acquire(blocking=blocking):
            return False
        try:
            self._rebuild()
        finally:
            self._rebuild_lock.release()
        return True

    def _rebuild(self) -> None:
        template = self.plan.template
        with self._lock.read():
            rows_at_start = len(self._row_image)
            live = np.flatnonzero(self._alive[:rows_at_start])
            vectors = reconstruct_rows(self._index, live)
        if template is None:
            target, fresh, key = EXACT_FACTORY, build_index(self.dim, EXACT_FACTORY), None
        else:  # a copy has the template's centroids, hence its key
            target, fresh, key = template.factory, template.copy(), template.key
        train_and_add(fresh, vectors)  # a template copy is trained already
        codes = None
        if self._codes is not None and faiss.try_extract_index_ivf(fresh) is not None:
            codes = RowCodes(fresh)  # filtered searches read codes: keep them
            codes.append(vectors)  # the rows just added, in order: no read-back
        del vectors
        radii = ListRadii.of(fresh)  # before the lock: it reads every row back
        with self._lock.write():
            self._swap(fresh, target, key, live, rows_at_start, radii, codes)
        release_free_memory()  # the old index's blocks, freed by the swap
        log.info(
            "partition rebuilt as %s: %d live rows (%d rebuilds)", target, len(live), self.rebuilds
        )

    def _swap(
        self,
        fresh: faiss.Index,
        target: str,
        key: str | None,
        live: np.ndarray,
        rows_at_start: int,
        radii: ListRadii | None,
        codes: RowCodes | None,
    ) -> None:
        """Under the lock: add rows written during the build, renumber, replace."""
        rows_now = len(self._row_image)
        added = np.arange(rows_at_start, rows_now)
        added = added[self._alive[rows_at_start:rows_now]]
        if len(added):
            fresh.add(reconstruct_rows(self._index, added))
            if radii is not None:
                radii.catch_up()
            if codes is not None:
                codes.catch_up()
        kept = np.concatenate([live, added])
        if len(kept) < rows_now:  # rows were retired: renumber (identity otherwise)
            self._renumber(kept, rows_now)
        self._install(fresh, target, key, radii, codes)
        self.rebuilds += 1

    def _renumber(self, kept: np.ndarray, rows_now: int) -> None:
        new_of_old = np.full(rows_now, -1, dtype=np.int64)
        new_of_old[kept] = np.arange(len(kept))
        alive = self._alive[kept]  # rows retired during the build stay in, as dead rows
        allowed = self._visible[kept] & alive
        self._row_image = [self._row_image[row] for row in kept.tolist()]
        self._alive, self._allowed, self._visible = _row_arrays(max(1024, 2 * len(kept)))
        self._alive[: len(kept)] = alive
        self._visible[: len(kept)] = allowed
        packed = np.packbits(allowed, bitorder="little")
        self._allowed[: len(packed)] = packed
        self._allowed_rows = int(allowed.sum())
        self._dead_rows = int(len(kept) - alive.sum())
        self._attributes.renumber(new_of_old, kept)
        self._forget_shard_rows()
        mapping = new_of_old.tolist()
        for state in self._states.values():
            if state.row_count:
                state.first_row = mapping[state.first_row]

    def _install(
        self,
        index: faiss.Index,
        factory: str,
        key: str | None,
        radii: ListRadii | None,
        codes: RowCodes | None = None,
    ) -> None:
        """Make ``index`` (built as ``factory``, centroids digest ``key``, its lists'
        ``radii`` counting every row, its rows' ``codes`` if any) the one searched."""
        # faiss's factory, clone and deserialize return the concrete class, which
        # IVF-only calls need (a downcast copy would not own the index: no copy here).
        self._index = index
        ivf = faiss.try_extract_index_ivf(index)
        self._nlist = 0 if ivf is None else int(ivf.nlist)
        flat = index if isinstance(index, faiss.IndexIVFFlat) else None
        self._flat_ivf = flat if flat and flat.metric_type == faiss.METRIC_INNER_PRODUCT else None
        self.index_factory = factory
        self.kind = "exact" if factory == EXACT_FACTORY else "ann"
        self.coarse_key = key
        self._radii = radii
        self._codes = codes  # a builder of the old index's codes sees this and stops
        self._member = None  # it holds the old index: let it go now

    # -------------------------------------------------------------- shard rows

    def keep_rows_in(self, shard_rows: ShardRows, slot: int) -> None:
        """Keep this partition's rows in ``shard_rows`` at ``slot`` too, from now on:
        writes go there as well once :meth:`catch_up_shard_rows` has copied the
        rows written before."""
        with self._lock.write():
            self._shard_rows = (shard_rows, slot)
            shard_rows.reset(slot)

    def catch_up_shard_rows(self, shard_rows: ShardRows, limit: int) -> bool:
        """Copy up to ``limit`` more rows into ``shard_rows`` (under the read lock);
        True once it covers every row (or no longer keeps this partition's)."""
        with self._lock.read():
            if self._shard_rows is None or self._shard_rows[0] is not shard_rows:
                return True
            slot = self._shard_rows[1]
            first = shard_rows.covered[slot]
            end = min(len(self._row_image), first + limit)
            if end > first:
                vectors = reconstruct_rows(self._index, np.arange(first, end), self._nlist > 0)
                shard_rows.catch_up(slot, self._row_facts(first, vectors))
            return end == len(self._row_image)

    def _keep_shard_rows(self, first: int, vectors: np.ndarray) -> None:
        """Under the write lock: rows ``first ..`` (``vectors``) were just added."""
        assert self._shard_rows is not None
        shard_rows, slot = self._shard_rows
        if shard_rows.covered[slot] == first:  # else its catch-up copies them later
            shard_rows.catch_up(slot, self._row_facts(first, vectors))

    def _row_facts(self, first: int, vectors: np.ndarray) -> RowFacts:
        end = first + len(vectors)
        states = [self._states.get(image_id, _NO_ROWS) for image_id in self._row_image[first:end]]
        return RowFacts(
            first,
            vectors,
            self._visible[first:end].copy(),
            [state.owner_id for state in states],
            [state.tags for state in states],
            np.array([state.uploaded_at for state in states], dtype=np.float64),
        )

    def _forget_shard_rows(self) -> None:
        """Under the write lock: rows were renumbered or replaced; the shard's copy
        of them starts over (searches do not use it until it is caught up)."""
        if self._shard_rows is not None:
            shard_rows, slot = self._shard_rows
            shard_rows.reset(slot)

    # --------------------------------------------------------------- snapshots

    def export_state(self) -> tuple[bytes, dict[str, Any]]:
        """The serialized index and the JSON-able bookkeeping, consistent with each other."""
        with self._lock.read():
            rows = len(self._row_image)
            blob = faiss.serialize_index(self._index).tobytes()
            state = {
                "kind": self.kind,
                "factory": self.index_factory,
                "rows": rows,
                "row_image": self._row_image,
                "alive": np.packbits(self._alive[:rows], bitorder="little").tobytes().hex(),
                "allowed": self._allowed[: (rows + 7) // 8].tobytes().hex(),
                "states": {image_id: s.to_list() for image_id, s in self._states.items()},
                "max_rows_per_image": self._max_rows_per_image,
            }
            return blob, state

    def import_state(self, blob: bytes, state: dict[str, Any]) -> None:
        """Replace the content with an exported one (snapshot load)."""
        index = faiss.deserialize_index(np.frombuffer(blob, dtype=np.uint8))
        rows = int(state["rows"])
        if index.ntotal != rows or len(state["row_image"]) != rows or index.d != self.dim:
            raise ValueError("snapshot index and bookkeeping disagree")
        alive_bits = np.frombuffer(bytes.fromhex(state["alive"]), dtype=np.uint8)
        alive = np.unpackbits(alive_bits, bitorder="little")[:rows].astype(bool)
        allowed_bits = np.frombuffer(bytes.fromhex(state["allowed"]), dtype=np.uint8)
        if len(allowed_bits) != (rows + 7) // 8:
            raise ValueError("snapshot visibility bitmap has the wrong length")
        states = {image_id: ImageState.from_list(v) for image_id, v in state["states"].items()}
        # Snapshots written before the factory was recorded: the plan's, resolved.
        factory = state.get("factory") or (
            EXACT_FACTORY if state["kind"] == "exact" else self.plan.factory_of(index)
        )
        key = centroids_key_of(index)
        radii = ListRadii.of(index)  # before the lock: it reads every row back
        with self._lock.write():
            self._install(index, factory, key, radii)
            self._row_image = list(state["row_image"])
            self._alive, self._allowed, self._visible = _row_arrays(max(1024, 2 * rows))
            self._alive[:rows] = alive
            self._allowed[: len(allowed_bits)] = allowed_bits
            self._visible[:rows] = np.unpackbits(allowed_bits, bitorder="little")[:rows]
            self._allowed_rows = int(self._visible[:rows].sum())
            self._dead_rows = int(rows - alive.sum())
            self._states = states
            self._attributes = _attributes_of(states)
            self._forget_shard_rows()
            self._images = sum(1 for s in states.values() if s.row_count)
            self._max_rows_per_image = int(state["max_rows_per_image"])
        self.plan.adopt(index, factory, key)


_NO_ROWS = ImageState()


def _attributes_of(states: dict[str, ImageState]) -> RowAttributes:
    """The filter attributes of a partition restored from ``states`` (a snapshot)."""
    attributes = RowAttributes()
    indexed = sorted((s for s in states.values() if s.row_count), key=lambda s: s.first_row)
    for state in indexed:  # posting lists are appended in row order
        attributes.add(
            state.first_row, state.row_count, state.owner_id, state.tags, state.uploaded_at
        )
    return attributes


def filter_boost(inverse_selectivity: float) -> int:
    """How much a filter that keeps one row in ``inverse_selectivity`` raises the
    index walk's budget (index/defaults.py)."""
    return max(1, min(FILTER_MAX_BOOST, math.ceil(inverse_selectivity**FILTER_BOOST_EXPONENT)))


def _best_of(all_scores: np.ndarray, rows: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
    """The best ``fetch`` of ``rows`` (scored ``all_scores``, queries x rows) per query,
    as faiss returns them: scores and rows, best first."""
    found_scores = np.empty((len(all_scores), fetch), dtype=np.float32)
    found_rows = np.empty((len(all_scores), fetch), dtype=np.int64)
    for number, scores in enumerate(all_scores):  # usually one query: no fancy axes
        best = np.argpartition(-scores, fetch - 1)[:fetch] if fetch < len(rows) else None
        picked = scores if best is None else scores[best]
        order = np.argsort(-picked, kind="stable")
        found_scores[number] = picked[order]
        found_rows[number] = rows[order if best is None else best[order]]
    return found_scores, found_rows


def _no_rows(queries: int) -> tuple[np.ndarray, np.ndarray]:
    """An answer of no rows for each of ``queries``, shaped as faiss's: scores, rows."""
    return np.empty((queries, 0), np.float32), np.empty((queries, 0), np.int64)


def _enough(found: np.ndarray, wanted: int) -> bool:
    """Every query found at least ``wanted`` rows (faiss puts the -1s of a short answer last)."""
    if wanted == 0:
        return True
    if len(found) == 1:
        return int(found[0, wanted - 1]) >= 0
    return bool(np.all(found[:, wanted - 1] >= 0))


def _row_arrays(capacity: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row ``alive`` flags, the packed ``allowed`` bitmap and the same bits as
    ``visible`` flags, for ``capacity`` rows. The flags cost a byte a row and save
    a filter the bit arithmetic (8 us a partition for ~125 rows at 1M, measured)."""
    packed = np.zeros((capacity + 7) // 8, dtype=np.uint8)
    return np.zeros(capacity, dtype=bool), packed, np.zeros(8 * len(packed), dtype=bool)

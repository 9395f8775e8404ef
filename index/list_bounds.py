"""How high any row of an IVF list can score, so that a search skips lists that
cannot change its top k.

With inner-product scores, a row ``x`` of the list whose centroid is ``c``
scores, for a query ``q``::

    q·x = q·c + q·(x - c) ≤ q·c + ‖q‖·‖x - c‖ ≤ q·c + ‖q‖·R

where ``R`` is the list's radius: the largest distance of its rows from ``c``.
A list whose bound ``q·c + ‖q‖·R`` is below the query's k-th best score
holds nothing that could enter the top k, and scanning it is wasted. That
score is known only after a scan, so a shard skips against a guess of it
(:class:`KthScoreGuess`) and checks the guess against its answer
(``IndexShard._scan_pruned``). The answer stays that of a scan of all
``nprobe`` lists, exactly; only the work changes. Where the vectors cluster,
most lists fall away: on a 1,000-centre Gaussian mixture of 100,000 256-d
vectors (8 partitions, IVF1024, nprobe 16), 17 of the 128 partition-list scans
were left, and faiss's share of a query went from ~285 to ~80 µs (measured on
2 vCPUs); at 1M vectors (IVF4096), 31 of 128, ~460 → ~160 µs. On
photo embeddings the lists overlap (radii ~1.2 on unit vectors) and none fall
away: the shard then keeps its one-pass scan (``PRUNE_MIN_SHARE``).

Rows are never taken out of an IVF here (a retired row is only hidden; a
rebuild makes a new index), so radii only grow: :meth:`ListRadii.catch_up`
counts the rows appended since its last call, and a bound is only used while it
covers every row of the index.
"""

from __future__ import annotations

import bisect
import collections
import math
from collections.abc import Sequence

import faiss
import numpy as np

from index.faiss_index import CoarseCells, coarse_quantizer, reconstruct_rows

# Rows read back at a time to measure their distances (bounds a rebuild's memory).
CATCH_UP_CHUNK = 65_536
# Float slack on a bound: faiss's SIMD inner products and numpy's differ in the
# last bits; a list within this of the k-th score is scanned.
BOUND_SLACK = 1e-4
# Values of k a shard learns its k-th score for (KthScoreGuess).
MAX_GUESSED_KS = 16


class ListRadii:
    """Per list of one plain IVF, the largest distance of its rows from the list's
    centroid (0 for an empty list)."""

    def __init__(self, index: faiss.Index) -> None:
        quantizer = coarse_quantizer(index)
        if quantizer is not None:
            quantizer = faiss.downcast_index(quantizer)
        ivf = faiss.try_extract_index_ivf(index)
        if quantizer is None or ivf is None or not isinstance(quantizer, faiss.IndexFlat):
            raise TypeError("list radii need a plain IVF with a flat coarse quantizer")
        self._index = index
        self._ivf = ivf
        nlist, dim = int(ivf.nlist), int(ivf.d)
        # A view of the quantizer's own centroids: no copy per partition.
        self._centroids = faiss.rev_swig_ptr(quantizer.get_xb(), nlist * dim).reshape(nlist, dim)
        self.radii = np.zeros(nlist, dtype=np.float32)
        self.covered = 0  # rows 0..covered-1 of the index are counted
        self.catch_up()

    @staticmethod
    def of(index: faiss.Index) -> ListRadii | None:
        """Radii for ``index`` if it is a plain IVF with a flat quantizer, else ``None``."""
        try:
            return ListRadii(index)
        except TypeError:
            return None

    def current(self) -> bool:
        """Whether every row of the index is counted (the bounds hold)."""
        return self.covered == self._ivf.ntotal

    def catch_up(self) -> None:
        """Count the rows appended since the last call (under the owner's write lock)."""
        total = int(self._ivf.ntotal)
        if total <= self.covered:
            return
        direct_map = self._ivf.direct_map
        if direct_map.type != faiss.DirectMap.Array:  # type: ignore[attr-defined]
            raise TypeError("list radii need the IVF's array direct map")
        # Each entry is (list number << 32 | offset in the list).
        entries = faiss.rev_swig_ptr(direct_map.array.data(), total)
        for start in range(self.covered, total, CATCH_UP_CHUNK):
            rows = np.arange(start, min(total, start + CATCH_UP_CHUNK), dtype=np.int64)
            lists = entries[rows] >> 32
            vectors = reconstruct_rows(self._index, rows, True)
            vectors -= self._centroids[lists]
            distances = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))
            np.maximum.at(self.radii, lists, distances.astype(np.float32))
        self.covered = total


def score_bounds(
    radii: np.ndarray,
    cells: np.ndarray,
    cell_scores: np.ndarray,
    norms: np.ndarray,
    centroid_error: float = 0.0,
) -> np.ndarray:
    """The highest score any row of each cell's list can reach, per query and cell.

    ``radii``: (nlist,) of one index, or (indexes, nlist) of several sharing
    centroids; ``cells``/``cell_scores``: (queries, nprobe) from the coarse
    quantizer; ``norms``: (queries, 1), each query's norm; ``centroid_error``:
    how far the centroids that scored the cells may be from the lists' own (a
    float16 copy's, ``index.faiss_index.cell_finder``): ``q·c ≤ q·c' + ‖q‖·‖c - c'‖``,
    so it widens each radius. The result has the shape of ``radii[..., cells]``.
    """
    return (radii[..., cells] + centroid_error) * norms + cell_scores


class KthScoreGuess:
    """Where a query's k-th best score will land, learnt from a shard's recent answers.

    A list can only be skipped against a score the answer is known to reach,
    and that score is known only once lists are scanned. Scanning the nearest
    list first to learn it costs a second faiss call per partition (measured
    slower overall at 100k vectors in 8 partitions). Instead the k-th best
    score is guessed as the query's nearest centroid score minus the
    ``quantile`` of that gap over the last ``window`` answers for the same k;
    a search checks the guess against the answer and scans what it wrongly
    skipped (about ``1 - quantile`` of queries). No guess until ``min_seen``
    answers.
    """

    def __init__(
        self, window: int = 256, quantile: float = 0.9, min_seen: int = 16, every: int = 1
    ) -> None:
        self.window, self.quantile, self.min_seen, self.every = window, quantile, min_seen, every
        self._gaps: dict[int, SlidingWindow] = {}
        self._margins: dict[int, float] = {}
        self._since: dict[int, int] = {}

    def floor(self, cells: CoarseCells, k: int) -> np.ndarray | None:
        """Per query, the guessed k-th best score; ``None`` before enough answers."""
        margin = self._margins.get(k)
        if margin is None:
            return None
        cells.pointers()
        return cells.scores[:, 0] - margin

    def learn(self, cells: CoarseCells, k: int, kth: Sequence[float]) -> None:
        """Take the answers' k-th best scores (NaN for a short answer) into account;
        nothing when the search never needed ``cells`` found (no shared IVF)."""
        if not cells.cells.size:
            return
        gaps = self._gaps.get(k)
        if gaps is None:
            if len(self._gaps) >= MAX_GUESSED_KS:  # an unusual k: not worth a guess
                return
            gaps = self._gaps.setdefault(k, SlidingWindow(self.window))
        # Plain floats: a search has one query or a few, where numpy's calls cost more.
        nearest = cells.scores[:, 0].tolist()
        for n, s in zip(nearest, kth, strict=True):
            if not math.isnan(s):
                gaps.add(n - s)
        since = self._since.get(k, 0) + len(nearest)
        if since >= self.every and len(gaps) >= self.min_seen:
            self._margins[k] = gaps.quantile(self.quantile)
            since = 0
        self._since[k] = since


class SlidingWindow:
    """The last ``size`` values, kept in arrival order and sorted, so that a quantile is
    an index: ~1 us an added value (a bisection and a list shift of 256 pointers)
    where sorting the window for each quantile took 7 us, and ``np.quantile`` 37
    us. Paid every 16th search, the sort showed at the p95 of a 0.17 ms search
    (20 us at the p95 of the guess's update, measured at 100k vectors)."""

    def __init__(self, size: int) -> None:
        self._arrivals: collections.deque[float] = collections.deque()
        self._sorted: list[float] = []
        self.size = size

    def __len__(self) -> int:
        return len(self._sorted)

    def add(self, value: float) -> None:
        if len(self._arrivals) == self.size:
            oldest = self._arrivals.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, oldest)]
        self._arrivals.append(value)
        bisect.insort(self._sorted, value)

    def quantile(self, share: float) -> float:
        """numpy's default (linear) quantile of the values."""
        ordered = self._sorted
        position = share * (len(ordered) - 1)
        low = math.floor(position)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

"""8-bit codes of an IVF partition's rows, in row order: a filter's shortlist.

A filter that selects few rows reads them back and scores them. In an IVF
those rows lie scattered over every list, a cache and TLB miss each: faiss's
``reconstruct_batch`` reads ~0.3 us a row from a 1M shard's partition
(125k rows, 128 MB of lists), so a 1 % filter's ~10,000 rows cost more than
the index walk with a bitmap, which took 4.7-5.0 ms p50 a query there. The
same rows as 8-bit codes in one array (256 bytes a row at 256-d, not 1,024)
are a gather and a scan, ~0.1 us a row (:meth:`CodeScale.best`). Their scores
are approximate, so a partition used alone keeps the best few by them
(``RESCORE_PER_K`` x k a query) and reads those back and scores them
exactly, under the same read hold: the answer is the exact filtered top
``k`` whenever the shortlists hold it (in an ad-hoc loop over a 1M shard,
the best 2 x k of all eight partitions' rows by the codes held every true
top 10 of 1,500 filtered queries; each partition keeps its own 2 x k).

The codes cost a byte a dimension a row, so a partition keeps them only once
a filtered search has asked for them, and builds them a chunk at a time in
the background (0.64 s for a 1M shard's eight partitions, measured). In a
shard the partitions keep none: the shard keeps every partition's rows, codes
on one :class:`CodeScale` included, in shared arrays (index/shard_rows.py).

Per dimension, a code is the value's place between the lowest and highest
value of that dimension among the first ``TRAIN_ROWS`` rows (a later row
outside that range is clamped: its score is less accurate, and the exact
rescoring of the shortlist makes up for it).
"""

from __future__ import annotations

import functools
import threading
from typing import Any

import faiss
import numpy as np

from index.faiss_index import reconstruct_rows

# Rows read back and encoded at a time (bounds how long one catch-up holds a lock:
# ~2.5 ms for 4,096 rows of 256-d: a 1M shard's 1M rows took 0.64 s, measured).
ENCODE_CHUNK = 4_096
LEVELS = 255
# Fewer matching rows than this (or than twice the rows rescored) are read back
# without the codes: 64 rows of a 1M shard's partition are read back and scored in
# 24 us, scored by their codes in 17 us, and the 20 rescored (k = 10) cost ~8 us
# more (bench.filtered --crossover).
CODES_MIN_ROWS = 64
# Rows the per-dimension ranges are taken from (the first ones of the index).
TRAIN_ROWS = 8_192


class CodeScale:
    """Per dimension, the range 8-bit codes divide into ``LEVELS`` steps: a code is the
    value's place between the lowest and highest value of the rows trained on
    (a value outside is clamped; exact rescoring makes up for it)."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.low = np.zeros(dim, dtype=np.float32)
        self.step = np.ones(dim, dtype=np.float32)  # value per code level

    def train(self, vectors: np.ndarray) -> None:
        low, high = vectors.min(axis=0), vectors.max(axis=0)
        self.low = low.astype(np.float32)
        self.step = (np.maximum(high - low, 1e-12) / LEVELS).astype(np.float32)

    def encode(self, vectors: np.ndarray) -> np.ndarray:
        levels = np.rint((vectors - self.low) / self.step - 0.5)
        return np.clip(levels, 0, LEVELS).astype(np.uint8)

    def scores(self, codes: np.ndarray, rows: np.ndarray, queries: np.ndarray) -> np.ndarray:
        """Approximate inner products of ``queries`` with the vectors ``codes[rows]``
        stand for (queries x rows): what :meth:`best` ranks by, in numpy."""
        weights = queries * self.step  # a code level's worth of each dimension
        offset = queries @ (self.low + 0.5 * self.step)  # codes stand for mid-levels
        return weights @ codes[rows].astype(np.float32).T + offset[:, None]

    def best(
        self, codes: np.ndarray, rows: np.ndarray, queries: np.ndarray, few: int
    ) -> np.ndarray:
        """The sorted distinct ``rows`` that are among the best ``few`` of some query by
        their codes (``codes[rows]``): the rows to score again exactly.

        faiss scores the codes: a scalar quantizer's list scanner reads 8-bit codes
        and keeps a query's best in a heap, with no float copy of the codes. On
        ~1,000 rows of a 1M shard that took 88 us p50 where numpy's gather, product
        and partial sort (:meth:`scores` and ``argpartition``) took 130 (ad-hoc
        loop, the same rows and queries, the same top rows every time).

        The scanner is faiss's uniform one (every code decodes to ``code + 0.5``)
        and the query is weighted by the steps instead: ``sum(q x (low + (code +
        0.5) x step))`` is ``sum(q x step x (code + 0.5))`` plus a constant of the
        query, so the rows rank as by their decoded vectors, and the scan skips a
        per-dimension load and multiply: 24 us for 1,000 rows where ``QT_8bit``
        with per-dimension ranges took 31 (ad-hoc, the same codes, the same top
        rows).
        """
        if few >= len(rows):
            return np.unique(rows)
        scanning = _code_scanning_index(self.dim)
        wanted = np.ascontiguousarray(rows, dtype=np.int64)
        queries = np.ascontiguousarray(queries * self.step, dtype=np.float32)
        heaps = []
        for query, scanner in zip(queries, _scanners(scanning, len(queries)), strict=True):
            scanner.set_query(faiss.swig_ptr(query))
            scanner.set_list(0, 0.0)
            scores = np.full(few, -np.inf, dtype=np.float32)
            found = np.full(few, -1, dtype=np.int64)
            heaps.append((scanner, scores, found))
        gathered = _scan_buffer(codes.shape[1])
        for start in range(0, len(wanted), SCAN_CHUNK):
            end = min(len(wanted), start + SCAN_CHUNK)
            np.take(codes, wanted[start:end], axis=0, out=gathered[: end - start])
            chunk, ids = faiss.swig_ptr(gathered), faiss.swig_ptr(wanted[start:end])
            for scanner, scores, found in heaps:
                scanner.scan_codes(
                    end - start, chunk, ids, faiss.swig_ptr(scores), faiss.swig_ptr(found), few
                )
        if len(heaps) == 1:
            return np.sort(heaps[0][2])  # one heap holds distinct rows
        return np.unique(np.concatenate([found for _, _, found in heaps]))


@functools.cache
def _code_scanning_index(dim: int) -> faiss.IndexIVFScalarQuantizer:
    """A one-list inner-product IVF of 8-bit codes that decode to ``code + 0.5``, for
    its list scanner (the list itself stays empty: CodeScale.best hands the
    scanner the codes, and the query weighted by the scale's steps). One per
    dimension for every scale: it holds nothing of a scale's, and each thread's
    scanners are kept for one index (a second one would make them again)."""
    index = faiss.IndexIVFScalarQuantizer(
        faiss.IndexFlatIP(dim),
        dim,
        1,
        faiss.ScalarQuantizer.QT_8bit_uniform,
        faiss.METRIC_INNER_PRODUCT,
        False,  # no residuals: codes of the vectors themselves
    )
    # Uniform: one range for every dimension, vmin 0 and vdiff 255 (a code decodes
    # to vmin + (code + 0.5) / 255 x vdiff).
    faiss.copy_array_to_vector(np.array([0.0, LEVELS], dtype=np.float32), index.sq.trained)
    index.is_trained = True
    return index


_scratch = threading.local()  # this thread's scanners and code buffer

# Rows gathered and scanned at a time (CodeScale.best): no float copy is made, so
# 256 KB of codes at 256-d, one chunk for a 0.1 % filter of a 1M shard.
SCAN_CHUNK = 1_024


def _scanners(index: faiss.IndexIVFScalarQuantizer, count: int) -> list[Any]:
    """``count`` list scanners of ``index`` this thread reuses (each is set to a query
    before a scan; making one is a C++ allocation and a SWIG proxy, ~3 us)."""
    cached = getattr(_scratch, "scanners", None)
    if cached is None or cached[0] is not index:  # the index kept alive with them
        cached = _scratch.scanners = (index, [])
    scanners: list[Any] = cached[1]
    while len(scanners) < count:
        scanners.append(index.get_InvertedListScanner(False, None, None))
    return scanners[:count]


def _scan_buffer(dim: int) -> np.ndarray:
    """This thread's buffer of ``SCAN_CHUNK`` gathered codes of ``dim`` dimensions."""
    buffer = getattr(_scratch, "scan", None)
    if buffer is None or buffer.shape[1] != dim:
        buffer = _scratch.scan = np.empty((SCAN_CHUNK, dim), dtype=np.uint8)
    return buffer


class RowCodes:
    """8-bit codes of the rows of one faiss index, row ``r`` at position ``r``.

    Not thread-safe on its own: :meth:`catch_up` runs under the owner's lock
    (a read hold suffices while only one thread catches up, as the owner
    arranges), and readers use :meth:`scores` only while :meth:`current`.
    """

    def __init__(self, index: faiss.Index) -> None:
        self.index = index
        self.dim = int(index.d)
        self._ivf = faiss.try_extract_index_ivf(index) is not None
        self._codes = np.empty((0, self.dim), dtype=np.uint8)
        self.scale = CodeScale(self.dim)
        self.covered = 0  # rows 0 .. covered - 1 are encoded
        self._trained_rows = 0  # rows the ranges were taken from
        self._catching_up = threading.Lock()

    def current(self) -> bool:
        """Every row of the index is encoded (the codes may be read)."""
        return self.covered == int(self.index.ntotal)

    def catch_up(self, limit: int | None = None) -> None:
        """Encode the index's rows appended since the last call, at most ``limit`` of
        them (under the owner's lock)."""
        with self._catching_up:
            total = int(self.index.ntotal)
            if self._retrain_due(total):
                self._train(self._read(0, min(total, TRAIN_ROWS)))
                self.covered = 0  # every row again, on the new ranges
            if limit is not None:
                total = min(total, self.covered + limit)
            for start in range(self.covered, total, ENCODE_CHUNK):
                end = min(total, start + ENCODE_CHUNK)
                self._store(start, self.scale.encode(self._read(start, end)))
                self.covered = end  # after the codes: a reader that sees it sees them

    def append(self, vectors: np.ndarray) -> None:
        """Encode ``vectors``, just added as the index's last rows, while the codes
        were current (under the owner's write lock; cheaper than reading them back)."""
        start = int(self.index.ntotal) - len(vectors)
        if start != self.covered:
            raise ValueError(f"codes cover {self.covered} rows, the new ones start at {start}")
        if self._retrain_due(start + len(vectors)):
            if start:
                self.catch_up()  # few rows yet: train on them all and encode them again
                return
            self._train(vectors[:TRAIN_ROWS])  # the first rows: nothing to read back
        self._store(start, self.scale.encode(vectors))
        self.covered = start + len(vectors)

    def scores(self, rows: np.ndarray, queries: np.ndarray) -> np.ndarray:
        """Approximate inner products of ``queries`` with ``rows`` (queries x rows)."""
        return self.scale.scores(self._codes, rows, queries)

    def best(self, rows: np.ndarray, queries: np.ndarray, few: int) -> np.ndarray:
        """The sorted distinct ``rows`` among some query's best ``few`` by their codes."""
        return self.scale.best(self._codes, rows, queries, few)

    @property
    def nbytes(self) -> int:
        """Bytes of the rows encoded (the array's spare capacity is never written,
        so it takes no resident memory)."""
        return self.covered * self.dim

    def _retrain_due(self, total: int) -> bool:
        """The ranges came from fewer than ``TRAIN_ROWS`` rows and the index has twice
        as many now, or ``TRAIN_ROWS`` (each retraining encodes every row again: a
        few times, while the index is small)."""
        trained = self._trained_rows
        return trained < TRAIN_ROWS and total >= max(1, min(2 * trained, TRAIN_ROWS))

    def _train(self, vectors: np.ndarray) -> None:
        self.scale.train(vectors)
        self._trained_rows = len(vectors)

    def _read(self, start: int, end: int) -> np.ndarray:
        return reconstruct_rows(self.index, np.arange(start, end, dtype=np.int64), self._ivf)

    def _store(self, start: int, codes: np.ndarray) -> None:
        end = start + len(codes)
        if end > len(self._codes):
            grown = np.empty((max(end, 2 * len(self._codes), 1024), self.dim), dtype=np.uint8)
            grown[:start] = self._codes[:start]
            self._codes = grown
        self._codes[start:end] = codes

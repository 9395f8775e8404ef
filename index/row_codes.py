"""8-bit codes of an IVF partition's rows, in row order: a filter's shortlist.

A filter that selects few rows reads them back and scores them. In an IVF
those rows lie scattered over every list, a cache and TLB miss each: faiss's
``reconstruct_batch`` reads ~0.3 us a row from a 1M shard's partition
(125k rows, 128 MB of lists), so a 1 % filter's ~10,000 rows cost more than
the index walk with a bitmap, which took 4.7-5.0 ms p50 a query there. The
same rows as 8-bit codes in one array (256 bytes a row at 256-d, not 1,024)
are a numpy gather and one matrix product, ~0.12 us a row. Their scores
are approximate, so each partition keeps the best few by them
(``RESCORE_PER_K`` x k a query) and reads those back and scores them
exactly, under the same read hold: the answer is the exact filtered top
``k`` whenever the shortlists hold it (in an ad-hoc loop over a 1M shard,
the best 2 x k of all eight partitions' rows by the codes held every true
top 10 of 1,500 filtered queries; each partition keeps its own 2 x k).

The codes cost a byte a dimension a row, so a partition keeps them only once
a filtered search has asked for them, and builds them a chunk at a time in
the background (0.64 s for a 1M shard's eight partitions, measured).

Per dimension, a code is the value's place between the lowest and highest
value of that dimension among the first ``TRAIN_ROWS`` rows (a later row
outside that range is clamped: its score is less accurate, and the exact
rescoring of the shortlist makes up for it).
"""

from __future__ import annotations

import threading

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
        self._low = np.zeros(self.dim, dtype=np.float32)
        self._step = np.ones(self.dim, dtype=np.float32)  # value per code level
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
                self._store(start, self._encode(self._read(start, end)))
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
        self._store(start, self._encode(vectors))
        self.covered = start + len(vectors)

    def scores(self, rows: np.ndarray, queries: np.ndarray) -> np.ndarray:
        """Approximate inner products of ``queries`` with ``rows`` (queries x rows)."""
        weights = queries * self._step  # a code level's worth of each dimension
        offset = queries @ (self._low + 0.5 * self._step)  # codes stand for mid-levels
        gathered = self._codes[rows].astype(np.float32)
        return weights @ gathered.T + offset[:, None]

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
        low, high = vectors.min(axis=0), vectors.max(axis=0)
        self._low = low.astype(np.float32)
        self._step = (np.maximum(high - low, 1e-12) / LEVELS).astype(np.float32)
        self._trained_rows = len(vectors)

    def _read(self, start: int, end: int) -> np.ndarray:
        return reconstruct_rows(self.index, np.arange(start, end, dtype=np.int64), self._ivf)

    def _encode(self, vectors: np.ndarray) -> np.ndarray:
        levels = np.rint((vectors - self._low) / self._step - 0.5)
        return np.clip(levels, 0, LEVELS).astype(np.uint8)

    def _store(self, start: int, codes: np.ndarray) -> None:
        end = start + len(codes)
        if end > len(self._codes):
            grown = np.empty((max(end, 2 * len(self._codes), 1024), self.dim), dtype=np.uint8)
            grown[:start] = self._codes[:start]
            self._codes = grown
        self._codes[start:end] = codes


def shortlist(scores: np.ndarray, few: int) -> np.ndarray:
    """Sorted positions of the best ``few`` columns of ``scores`` (queries x rows) for
    any query: the rows to score again exactly."""
    if few >= scores.shape[1]:
        return np.arange(scores.shape[1])
    return np.unique(np.argpartition(-scores, few - 1, axis=1)[:, :few])

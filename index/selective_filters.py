"""A shard's selective filters, answered over every partition's rows at once.

A filter that matches few rows is answered by scoring those rows rather than
walking the index. :class:`SelectiveFilters` keeps a shard's rows in shared
arrays (:class:`~index.shard_rows.ShardRows`: posting lists, flags, upload
times, 8-bit codes), builds them once a filter reads rows back from a shard of
``ROWS_MIN`` rows or more, and answers a filter from them when scoring its
rows costs less than the partitions' walks: one posting lookup and one
visibility test for the whole shard, the best ``RESCORE_PER_K`` x k rows a
query by their codes, those read back exactly from their partitions. Where it
declines (not built yet, a partition catching up, an empty or broad filter),
the shard searches partition by partition.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import numpy as np

from index.defaults import FILTER_READ_CODES_US, RESCORE_PER_K
from index.faiss_index import SearchParams
from index.partition import Partition, filter_boost
from index.row_codes import CODES_MIN_ROWS, ENCODE_CHUNK, CodeScale
from index.rwlock import ReadHolds
from index.shard_rows import ROWS_MIN, SCALE_SAMPLE, ShardRows

log = logging.getLogger(__name__)

# Fewer matching rows than this are always scored over the shard's rows rather than
# walked: 1,024 rows by their codes cost ~0.13 ms, less than any filtered walk of
# a shard large enough to keep them (ROWS_MIN rows: 8 partitions x 16 lists).
SURELY_CHEAPER_ROWS = 1_024

# Per query, (score, image_id, partition) of its best images: what a shard merges.
Scored = list[list[tuple[float, str, Partition]]]


class SelectiveFilters:
    """The shard's rows for selective filters, their build and the searches over them."""

    def __init__(self, dim: int, parts: Sequence[Partition]) -> None:
        self.dim = dim
        self.parts = list(parts)
        self.rows: ShardRows | None = None
        self._thread: threading.Thread | None = None
        self._start = threading.Lock()
        # Filtered searches answered here (racing searches may miss a count).
        self.answered = 0
        for part in self.parts:
            part.codes_allowed = False  # these rows replace the partitions' own codes

    @property
    def nbytes(self) -> int:
        """Memory of the rows kept (0 until a filter needs them)."""
        rows = self.rows
        return 0 if rows is None else rows.nbytes

    def wait_idle(self, timeout_s: float | None = None) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)

    # ------------------------------------------------------------------ search

    def search(self, queries: np.ndarray, k: int, params: SearchParams) -> Scored | None:
        """Per query, its best ``k`` images for ``params.where`` from the shard's rows;
        ``None`` where the shard should search partition by partition (rows not
        current, an empty filter, or the index walk cheaper)."""
        rows = self.rows
        if rows is None or params.where is None:
            return None
        parts = self.parts
        with ReadHolds(parts):
            if rows.current([part.rows for part in parts]):
                return self._search(rows, queries, k, params)
        self.want()  # a partition renumbered or loaded a snapshot: catch up
        return None

    def _search(
        self, shard_rows: ShardRows, queries: np.ndarray, k: int, params: SearchParams
    ) -> Scored | None:
        """Under every partition's read lock, the rows current: see :meth:`search`."""
        where = params.where
        assert where is not None
        selection = shard_rows.select(where)
        if selection is None:
            return None
        if not self._reading_is_cheaper(selection.most, params) and not (
            # A time range's bound can be a few times too high: count its rows then
            # (a scan of the bound's stretch), unless even a quarter would walk.
            where.has_time_range
            and self._reading_is_cheaper(selection.most // 4, params)
            and self._reading_is_cheaper(len(selection.rows()), params)
        ):
            return None
        found = selection.rows()
        self.answered += 1
        if not len(found):
            return [[] for _ in queries]
        few = RESCORE_PER_K * k * max(part.max_rows_per_image for part in self.parts)
        if len(found) > max(CODES_MIN_ROWS, 2 * few):
            found = shard_rows.best(found, queries, few)
        return self._rank_exactly(shard_rows, found, queries, k)

    def _rank_exactly(
        self, shard_rows: ShardRows, found: np.ndarray, queries: np.ndarray, k: int
    ) -> Scored:
        """``found`` read back from their partitions and scored exactly: per query, the
        best ``k`` images (an image's score is its best row's). Rows are named
        best first, only until ``k`` images are found: of a shortlist of 2 x k,
        about half (a row's image is a cache miss or two: ~0.5 us a row, cold)."""
        vectors = np.empty((len(found), self.dim), dtype=np.float32)
        local, spans = shard_rows.split(found)
        slot_of: list[int] = []  # per row of ``vectors``: its partition's slot
        for slot, start, end in spans:
            self.parts[slot].read_rows(local[start:end], vectors[start:end])
            slot_of.extend([slot] * (end - start))
        rows = local.tolist()
        scored: Scored = []
        for scores in queries @ vectors.T:
            best: dict[str, tuple[float, Partition]] = {}
            values = scores.tolist()
            for column in np.argsort(-scores, kind="stable").tolist():
                part = self.parts[slot_of[column]]
                image_id = part.row_images[rows[column]]
                if image_id not in best:  # best first: an image's first row is its best
                    best[image_id] = (values[column], part)
                    if len(best) == k:
                        break
            scored.append([(score, image_id, part) for image_id, (score, part) in best.items()])
        return scored

    def _reading_is_cheaper(self, matching: int, params: SearchParams) -> bool:
        """Under every partition's lock: scoring ``matching`` rows by their codes costs
        less than the partitions' filtered index walks (the cost model of
        ``Partition._exact_is_cheaper``; under 1,024 rows it always does). True for
        some count, true for any fewer: reading costs less and the walk, its budget
        raised by 1 / selectivity, more."""
        if matching <= SURELY_CHEAPER_ROWS:
            return True
        rows = sum(part.rows for part in self.parts)
        nprobe = params.nprobe * filter_boost(rows / matching)
        return matching * FILTER_READ_CODES_US <= sum(part.walk_us(nprobe) for part in self.parts)

    # ------------------------------------------------------------------- build

    def want(self) -> None:
        """Have the shard's rows built or caught up (in the background, unless the
        partitions do no background work) once the shard has ``ROWS_MIN`` rows.
        Cheap when they are current (the check is a hint without the locks; a
        search that finds them behind asks again)."""
        rows = self.rows
        if rows is not None and rows.current([part.rows for part in self.parts]):
            return
        thread = self._thread
        if thread is not None and thread.is_alive():
            return
        if sum(part.live_rows for part in self.parts) < ROWS_MIN:
            return
        if not self._start.acquire(blocking=False):
            return
        try:
            if not self.parts[0].background:
                self._build()
                return
            self._thread = threading.Thread(target=self._build, name="shard-rows", daemon=True)
            self._thread.start()
        finally:
            self._start.release()

    def _build(self) -> None:
        """Make the shard's rows (a code scale trained on a sample of live vectors)
        if there are none, then copy every partition's rows not copied yet, a chunk
        per read hold. A failure is logged: searches go partition by partition
        meanwhile, and a later selective filter tries again."""
        try:
            parts = self.parts
            shard_rows = self.rows
            if shard_rows is None:
                live = sum(part.live_rows for part in parts)
                share = min(1.0, SCALE_SAMPLE / max(1, live))
                rng = np.random.default_rng(0)
                sample = np.concatenate([part.sample_vectors(share, rng) for part in parts])
                scale = CodeScale(self.dim)
                scale.train(sample)
                shard_rows = ShardRows(self.dim, len(parts), scale)
                for slot, part in enumerate(parts):
                    part.keep_rows_in(shard_rows, slot)
                self.rows = shard_rows
            for part in parts:
                while not part.catch_up_shard_rows(shard_rows, ENCODE_CHUNK):
                    pass
        except Exception:
            log.exception("building the shard's rows failed; filters search partition by partition")

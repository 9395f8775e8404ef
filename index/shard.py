"""An index shard: the partitions ``p`` with ``p mod shards == shard_id``.

The shard applies records of the embeddings topic to its partitions: vectors
(ImageEmbedded, for the shard's model version) and visibility changes
(ImageUpdated forwarded under the image's key, hence in the same partition and
in order with its vectors). ``streams.shard_consumer.ShardConsumer`` feeds it
from Kafka with manual partition assignment: shards do not form a consumer
group, because every replica of a shard must read every one of its partitions
in full. This module needs neither Kafka nor Faust: a shard (and
:func:`partition_for`, the routing Kafka's producers use) can be used as a
library, fed by :meth:`IndexShard.apply_vectors` and
:meth:`IndexShard.apply_update`.

The shard's partitions share one :class:`~index.ann_plan.AnnPlan`: they move
to ANN together on the shard's live vectors, into copies of one trained
template, so a search finds a query's IVF cells once and scans them in each
partition.

Recovery: on start the shard loads each partition's snapshot and consumes from
the snapshot's offset. If the log is a new epoch (the topic was recreated, as
happens to every topic when the in-memory embedded broker restarts), the
snapshot's content is kept and the new log is read from its beginning; replay
is idempotent, so records seen before change nothing.
"""

from __future__ import annotations

import logging
import math
import operator
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np
from kafka.partitioner.default import murmur2

from index.defaults import FILTER_MAX_BOOST, READ_BACK_FIRST_SORT
from index.faiss_index import CoarseCells, SearchParams, one_omp_thread
from index.freshness import FreshnessHistogram, RecentTimes
from index.joint_scan import JointLists, JointMember, joint_fetch
from index.list_bounds import BOUND_SLACK, KthScoreGuess, ListRadii, score_bounds
from index.partition import (
    Hit,
    IndexedImage,
    MatchingRows,
    Partition,
    ScannedRows,
    WriteResult,
)
from index.recall_monitor import RecallMonitor
from index.rwlock import ReadHolds
from index.selective_filters import SelectiveFilters
from index.snapshot import (
    SnapshotError,
    SnapshotInfo,
    load_snapshot,
    save_snapshot,
    snapshot_path,
)

log = logging.getLogger(__name__)


def partition_for(image_id: str, partitions: int) -> int:
    """The embeddings-topic partition (= index partition) that holds ``image_id``:
    Kafka's default partitioner on the image id key, as every producer of ours keys it."""
    return (murmur2(image_id.encode()) & 0x7FFFFFFF) % partitions


class VectorRecord(Protocol):
    """What :meth:`IndexShard.apply` reads of an ImageEmbedded record."""

    image_id: str
    model_version: str
    dim: int
    uploaded_at: float
    private: bool
    owner_id: str
    tags: list[str] | None
    uri: str

    def vector(self) -> np.ndarray: ...

    def tiles(self) -> np.ndarray: ...


class UpdateRecord(Protocol):
    """What :meth:`IndexShard.apply` reads of an ImageUpdated record."""

    image_id: str
    action: str
    updated_at: float
    tags: list[str] | None  # the new tags of a ``tags`` update


def owned_partitions(partition_count: int, shard_id: int, shard_count: int) -> list[int]:
    """Partitions this shard owns: ``p mod shard_count == shard_id``."""
    if not 0 <= shard_id < shard_count:
        raise ValueError(f"shard_id {shard_id} is outside 0..{shard_count - 1}")
    return [p for p in range(partition_count) if p % shard_count == shard_id]


class IndexShard:
    """Partitions for one model version, their consumed offsets and snapshots."""

    def __init__(
        self,
        dim: int,
        model_version: str,
        partitions: Iterable[int],
        make_partition: Callable[[], Partition] | None = None,
        snapshot_dir: Path | None = None,
        recall_share: float = 0.0,
    ) -> None:
        self.dim = dim
        self.model_version = model_version
        make = make_partition or (lambda: Partition(dim))
        self.partitions = {p: make() for p in partitions}
        # One plan for the shard, configured like its partitions were made.
        parts = list(self.partitions.values())
        self.plan = parts[0].plan if parts else None
        for part in parts[1:]:
            part.join_plan(parts[0].plan)
        self.snapshot_dir = snapshot_dir
        self.epoch = ""
        self.consumed_offsets: dict[int, int] = {}
        self._snapshotted_offsets: dict[int, int] = {}
        # Offsets restored from snapshots at the last recover() (same epoch only).
        self.recovered_offsets: dict[int, int] = {}
        # When recent images became searchable (bounded: tests and benchmarks wait on it).
        self.searchable_at = RecentTimes()
        # Upload -> searchable of every vector applied (visearch_shard_freshness_seconds).
        self.freshness = FreshnessHistogram()
        # A share of live queries searched again exactly (visearch_shard_recall_at_10).
        self.recall = RecallMonitor(self.exact_search, recall_share) if recall_share else None
        # Where a query's k-th best score lands, for skipping IVF lists (_scan_pruned).
        self.kth_guess = KthScoreGuess()
        # The partitions' lists stacked for one-call scans (_scan_joint), rebuilt
        # when a partition's index changes.
        self._joint: JointLists | None = None
        # Centroids whose partitions' IVF is not a Flat one: no joint scan tried on them.
        self._unstackable_key: str | None = None
        # Searches in a row whose bounds left too few lists to skip (_list_skips).
        self._prune_misses = 0
        # ((radii, rows they counted) per partition, stacked) of the last _stacked_radii call.
        self._radii_stack: tuple[list[tuple[weakref.ref[ListRadii], int]], np.ndarray] | None = None
        self.skipped_records = 0
        self._lock = threading.Lock()
        # Selective filters answered over every partition's rows at once
        # (index/selective_filters.py); they replace the partitions' own row codes.
        self.selective = SelectiveFilters(dim, parts)

    def __len__(self) -> int:
        """Indexed images (visible or not); O(partitions)."""
        return sum(len(p) for p in self.partitions.values())

    def wait_idle(self, timeout_s: float | None = None) -> None:
        """Wait for background re-plans and compactions (tests, benchmarks)."""
        for part in self.partitions.values():
            part.wait_idle(timeout_s)
        self.selective.wait_idle(timeout_s)

    @property
    def shard_rows_bytes(self) -> int:
        """Memory of the rows kept for selective filters (0 until a filter needs them)."""
        return self.selective.nbytes

    def __contains__(self, image_id: str) -> bool:
        return any(image_id in p for p in self.partitions.values())

    def image_ids(self) -> set[str]:
        """Every indexed, undeleted image of the shard (a model switch compares these)."""
        return set().union(*(p.image_ids() for p in self.partitions.values()))

    # ----------------------------------------------------------------- applying

    def apply(self, record: VectorRecord | UpdateRecord, partition: int, offset: int) -> bool:
        """Apply one record of the embeddings topic; returns whether the index changed.

        Vectors of another model version (or dimension) are counted and skipped.
        """
        if hasattr(record, "action"):
            update: UpdateRecord = record  # type: ignore[assignment]
            result = self.apply_update(
                partition,
                offset,
                update.image_id,
                update.action,
                update.updated_at,
                update.tags or (),
            )
            return result is not WriteResult.SUPERSEDED
        embedded: VectorRecord = record
        if embedded.model_version != self.model_version or embedded.dim != self.dim:
            self.skip(partition, offset)
            return False
        vectors = np.vstack([embedded.vector()[None, :], embedded.tiles()])
        return bool(
            self.apply_vectors(
                partition,
                offset,
                embedded.image_id,
                vectors,
                embedded.uploaded_at,
                embedded.private,
                embedded.owner_id,
                embedded.tags or (),
                embedded.uri,
            )
        )

    def apply_vectors(
        self,
        partition: int,
        offset: int,
        image_id: str,
        vectors: np.ndarray,
        uploaded_at: float,
        private: bool = False,
        owner_id: str = "",
        tags: Iterable[str] = (),
        uri: str = "",
    ) -> WriteResult:
        """Index an image's vectors (global first, then tiles) read at ``offset``."""
        result = self._partition(partition).upsert(
            image_id, vectors, uploaded_at, private, owner_id, tags, uri
        )
        self._consumed(partition, offset, image_id if result else None)
        if result:
            self.freshness.observe(time.time() - uploaded_at)
        return result

    def apply_update(
        self,
        partition: int,
        offset: int,
        image_id: str,
        action: str,
        at: float,
        tags: Iterable[str] = (),
    ) -> WriteResult:
        """Apply an update read at ``offset``: delete, private, public, flag, unflag, or
        ``tags`` (the image's tags become ``tags``)."""
        result = self._partition(partition).update(image_id, action, at, tags)
        self._consumed(partition, offset, None if result is WriteResult.SUPERSEDED else image_id)
        return result

    def _partition(self, partition: int) -> Partition:
        part = self.partitions.get(partition)
        if part is None:
            raise ValueError(f"partition {partition} is not owned by this shard")
        return part

    def _consumed(self, partition: int, offset: int, changed: str | None) -> None:
        with self._lock:
            self.consumed_offsets[partition] = offset + 1
            if changed is not None:
                self.searchable_at[changed] = time.time()

    def skip(self, partition: int, offset: int) -> None:
        """Count an unreadable record as consumed (it stays in the log for inspection)."""
        self.skipped_records += 1
        with self._lock:
            self.consumed_offsets[partition] = offset + 1

    # ----------------------------------------------------------------- queries

    def search(
        self,
        query: np.ndarray,
        k: int,
        params: SearchParams | None = None,
        with_vectors: bool = False,
    ) -> list[Hit]:
        """Top ``k`` visible images over every partition of this shard, for one query
        (what the service asks; :meth:`search_many` is the batch form)."""
        hits = self.search_many(query, k, params, with_vectors)[0]
        filtered = params is not None and params.where is not None
        if self.recall is not None and not filtered:  # its truth is unfiltered
            self.recall.offer(query, hits)
        return hits

    def search_many(
        self,
        queries: np.ndarray,
        k: int,
        params: SearchParams | None = None,
        with_vectors: bool = False,
    ) -> list[list[Hit]]:
        """Per query row, the top ``k`` visible images best first: the shape
        :meth:`Partition.search` returns.

        Partitions return ``(score, image_id)`` pairs; hits (and vectors) are made
        only for the ``k`` that win the merge.
        """
        params = params or SearchParams()
        if self.plan is not None:
            params = self.plan.probing(params)
        queries = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        with one_omp_thread():  # a query or a few gain nothing from an OpenMP team
            cells = self._coarse_cells(queries, params)
            scored = None
            if cells is not None and params.where is None:
                scored = self._scan_joint(queries, k, cells)
                if scored is None:
                    scored = self._scan_pruned(queries, k, params, cells)
            if params.where is not None:
                scored = self.selective.search(queries, k, params)
            if scored is None:
                scored = self._top_by_partition(queries, k, params, cells)
        results = []
        learning = cells is not None and params.where is None  # the guess is unfiltered
        kth = []  # per query, the k-th best score (NaN for a short answer)
        for row in scored:
            # A C sort of the ~k x partitions candidates: 2.8 us for 88 of them, where
            # heapq.nlargest with a Python key took 10 us (measured); ties keep their order.
            best = sorted(row, key=_score, reverse=True)[:k]
            if learning:
                kth.append(best[-1][0] if len(best) == k else math.nan)
            if with_vectors:
                results.append(self._hits_with_vectors(best))
            else:
                results.append([Hit(i, score, uri=part.uri_of(i)) for score, i, part in best])
        if learning:
            assert cells is not None
            self.kth_guess.learn(cells, k, kth)
        return results

    def _top_by_partition(
        self, queries: np.ndarray, k: int, params: SearchParams, cells: CoarseCells | None
    ) -> list[list[tuple[float, str, Partition]]]:
        """Per query, each partition's best ``k`` images as (score, image_id,
        partition); rows partitions read back for a filter are ranked together."""
        scored: list[list[tuple[float, str, Partition]]] = [[] for _ in queries]
        read: list[tuple[Partition, MatchingRows]] = []
        for part in self.partitions.values():
            found = part.top_or_rows(queries, k, params, cells)
            if isinstance(found, MatchingRows):
                read.append((part, found))
                continue
            for row, top in zip(scored, found, strict=True):
                row.extend([(score, image_id, part) for score, image_id in top])
        if read:
            _score_read_back(k, read, scored)
            self.selective.want()  # the shard's rows answer such filters at once
        return scored

    def _scan_joint(
        self, queries: np.ndarray, k: int, cells: CoarseCells
    ) -> list[list[tuple[float, str, Partition]]] | None:
        """The unfiltered scan of ``cells``' lists in every partition in one faiss call
        (index/joint_scan.py), skipping the lists that cannot change the top ``k``
        as :meth:`_scan_pruned` does (not where images have tiles); ``None``
        where the partitions cannot be scanned together (not all IVF-Flat on
        ``cells``' centroids) or hidden rows or too few rows leave the answer
        unknown: the caller then scans partition by partition. Per query, (score, image_id,
        partition), best first.

        Every partition's read lock is held for the scan, taken in one order
        (writers hold one partition's lock at a time, so no cycle can form).
        """
        parts = list(self.partitions.values())
        if not parts or cells.key == self._unstackable_key:
            return None
        with ReadHolds(parts):
            found = [part.joint_member(cells.key) for part in parts]
            members = [member for member in found if member is not None]
            if len(members) < len(parts):
                if any(p.coarse_key == cells.key and not p.stacks_lists for p in parts):
                    # The plan's index is no IVF-Flat (an IVF-PQ, say): it never
                    # will be on these centroids, so later searches skip the locks.
                    self._unstackable_key = cells.key
                return None
            joint = self._joint
            if joint is None or not joint.serves(members):
                if not JointLists.can_join(members):
                    return None
                joint = self._joint = JointLists(members)
            skips = self._list_skips([member.radii for member in members], queries, k, cells)
            best = _joint_best(joint, cells, skips.skip if skips else None, members, k)
            if skips is not None:
                more = skips.missed([top[-1][0] if top else -math.inf for top in best])
                if more is not None and more.any():  # those lists too, in one pass again
                    best = _joint_best(joint, cells, skips.skip & ~more, members, k)
            if any(top is None for top in best):
                return None
            return [[(score, i, parts[n]) for score, i, n in top or ()] for top in best]

    def _list_skips(
        self,
        radii: Sequence[ListRadii | None],
        queries: np.ndarray,
        k: int,
        cells: CoarseCells,
    ) -> ListSkips | None:
        """Which of ``cells``' lists each partition (with ``radii``) may skip for the top
        ``k``: a list whose bound is below the score the k-th best is expected to
        reach (:class:`~index.list_bounds.KthScoreGuess`); ``None`` where nothing is
        to be skipped (no bounds or no guess yet, or too few lists to skip)."""
        if self._prune_misses >= PRUNE_GIVE_UP_AFTER:
            self._prune_misses += 1  # racing searches may lose a count: no matter
            if self._prune_misses % PRUNE_RETRY_EVERY:
                return None
        floor = self.kth_guess.floor(cells, k) if cells.nprobe > 1 and radii else None
        present = [r for r in radii if r is not None]
        if floor is None or len(present) < len(radii):
            return None
        stacked = self._stacked_radii(present)  # partitions x nlist
        norms = np.sqrt((queries * queries).sum(axis=1, keepdims=True))
        # parts x queries x nprobe
        bounds = score_bounds(stacked, cells.cells, cells.scores, norms, cells.error)
        skip = bounds < floor[None, :, None]
        if np.count_nonzero(skip) < PRUNE_MIN_SHARE * skip.size:
            self._prune_misses += 1
            return None
        self._prune_misses = 0
        return ListSkips(skip, bounds, floor)

    def _stacked_radii(self, radii: Sequence[ListRadii]) -> np.ndarray:
        """``radii`` as one (partitions x nlist) array, kept until a partition's
        radii change (a new index, or rows counted since): stacking them cost a
        search ~10 us. Known by weak references: radii hold their index, and a
        replaced index must not outlive its partition's use of it."""
        cached = self._radii_stack
        if (
            cached is not None
            and len(cached[0]) == len(radii)
            and all(
                ref() is r and covered == r.covered
                for (ref, covered), r in zip(cached[0], radii, strict=True)
            )
        ):
            return cached[1]
        stacked = np.stack([r.radii for r in radii])
        self._radii_stack = ([(weakref.ref(r), r.covered) for r in radii], stacked)
        return stacked

    def _scan_pruned(
        self, queries: np.ndarray, k: int, params: SearchParams, cells: CoarseCells
    ) -> list[list[tuple[float, str, Partition]]] | None:
        """The unfiltered scan of ``cells``' lists partition by partition, skipping the
        lists that cannot change the top ``k`` (index/list_bounds.py); ``None``
        where one pass over every list is the plan (no bounds, or too few lists
        to skip). For partitions :meth:`_scan_joint` cannot scan together.

        Once the other lists are scanned, the k-th best score is known: if it
        reached the guess, no skipped list could have changed the answer; if
        not, the skipped lists whose bound reaches it are scanned too. Either
        way the answer is the one-pass answer over the same lists. Per query,
        (score, image_id, partition), best first.
        """
        parts = list(self.partitions.values())
        radii = [part.list_radii() for part in parts]
        skips = self._list_skips(radii, queries, k, cells)
        if skips is None:
            return None
        scanned: list[tuple[Partition, ScannedRows]] = []
        if not self._scan_lists(parts, radii, queries, k, params, cells, skips.skip, scanned):
            return None
        scored, kth = _best_scanned(scanned, len(queries), k)
        more = skips.missed(kth)
        if more is not None:
            if more.any():
                if not self._scan_lists(parts, radii, queries, k, params, cells, ~more, scanned):
                    return None
                scored, kth = _best_scanned(scanned, len(queries), k)
            if -math.inf in kth:  # short even over every list: the one pass raises its budget
                return None
        return scored

    @staticmethod
    def _scan_lists(
        parts: list[Partition],
        radii: list[ListRadii | None],
        queries: np.ndarray,
        k: int,
        params: SearchParams,
        cells: CoarseCells,
        skip: np.ndarray,
        scanned: list[tuple[Partition, ScannedRows]],
    ) -> bool:
        """Scan each partition's cells not in ``skip`` (partitions x queries x nprobe)
        into ``scanned``; False when a partition changed its index meanwhile."""
        # Partitions share centroids, so they often skip the same lists: one set of
        # cells (and its faiss pointers) for each distinct pattern.
        patterns: dict[bytes, CoarseCells] = {}
        scanning = np.any(~skip, axis=(1, 2)).tolist()  # per partition: a list to scan
        for part, part_radii, part_skip, scans in zip(parts, radii, skip, scanning, strict=True):
            if not scans:
                continue
            assert part_radii is not None
            pattern = part_skip.tobytes()
            mine = patterns.get(pattern)
            if mine is None:
                mine = patterns[pattern] = cells.without(part_skip)
            found = part.top_in_lists(queries, k, params, mine, part_radii)
            if found is None:
                return False
            scanned.append((part, found))
        return True

    def _hits_with_vectors(self, best: list[tuple[float, str, Partition]]) -> list[Hit]:
        by_partition: dict[int, list[tuple[float, str]]] = {}
        owners = {}
        for score, image_id, part in best:
            by_partition.setdefault(id(part), []).append((score, image_id))
            owners[id(part)] = part
        hits = [
            hit
            for key, scored in by_partition.items()
            for hit in owners[key].hits_with_vectors(scored)
        ]
        hits.sort(key=lambda hit: hit.score, reverse=True)
        return hits

    def _coarse_cells(self, queries: np.ndarray, params: SearchParams) -> CoarseCells | None:
        """The query's IVF cells, found once for every partition built on the plan's
        centroids (each partition checks the key and searches alone otherwise)."""
        template = self.plan.template if self.plan is not None else None
        if template is None or template.quantizer is None:
            return None
        assert template.key is not None and template.nlist is not None  # set with a quantizer
        nprobe = params.nprobe
        if params.where is not None:
            # each partition scans the first nprobe x (1 / its filter's selectivity)
            nprobe *= FILTER_MAX_BOOST
        return CoarseCells(
            template.key,
            queries,
            template.cell_quantizer,
            min(nprobe, template.nlist),
            template.cell_error,
        )

    def exact_search(self, query: np.ndarray, k: int) -> list[Hit]:
        """The true top ``k`` visible images of the shard (the recall monitor's truth)."""
        hits = [hit for part in self.partitions.values() for hit in part.exact_search(query, k)]
        hits.sort(key=lambda hit: hit.score, reverse=True)
        return hits[:k]

    def indexed_image(self, image_id: str) -> IndexedImage | None:
        """A visible image's global vector, upload time and URI, if this shard has it."""
        for part in self.partitions.values():
            found = part.indexed_image(image_id)
            if found is not None:
                return found
        return None

    def visible_ids(self, image_ids: Iterable[str]) -> set[str]:
        """Those of ``image_ids`` some partition of this shard holds visible."""
        wanted = list(image_ids)
        return set().union(*(part.visible_ids(wanted) for part in self.partitions.values()))

    def vector_of(self, image_id: str) -> np.ndarray | None:
        found = self.indexed_image(image_id)
        return None if found is None else found.vector

    # ---------------------------------------------------------------- recovery

    def recover(self, epoch: str) -> dict[int, int]:
        """Load snapshots; returns the offset to consume from, per partition.

        Missing or corrupt snapshots start that partition empty from offset 0
        (the log rebuilds it). Snapshots of another epoch keep their content but
        the new log is read from 0.
        """
        self.epoch = epoch
        starts: dict[int, int] = {}
        for partition, part in self.partitions.items():
            starts[partition] = 0
            if self.snapshot_dir is None:
                continue
            path = snapshot_path(self.snapshot_dir, partition)
            if not path.exists():
                continue
            try:
                info = load_snapshot(path, part, self.model_version)
            except SnapshotError as exc:
                log.warning(
                    "ignoring snapshot, rebuilding partition %d from the log: %s", partition, exc
                )
                continue
            if info.epoch == epoch:
                starts[partition] = info.offset
                self.recovered_offsets[partition] = info.offset
                self.consumed_offsets[partition] = info.offset
                self._snapshotted_offsets[partition] = info.offset
            else:
                log.info(
                    "partition %d: snapshot from log epoch %s, log is now epoch %s: "
                    "keeping its %d images and replaying the new log from offset 0",
                    partition,
                    info.epoch,
                    epoch,
                    len(part),
                )
        if self.plan is not None:
            self.plan.check()  # partitions restored from other plans are rebuilt into this one
        return starts

    def begin_epoch(self, epoch: str) -> dict[int, int]:
        """The log became a new epoch while running: keep every partition, read it from 0.

        Same rule as :meth:`recover` for a snapshot of another epoch: the
        content stays (the old log is gone, and with the embedded broker the
        image store republishes into the new one), replay of the new log is
        idempotent. Offsets restart at 0 so that the next snapshot records the
        new epoch with offsets of the new log, never an old epoch's offsets.
        """
        with self._lock:
            self.epoch = epoch
            self.consumed_offsets = dict.fromkeys(self.partitions, 0)
        self.recovered_offsets.clear()
        self._snapshotted_offsets.clear()
        log.info(
            "partitions %s: log epoch %s, keeping their %d images and reading it from offset 0",
            sorted(self.partitions),
            epoch,
            len(self),
        )
        return dict.fromkeys(self.partitions, 0)

    def snapshot(self, force: bool = False) -> list[Path]:
        """Snapshot every partition that changed since its last snapshot.

        A partition whose write fails (e.g. disk full) keeps its previous
        snapshot and stays due; the others are still written, then the first
        error is raised.
        """
        if self.snapshot_dir is None:
            return []
        written = []
        errors: list[OSError] = []
        for partition, part in self.partitions.items():
            with self._lock:
                offset = self.consumed_offsets.get(partition, 0)
            if not force and self._snapshotted_offsets.get(partition) == offset:
                continue
            info = SnapshotInfo(partition, offset, self.epoch, self.model_version)
            try:
                written.append(save_snapshot(self.snapshot_dir, part, info))
            except OSError as exc:
                errors.append(exc)
                continue
            self._snapshotted_offsets[partition] = offset
        if errors:
            raise errors[0]
        return written


_score = operator.itemgetter(0)
# A shard skips lists (IndexShard._scan_pruned) only when the bounds leave out at
# least this share of them: a pruned scan costs ~20 us more of numpy a query.
PRUNE_MIN_SHARE = 0.25
# Once this many searches in a row found too few lists to skip (photo embeddings,
# whose lists overlap: none fall away), the bounds are computed for one search in
# PRUNE_RETRY_EVERY only (~25 us a search spent for nothing), so a shard whose
# data comes to cluster starts skipping again within that many searches.
PRUNE_GIVE_UP_AFTER = 64
PRUNE_RETRY_EVERY = 16


class ListSkips(NamedTuple):
    """The lists a pruned scan leaves out (partitions x queries x nprobe), their
    score bounds (same shape), and per query the k-th score guessed."""

    skip: np.ndarray
    bounds: np.ndarray
    floor: np.ndarray

    def missed(self, kth: Sequence[float]) -> np.ndarray | None:
        """After a pass that left out ``skip``: where a query's k-th best score (``kth``,
        -inf when short) fell below its guess, the skipped lists whose bound
        reaches that score (they can still change the answer); ``None`` when every
        query reached its guess (nothing skipped could have changed it)."""
        if not any(got < guess for got, guess in zip(kth, self.floor.tolist(), strict=True)):
            return None
        lowest = np.array(kth, dtype=np.float32) - BOUND_SLACK
        return self.skip & (self.bounds >= lowest[None, :, None])


def _joint_best(
    joint: JointLists,
    cells: CoarseCells,
    skip: np.ndarray | None,
    members: Sequence[JointMember],
    k: int,
) -> list[list[tuple[float, str, int]] | None]:
    """Per query, the best ``k`` visible images of one joint scan (``None``: unknown)."""
    found = joint.best(cells, skip, joint_fetch(k, members))
    return [joint.top_images(rows, members, k) for rows in found]


def _best_scanned(
    scanned: list[tuple[Partition, ScannedRows]], queries: int, k: int
) -> tuple[list[list[tuple[float, str, Partition]]], list[float]]:
    """Per query, the best ``k`` of the rows partitions scanned, best first, as
    (score, image_id, partition), and the k-th best score (-inf if fewer).

    Rows are images here (a pruned scan runs only where each image has one row,
    and each list is scanned once), so the merge is over scores alone, and only
    the winners are named: naming every partition's k rows cost ~6 us a
    partition (a cache miss an id, measured at 100k), for 8 x k rows of which k win.
    """
    if not scanned:
        return [[] for _ in range(queries)], [-math.inf] * queries
    scores = np.concatenate([rows.scores for _, rows in scanned], axis=1)
    numbers = np.concatenate([rows.rows for _, rows in scanned], axis=1)
    owner = np.repeat(np.arange(len(scanned)), [rows.rows.shape[1] for _, rows in scanned])
    scores[numbers < 0] = -np.inf  # a short answer's padding
    best: list[list[tuple[float, str, Partition]]] = []
    kth = []
    for query_scores, query_rows in zip(scores, numbers, strict=True):
        # Stable: ties keep the order partitions were scanned in, as before.
        order = np.argsort(-query_scores, kind="stable")[:k]
        top = [
            (score, scanned[n][1].row_image[row], scanned[n][0])
            for score, row, n in zip(
                query_scores[order].tolist(),
                query_rows[order].tolist(),
                owner[order].tolist(),
                strict=True,
            )
            if row >= 0
        ]
        best.append(top)
        kth.append(top[k - 1][0] if len(top) >= k else -math.inf)
    return best, kth


def _score_read_back(
    k: int,
    read: list[tuple[Partition, MatchingRows]],
    scored: list[list[tuple[float, str, Partition]]],
) -> None:
    """Rank the rows partitions read back (and scored) for a filter in one pass, adding
    each query's best ``k`` images (max over an image's rows) to ``scored``."""
    all_scores = np.concatenate([matching.scores for _, matching in read], axis=1)
    which = np.repeat(np.arange(len(read)), [len(matching.rows) for _, matching in read])
    rows = np.concatenate([matching.rows for _, matching in read])
    for row, scores in zip(scored, all_scores, strict=True):
        best: dict[str, tuple[float, Partition]] = {}
        # The best few rows first (a partial sort); all of them only when those
        # few hold fewer than k distinct images (an image's tiles crowding them).
        for order in _best_first(scores, READ_BACK_FIRST_SORT * k):
            # Python numbers, converted once for the rows in order (not element by element)
            in_order = zip(
                which[order].tolist(), rows[order].tolist(), scores[order].tolist(), strict=True
            )
            for n, row_number, score in in_order:
                part, matching = read[n]
                image_id = matching.row_image[row_number]
                if image_id not in best:  # sorted: an image's first row is its best
                    best[image_id] = (score, part)
                    if len(best) == k:
                        break
            if len(best) == k:
                break
        row.extend((score, image_id, part) for image_id, (score, part) in best.items())


def _best_first(scores: np.ndarray, few: int) -> Iterator[np.ndarray]:
    """Positions of ``scores``, best first: the best ``few`` (sorted), then the rest.

    A full sort of a 0.1 % filter's ~1,000 rows at 1M took ~50 us a query; the
    partial one, ~10 us, and the rest is sorted only if asked for.
    """
    if few >= len(scores):
        yield np.argsort(-scores, kind="stable")
        return
    head = np.argpartition(-scores, few)[:few]
    yield head[np.argsort(-scores[head], kind="stable")]
    rest = np.ones(len(scores), dtype=bool)
    rest[head] = False
    tail = np.flatnonzero(rest)
    yield tail[np.argsort(-scores[tail], kind="stable")]

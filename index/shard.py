"""An index shard: the partitions ``p`` with ``p mod shards == shard_id``.

The shard applies records of the embeddings topic to its partitions: vectors
(ImageEmbedded, for the shard's model version) and visibility changes
(ImageUpdated forwarded under the image's key, hence in the same partition and
in order with its vectors). :class:`ShardConsumer` feeds it with manual
partition assignment: shards do not form a consumer group, because every
replica of a shard must read every one of its partitions in full.

Recovery: on start the shard loads each partition's snapshot and consumes from
the snapshot's offset. If the log is a new epoch (the topic was recreated, as
happens to every topic when the in-memory embedded broker restarts), the
snapshot's content is kept and the new log is read from its beginning; replay
is idempotent, so records seen before change nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from index.faiss_index import SearchParams
from index.freshness import FreshnessHistogram, RecentTimes
from index.partition import Hit, Partition
from index.recall_monitor import RecallMonitor
from index.snapshot import (
    SnapshotError,
    SnapshotInfo,
    load_snapshot,
    save_snapshot,
    snapshot_path,
)
from streams.kafka_connection import KafkaConnection
from streams.log_follower import LogFollower
from streams.schemas import ImageEmbedded, ImageUpdated, SchemaError, decode_vector_log

log = logging.getLogger(__name__)


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
        self.skipped_records = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return sum(len(p) for p in self.partitions.values())

    def __contains__(self, image_id: str) -> bool:
        return any(image_id in p for p in self.partitions.values())

    def image_ids(self) -> set[str]:
        """Every indexed, undeleted image of the shard (a model switch compares these)."""
        return set().union(*(p.image_ids() for p in self.partitions.values()))

    # ----------------------------------------------------------------- applying

    def apply(self, record: ImageEmbedded | ImageUpdated, partition: int, offset: int) -> bool:
        """Apply one record of the embeddings topic; returns whether the index changed."""
        part = self.partitions.get(partition)
        if part is None:
            raise ValueError(f"partition {partition} is not owned by this shard")
        changed = False
        if isinstance(record, ImageUpdated):
            part.update(record.image_id, record.action, record.updated_at)
            changed = True
        elif record.model_version == self.model_version and record.dim == self.dim:
            vectors = np.vstack([record.vector()[None, :], record.tiles()])
            changed = part.upsert(record.image_id, vectors, record.uploaded_at, record.private)
        else:
            self.skipped_records += 1
        now = time.time()
        with self._lock:
            self.consumed_offsets[partition] = offset + 1
            if changed:
                self.searchable_at[record.image_id] = now
        if changed and isinstance(record, ImageEmbedded):
            self.freshness.observe(now - record.uploaded_at)
        return changed

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
        """Top ``k`` visible images over every partition of this shard."""
        hits = [
            hit
            for part in self.partitions.values()
            for hit in part.search(query, k, params, with_vectors)[0]
        ]
        hits.sort(key=lambda hit: hit.score, reverse=True)
        if self.recall is not None:
            self.recall.offer(query, hits[:k])
        return hits[:k]

    def exact_search(self, query: np.ndarray, k: int) -> list[Hit]:
        """The true top ``k`` visible images of the shard (the recall monitor's truth)."""
        hits = [hit for part in self.partitions.values() for hit in part.exact_search(query, k)]
        hits.sort(key=lambda hit: hit.score, reverse=True)
        return hits[:k]

    def indexed_vector(self, image_id: str) -> tuple[np.ndarray, float] | None:
        """A visible image's global vector and its upload's event time, if this shard has it."""
        for part in self.partitions.values():
            found = part.indexed_vector(image_id)
            if found is not None:
                return found
        return None

    def vector_of(self, image_id: str) -> np.ndarray | None:
        found = self.indexed_vector(image_id)
        return None if found is None else found[0]

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


class ShardConsumer(LogFollower):
    """Recovers an :class:`IndexShard`, then feeds it from the embeddings topic."""

    def __init__(
        self,
        shard: IndexShard,
        kafka: KafkaConnection,
        topic: str,
        fetch_max_wait_ms: int = 20,
        snapshot_interval_s: float = 30.0,
        idle_fetch_max_wait_ms: int | None = None,
    ) -> None:
        super().__init__(
            kafka,
            topic,
            fetch_max_wait_ms,
            "visearch-shard",
            idle_fetch_max_wait_ms=idle_fetch_max_wait_ms,
        )
        self.shard = shard
        self.snapshot_interval_s = snapshot_interval_s
        self.snapshot_failures = 0
        self._last_snapshot = time.monotonic()

    def starting_offsets(self) -> dict[int, int]:
        return self.shard.recover(self.epoch)

    def on_new_epoch(self, epoch: str) -> dict[int, int]:
        return self.shard.begin_epoch(epoch)

    def handle(self, partition: int, records: Sequence[Any]) -> None:
        for record in records:
            self._apply(partition, record.offset, record.value)

    def after_poll(self, had_records: bool) -> None:
        if time.monotonic() - self._last_snapshot >= self.snapshot_interval_s:
            self._snapshot()
            self._last_snapshot = time.monotonic()

    def finish(self) -> None:
        self._snapshot()

    def _snapshot(self) -> None:
        """Snapshot; a failed write is reported and retried, never fatal.

        Ingestion and search go on from memory, and the previous snapshots stay
        valid (writes are atomic), so a full disk costs replay time at the next
        restart, not data.
        """
        try:
            self.shard.snapshot()
        except OSError as exc:
            self.snapshot_failures += 1
            log.error(
                "snapshot of %s failed, previous snapshots kept, retrying in %.0f s: %s",
                self.topic,
                self.snapshot_interval_s,
                exc,
            )

    def _apply(self, partition: int, offset: int, value: bytes) -> None:
        try:
            record = decode_vector_log(value)
        except SchemaError as exc:
            log.warning(
                "skipping embeddings record %s/%d@%d: %s", self.topic, partition, offset, exc
            )
            self.shard.skip(partition, offset)
            return
        self.shard.apply(record, partition, offset)

"""An index shard: the partitions ``p`` with ``p mod shards == shard_id``.

The shard applies ImageEmbedded records to its partitions. A consumer thread
(:class:`ShardConsumer`) feeds it from the embeddings topic with manual
partition assignment: shards do not form a consumer group, because every
replica of a shard must read every one of its partitions in full.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

import numpy as np

from index.partition import Hit, Partition
from streams.schemas import ImageEmbedded, SchemaError, decode

log = logging.getLogger(__name__)


def owned_partitions(partition_count: int, shard_id: int, shard_count: int) -> list[int]:
    """Partitions this shard owns: ``p mod shard_count == shard_id``."""
    if not 0 <= shard_id < shard_count:
        raise ValueError(f"shard_id {shard_id} is outside 0..{shard_count - 1}")
    return [p for p in range(partition_count) if p % shard_count == shard_id]


class IndexShard:
    """Partitions for one model version, plus when each image became searchable."""

    def __init__(
        self, dim: int, model_version: str, partitions: Iterable[int], factory: str = "Flat"
    ) -> None:
        self.dim = dim
        self.model_version = model_version
        self.partitions = {p: Partition(dim, factory) for p in partitions}
        self.consumed_offsets: dict[int, int] = {}
        self.searchable_at: dict[str, float] = {}
        self.skipped_records = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return sum(len(p) for p in self.partitions.values())

    def __contains__(self, image_id: str) -> bool:
        return any(image_id in p for p in self.partitions.values())

    def apply(self, record: ImageEmbedded, partition: int, offset: int) -> bool:
        """Add one embedding; returns False when it belongs to another model version."""
        if partition not in self.partitions:
            raise ValueError(f"partition {partition} is not owned by this shard")
        applied = False
        if record.model_version != self.model_version or record.dim != self.dim:
            self.skipped_records += 1
        else:
            self.partitions[partition].upsert(record.image_id, record.vector(), record.private)
            applied = True
        with self._lock:
            self.consumed_offsets[partition] = offset + 1
            if applied:
                self.searchable_at[record.image_id] = time.time()
        return applied

    def search(self, query: np.ndarray, k: int) -> list[Hit]:
        """Top ``k`` over every partition of this shard."""
        hits = [hit for part in self.partitions.values() for hit in part.search(query, k)[0]]
        hits.sort(key=lambda hit: hit.score, reverse=True)
        return hits[:k]


class ShardConsumer(threading.Thread):
    """Feeds an :class:`IndexShard` from the embeddings topic until stopped."""

    def __init__(
        self,
        shard: IndexShard,
        bootstrap_servers: str,
        topic: str,
        fetch_max_wait_ms: int = 20,
    ) -> None:
        super().__init__(name=f"shard-consumer-{topic}", daemon=True)
        self.shard = shard
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        from kafka import KafkaConsumer, TopicPartition

        try:
            consumer = KafkaConsumer(
                bootstrap_servers=self.bootstrap_servers,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                fetch_max_wait_ms=self.fetch_max_wait_ms,
                client_id=f"visearch-shard-{self.topic}",
            )
            assignment = [TopicPartition(self.topic, p) for p in self.shard.partitions]
            consumer.assign(assignment)
            consumer.seek_to_beginning(*assignment)
        except Exception as exc:  # surfaced to the owner through .error
            self.error = exc
            self.ready.set()
            log.exception("shard consumer could not start")
            return
        self.ready.set()
        try:
            while not self._stop_event.is_set():
                batches = consumer.poll(timeout_ms=100, max_records=500)
                for tp, messages in batches.items():
                    for message in messages:
                        self._apply(tp.partition, message.offset, message.value)
        finally:
            consumer.close()

    def _apply(self, partition: int, offset: int, value: bytes) -> None:
        try:
            record = decode(ImageEmbedded, value)
        except SchemaError as exc:
            log.warning(
                "skipping embeddings record %s/%d@%d: %s", self.topic, partition, offset, exc
            )
            self.shard.skipped_records += 1
            return
        self.shard.apply(record, partition, offset)

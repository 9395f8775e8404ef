"""Feeds an :class:`~index.shard.IndexShard` from the embeddings topic.

Recovery first (the shard's snapshots say where each partition resumes), then
every record of the shard's partitions in order, with periodic snapshots.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from index.shard import IndexShard
from streams.kafka_connection import KafkaConnection
from streams.log_follower import LogFollower
from streams.schemas import SchemaError, decode_vector_log

log = logging.getLogger(__name__)


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

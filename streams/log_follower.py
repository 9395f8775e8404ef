"""Following a topic with manual assignment: the loop every materialised view shares.

Index shards, the feedback aggregator, the model watcher and the dead-letter
monitor all keep state that is a function of a log. None of them joins a
consumer group: each replica must read every record of its partitions, from
offsets it chooses itself (a snapshot's, a checkpoint's, or 0). This base
class owns the Kafka side: create the consumer, assign, seek, poll, track
lag from fetch responses (the embedded broker answers ListOffsets wrongly,
DESIGN.md), signal ``ready`` and ``caught_up``, stop cleanly; subclasses say
where to start, what to do with records, and what to do periodically and at
the end.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

from streams.kafka_connection import KafkaConnection

log = logging.getLogger(__name__)


class LogFollower(threading.Thread):
    """Polls assigned partitions of one topic until stopped (see the module docstring)."""

    def __init__(
        self,
        kafka: KafkaConnection,
        topic: str,
        fetch_max_wait_ms: int = 20,
        client_id: str = "visearch",
        max_records: int = 500,
        idle_s: float = 0.3,
    ) -> None:
        super().__init__(name=f"{client_id}-{topic}", daemon=True)
        self.kafka = kafka  # Settings.kafka: the cluster and how to authenticate
        self.topic = topic
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.client_id = client_id
        self.max_records = max_records
        self.idle_s = idle_s
        self.ready = threading.Event()
        # Set once a poll found nothing new for ``idle_s``: the log has been read.
        self.caught_up = threading.Event()
        self.error: BaseException | None = None
        # Records behind each partition's high watermark, from the last fetch response.
        self.lag: dict[int, int] = {}
        self._next: dict[int, int] = {}
        self._stop_event = threading.Event()

    # ---------------------------------------------------------------- to override

    def starting_offsets(self) -> dict[int, int]:
        """Partition -> first offset to read (recover state here)."""
        raise NotImplementedError

    def handle(self, partition: int, records: Sequence[Any]) -> None:
        """Apply records of one partition, in order (kafka-python ConsumerRecords)."""
        raise NotImplementedError

    def after_poll(self, had_records: bool) -> None:
        """Called after every poll (periodic snapshots, checkpoints)."""

    def finish(self) -> None:
        """Called once when stopping, after the last poll (a final snapshot)."""

    # ------------------------------------------------------------------- the loop

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        from kafka import KafkaConsumer, TopicPartition

        try:
            starts = self.starting_offsets()
            consumer = KafkaConsumer(
                **self.kafka.client_options(),
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                fetch_max_wait_ms=self.fetch_max_wait_ms,
                max_partition_fetch_bytes=4 * 1024 * 1024,
                client_id=self.client_id,
            )
            assignment = [TopicPartition(self.topic, p) for p in sorted(starts)]
            consumer.assign(assignment)
            for tp in assignment:
                consumer.seek(tp, starts[tp.partition])
        except Exception as exc:  # surfaced to the owner through .error
            self.error = exc
            self.ready.set()
            log.exception("%s could not start on %s", self.client_id, self.topic)
            return
        self._next = dict(starts)
        self.ready.set()
        last_record = time.monotonic()
        try:
            while not self._stop_event.is_set():
                batches = consumer.poll(timeout_ms=100, max_records=self.max_records)
                for tp, records in batches.items():
                    self.handle(tp.partition, records)
                    self._next[tp.partition] = records[-1].offset + 1
                for tp in assignment:
                    high = consumer.highwater(tp)
                    if high is not None:
                        self.lag[tp.partition] = max(0, high - self._next[tp.partition])
                if batches:
                    last_record = time.monotonic()
                elif time.monotonic() - last_record >= self.idle_s:
                    self.caught_up.set()
                self.after_poll(bool(batches))
            self.finish()
        finally:
            consumer.close()

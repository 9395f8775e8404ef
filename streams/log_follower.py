"""Following a topic with manual assignment: the loop every materialised view shares.

Index shards, the feedback aggregator, the model watcher and the dead-letter
monitor all keep state that is a function of a log. None of them joins a
consumer group: each replica must read every record of its partitions, from
offsets it chooses itself (a snapshot's, a checkpoint's, or 0). This base
class owns the Kafka side: create the consumer, assign, seek, poll, track
lag from fetch responses (the embedded broker, Tansu, answers ListOffsets
wrongly after batched writes), signal ``ready`` and ``caught_up``, stop cleanly; subclasses say
where to start, what to do with records, and what to do periodically and at
the end.

Every ``epoch_check_s`` the follower reads its topic's id (the log epoch,
:mod:`streams.epoch`). When it changed, the old offsets mean nothing: the
subclass says where to read the new log from (:meth:`LogFollower.on_new_epoch`,
by default its start) and keeps its state. Records of the new log read
before the change was noticed are read again; every subclass applies
records idempotently (index upserts, feedback dedup by ``event_id``, model
events and dead letters by their identity), so that costs nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from streams.epoch import EpochTracker
from streams.fetch_backoff import FetchBackoff
from streams.kafka_connection import KafkaConnection
from streams.topics import TopicEpochReader

log = logging.getLogger(__name__)
# A poll returns at least this often (unless a follower allows longer), so that
# stop() and the epoch checks stay prompt.
POLL_MAX_MS = 500


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
        epoch_check_s: float = 5.0,
        idle_fetch_max_wait_ms: int | None = None,
        longest_poll_ms: int = POLL_MAX_MS,
    ) -> None:
        super().__init__(name=f"{client_id}-{topic}", daemon=True)
        self.kafka = kafka  # Settings.kafka: the cluster and how to authenticate
        self.topic = topic
        self.fetch_max_wait_ms = fetch_max_wait_ms
        # Fetch waits grow up to this while the topic is idle (streams.fetch_backoff).
        self.idle_fetch_max_wait_ms = idle_fetch_max_wait_ms or fetch_max_wait_ms
        # How long one poll may block, so how long stop() may wait for the loop.
        # Each poll costs several hand-offs to kafka-python's IO thread: an idle
        # consumer fetching every 5 s but polling every 500 ms used 0.0013 of a
        # core, polling as long as its fetch wait 0.00035 (measured on the
        # embedded broker). Followers nobody joins on stop poll that long.
        self.longest_poll_ms = max(POLL_MAX_MS, longest_poll_ms)
        self.client_id = client_id
        self.max_records = max_records
        self.idle_s = idle_s
        self.epoch_check_s = epoch_check_s
        # The topic id the offsets belong to; read before starting_offsets().
        self.epoch = ""
        self.ready = threading.Event()
        # Set once a poll found nothing new for ``idle_s``: the log has been read.
        self.caught_up = threading.Event()
        self.error: BaseException | None = None
        # Records behind each partition's high watermark, from the last fetch response.
        self.lag: dict[int, int] = {}
        self._next: dict[int, int] = {}
        self._stop_event = threading.Event()
        self._epoch_reader = TopicEpochReader(kafka, topic)

    # ---------------------------------------------------------------- to override

    def starting_offsets(self) -> dict[int, int]:
        """Partition -> first offset to read (recover state here; ``self.epoch`` is set)."""
        raise NotImplementedError

    def on_new_epoch(self, epoch: str) -> dict[int, int]:
        """Partition -> offset to read a new log epoch from; default: its start.

        Called in the follower's thread between two polls. Subclasses that
        record offsets (snapshots, checkpoints) move them to the new epoch here.
        """
        return dict.fromkeys(self._next, 0)

    def on_epoch_confirmed(self) -> None:
        """Called after each check that found the epoch unchanged.

        Records handled before this call belong to the current epoch, so a
        later new epoch cannot deliver them again (the dead-letter monitor counts on it).
        """

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
            self.epoch = self._read_epoch(30.0)
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
        last_record = last_check = time.monotonic()
        tracker = EpochTracker(
            self._read_epoch,
            f"topic {self.topic} on {self.kafka.bootstrap_servers}",
            self.epoch,
            self.client_id,
        )
        backoff = FetchBackoff(self.fetch_max_wait_ms, self.idle_fetch_max_wait_ms)
        try:
            while not self._stop_event.is_set():
                if time.monotonic() - last_check >= self.epoch_check_s:
                    self._check_epoch(tracker, consumer, assignment)
                    last_check = time.monotonic()
                until_check_ms = 1000 * (last_check + self.epoch_check_s - time.monotonic())
                batches = consumer.poll(
                    timeout_ms=max(
                        100, min(self.longest_poll_ms, backoff.current_ms, until_check_ms)
                    ),
                    max_records=self.max_records,
                )
                # kafka-python reads this per fetch request it builds (private, stable in 2.x-3.x).
                consumer._fetcher.config["fetch_max_wait_ms"] = backoff.update(bool(batches))
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
            self._epoch_reader.close()

    def _read_epoch(self, timeout_s: float) -> str:
        return self._epoch_reader(timeout_s)

    def _check_epoch(self, tracker: EpochTracker, consumer: Any, assignment: list[Any]) -> None:
        """Seek to the subclass's offsets when the topic is a new log epoch."""
        epoch = tracker.check()
        if epoch is None:
            if tracker.problem is None:
                self.on_epoch_confirmed()
            return
        starts = self.on_new_epoch(epoch)
        self.epoch = epoch
        for tp in assignment:
            consumer.seek(tp, starts[tp.partition])
        self._next = dict(starts)
        self.lag = {}


def read_until_idle(
    kafka: KafkaConnection,
    topic: str,
    partitions: Sequence[int],
    from_offset: int | Mapping[int, int] = 0,
    idle_s: float = 1.0,
    fetch_max_wait_ms: int = 20,
    client_id: str = "visearch-reader",
) -> Iterator[Any]:
    """Every record of ``partitions`` from ``from_offset`` on (one offset for all, or one per
    partition: where a reader stopped), until none arrived for ``idle_s``.

    The bounded counterpart of :class:`LogFollower`, for exports and checks:
    the embedded broker's end offsets cannot be trusted (see above), so "the
    end" is a poll that stayed empty long enough. Yields kafka-python
    ``ConsumerRecord`` objects (``.partition``, ``.offset``, ``.value``).
    """
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        **kafka.client_options(),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=fetch_max_wait_ms,
        max_partition_fetch_bytes=4 * 1024 * 1024,
        client_id=client_id,
    )
    try:
        assignment = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(assignment)
        for tp in assignment:
            if isinstance(from_offset, int):
                consumer.seek(tp, from_offset)
            else:
                consumer.seek(tp, from_offset.get(tp.partition, 0))
        last = time.monotonic()
        while time.monotonic() - last < idle_s:
            for records in consumer.poll(timeout_ms=100, max_records=5000).values():
                yield from records
                last = time.monotonic()
    finally:
        consumer.close()

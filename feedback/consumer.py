"""Feeds a :class:`FeedbackState` from the interactions topic; publishes pairs.

Why a kafka-python consumer with manual assignment and checkpoints instead
of Faust tables: the aggregation must be exactly-once in effect (an event
delivered twice counts once, also across a crash) and reproducible from the
log. Here the state and the next offsets are checkpointed together, so a
restart resumes exactly where the state stands; Faust's table changelog and
its committed offsets are two separate writes. It is also ~5x faster: one
Faust table update per event measured ~4k events/s on this broker
(DESIGN.md), this loop aggregates far above the 20k/s goal
(``bench/feedback.py``). It is the same pattern as the index shards: state
is a materialised view of a log, recovered from a snapshot plus replay.

Labelled pairs are published before the checkpoint that covers them, so a
crash can publish a pair twice but never lose one; pairs carry a
deterministic ``pair_id`` for readers to deduplicate (``visearch pairs
export`` does).
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from feedback.aggregation import AggregationPolicy
from feedback.state import FeedbackState
from streams.embedding import RawMessage, dead_letter
from streams.publisher import EventPublisher
from streams.schemas import Interaction, SchemaError, decode
from streams.settings import Settings
from streams.topics import topic_epoch

log = logging.getLogger(__name__)

# Outcomes that keep the event out of the aggregates: dead-lettered with the reason.
REJECTED = {
    "late_event": "event time is older than the watermark minus the allowed lateness",
    "future_timestamp": "event time is too far after the broker's record timestamp",
}


def aggregation_policy(settings: Settings) -> AggregationPolicy:
    """The time rules from the settings."""
    return AggregationPolicy(
        allowed_lateness_s=settings.feedback_allowed_lateness_s,
        max_future_s=settings.feedback_max_future_s,
        session_gap_s=settings.feedback_session_gap_s,
    )


def checkpoint_path(settings: Settings) -> Path:
    return settings.data_dir / "feedback" / "checkpoint.bin"


class FeedbackConsumer(threading.Thread):
    """Recovers the state from its checkpoint, then aggregates every interaction."""

    def __init__(
        self,
        settings: Settings,
        state: FeedbackState,
        publisher: EventPublisher,
        checkpoint: Path | None = None,
    ) -> None:
        super().__init__(name="feedback-consumer", daemon=True)
        self.settings = settings
        self.state = state
        self.publisher = publisher
        self.checkpoint = checkpoint or checkpoint_path(settings)
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        from kafka import KafkaConsumer, TopicPartition

        topic = self.settings.topics.interactions
        try:
            starts = self.state.load(
                self.checkpoint, topic_epoch(self.settings.bootstrap_servers, topic)
            )
            consumer = KafkaConsumer(
                bootstrap_servers=self.settings.bootstrap_servers,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                fetch_max_wait_ms=self.settings.fetch_max_wait_ms,
                max_partition_fetch_bytes=4 * 1024 * 1024,
                client_id="visearch-feedback",
            )
            assignment = [TopicPartition(topic, p) for p in sorted(starts)]
            consumer.assign(assignment)
            for tp in assignment:
                consumer.seek(tp, starts[tp.partition])
        except Exception as exc:  # surfaced to the owner through .error
            self.error = exc
            self.ready.set()
            log.exception("feedback consumer could not start")
            return
        self.ready.set()
        last_checkpoint = time.monotonic()
        try:
            while not self._stop_event.is_set():
                batches = consumer.poll(timeout_ms=100, max_records=5000)
                for tp, messages in batches.items():
                    self._apply(
                        [
                            RawMessage(topic, tp.partition, m.offset, m.value or b"")
                            for m in messages
                        ],
                        [m.timestamp / 1000.0 for m in messages],
                    )
                interval = self.settings.feedback_checkpoint_interval_s
                if batches and time.monotonic() - last_checkpoint >= interval:
                    self.save_checkpoint()
                    last_checkpoint = time.monotonic()
            self.save_checkpoint()
        finally:
            consumer.close()

    def _apply(self, messages: list[RawMessage], record_times: list[float]) -> None:
        """Decode, aggregate under one lock, then publish dead letters and pairs."""
        records: list[tuple[int, Interaction | None, float]] = []
        errors: dict[int, SchemaError] = {}
        for index, (message, record_time) in enumerate(zip(messages, record_times, strict=True)):
            try:
                event: Interaction | None = decode(Interaction, message.value)
            except SchemaError as exc:
                event = None
                errors[index] = exc
            records.append((message.offset, event, record_time))
        outcomes = self.state.process(messages[0].partition, records)
        for index, (message, outcome) in enumerate(zip(messages, outcomes, strict=True)):
            if outcome is None:
                self._dead_letter(message, errors[index].code, errors[index].message)
                continue
            if outcome.status in REJECTED:
                self._dead_letter(message, outcome.status, REJECTED[outcome.status])
            for pair in outcome.pairs:
                self.publisher.publish(self.settings.topics.labeled_pairs, pair.search_id, pair)

    def _dead_letter(self, message: RawMessage, code: str, reason: str) -> None:
        log.warning(
            "dead letter %s/%d@%d %s: %s",
            message.topic,
            message.partition,
            message.offset,
            code,
            reason,
        )
        self.publisher.publish(
            self.settings.topics.dead_letter, "", dead_letter(message, code, reason)
        )

    def save_checkpoint(self) -> None:
        """Make published pairs and dead letters durable, then record the state."""
        self.publisher.flush()
        self.state.save(self.checkpoint)

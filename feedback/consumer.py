"""Feeds a :class:`FeedbackState` from the interactions topic; publishes pairs.

Why a kafka-python consumer with manual assignment and checkpoints instead
of Faust tables: the aggregation must be exactly-once in effect (an event
delivered twice counts once, also across a crash) and reproducible from the
log. Here the state and the next offsets are checkpointed together, so a
restart resumes exactly where the state stands; Faust's table changelog and
its committed offsets are two separate writes. It is also ~5x faster: one
Faust table update per event measured ~4k events/s on the embedded broker
(a plain Faust agent without a table ~13k/s), this loop aggregates far above
the 20k/s goal
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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from feedback.aggregation import AggregationPolicy
from feedback.state import FeedbackState
from streams.embedding import RawMessage, dead_letter, log_dead_letter
from streams.log_follower import LogFollower
from streams.publisher import EventPublisher
from streams.schemas import Interaction, SchemaError, decode
from streams.settings import Settings

log = logging.getLogger(__name__)

# Outcomes that keep the event out of the aggregates: dead-lettered with the reason.
REJECTED = {
    "late_event": "event time is older than the watermark minus the allowed lateness",
    "future_timestamp": "event time is too far after the broker's record timestamp",
}


def aggregation_policy(
    settings: Settings, model_label: Callable[[str], str] | None = None
) -> AggregationPolicy:
    """The time rules from the settings; ``model_label``: see ``AggregationPolicy``."""
    return AggregationPolicy(
        allowed_lateness_s=settings.feedback_allowed_lateness_s,
        max_future_s=settings.feedback_max_future_s,
        session_gap_s=settings.feedback_session_gap_s,
        model_label=model_label,
    )


def checkpoint_path(settings: Settings) -> Path:
    return settings.data_dir / "feedback" / "checkpoint.bin"


class FeedbackConsumer(LogFollower):
    """Recovers the state from its checkpoint, then aggregates every interaction."""

    def __init__(
        self,
        settings: Settings,
        state: FeedbackState,
        publisher: EventPublisher,
        checkpoint: Path | None = None,
    ) -> None:
        super().__init__(
            settings.kafka,
            settings.topics.interactions,
            settings.background_fetch_max_wait_ms,
            "visearch-feedback",
            max_records=5000,
            idle_fetch_max_wait_ms=settings.background_idle_fetch_max_wait_ms,
        )
        self.settings = settings
        self.state = state
        self.publisher = publisher
        self.checkpoint = checkpoint or checkpoint_path(settings)
        self._last_checkpoint = time.monotonic()
        self._checkpoint_lock = threading.Lock()
        self.checkpoint_failures = 0

    def starting_offsets(self) -> dict[int, int]:
        return self.state.load(self.checkpoint, self.epoch)

    def on_new_epoch(self, epoch: str) -> dict[int, int]:
        return self.state.begin_epoch(epoch)

    def handle(self, partition: int, records: Sequence[Any]) -> None:
        self._apply(
            [RawMessage(self.topic, partition, r.offset, r.value or b"") for r in records],
            [r.timestamp / 1000.0 for r in records],
        )

    def after_poll(self, had_records: bool) -> None:
        interval = self.settings.feedback_checkpoint_interval_s
        if had_records and time.monotonic() - self._last_checkpoint >= interval:
            self.save_checkpoint()
            self._last_checkpoint = time.monotonic()

    def finish(self) -> None:
        self.save_checkpoint()

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
        letter = dead_letter(message, code, reason)
        log_dead_letter(letter)
        self.publisher.publish(self.settings.topics.dead_letter, "", letter)

    def save_checkpoint(self) -> None:
        """Make published pairs and dead letters durable, then record the state.

        A failed write (a full disk) is logged and retried at the next
        interval: aggregation goes on in memory and the previous checkpoint
        stays intact, so the cost is replay time after a restart, not data.
        """
        with self._checkpoint_lock:
            self.publisher.flush()
            try:
                self.state.save(self.checkpoint)
            except OSError as exc:
                self.checkpoint_failures += 1
                log.error("feedback checkpoint failed, previous one kept: %s", exc)

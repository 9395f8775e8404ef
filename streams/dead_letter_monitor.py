"""Dead-letter counters by source and reason, for Prometheus and alerts.

Dead letters are written by several processes (embedding workers, the
feedback aggregator); counting them where they land, on the dead-letter
topic, gives one exact count for the whole deployment whichever process
wrote them, and the count survives their restarts (it is re-read from the
log). Exposed as ``visearch_dead_letters_total{source, code}``: ``source`` is
the topic without its prefix (``image-uploads``, ``interactions``, ...),
``code`` the machine-readable reason.

A new log epoch (the embedded broker restarted and lost its log) keeps the
counts and adds the new log's: a Prometheus counter must not go backwards,
and the dead letters before the restart did happen. The new log is read
from its start, so the records counted between the restart and the moment
it was noticed come round again; they are recognised by their bytes (a dead
letter carries its source offset and failure time) and counted once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

from streams.log_follower import LogFollower
from streams.schemas import DeadLetter, SchemaError, decode
from streams.settings import Settings


class DeadLetterMonitor(LogFollower, Collector):
    """Follows the dead-letter topic and counts its records by source and code."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(
            settings.kafka,
            settings.topics.dead_letter,
            settings.background_fetch_max_wait_ms,
            "visearch-dlq-monitor",
            idle_fetch_max_wait_ms=settings.background_idle_fetch_max_wait_ms,
            # Nobody waits for it to stop: it may block as long as it fetches.
            longest_poll_ms=settings.background_idle_fetch_max_wait_ms,
        )
        self.prefix = f"{settings.topic_prefix}."
        self.counts: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        # Records counted since the epoch was last confirmed, and those of them
        # a new epoch will deliver again (see the module docstring).
        self._unconfirmed: set[bytes] = set()
        self._again: set[bytes] = set()

    def starting_offsets(self) -> dict[int, int]:
        return {0: 0}

    def handle(self, partition: int, records: Sequence[Any]) -> None:
        with self._lock:
            for record in records:
                value = record.value or b""
                if value in self._again:
                    self._again.discard(value)
                    continue
                self._unconfirmed.add(value)
                try:
                    letter = decode(DeadLetter, value)
                    key = (letter.source_topic.removeprefix(self.prefix), letter.error_code)
                except SchemaError:
                    key = ("unknown", "unreadable_dead_letter")
                self.counts[key] = self.counts.get(key, 0) + 1

    def on_epoch_confirmed(self) -> None:
        self._unconfirmed.clear()

    def on_new_epoch(self, epoch: str) -> dict[int, int]:
        self._again, self._unconfirmed = self._unconfirmed, set()
        return super().on_new_epoch(epoch)

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "visearch_dead_letters",
            "Messages that could not be processed, by source topic and reason",
            labels=["source", "code"],
        )
        with self._lock:
            for (source, code), count in sorted(self.counts.items()):
                family.add_metric([source, code], count)
        yield family

"""Dead-letter counters by source and reason, for Prometheus and alerts.

Dead letters are written by several processes (embedding workers, the
feedback aggregator); counting them where they land, on the dead-letter
topic, gives one exact count for the whole deployment whichever process
wrote them, and the count survives their restarts (it is re-read from the
log). Exposed as ``visearch_dead_letters_total{source, code}``: ``source`` is
the topic without its prefix (``image-uploads``, ``interactions``, ...),
``code`` the machine-readable reason.
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
            settings.fetch_max_wait_ms,
            "visearch-dlq-monitor",
        )
        self.prefix = f"{settings.topic_prefix}."
        self.counts: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def starting_offsets(self) -> dict[int, int]:
        return {0: 0}

    def handle(self, partition: int, records: Sequence[Any]) -> None:
        with self._lock:
            for record in records:
                try:
                    letter = decode(DeadLetter, record.value or b"")
                    key = (letter.source_topic.removeprefix(self.prefix), letter.error_code)
                except SchemaError:
                    key = ("unknown", "unreadable_dead_letter")
                self.counts[key] = self.counts.get(key, 0) + 1

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

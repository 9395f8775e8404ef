"""Publishing events from outside Faust (API, CLI, selftest) with kafka-python."""

from __future__ import annotations

from typing import Any

from streams.lifecycle import Lifecycle
from streams.schemas import Event, encode
from streams.settings import Settings


class EventPublisher(Lifecycle):
    """A kafka-python producer that sends schema events keyed by id."""

    def __init__(self, settings: Settings, linger_ms: int = 0) -> None:
        from kafka import KafkaProducer

        self._producer = KafkaProducer(
            **settings.kafka.client_options(),
            client_id="visearch-publisher",
            linger_ms=linger_ms,
            acks="all",
            # kafka-python 3 turns idempotence on by default. The embedded broker
            # does not support it: after a broker restart (a new, empty epoch) the
            # producer retries UnknownProducerId forever and no upload is ever
            # acknowledged again. A real cluster keeps it.
            enable_idempotence=not settings.embedded_broker,
            max_request_size=max(1_048_576, settings.max_inline_bytes * 2),
        )

    def publish(self, topic: str, key: str, event: Event, timeout_s: float | None = None) -> None:
        """Send one event; with ``timeout_s`` wait for the broker's acknowledgement."""
        future = self._producer.send(topic, key=key.encode(), value=encode(event))
        if timeout_s is not None:
            future.get(timeout=timeout_s)

    def publish_raw(self, topic: str, key: bytes | None, value: bytes) -> Any:
        """Send bytes as they are (tests of bad input, dead-letter replay).

        Returns kafka-python's future: ``.get(timeout)`` waits for the
        acknowledgement and raises if the broker refused the message.
        """
        return self._producer.send(topic, key=key, value=value)

    def flush(self, timeout_s: float = 30.0) -> None:
        self._producer.flush(timeout=timeout_s)

    def stop(self) -> None:
        self._producer.close(timeout=5)

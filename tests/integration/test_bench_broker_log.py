"""bench.broker_log's machinery on the real embedded broker (the figures are the bench's)."""

from __future__ import annotations

import pytest

from bench.broker_log import broker_with_topics, grow, grow_batched, rounds

pytestmark = pytest.mark.integration


def _records(bootstrap: str, topic: str) -> list[int]:
    """The offsets of every record in the topic's partition, read from its start."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=20)
    consumer.assign([TopicPartition(topic, 0)])
    consumer.seek_to_beginning()
    offsets: list[int] = []
    try:
        while batches := consumer.poll(timeout_ms=500):
            offsets += [record.offset for records in batches.values() for record in records]
        return offsets
    finally:
        consumer.close()


def test_the_log_grows_as_asked_and_every_round_fetches_its_record() -> None:
    from kafka import KafkaProducer

    with broker_with_topics() as (bootstrap, pid):
        producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
        grow(producer, "single", 40)
        grow_batched(bootstrap, "batched", 600)
        assert _records(bootstrap, "single") == list(range(40))
        assert _records(bootstrap, "batched") == list(range(600))
        cpu_ms, wall_ms, count = rounds(pid, bootstrap, producer, "batched", 600, seconds=0.5)
        assert count > 0 and wall_ms > 0 and cpu_ms >= 0
        assert _records(bootstrap, "batched") == list(range(600 + count))  # one record a round
        # Rounds that would fetch older records too are refused, not timed.
        with pytest.raises(RuntimeError, match="did not start at the end"):
            rounds(pid, bootstrap, producer, "single", 0, seconds=0.5)
        producer.close()

"""The embedded broker and topic set-up, against the real Tansu binary."""

from __future__ import annotations

import socket
import uuid

import pytest

from streams.broker import BrokerError, EmbeddedBroker, free_port, port_in_use
from streams.settings import Settings
from streams.topics import TopicSetupError, ensure_topics, topic_specs

pytestmark = pytest.mark.integration


def test_broker_starts_serves_and_stops() -> None:
    port = free_port()
    with EmbeddedBroker(port=port) as broker:
        assert broker.is_running()
        assert port_in_use("127.0.0.1", port)
    assert not port_in_use("127.0.0.1", port)


def test_taken_port_is_a_clear_error() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(BrokerError, match=f"port {port} .* already in use"):
            EmbeddedBroker(port=port).start()


def test_topics_are_created_with_their_partition_counts() -> None:
    from kafka.admin import KafkaAdminClient

    with EmbeddedBroker(port=free_port()) as broker:
        settings = Settings(
            broker_port=broker.port,
            topic_prefix=f"t-{uuid.uuid4().hex[:6]}",
            embedding_partitions=6,
        )
        ensure_topics(settings)
        ensure_topics(settings)  # idempotent
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
        try:
            described = admin.describe_topics([spec.name for spec in topic_specs(settings)])
        finally:
            admin.close()
        counts = {item["name"]: len(item["partitions"]) for item in described}
        assert counts == {spec.name: spec.partitions for spec in topic_specs(settings)}
        assert counts[settings.topics.embeddings] == 6
        with pytest.raises(TopicSetupError, match="has 6 partitions, settings say 3"):
            ensure_topics(settings.with_overrides(embedding_partitions=3))


def test_unreachable_cluster_is_reported() -> None:
    settings = Settings(kafka_bootstrap=f"127.0.0.1:{free_port()}", embedded_broker=False)
    with pytest.raises(TopicSetupError, match="not reachable"):
        ensure_topics(settings, timeout_s=1.0)

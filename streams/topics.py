"""Topic definitions with explicit partition counts, created up front.

Auto-created topics get the broker's default partition count, and Faust then
fails with PartitionsMismatch; a wrong count on an existing topic is reported
instead of silently used.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

from streams.errors import VisearchError
from streams.kafka_connection import KafkaConnection
from streams.settings import Settings

log = logging.getLogger(__name__)


class TopicSetupError(VisearchError, RuntimeError):
    """Topics could not be created or exist with the wrong partition count."""


@dataclass(frozen=True)
class TopicSpec:
    """A topic's name, partition count and what it carries."""

    name: str
    partitions: int
    carries: str


def topic_specs(settings: Settings) -> list[TopicSpec]:
    """Every topic visearch uses, with its partition count."""
    names = settings.topics
    return [
        TopicSpec(names.uploads, settings.upload_partitions, "ImageUploaded, keyed by image id"),
        TopicSpec(names.updates, settings.update_partitions, "ImageUpdated, keyed by image id"),
        TopicSpec(
            names.embeddings, settings.embedding_partitions, "ImageEmbedded, keyed by image id"
        ),
        TopicSpec(
            names.interactions, settings.interaction_partitions, "Interaction, keyed by search id"
        ),
        TopicSpec(names.labeled_pairs, settings.interaction_partitions, "LabeledPair"),
        TopicSpec(names.dead_letter, 1, "DeadLetter, in arrival order"),
        TopicSpec(names.models, 1, "ModelChanged: encoder versions deployed, switched, retired"),
    ]


def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> None:
    """Create missing topics and check the partition counts of existing ones."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import KafkaError, TopicAlreadyExistsError

    specs = topic_specs(settings)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin = KafkaAdminClient(**settings.kafka.client_options(), client_id="visearch-admin")
            break
        except KafkaError as exc:
            if time.monotonic() > deadline:
                raise TopicSetupError(
                    f"Kafka at {settings.bootstrap_servers} is not reachable: {exc}"
                ) from exc
            time.sleep(0.2)
    try:
        existing = set(admin.list_topics())
        missing = [
            NewTopic(spec.name, spec.partitions, settings.replication_factor)
            for spec in specs
            if spec.name not in existing
        ]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # a concurrent creator won
                admin.create_topics(missing)
            log.info("created topics %s", [t.name for t in missing])
        _check_partition_counts(admin, specs)
    finally:
        admin.close()


def _check_partition_counts(admin: object, specs: list[TopicSpec]) -> None:
    described = admin.describe_topics([spec.name for spec in specs])  # type: ignore[attr-defined]
    # kafka-python 3 names the key "name", 2.x "topic".
    counts = {item.get("name", item.get("topic")): len(item["partitions"]) for item in described}
    for spec in specs:
        actual = counts.get(spec.name)
        if actual != spec.partitions:
            raise TopicSetupError(
                f"topic {spec.name} has {actual} partitions, settings say {spec.partitions}"
            )


def topic_epoch(kafka: KafkaConnection, topic: str, timeout_s: float = 30.0) -> str:
    """The topic's id: it changes whenever the topic is recreated (a new log epoch).

    Empty while the topic does not exist. ``timeout_s`` bounds the wait for an
    unreachable broker: followers that poll the epoch must not stall for
    kafka-python's 30 s default while the broker is down. One-shot: a client of
    its own, closed after; periodic checks keep one (:class:`TopicEpochReader`).
    """
    reader = TopicEpochReader(kafka, topic)
    try:
        return reader(timeout_s)
    finally:
        reader.close()


class TopicEpochReader:
    """Reads a topic's id through one admin connection kept between calls.

    Consumers check their topic's epoch every second or two; a new admin
    client per check (connect, version probe, metadata, close) was most of
    what an idle stack spent its CPU on. The client is dropped after any
    error and built again on the next call, so a restarted broker is reached.
    """

    def __init__(self, kafka: KafkaConnection, topic: str) -> None:
        self.kafka = kafka
        self.topic = topic
        self._admin: Any = None
        self._timeout_ms = 0

    def __call__(self, timeout_s: float) -> str:
        """The topic's id (empty while it does not exist); see :func:`topic_epoch`."""
        from kafka.admin import KafkaAdminClient

        timeout_ms = int(timeout_s * 1000)
        if self._admin is None or timeout_ms != self._timeout_ms:
            self.close()
            self._admin = KafkaAdminClient(
                **self.kafka.client_options(),
                client_id="visearch-epoch-admin",
                bootstrap_timeout_ms=timeout_ms,
                request_timeout_ms=timeout_ms,
            )
            self._timeout_ms = timeout_ms
        try:
            described = self._admin.describe_topics([self.topic])
        except Exception:
            self.close()
            raise
        if not described:
            raise RuntimeError(f"topic {self.topic} does not exist")
        return str(described[0].get("topic_id") or "")

    def close(self) -> None:
        if self._admin is not None:
            try:
                self._admin.close()
            finally:
                self._admin = None

"""Reading, summarising and replaying the dead-letter topic.

Every record on ``<prefix>.dead-letter`` keeps the original bytes of a message
an agent could not process, where it came from and why it failed. Replaying a
letter republishes those bytes, unchanged, to the topic they came from: after a
fix, or once a missing file has appeared, they go through the normal path; a
message that fails again simply becomes a new dead letter.

The topic has one partition, read with a manually assigned kafka-python
consumer (no consumer group, nothing committed: reading never changes what the
next reader sees). The embedded broker's end offsets are unreliable (Tansu
answers ListOffsets wrongly after batched writes), so a read stops once the
consumer has been idle for ``idle_s``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from collections import Counter
from collections.abc import Collection, Iterable
from datetime import UTC, datetime
from typing import Any

from streams.errors import VisearchError
from streams.publisher import EventPublisher
from streams.schemas import DeadLetter, SchemaError, decode
from streams.settings import Settings

log = logging.getLogger(__name__)


class DeadLetterError(VisearchError, RuntimeError):
    """The dead-letter topic cannot be read (e.g. Kafka is unreachable)."""


def read_dead_letters(
    settings: Settings,
    from_offset: int = 0,
    limit: int | None = None,
    timeout_s: float = 60.0,
    idle_s: float = 1.0,
) -> list[tuple[int, DeadLetter]]:
    """Dead letters from ``from_offset`` on, with their offsets, in offset order.

    Stops after ``limit`` letters, once no record has arrived for ``idle_s``
    (the end of the topic), or after ``timeout_s`` in all (logged: more may
    follow, read on with ``from_offset``). A record on the topic that is not a
    valid :class:`DeadLetter` is logged and skipped.
    """
    if from_offset < 0:
        raise ValueError("from_offset must be >= 0")
    if limit is not None and limit < 0:
        raise ValueError("limit must be >= 0")
    if limit == 0:
        return []
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError

    topic = settings.topics.dead_letter
    try:
        consumer = KafkaConsumer(
            **settings.kafka.client_options(),
            client_id="visearch-dlq",
            group_id=None,
            enable_auto_commit=False,
            # Below the log start: begin there. Past the end: the reset rereads
            # from the start and the offset filter below drops everything.
            auto_offset_reset="earliest",
            allow_auto_create_topics=False,  # an auto-created topic gets the wrong partitions
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
            max_partition_fetch_bytes=max(1_048_576, settings.max_inline_bytes * 3),
        )
    except KafkaError as exc:
        raise DeadLetterError(f"Kafka at {settings.bootstrap_servers}: {exc}") from exc
    letters: list[tuple[int, DeadLetter]] = []
    partition = TopicPartition(topic, 0)
    try:
        consumer.assign([partition])
        consumer.seek(partition, from_offset)
        start = last_record = time.monotonic()
        while limit is None or len(letters) < limit:
            now = time.monotonic()
            if now - last_record >= idle_s:
                break
            if now - start >= timeout_s:
                log.warning(
                    "stopped reading %s after %.0f s at offset %d; more may follow",
                    topic,
                    timeout_s,
                    letters[-1][0] + 1 if letters else from_offset,
                )
                break
            batch = consumer.poll(timeout_ms=100)
            for record in batch.get(partition, []):
                last_record = time.monotonic()
                if record.offset < from_offset:
                    continue
                try:
                    letters.append((record.offset, decode(DeadLetter, record.value or b"")))
                except SchemaError as exc:
                    log.warning("%s@%d is not a dead letter: %s", topic, record.offset, exc)
                    continue
                if limit is not None and len(letters) >= limit:
                    break
    finally:
        consumer.close()
    return letters


def select(
    letters: Iterable[tuple[int, DeadLetter]],
    codes: Collection[str] | None = None,
    limit: int | None = None,
) -> list[tuple[int, DeadLetter]]:
    """The letters whose error code is in ``codes`` (all when None), at most ``limit``."""
    chosen = [item for item in letters if not codes or item[1].error_code in codes]
    return chosen if limit is None else chosen[:limit]


def summarize(letters: Iterable[tuple[int, DeadLetter]]) -> dict[str, int]:
    """How many letters per error code, most frequent first (then by code)."""
    counts = Counter(letter.error_code for _, letter in letters)
    return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))


def replay(
    settings: Settings, letters: Iterable[tuple[int, DeadLetter]], publisher: EventPublisher
) -> int:
    """Republish each letter's original bytes to its source topic (no key); returns how many.

    Only topics of this deployment (its uploads and updates topics) are written
    to; a letter naming any other topic is logged and skipped. Waits until the
    broker has acknowledged every message.
    """
    names = settings.topics
    allowed = {names.uploads, names.updates}
    futures = []
    for offset, letter in letters:
        if letter.source_topic not in allowed:
            log.warning(
                "not replaying dead letter %d: %s is not a topic of this deployment",
                offset,
                letter.source_topic,
            )
            continue
        try:
            original = base64.b64decode(letter.original_b64, validate=True)
        except (binascii.Error, ValueError):
            log.warning("not replaying dead letter %d: original_b64 is not base64", offset)
            continue
        futures.append(publisher.publish_raw(letter.source_topic, None, original))
    publisher.flush()
    for future in futures:
        future.get(timeout=30)  # raises if the broker refused the message
    return len(futures)


def letter_record(offset: int, letter: DeadLetter, with_payload: bool = False) -> dict[str, Any]:
    """One letter as a JSON-ready dict: ``dlq_offset`` plus its fields."""
    record: dict[str, Any] = {"dlq_offset": offset}
    for name in letter._options.fields:
        if name != "original_b64" or with_payload:
            record[name] = getattr(letter, name)
    return record


def letter_json(offset: int, letter: DeadLetter, with_payload: bool = False) -> str:
    return json.dumps(letter_record(offset, letter, with_payload), separators=(",", ":"))


def format_table(letters: Iterable[tuple[int, DeadLetter]], message_width: int = 80) -> list[str]:
    """Aligned text lines: offset, time (UTC), source topic/partition@offset, code, message."""
    rows = [("OFFSET", "TIME (UTC)", "SOURCE", "CODE", "MESSAGE")]
    for offset, letter in letters:
        when = datetime.fromtimestamp(letter.failed_at, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        message = " ".join(letter.message.split())
        if len(message) > message_width:
            message = message[: message_width - 1] + "…"
        source = f"{letter.source_topic}/{letter.partition}@{letter.offset}"
        rows.append((str(offset), when, source, letter.error_code, message))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = []
    for row in rows:
        cells = [row[0].rjust(widths[0])] + [row[i].ljust(widths[i]) for i in range(1, 4)]
        lines.append("  ".join([*cells, row[4]]).rstrip())
    return lines

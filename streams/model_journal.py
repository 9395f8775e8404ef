"""The model registry's durable copy for the embedded broker.

The embedded broker keeps topics in memory, so after ``visearch run`` stops
and starts again the models topic is empty and a switched deployment would
silently fall back to ``VISEARCH_MODEL_DIR``. With the embedded broker the
API process therefore appends every applied ModelChanged record to
``<data_dir>/models/registry.jsonl`` and republishes the file into the fresh
broker at start, before anything reads the topic. A real Kafka cluster keeps
the topic itself and needs none of this.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from streams.publisher import EventPublisher
from streams.schemas import ModelChanged, SchemaError, decode, encode
from streams.settings import Settings

log = logging.getLogger(__name__)


def journal_path(settings: Settings) -> Path:
    return settings.data_dir / "models" / "registry.jsonl"


def append_to_journal(path: Path, event: ModelChanged) -> None:
    """One JSON line per applied event, fsynced: a restart must not forget a switch."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("ab") as handle:
        handle.write(encode(event) + b"\n")
        handle.flush()
        os.fsync(handle.fileno())


def republish_journal(settings: Settings, publisher: EventPublisher) -> int:
    """Publish the journal's events into an empty models topic; returns how many."""
    path = journal_path(settings)
    if not path.exists():
        return 0
    count = 0
    for number, line in enumerate(path.read_bytes().splitlines(), 1):
        try:
            event = decode(ModelChanged, line)
        except SchemaError as exc:  # a torn last line after a crash
            log.warning("%s:%d skipped: %s", path, number, exc)
            continue
        publisher.publish(settings.topics.models, event.version, event)
        count += 1
    publisher.flush()
    return count

"""The documented examples, published as a backend team would: with confluent-kafka (not the
service's kafka-python), to the real broker. Each is indexed, applied or dead-lettered as
docs/backends.md says."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from streams.dead_letters import read_dead_letters
from streams.event_contract import EXAMPLES
from visearch.local.stack import LocalStack

pytestmark = pytest.mark.integration
TIMEOUT_S = 60.0


def _publish(producer: Producer, topic: str, record: dict[str, Any]) -> None:
    """Key = image id (so an image's events share a partition), value = the JSON record."""
    key = record.get("image_id", "").encode() or None
    producer.produce(topic, key=key, value=json.dumps(record).encode())
    assert producer.flush(10) == 0, "the broker did not acknowledge"


def _found(stack: LocalStack, photo: bytes, image_id: str) -> bool:
    assert stack.search is not None
    return image_id in [hit.image_id for hit in stack.search.search_bytes(photo, 5).hits]


def test_documented_examples_published_with_confluent_kafka(
    stack: LocalStack, photo_paths: list[Path]
) -> None:
    settings, topics = stack.settings, stack.settings.topics
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    photo = photo_paths[7].read_bytes()
    now = time.time()

    # An upload as documented, with the image inline instead of at a URI.
    upload = {k: v for k, v in EXAMPLES["ImageUploaded"].items() if k != "uri"}
    upload |= {
        "image_id": "contract-1",
        "uploaded_at": now,
        "image_b64": base64.b64encode(photo).decode(),
    }
    _publish(producer, topics.uploads, upload)
    assert stack.wait_searchable(["contract-1"], TIMEOUT_S) == set()
    assert _found(stack, photo, "contract-1")

    # The documented update (made private): gone from results.
    update = EXAMPLES["ImageUpdated"] | {"image_id": "contract-1", "updated_at": now + 1}
    _publish(producer, topics.updates, update)
    deadline = time.monotonic() + TIMEOUT_S
    while _found(stack, photo, "contract-1"):
        assert time.monotonic() < deadline, "the private image is still returned"
        time.sleep(0.05)

    # A record of a newer schema version and one with an unknown field: dead letters
    # with the documented codes, the original bytes kept for a replay.
    before = len(read_dead_letters(settings, idle_s=0.5))
    newer = upload | {"image_id": "contract-2", "schema_version": 2}
    extra = upload | {"image_id": "contract-3", "colour": "red"}
    _publish(producer, topics.uploads, newer)
    _publish(producer, topics.uploads, extra)
    deadline = time.monotonic() + TIMEOUT_S
    letters: list[Any] = []
    while len(letters) < 2:
        assert time.monotonic() < deadline, letters
        letters = [letter for _, letter in read_dead_letters(settings, before, idle_s=0.5)]
    codes = {
        json.loads(base64.b64decode(d.original_b64))["image_id"]: d.error_code for d in letters
    }
    assert codes == {"contract-2": "unknown_schema_version", "contract-3": "unknown_field"}
    assert stack.wait_searchable(["contract-2", "contract-3"], 1.0) == {"contract-2", "contract-3"}

"""Dead letters on the real broker: listed with exact offsets, replayed selectively.

The tests of this module share one stack and run in order: bad events are
published once, one at a time, so that each dead letter's offset is known; the
last test replays the ``missing_file`` letters after the files appear.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from streams.dead_letters import read_dead_letters, select, summarize
from streams.image_source import file_uri
from streams.schemas import ImageUploaded, encode
from streams.settings import Settings
from visearch.catalog.store import StoredImage
from visearch.local.stack import LocalStack, settings_env

pytestmark = pytest.mark.integration
TIMEOUT_S = 90.0
CODES = ["not_json", "unknown_schema_version", "missing_file", "invalid_value", "missing_file"]
LATE_IDS = ["late-1", "late-2"]


@dataclass(frozen=True)
class BadEvent:
    topic: str
    key: bytes
    value: bytes


@pytest.fixture(scope="module")
def bad_events(stack: LocalStack) -> list[BadEvent]:
    """Five bad events, published one at a time: dead letter i is at offset i."""
    assert stack.publisher is not None
    names = stack.settings.topics
    now = time.time()
    wrong_version = ImageUploaded(
        image_id="future-1", owner_id="t", uploaded_at=now, image_b64="AAAA", schema_version=99
    )

    def missing(image_id: str) -> bytes:
        uri = file_uri(stack.store.path_of(image_id))
        return encode(ImageUploaded(image_id=image_id, owner_id="t", uploaded_at=now, uri=uri))

    bad_update = json.dumps({"image_id": "x-1", "action": "explode", "updated_at": now}).encode()
    events = [
        BadEvent(names.uploads, b"broken", b'{"image_id": "broken-1", '),
        BadEvent(names.uploads, b"future-1", encode(wrong_version)),
        BadEvent(names.uploads, b"late-1", missing("late-1")),
        BadEvent(names.updates, b"x-1", bad_update),
        BadEvent(names.uploads, b"late-2", missing("late-2")),
    ]
    for offset, event in enumerate(events):
        stack.publisher.publish_raw(event.topic, event.key, event.value)
        stack.publisher.flush()
        deadline = time.monotonic() + TIMEOUT_S
        while not read_dead_letters(stack.settings, from_offset=offset, idle_s=0.3):
            stack.check_alive()
            assert time.monotonic() < deadline, f"no dead letter for event {offset}"
    return events


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    completed = subprocess.run(
        [sys.executable, "-m", "visearch", "dlq", *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return completed


def test_list_and_summarize_with_exact_offsets(
    stack: LocalStack, bad_events: list[BadEvent]
) -> None:
    letters = read_dead_letters(stack.settings)
    assert [offset for offset, _ in letters] == [0, 1, 2, 3, 4]
    assert [letter.error_code for _, letter in letters] == CODES
    for (_, letter), event in zip(letters, bad_events, strict=True):
        assert letter.source_topic == event.topic
        assert base64.b64decode(letter.original_b64) == event.value
    assert "late-1.img" in letters[2][1].message
    assert summarize(letters) == {
        "missing_file": 2,
        "invalid_value": 1,
        "not_json": 1,
        "unknown_schema_version": 1,
    }
    assert [o for o, _ in read_dead_letters(stack.settings, from_offset=2, limit=2)] == [2, 3]
    assert read_dead_letters(stack.settings, from_offset=5, idle_s=0.5) == []
    assert [o for o, _ in select(letters, ["missing_file"])] == [2, 4]


def test_cli_list_json(stack: LocalStack, bad_events: list[BadEvent]) -> None:
    out = _cli(stack.settings, "list", "--json").stdout.splitlines()
    records = [json.loads(line) for line in out]
    assert [r["dlq_offset"] for r in records] == [0, 1, 2, 3, 4]
    assert [r["error_code"] for r in records] == CODES
    assert all("original_b64" not in r for r in records)
    assert records[3]["source_topic"] == stack.settings.topics.updates

    out = _cli(
        stack.settings, "list", "--json", "--with-payload", "--code", "missing_file", "--limit", "1"
    ).stdout.splitlines()
    assert len(out) == 1
    record = json.loads(out[0])
    assert record["dlq_offset"] == 2
    assert base64.b64decode(record["original_b64"]) == bad_events[2].value

    table = _cli(stack.settings, "list", "--from-offset", "3").stdout.splitlines()
    assert len(table) == 4  # header, offsets 3 and 4, summary
    assert "invalid_value" in table[1] and "missing_file" in table[2]
    assert table[-1].endswith("next offset 5")


def test_replay_missing_files_only_once_they_exist(
    stack: LocalStack, bad_events: list[BadEvent], photo_paths: list[Path], read_topic
) -> None:
    names = stack.settings.topics
    uploads_before = read_topic(stack.settings, names.uploads, stack.settings.upload_partitions)

    dry_run = _cli(stack.settings, "replay", "--code", "missing_file").stdout
    assert "would replay 2 dead letters" in dry_run
    uploads = read_topic(stack.settings, names.uploads, stack.settings.upload_partitions)
    assert sorted(uploads) == sorted(uploads_before)  # nothing published without --yes

    for image_id, path in zip(LATE_IDS, photo_paths[:2], strict=True):
        stack.store.put(StoredImage(image_id, "t", False, time.time()), path.read_bytes())
    report = json.loads(_cli(stack.settings, "replay", "--code", "missing_file", "--yes").stdout)
    assert report == {
        "replayed": 2,
        "skipped": 0,
        "by_code": {"missing_file": 2},
        "next_offset": 5,
    }
    assert stack.wait_searchable(LATE_IDS, TIMEOUT_S) == set()

    # Only the missing_file letters went back to their topic, once each.
    uploads = read_topic(stack.settings, names.uploads, stack.settings.upload_partitions)
    assert len(uploads) == len(uploads_before) + 2
    for event in bad_events:
        expected = 2 if event.key in (b"late-1", b"late-2") else 1
        if event.topic == names.uploads:
            assert uploads.count(event.value) == expected, event.key
    updates = read_topic(stack.settings, names.updates, stack.settings.update_partitions)
    assert updates.count(bad_events[3].value) == 1
    # ... and the replayed ones succeeded: no new dead letter.
    assert [o for o, _ in read_dead_letters(stack.settings)] == [0, 1, 2, 3, 4]

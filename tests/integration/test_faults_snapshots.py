"""Snapshot faults on the real broker: a full disk, and corrupt snapshot files.

Disk full is a real ENOSPC from the kernel, not a mocked exception: the
snapshot's temporary file is made a symlink to ``/dev/full``, whose writes
fail with ENOSPC (a small tmpfs would need mount rights; a read-only
directory does not stop root, which these tests may run as).

The tests of this module share one stack and run in order.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from index.partition import Partition
from index.shard import IndexShard
from index.snapshot import SnapshotError, load_snapshot, snapshot_path
from visearch.local.stack import LocalStack
from visearch.processes.shards import start_shard

pytestmark = pytest.mark.integration
TIMEOUT_S = 90.0
STACK_SETTINGS = {"snapshot_interval_s": 0.2}


def _wait(condition: Callable[[], bool], what: str, timeout_s: float = TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _snapshot_dir(stack: LocalStack) -> Path:
    assert stack.search is not None
    return stack.settings.data_dir / "index" / stack.search.encoder.version


def _load(stack: LocalStack, path: Path) -> tuple[int, int]:
    """(offset, images) of a snapshot file, loaded into a fresh partition."""
    shard = stack.shards[0]
    part = Partition(shard.dim)
    info = load_snapshot(path, part, shard.model_version)
    return info.offset, len(part)


def _images_if_valid(stack: LocalStack, path: Path) -> int:
    """Images in a snapshot file, 0 while it is still corrupt."""
    try:
        return _load(stack, path)[1]
    except SnapshotError:
        return 0


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


@pytest.fixture(scope="module")
def ingested(stack: LocalStack, photo_paths: list[Path], publish) -> list[str]:
    """20 photos searchable and every changed partition snapshotted."""
    ids = publish(stack, photo_paths[:20], "snap")
    assert stack.wait_searchable(ids, TIMEOUT_S) == set()
    shard = stack.shards[0]
    _wait(
        lambda: all(
            snapshot_path(_snapshot_dir(stack), p).exists()
            and _load(stack, snapshot_path(_snapshot_dir(stack), p))[0] == offset
            for p, offset in shard.consumed_offsets.items()
        ),
        "snapshots at the consumed offsets",
    )
    return ids


def test_disk_full_keeps_the_previous_snapshot(
    stack: LocalStack, ingested: list[str], photo_paths: list[Path], publish, caplog
) -> None:
    shard, consumer = stack.shards[0], stack.consumers[0]
    directory = _snapshot_dir(stack)
    consumer.snapshot_interval_s = 3600.0  # the test decides when snapshots happen
    time.sleep(0.5)  # let an interval already running finish
    before = {p: snapshot_path(directory, p).read_bytes() for p in shard.partitions}
    offsets = {p: _load(stack, snapshot_path(directory, p))[0] for p in shard.partitions}

    more = publish(stack, photo_paths[20:30], "snap", 20)
    assert stack.wait_searchable(more, TIMEOUT_S) == set()
    changed = [p for p in before if shard.consumed_offsets.get(p, 0) != offsets[p]]
    assert changed, "the new photos changed no partition"
    for partition in changed:
        _tmp_path(snapshot_path(directory, partition)).symlink_to("/dev/full")

    with pytest.raises(OSError) as info:
        shard.snapshot()
    assert info.value.errno == errno.ENOSPC
    for partition, data in before.items():
        path = snapshot_path(directory, partition)
        assert path.read_bytes() == data, f"partition {partition}'s snapshot changed"
        assert not _tmp_path(path).exists() and not _tmp_path(path).is_symlink()
    # Still due, so the next snapshot writes them; the consumer reports, never dies.
    for partition in changed:
        _tmp_path(snapshot_path(directory, partition)).symlink_to("/dev/full")
    with caplog.at_level(logging.ERROR, logger="index.shard"):
        consumer.snapshot_interval_s = 0.2
        _wait(lambda: consumer.snapshot_failures >= 1, "a failed snapshot in the consumer")
        assert consumer.is_alive() and consumer.error is None
        assert any("previous snapshots kept" in r.getMessage() for r in caplog.records)
    _wait(
        lambda: all(
            _load(stack, snapshot_path(directory, p))[0] == shard.consumed_offsets[p]
            for p in changed
        ),
        "snapshots at the new offsets once space is back",
    )
    assert sum(_load(stack, snapshot_path(directory, p))[1] for p in before) == 30
    latest = publish(stack, photo_paths[30:32], "snap", 30)
    assert stack.wait_searchable(latest, TIMEOUT_S) == set()  # ingestion never stopped


def test_corrupt_snapshots_are_detected_and_rebuilt_from_the_log(
    stack: LocalStack, ingested: list[str], caplog
) -> None:
    assert stack.search is not None
    old_shard, consumer = stack.shards[0], stack.consumers[0]
    consumer.stop()
    consumer.join(10)  # writes a last snapshot
    assert not consumer.is_alive()
    total = len(old_shard)
    directory = _snapshot_dir(stack)
    populated = sorted(p for p, part in old_shard.partitions.items() if len(part))
    assert len(populated) >= 3
    flipped, truncated, emptied = (snapshot_path(directory, p) for p in populated[:3])
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit inside the faiss blob
    flipped.write_bytes(bytes(data))
    truncated.write_bytes(truncated.read_bytes()[:-100])
    emptied.write_bytes(b"")
    for path in (flipped, truncated, emptied):
        with pytest.raises(SnapshotError):
            _load(stack, path)

    with caplog.at_level(logging.WARNING, logger="index.shard"):
        shard, new_consumer = start_shard(
            stack.settings, old_shard.dim, old_shard.model_version, shard_id=0
        )
    try:
        rebuilt = set(populated[:3])
        assert set(shard.recovered_offsets) == set(old_shard.partitions) - rebuilt
        messages = [r.getMessage() for r in caplog.records]
        assert sum("rebuilding partition" in m for m in messages) == 3
        assert any("fails its checksum" in m for m in messages)
        _wait(lambda: len(shard) == total, "the rebuilt partitions to catch up")
        _assert_same_index(shard, old_shard, [image.image_id for image in stack.store])
        _wait(
            lambda: all(_images_if_valid(stack, snapshot_path(directory, p)) for p in rebuilt),
            "valid snapshots replacing the corrupt ones",
        )
    finally:
        new_consumer.stop()
        new_consumer.join(10)


def _assert_same_index(shard: IndexShard, reference: IndexShard, image_ids: list[str]) -> None:
    """Same images per partition, and each image's vector finds itself first, once."""
    for partition, part in reference.partitions.items():
        assert len(shard.partitions[partition]) == len(part)
    assert len(image_ids) == len(reference)
    for image_id in image_ids:
        vector = reference.vector_of(image_id)
        assert vector is not None
        hits = shard.search(vector, 3)
        assert hits[0].image_id == image_id
        assert len({hit.image_id for hit in hits}) == len(hits)


@pytest.fixture(autouse=True)
def _no_symlinks_left(stack: LocalStack):
    yield
    for link in _snapshot_dir(stack).glob(".*.tmp"):
        if link.is_symlink():
            os.unlink(link)

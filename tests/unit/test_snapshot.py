"""Partition snapshots: identical content after a round trip, refusal of anything suspect."""

import json
import os

import numpy as np
import pytest

from index.partition import Partition, WriteResult
from index.snapshot import (
    MAGIC,
    SnapshotError,
    SnapshotInfo,
    load_snapshot,
    save_snapshot,
    snapshot_path,
)

DIM = 16
MODEL = "m1"


def _unit(rng, n):
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _filled(factory="Flat", n=400, seed=0):
    rng = np.random.default_rng(seed)
    part = Partition(DIM, factory, ann_threshold=200, background=False)
    for i, vector in enumerate(_unit(rng, n)):
        tiles = _unit(rng, 2) if i % 10 == 0 else np.empty((0, DIM), dtype=np.float32)
        part.upsert(f"img-{i}", np.vstack([vector, tiles]), 1.0, private=i % 17 == 0)
    for i in range(0, n, 13):
        part.update(f"img-{i}", "delete", 2.0)
    for i in range(3, n, 29):
        part.update(f"img-{i}", "flag", 2.0)
    part.update("later", "delete", 5.0)  # an update for an image not indexed yet
    return part


def _queries(seed=99):
    return _unit(np.random.default_rng(seed), 12)


def _layout(path):
    """(header, offset of the index blob, its length, offset of the state blob)."""
    data = path.read_bytes()
    header_len = int.from_bytes(data[len(MAGIC) : len(MAGIC) + 8], "little")
    start = len(MAGIC) + 8
    header = json.loads(data[start : start + header_len])
    blob_start = start + header_len
    return header, blob_start, header["index_bytes"], blob_start + header["index_bytes"]


@pytest.mark.parametrize("factory", ["Flat", "HNSW32"])
def test_save_load_gives_identical_results(tmp_path, factory):
    part = _filled(factory)
    assert part.kind == ("exact" if factory == "Flat" else "ann")
    info = SnapshotInfo(partition=3, offset=1234, epoch="epoch-a", model_version=MODEL)
    path = save_snapshot(tmp_path, part, info)
    assert path == snapshot_path(tmp_path, 3)
    assert path.name == "partition-0003.snap"
    assert path.read_bytes().startswith(MAGIC)

    loaded = Partition(DIM, factory)
    assert load_snapshot(path, loaded, MODEL) == info
    assert loaded.kind == part.kind
    assert len(loaded) == len(part)
    assert loaded.memory().rows == part.memory().rows
    queries = _queries()
    assert loaded.search(queries, 10) == part.search(queries, 10)
    for i in range(0, 400, 7):
        image_id = f"img-{i}"
        assert loaded.state_of(image_id) == part.state_of(image_id)
        assert loaded.is_visible(image_id) == part.is_visible(image_id)
    # Remembered updates survive: the not-yet-indexed image stays deleted.
    assert loaded.upsert("later", _queries()[0], 4.0) is WriteResult.SUPERSEDED
    # And the loaded partition keeps working.
    assert loaded.upsert("new", _queries()[1], 9.0)
    assert loaded.search(_queries()[1], 1)[0][0].image_id == "new"


def test_snapshot_info_round_trip(tmp_path):
    part = _filled(n=30)
    for info in (
        SnapshotInfo(partition=0, offset=0, epoch="", model_version=MODEL),
        SnapshotInfo(partition=12, offset=2**40, epoch="Zx1-topic_id==", model_version=MODEL),
    ):
        path = save_snapshot(tmp_path, part, info)
        assert load_snapshot(path, Partition(DIM, "Flat"), MODEL) == info


def test_save_replaces_the_previous_snapshot(tmp_path):
    part = _filled(n=50)
    save_snapshot(tmp_path, part, SnapshotInfo(0, 10, "e", MODEL))
    part.upsert("extra", _queries()[0], 9.0)
    path = save_snapshot(tmp_path, part, SnapshotInfo(0, 11, "e", MODEL))
    loaded = Partition(DIM, "Flat")
    assert load_snapshot(path, loaded, MODEL).offset == 11
    assert "extra" in loaded
    assert sorted(p.name for p in tmp_path.iterdir()) == ["partition-0000.snap"]


def test_save_creates_the_directory(tmp_path):
    directory = tmp_path / "a" / "b"
    path = save_snapshot(directory, _filled(n=10), SnapshotInfo(1, 5, "e", MODEL))
    assert path.parent == directory
    assert path.exists()


def _save(tmp_path, part=None):
    part = part or _filled(n=100)
    return save_snapshot(tmp_path, part, SnapshotInfo(0, 77, "e", MODEL)), part


@pytest.mark.parametrize("where", [0, 1, "middle", -1])
def test_corrupt_byte_in_the_index_blob_fails_the_checksum(tmp_path, where):
    path, _ = _save(tmp_path)
    _, blob_start, blob_len, _ = _layout(path)
    position = {0: 0, 1: 1, "middle": blob_len // 2, -1: blob_len - 1}[where]
    data = bytearray(path.read_bytes())
    data[blob_start + position] ^= 0x01
    path.write_bytes(bytes(data))
    target = Partition(DIM, "Flat")
    with pytest.raises(SnapshotError, match="checksum"):
        load_snapshot(path, target, MODEL)
    assert len(target) == 0  # nothing was loaded


def test_corrupt_byte_in_the_state_blob_fails_the_checksum(tmp_path):
    path, _ = _save(tmp_path)
    *_, state_start = _layout(path)
    data = bytearray(path.read_bytes())
    data[state_start + 3] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match="checksum"):
        load_snapshot(path, Partition(DIM, "Flat"), MODEL)


@pytest.mark.parametrize("keep", ["one_short", "half", "header_only", "magic_only", "empty"])
def test_truncated_file_is_refused(tmp_path, keep):
    path, _ = _save(tmp_path)
    data = path.read_bytes()
    _, blob_start, _, _ = _layout(path)
    size = {
        "one_short": len(data) - 1,
        "half": len(data) // 2,
        "header_only": blob_start,
        "magic_only": len(MAGIC),
        "empty": 0,
    }[keep]
    path.write_bytes(data[:size])
    with pytest.raises(SnapshotError):
        load_snapshot(path, Partition(DIM, "Flat"), MODEL)


def test_trailing_garbage_is_refused(tmp_path):
    path, _ = _save(tmp_path)
    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(SnapshotError, match="checksum"):
        load_snapshot(path, Partition(DIM, "Flat"), MODEL)


def test_wrong_magic_is_refused(tmp_path):
    path, _ = _save(tmp_path)
    data = bytearray(path.read_bytes())
    data[0:8] = b"VISNAP2\n"
    path.write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match="not a visearch snapshot"):
        load_snapshot(path, Partition(DIM, "Flat"), MODEL)


def test_garbled_header_is_refused(tmp_path):
    path, _ = _save(tmp_path)
    data = bytearray(path.read_bytes())
    data[len(MAGIC) + 8] = ord("#")  # the header's opening brace
    path.write_bytes(bytes(data))
    with pytest.raises(SnapshotError, match="corrupt header"):
        load_snapshot(path, Partition(DIM, "Flat"), MODEL)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(SnapshotError, match="cannot read"):
        load_snapshot(tmp_path / "nope.snap", Partition(DIM, "Flat"), MODEL)


def test_other_model_version_is_refused(tmp_path):
    path, _ = _save(tmp_path)
    target = Partition(DIM, "Flat")
    with pytest.raises(SnapshotError, match="m2"):
        load_snapshot(path, target, "m2")
    assert len(target) == 0


def test_other_dimension_is_refused(tmp_path):
    path, _ = _save(tmp_path)
    with pytest.raises(SnapshotError, match="dims"):
        load_snapshot(path, Partition(DIM * 2, "Flat"), MODEL)


def test_failed_write_leaves_the_previous_snapshot_and_no_temp_file(tmp_path, monkeypatch):
    old_part = _filled(n=120, seed=1)
    path = save_snapshot(tmp_path, old_part, SnapshotInfo(0, 5, "e", MODEL))
    before = path.read_bytes()

    new_part = _filled(n=200, seed=2)
    real_fsync = os.fsync
    failed = []

    def failing_fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp"):
            failed.append(fd)
            raise OSError(28, "No space left on device")
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space left"):
        save_snapshot(tmp_path, new_part, SnapshotInfo(0, 9, "e", MODEL))
    monkeypatch.undo()
    assert failed  # the failure did hit the temporary file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["partition-0000.snap"]
    assert path.read_bytes() == before
    loaded = Partition(DIM, "Flat")
    assert load_snapshot(path, loaded, MODEL).offset == 5
    assert loaded.search(_queries(), 10) == old_part.search(_queries(), 10)


def test_failed_write_of_a_first_snapshot_leaves_nothing(tmp_path, monkeypatch):
    def failing_fsync(fd):
        raise OSError(5, "I/O error")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        save_snapshot(tmp_path, _filled(n=20), SnapshotInfo(4, 1, "e", MODEL))
    assert list(tmp_path.iterdir()) == []

"""Partition snapshots: atomic, checksummed files that recovery can trust.

Layout of ``partition-<p>.snap``::

    MAGIC (8 bytes) | header length (8 bytes, little endian) | header (JSON)
    | index blob (faiss serialization) | state blob (JSON, zlib)

The header holds the consumed offset, the log epoch (the topic's id: a fresh
embedded broker is a new epoch whose offsets restart at 0), the model
version, the blob lengths and a SHA-256 over the other header fields and both
blobs (a flipped digit in the offset would otherwise go unnoticed). Writes go to a
temporary file that is fsynced, renamed over the old snapshot and followed
by an fsync of the directory: a crash or a full disk at any point leaves the
previous snapshot intact. A snapshot whose checksum does not match is
refused with :class:`SnapshotError`, and the caller rebuilds from the log.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass
from pathlib import Path

from index.partition import Partition
from streams.atomic_file import atomic_write_chunks
from streams.errors import VisearchError

MAGIC = b"VISNAP1\n"
FORMAT_VERSION = 1


class SnapshotError(VisearchError, RuntimeError):
    """A snapshot is missing parts, corrupt, or for another model or partition."""


@dataclass(frozen=True)
class SnapshotInfo:
    """Where the log stood when the snapshot was taken."""

    partition: int
    offset: int  # next offset to consume
    epoch: str
    model_version: str


def snapshot_path(directory: Path, partition: int) -> Path:
    return directory / f"partition-{partition:04d}.snap"


def save_snapshot(directory: Path, part: Partition, info: SnapshotInfo) -> Path:
    """Write ``part`` atomically; returns the snapshot's path."""
    blob, state = part.export_state()
    state_blob = zlib.compress(json.dumps(state, separators=(",", ":")).encode(), 1)
    fields = {
        "format": FORMAT_VERSION,
        "partition": info.partition,
        "offset": info.offset,
        "epoch": info.epoch,
        "model_version": info.model_version,
        "dim": part.dim,
        "factory": part.factory,
        "index_bytes": len(blob),
        "state_bytes": len(state_blob),
    }
    header = json.dumps({**fields, "sha256": _checksum(fields, blob, state_blob)}).encode()
    # One writer per partition: the shard's consumer thread.
    return atomic_write_chunks(
        snapshot_path(directory, info.partition),
        (MAGIC, len(header).to_bytes(8, "little"), header, blob, state_blob),
        single_writer=True,
    )


def load_snapshot(path: Path, part: Partition, model_version: str) -> SnapshotInfo:
    """Load ``path`` into ``part``; raises :class:`SnapshotError` if it cannot be trusted."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SnapshotError(f"cannot read {path}: {exc}") from exc
    if not data.startswith(MAGIC) or len(data) < len(MAGIC) + 8:
        raise SnapshotError(f"{path} is not a visearch snapshot")
    header_len = int.from_bytes(data[len(MAGIC) : len(MAGIC) + 8], "little")
    start = len(MAGIC) + 8
    try:
        header = json.loads(data[start : start + header_len])
        index_end = start + header_len + int(header["index_bytes"])
        blob = data[start + header_len : index_end]
        state_blob = data[index_end : index_end + int(header["state_bytes"])]
    except (ValueError, KeyError, TypeError) as exc:
        raise SnapshotError(f"{path} has a corrupt header: {exc}") from exc
    fields = {key: value for key, value in header.items() if key != "sha256"}
    checksum = _checksum(fields, blob, state_blob)
    if checksum != header.get("sha256") or index_end + len(state_blob) != len(data):
        raise SnapshotError(f"{path} fails its checksum: it is truncated or corrupt")
    if header.get("format") != FORMAT_VERSION:
        raise SnapshotError(f"{path} has format {header.get('format')}, expected {FORMAT_VERSION}")
    if header["model_version"] != model_version or header["dim"] != part.dim:
        raise SnapshotError(
            f"{path} is for model {header['model_version']} ({header['dim']} dims), "
            f"not {model_version} ({part.dim} dims)"
        )
    try:
        state = json.loads(zlib.decompress(state_blob))
        part.import_state(blob, state)
    except (ValueError, zlib.error, RuntimeError) as exc:
        raise SnapshotError(f"{path} cannot be loaded: {exc}") from exc
    return SnapshotInfo(
        partition=int(header["partition"]),
        offset=int(header["offset"]),
        epoch=str(header["epoch"]),
        model_version=str(header["model_version"]),
    )


def _checksum(fields: dict[str, object], blob: bytes, state_blob: bytes) -> str:
    """SHA-256 over the header fields (canonical JSON) and both blobs."""
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode())
    digest.update(blob)
    digest.update(state_blob)
    return digest.hexdigest()

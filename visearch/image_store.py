"""Uploaded images on disk: the durable copy behind the in-memory embedded broker.

The embedded broker forgets everything when it stops, so the image store is
what makes "nothing a user uploaded is lost by a restart" true in the default
set-up: on start, ``visearch run`` replays every stored image as an upload
event into the fresh broker. Each image is two files, written atomically::

    <root>/<image_id>.img        the bytes as uploaded
    <root>/<image_id>.json       owner, private flag, upload time
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from streams.schemas import ID_PATTERN


class UnknownImageError(KeyError):
    """No stored image has this id."""


@dataclass(frozen=True)
class StoredImage:
    """Metadata of one stored image."""

    image_id: str
    owner_id: str
    private: bool
    uploaded_at: float


def new_image_id() -> str:
    """A fresh random id for an upload that did not bring one."""
    return uuid.uuid4().hex


class ImageStore:
    """Reads and writes image bytes and metadata under one directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path_of(self, image_id: str) -> Path:
        """Where the bytes of ``image_id`` live; the id is checked first."""
        if not ID_PATTERN.fullmatch(image_id):
            raise UnknownImageError(image_id)
        return self.root / f"{image_id}.img"

    def put(self, image: StoredImage, data: bytes) -> Path:
        """Store bytes then metadata (metadata last: its presence means complete)."""
        path = self.path_of(image.image_id)
        _atomic_write(path, data)
        _atomic_write(path.with_suffix(".json"), json.dumps(asdict(image)).encode())
        return path

    def get(self, image_id: str) -> bytes:
        """The stored bytes; raises :class:`UnknownImageError`."""
        path = self.path_of(image_id)
        if not path.with_suffix(".json").is_file():
            raise UnknownImageError(image_id)
        return path.read_bytes()

    def metadata(self, image_id: str) -> StoredImage:
        """The stored metadata; raises :class:`UnknownImageError`."""
        meta = self.path_of(image_id).with_suffix(".json")
        try:
            return StoredImage(**json.loads(meta.read_text()))
        except FileNotFoundError as exc:
            raise UnknownImageError(image_id) from exc

    def set_private(self, image_id: str, private: bool) -> StoredImage:
        """Change the stored private flag; raises :class:`UnknownImageError`."""
        current = self.metadata(image_id)
        updated = StoredImage(current.image_id, current.owner_id, private, current.uploaded_at)
        _atomic_write(
            self.path_of(image_id).with_suffix(".json"), json.dumps(asdict(updated)).encode()
        )
        return updated

    def delete(self, image_id: str) -> None:
        """Remove an image for good (metadata first: without it the image does not exist)."""
        path = self.path_of(image_id)
        meta = path.with_suffix(".json")
        if not meta.is_file():
            raise UnknownImageError(image_id)
        meta.unlink()
        path.unlink(missing_ok=True)

    def __contains__(self, image_id: str) -> bool:
        return (
            ID_PATTERN.fullmatch(image_id) is not None
            and (self.root / f"{image_id}.json").is_file()
        )

    def __iter__(self) -> Iterator[StoredImage]:
        for meta in sorted(self.root.glob("*.json")):
            yield StoredImage(**json.loads(meta.read_text()))


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)

"""Uploaded images on disk: the durable copy behind the in-memory embedded broker.

The embedded broker forgets everything when it stops, so the image store is
what makes "nothing a user uploaded is lost by a restart" true in the default
set-up: on start, ``visearch run`` replays every stored image as an upload
event into the fresh broker. Each image is two files, written atomically::

    <root>/<image_id>.img        the bytes as uploaded
    <root>/<image_id>.json       owner, private flag, upload time, tags, origin

plus the denylist journal of :mod:`visearch.catalog.hidden` (deleted, private
and flagged ids), which searches check so that an acknowledged update holds
before the index has applied it. Every change writes the denylist first:
a crash half-way leaves the image hidden, never shown.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from streams.errors import VisearchError
from streams.schemas import ID_PATTERN
from visearch.catalog.hidden import HiddenImages

# Where a stored image came from: the API (or ``visearch ingest``), whose updates
# go through the store first; or the log, an inline upload a backend published
# to Kafka that the worker kept (its updates may reach only the log).
ORIGIN_API = "api"
ORIGIN_LOG = "log"


# How long a delete from the log is remembered for uploads that reach a worker
# after it (the other topic, another worker): Kafka's default retention, past
# which no upload older than the delete can be read again, even by a replay.
LOG_DELETE_HORIZON_S = 7 * 24 * 3600.0
# Notes written between two sweeps of those older than the horizon.
LOG_DELETE_SWEEP_EVERY = 1024


class UnknownImageError(VisearchError, KeyError):
    """No stored image has this id."""


@dataclass(frozen=True)
class StoredImage:
    """Metadata of one stored image."""

    image_id: str
    owner_id: str
    private: bool
    uploaded_at: float
    # What filtered searches select on; a list in the metadata JSON.
    tags: tuple[str, ...] = ()
    origin: str = ORIGIN_API
    # Event times of the last private/public, flag/unflag and tags update applied
    # from the log (origin "log" only): updates there arrive in any order, and
    # the newest must win as it does in the index.
    private_at: float = 0.0
    flagged_at: float = 0.0
    tags_at: float = 0.0


def new_image_id() -> str:
    """A fresh random id for an upload that did not bring one."""
    return uuid.uuid4().hex


class ImageStore:
    """Reads and writes image bytes and metadata under one directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.hidden = HiddenImages(root)
        # Deletes read from the log, one small file each (see note_log_delete).
        self._log_deletes = root / ".log-deletes"
        self._notes_since_sweep = 0

    def path_of(self, image_id: str) -> Path:
        """Where the bytes of ``image_id`` live; the id is checked first."""
        if not ID_PATTERN.fullmatch(image_id):
            raise UnknownImageError(image_id)
        return self.root / f"{image_id}.img"

    def put(self, image: StoredImage, data: bytes) -> Path:
        """Store bytes then metadata (metadata last: its presence means complete).

        An upload ends a deletion and sets the private bit; a flag stays
        (see :func:`visearch.catalog.hidden.next_bits`).
        """
        path = self.path_of(image.image_id)
        self.hidden.apply(image.image_id, "upload_private" if image.private else "upload")
        _atomic_write(path, data)
        self._write_metadata(image)
        return path

    def _meta_path(self, image_id: str) -> Path:
        """Where the metadata of ``image_id`` lives; its presence means the image exists."""
        return self.path_of(image_id).with_suffix(".json")

    def _write_metadata(self, image: StoredImage) -> None:
        _atomic_write(self._meta_path(image.image_id), json.dumps(asdict(image)).encode())

    def get(self, image_id: str) -> bytes:
        """The stored bytes; raises :class:`UnknownImageError`."""
        if image_id not in self:
            raise UnknownImageError(image_id)
        return self.path_of(image_id).read_bytes()

    def metadata(self, image_id: str) -> StoredImage:
        """The stored metadata; raises :class:`UnknownImageError`."""
        try:
            return _stored(json.loads(self._meta_path(image_id).read_text()))
        except FileNotFoundError as exc:
            raise UnknownImageError(image_id) from exc

    def set_private(self, image_id: str, private: bool, at: float | None = None) -> StoredImage:
        """Change the stored private flag, and with ``at`` stamp the event time that
        set it (a log update of a kept copy); raises :class:`UnknownImageError`."""
        stored = self.metadata(image_id)
        updated = replace(stored, private=private, private_at=_stamp(stored.private_at, at))
        self.hidden.apply(image_id, "private" if private else "public")
        self._write_metadata(updated)
        return updated

    def set_tags(self, image_id: str, tags: list[str], at: float | None = None) -> StoredImage:
        """Replace the stored tags (stamped with ``at`` when given); raises
        :class:`UnknownImageError`."""
        stored = self.metadata(image_id)
        updated = replace(stored, tags=tuple(tags), tags_at=_stamp(stored.tags_at, at))
        self._write_metadata(updated)
        return updated

    def set_flagged(self, image_id: str, flagged: bool, at: float | None = None) -> None:
        """Flag (hide as inappropriate) or unflag, and with ``at`` stamp the event time
        in the metadata; raises :class:`UnknownImageError`."""
        stored = self.metadata(image_id) if at is not None else None
        if stored is None and image_id not in self:
            raise UnknownImageError(image_id)
        self.hidden.apply(image_id, "flag" if flagged else "unflag")  # the denylist first
        if stored is not None:
            self._write_metadata(replace(stored, flagged_at=_stamp(stored.flagged_at, at)))

    def visible(self, image_id: str) -> bool:
        """False once a delete, make-private or flag of ``image_id`` went through the store.

        Unknown ids are visible: images published to Kafka by backends never
        pass through the store. The search service's last check.
        """
        return self.hidden.visible(image_id)

    def delete(self, image_id: str) -> None:
        """Remove an image for good (metadata first: without it the image does not exist).

        A tombstone stays in the denylist until the id is uploaded again.
        """
        if image_id not in self:
            raise UnknownImageError(image_id)
        self.hidden.apply(image_id, "delete")
        self._meta_path(image_id).unlink()
        self.path_of(image_id).unlink(missing_ok=True)

    def note_log_delete(self, image_id: str, at: float) -> None:
        """Remember that the log deleted ``image_id`` at event time ``at`` (the newest
        time wins), for every worker that shares this store.

        Uploads and deletes travel on different topics, so with several
        workers the delete can be read by one before another keeps the upload it
        deletes; in memory, only the worker that read the delete would know.
        Notes older than :data:`LOG_DELETE_HORIZON_S` are swept now and then.
        (Two workers noting deletes of one image at once may keep the older
        time: the later upload check then judges by it.)
        """
        current = self.log_deleted_at(image_id)
        if current is not None and current >= at:
            return
        self._log_deletes.mkdir(exist_ok=True)
        _atomic_write(self._log_delete_path(image_id), repr(float(at)).encode())
        self._notes_since_sweep += 1
        if self._notes_since_sweep >= LOG_DELETE_SWEEP_EVERY:
            self.sweep_log_deletes()

    def log_deleted_at(self, image_id: str) -> float | None:
        """The newest event time at which the log deleted ``image_id``, if noted."""
        try:
            return float(self._log_delete_path(image_id).read_text())
        except (FileNotFoundError, ValueError):
            return None

    def sweep_log_deletes(self, now: float | None = None) -> int:
        """Forget delete notes older than the horizon; returns how many went."""
        self._notes_since_sweep = 0
        oldest = (time.time() if now is None else now) - LOG_DELETE_HORIZON_S
        swept = 0
        for note in self._log_deletes.glob("*") if self._log_deletes.is_dir() else ():
            try:
                if note.stat().st_mtime < oldest:
                    note.unlink()
                    swept += 1
            except FileNotFoundError:  # another worker swept it
                continue
        return swept

    def _log_delete_path(self, image_id: str) -> Path:
        return self._log_deletes / self.path_of(image_id).stem

    def __contains__(self, image_id: str) -> bool:
        return ID_PATTERN.fullmatch(image_id) is not None and self._meta_path(image_id).is_file()

    def __iter__(self) -> Iterator[StoredImage]:
        for meta in sorted(self.root.glob("*.json")):
            yield _stored(json.loads(meta.read_text()))


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    tmp.replace(path)


def _stamp(current: float, at: float | None) -> float:
    """A register's event time after a write: ``at`` when the write has one."""
    return current if at is None else at


def _stored(fields: dict[str, object]) -> StoredImage:
    """Metadata as read back (JSON has lists, not tuples; old files have no tags)."""
    return StoredImage(**{**fields, "tags": tuple(fields.get("tags", ()))})  # type: ignore[arg-type]

"""The image store's denylist: ids it knows to be deleted, private or flagged.

Why it exists: an acknowledged delete, make-private or flag reaches the index
from the log a few milliseconds after the API answered 202, and a search in
that window would still find the image. The search service checks every
candidate against this denylist first (``SearchService(visible=...)``), and
the store writes it *before* the update is published, so once an update is
acknowledged no search that starts afterwards can return the image.

It is a denylist, not an allowlist: images that backends publish straight to
Kafka never pass through the store, and they must stay searchable.

One journal file shared by every process that opens the same store
directory (the Helm chart's API replicas share it on a ReadWriteMany volume)::

    <store>/.hidden.log     one line per change: "<image id> <bits>\\n", the id's full
                            new state (1 deleted, 2 private, 4 flagged); last line wins
    <store>/.hidden.lock    flock for writers: one append, or a compaction, at a time

Readers keep the state in memory (a dict of hidden ids, loaded at start) and
follow the journal: a check costs a dict lookup, plus an ``os.stat`` of the
journal at most every :data:`REFRESH_INTERVAL_S` (then the new lines are read,
or the whole file when a compaction replaced it). A writer waits that long
after its append is durable before it returns, so a search that starts after
the acknowledgement refreshes before it checks anything, in this process or
in another one on the same file system. On NFS, mount the volume with
``actimeo=0`` (or ``noac``) so that the stat sees other hosts' appends.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from streams.atomic_file import atomic_write_chunks, fsync_directory

DELETED, PRIVATE, FLAGGED = 1, 2, 4
# What the store can do to an image: the visibility actions of ImageUpdated plus uploads.
ACTIONS = ("upload", "upload_private", "delete", "private", "public", "flag", "unflag")
REFRESH_INTERVAL_S = 0.002
# A journal this many times longer than the live denylist is compacted when opened.
COMPACT_FACTOR = 4
COMPACT_MIN_LINES = 1000


def next_bits(bits: int, action: str) -> int:
    """An image's hidden bits after ``action`` (one of :data:`ACTIONS`).

    The index's rules (``index.visibility``): an upload ends a deletion and
    sets the private bit; a flag is a register of its own that outlives
    deletes and uploads, so re-uploading is no way around moderation.
    """
    if action in ("upload", "upload_private"):
        return (bits & FLAGGED) | (PRIVATE if action == "upload_private" else 0)
    if action == "delete":
        return bits | DELETED
    if action in ("private", "public"):
        return bits | PRIVATE if action == "private" else bits & ~PRIVATE
    if action in ("flag", "unflag"):
        return bits | FLAGGED if action == "flag" else bits & ~FLAGGED
    raise ValueError(f"unknown action {action!r}")


class HiddenImages:
    """Follows the denylist journal under ``root``; writers change it, readers check it."""

    def __init__(self, root: Path) -> None:
        self.path = root / ".hidden.log"
        self.lock_path = root / ".hidden.lock"
        self._hidden: dict[str, int] = {}
        self._lines = 0  # lines read from the current file (compaction's measure)
        self._inode = -1
        self._offset = 0
        self._checked_at = -float("inf")
        self._lock = threading.Lock()
        with self._lock:
            self._refresh_locked()
        if self._lines > max(COMPACT_MIN_LINES, COMPACT_FACTOR * len(self._hidden)):
            self.compact()

    def __len__(self) -> int:
        return len(self._hidden)

    def visible(self, image_id: str) -> bool:
        """False if the store knows ``image_id`` to be deleted, private or flagged."""
        if time.monotonic() - self._checked_at >= REFRESH_INTERVAL_S:
            with self._lock:
                self._refresh_locked()
        return image_id not in self._hidden

    def state(self, image_id: str) -> int:
        """The id's bits (0: nothing hidden) as of the last refresh."""
        return self._hidden.get(image_id, 0)

    def apply(self, image_id: str, action: str) -> int:
        """Record ``action`` (one of :data:`ACTIONS`) for ``image_id``; returns its bits."""
        return self.change(image_id, lambda bits: next_bits(bits, action))

    def change(self, image_id: str, update: Callable[[int], int]) -> int:
        """Apply ``update`` to the id's bits, durably and for every reader; returns them.

        Serialised with other processes' writers by the lock file, and applied
        to the latest state (the journal is read up to its end first). Returns
        only once every reader's next check is sure to see the change.
        """
        with self._lock:
            self._refresh_locked()
            current = self._hidden.get(image_id, 0)
            if update(current) == current:  # the common public upload: no file touched
                return current
        with self._lock, self._file_lock():
            self._refresh_locked()
            old = self._hidden.get(image_id, 0)
            new = update(old)
            if new == old:
                return new
            created = not self.path.exists()
            with self.path.open("ab") as journal:
                journal.write(f"{image_id} {new}\n".encode())
                journal.flush()
                os.fsync(journal.fileno())
            if created:
                fsync_directory(self.path.parent)
            written = time.monotonic()
            self._refresh_locked()
        time.sleep(max(0.0, written + REFRESH_INTERVAL_S - time.monotonic()))
        return new

    def compact(self) -> None:
        """Rewrite the journal as one line per hidden id (readers notice the new inode)."""
        with self._lock, self._file_lock():
            self._refresh_locked()
            lines = [f"{i} {bits}\n".encode() for i, bits in self._hidden.items()]
            atomic_write_chunks(self.path, lines)
            self._refresh_locked()

    @contextmanager
    def _file_lock(self) -> Iterator[None]:
        with self.lock_path.open("ab") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def _refresh_locked(self) -> None:
        """Read what other writers appended (or the whole file if it was replaced).

        The check time is taken before the stat and published only after the
        new lines are applied: a concurrent check that skips its own refresh
        because of it therefore never reads a state older than that stat.
        """
        started = time.monotonic()
        try:
            status = os.stat(self.path)
        except FileNotFoundError:
            status = None
        if status is not None and (status.st_ino, status.st_size) != (self._inode, self._offset):
            self._read_journal()
        self._checked_at = started

    def _read_journal(self) -> None:
        try:
            journal = self.path.open("rb")
        except FileNotFoundError:
            return
        with journal:
            inode = os.fstat(journal.fileno()).st_ino
            # A new file (first read, or compacted) is read whole into a new dict,
            # swapped in at the end: checks without the lock never see it half built.
            same = inode == self._inode
            hidden = self._hidden if same else {}
            offset = self._offset if same else 0
            journal.seek(offset)
            data = journal.read()
        complete = data[: data.rfind(b"\n") + 1]  # a line being appended is read next time
        for line in complete.splitlines():
            image_id, bits = line.decode().split(" ")
            if int(bits):
                hidden[image_id] = int(bits)
            else:
                hidden.pop(image_id, None)
        self._hidden, self._inode, self._offset = hidden, inode, offset + len(complete)
        self._lines = (self._lines if same else 0) + complete.count(b"\n")

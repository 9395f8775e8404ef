"""The worker's copy of inline uploads that a backend published straight to Kafka.

An ``ImageUploaded`` with ``image_b64`` never passes through the API's store,
so without a copy it has no thumbnail and no bytes for a crop search, and
the embedded broker (in memory) forgets it at a restart. With
``VISEARCH_KEEP_INLINE_UPLOADS`` (on by default) the embedding worker writes
the bytes into the store (origin ``log``) before it publishes their
embedding, and applies the log's updates of those images to the copy:

* a delete removes the bytes, unless an upload newer than the delete is kept;
* private/public, flag/unflag and tags are last-writer-wins by event time,
  per register, as in the index, so a restart's replay of the store brings
  back each image as the log last left it.

Updates and uploads travel on different topics, so a delete can reach a
worker before the upload it deletes, and with several workers sharing the
store the two can reach different workers at the same moment. A delete read
from the log is noted in the store (:meth:`ImageStore.note_log_delete`,
kept for Kafka's default retention) before the copy is looked for, and a kept
upload looks for such a note again after it is written: whichever of the two
workers comes second sees the other's write, so a deleted copy never stays.
"""

from __future__ import annotations

import contextlib
import threading
import zlib

from streams.schemas import ImageUpdated, ImageUploaded
from visearch.catalog.store import ORIGIN_LOG, ImageStore, StoredImage, UnknownImageError

LOCK_STRIPES = 64
REGISTER = {
    "private": "private",
    "public": "private",
    "flag": "flagged",
    "unflag": "flagged",
    "tags": "tags",
}


class InlineUploadKeeper:
    """Keeps inline uploads' bytes in the store and mirrors their updates from the log.

    Both methods are called from worker threads: calls for one image are
    serialised in this process (a lock per stripe of ids); between processes
    the delete notes and the check after each write keep them apart.
    """

    def __init__(self, store: ImageStore) -> None:
        self.store = store
        self._stripes = [threading.Lock() for _ in range(LOCK_STRIPES)]

    def _image_lock(self, image_id: str) -> threading.Lock:
        return self._stripes[zlib.crc32(image_id.encode()) % LOCK_STRIPES]

    def keep(self, event: ImageUploaded) -> bool:
        """Store an inline upload's bytes; False when there is nothing to keep (a URI
        upload) or something newer won (a stored upload, or a recent delete)."""
        if not event.image_b64:
            return False
        with self._image_lock(event.image_id):
            return self._keep(event)

    def _keep(self, event: ImageUploaded) -> bool:
        if self._deleted_since(event):
            return False
        current = self._stored(event.image_id)
        if current is not None and current.uploaded_at >= event.uploaded_at:
            return False
        kept = StoredImage(
            event.image_id,
            event.owner_id,
            event.private,
            event.uploaded_at,
            tuple(event.tags or ()),
            ORIGIN_LOG,
            private_at=event.uploaded_at,
            tags_at=event.uploaded_at,
        )
        self.store.put(kept, event.image_bytes())
        if self._deleted_since(event):  # another worker read the delete meanwhile
            self._drop_own_copy(event)
            return False
        return True

    def _deleted_since(self, event: ImageUploaded) -> bool:
        deleted_at = self.store.log_deleted_at(event.image_id)
        return deleted_at is not None and deleted_at >= event.uploaded_at

    def _drop_own_copy(self, event: ImageUploaded) -> None:
        """Delete the copy just kept, unless a newer upload replaced it meanwhile."""
        stored = self._stored(event.image_id)
        if stored is None or stored.uploaded_at != event.uploaded_at:
            return
        with contextlib.suppress(UnknownImageError):  # the worker that read the delete did
            self.store.delete(event.image_id)

    def update(self, update: ImageUpdated) -> bool:
        """Apply a log update to a kept image; False when it is not one, or a newer
        write already decided. Images from the API were changed by the API first."""
        with self._image_lock(update.image_id):
            return self._update(update)

    def _update(self, update: ImageUpdated) -> bool:
        if update.action == "delete":  # noted before the copy is looked for
            self.store.note_log_delete(update.image_id, update.updated_at)
        stored = self._stored(update.image_id)
        if stored is None or stored.origin != ORIGIN_LOG:
            return False
        try:
            return self._apply(stored, update)
        except UnknownImageError:  # deleted meanwhile through the API
            return False

    def _apply(self, stored: StoredImage, update: ImageUpdated) -> bool:
        image_id, action, at = update.image_id, update.action, update.updated_at
        if action == "delete":
            if at < stored.uploaded_at:  # a newer upload wins, as in the index
                return False
            self.store.delete(image_id)  # UnknownImageError: another worker did
            return True
        register = REGISTER[action]
        if at < getattr(stored, f"{register}_at"):
            return False
        if register == "private":
            self.store.set_private(image_id, action == "private", at)
        elif register == "flagged":
            self.store.set_flagged(image_id, action == "flag", at)
        else:
            self.store.set_tags(image_id, list(update.tags or ()), at)
        return True

    def _stored(self, image_id: str) -> StoredImage | None:
        try:
            return self.store.metadata(image_id)
        except UnknownImageError:
            return None

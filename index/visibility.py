"""Whether an image may appear in results: last-writer-wins registers per image.

Uploads, deletes and flag changes for one image can arrive in any order (an
update can overtake the embedding of the upload it refers to, a replay can
deliver an old upload after a delete). Each attribute is therefore a register
stamped with the event time of its last write, and a write only wins when it
is at least as new. The outcome depends on the events, not on their arrival
order, so replays and reorderings are safe.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

NEVER = -math.inf


@dataclass(slots=True)
class ImageState:
    """Everything a partition knows about one image id."""

    # Index rows of the image: ``first_row`` .. ``first_row + row_count - 1``
    # (global vector, then tiles), added together so always contiguous.
    first_row: int = -1
    row_count: int = 0
    uploaded_at: float = NEVER  # event time of the indexed vectors
    private: bool = False
    private_at: float = NEVER
    flagged: bool = False
    flagged_at: float = NEVER
    deleted_at: float = NEVER
    # What filters read (index/filters.py): the owner of the indexed upload, and
    # the tags register (the upload's tags, or a newer tags update's).
    owner_id: str = ""
    tags: tuple[str, ...] = ()
    tags_at: float = NEVER
    # The indexed upload's http(s) URI ("" for inline bytes and files): results
    # carry it, and thumbnails of images outside the API's store come from it.
    uri: str = ""

    @property
    def rows(self) -> range:
        return range(self.first_row, self.first_row + self.row_count)

    @property
    def deleted(self) -> bool:
        """Deleted by an update newer than the indexed upload."""
        return self.deleted_at >= self.uploaded_at

    @property
    def visible(self) -> bool:
        """May be returned by a search."""
        return self.row_count > 0 and not (self.deleted or self.private or self.flagged)

    def accepts_upload(self, uploaded_at: float) -> bool:
        """A vector from an upload at ``uploaded_at`` replaces what is indexed.

        Equal times are the same upload replayed: nothing to do (idempotent).
        """
        return uploaded_at > self.uploaded_at and uploaded_at > self.deleted_at

    def record_upload(
        self,
        uploaded_at: float,
        private: bool,
        owner_id: str = "",
        tags: tuple[str, ...] = (),
        uri: str = "",
    ) -> None:
        self.uploaded_at = uploaded_at
        self.owner_id = owner_id
        self.uri = uri
        self.set_private(private, uploaded_at)
        self.set_tags(tags, uploaded_at)

    def set_tags(self, tags: tuple[str, ...], at: float) -> bool:
        """The image's tags from an event at ``at`` (an upload or a tags update);
        False when a newer one already set them."""
        if at < self.tags_at:
            return False
        self.tags, self.tags_at = tags, at
        return True

    def set_private(self, private: bool, at: float) -> bool:
        if at < self.private_at:
            return False
        self.private, self.private_at = private, at
        return True

    def set_flagged(self, flagged: bool, at: float) -> bool:
        if at < self.flagged_at:
            return False
        self.flagged, self.flagged_at = flagged, at
        return True

    def delete(self, at: float) -> bool:
        """Record a delete at ``at``; False when an upload or delete at least as new won."""
        won = at >= self.deleted_at and at >= self.uploaded_at
        self.deleted_at = max(self.deleted_at, at)  # kept either way: order-independent
        return won

    def apply(self, action: str, at: float) -> bool:
        """Apply an ImageUpdated action (delete, private, public, flag, unflag); returns
        whether it won its register (False: a newer write of the same kind, or for a
        delete a newer upload, already decided)."""
        if action == "delete":
            return self.delete(at)
        if action in ("private", "public"):
            return self.set_private(action == "private", at)
        if action in ("flag", "unflag"):
            return self.set_flagged(action == "flag", at)
        raise ValueError(f"unknown visibility action {action!r}")

    def to_list(self) -> list[object]:
        return [
            self.first_row,
            self.row_count,
            self.uploaded_at,
            self.private,
            self.private_at,
            self.flagged,
            self.flagged_at,
            self.deleted_at,
            self.owner_id,
            list(self.tags),
            self.tags_at,
            self.uri,
        ]

    @classmethod
    def from_list(cls, values: list[object]) -> ImageState:
        first, count, uploaded_at, private, private_at, flagged, flagged_at, deleted_at = values[:8]
        # Snapshots written before filters had eight fields (no owner, no tags),
        # before URIs eleven.
        owner_id, tags, tags_at = values[8:11] if len(values) > 8 else ("", [], NEVER)
        uri = values[11] if len(values) > 11 else ""
        return cls(
            int(first),  # type: ignore[call-overload]
            int(count),  # type: ignore[call-overload]
            float(uploaded_at),  # type: ignore[arg-type]
            bool(private),
            float(private_at),  # type: ignore[arg-type]
            bool(flagged),
            float(flagged_at),  # type: ignore[arg-type]
            float(deleted_at),  # type: ignore[arg-type]
            str(owner_id),
            tuple(tags),  # type: ignore[arg-type]
            float(tags_at),  # type: ignore[arg-type]
            str(uri),
        )

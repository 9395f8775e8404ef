"""Which images a client may see by id, and where their bytes come from.

Three kinds of image answer a search by id or a thumbnail request:

* uploaded through the API: in the store, whose denylist the API writes
  *before* it acknowledges a delete, make-private or flag;
* published to Kafka with inline bytes, kept in the store by the worker
  (``VISEARCH_KEEP_INLINE_UPLOADS``): their updates may come through the log
  alone, so the index's verdict is required as well as the store's;
* published to Kafka with an ``http(s)`` URI: not in the store, visible when
  the index says so; their bytes are fetched from the URI.

Every check also consults the store's denylist. Hidden, unknown and
malformed ids all raise :class:`UnknownImageError`, so an answer never tells
that a hidden image exists.
"""

from __future__ import annotations

from dataclasses import dataclass

from encoders.preprocess import ImageLimits
from index.search import SearchService
from streams.errors import CodedError
from streams.schemas import ID_PATTERN
from visearch.catalog.store import ORIGIN_LOG, ImageStore, UnknownImageError
from visearch.catalog.thumbnails import UriThumbnails, render_thumbnail


class NoImageBytesError(CodedError, LookupError):
    """A visible image whose bytes are neither in the store nor at an http(s) URI."""

    def __init__(self, image_id: str) -> None:
        super().__init__(
            "no_image_bytes",
            f"image {image_id!r} is indexed, but its bytes are neither in the image store "
            "nor at an http(s) URI",
        )


@dataclass(frozen=True)
class VisibleImage:
    """An image a client may see now, and where its bytes are."""

    image_id: str
    # The upload time of the bytes it stands for: a search by id may use the
    # indexed vector only if that comes from this upload or a later one.
    uploaded_at: float
    in_store: bool
    uri: str = ""


class ImageAccess:
    """Visibility by id over the store and the index, and the bytes and previews."""

    def __init__(
        self,
        store: ImageStore,
        search: SearchService,
        thumbnails: UriThumbnails,
        limits: ImageLimits,
    ) -> None:
        self.store = store
        self.search = search
        self.thumbnails = thumbnails
        self.limits = limits

    def visible(self, image_id: str) -> VisibleImage:
        """The image if anyone may see it now; raises :class:`UnknownImageError`."""
        if not ID_PATTERN.fullmatch(image_id) or not self.store.visible(image_id):
            raise UnknownImageError(image_id)
        try:
            stored = self.store.metadata(image_id)
        except UnknownImageError:
            stored = None
        if stored is not None and stored.private:
            raise UnknownImageError(image_id)
        if stored is not None and stored.origin != ORIGIN_LOG:
            return VisibleImage(image_id, stored.uploaded_at, in_store=True)
        indexed = self.search.indexed_image(image_id)
        if indexed is None:
            raise UnknownImageError(image_id)
        if stored is not None:
            return VisibleImage(image_id, stored.uploaded_at, True, indexed.uri)
        return VisibleImage(image_id, indexed.uploaded_at, False, indexed.uri)

    def public_ids(self) -> list[str]:
        """Stored images anyone may see, sorted by id (the page's picker). Kept copies
        of Kafka uploads are checked against the index in one batch: one request per
        shard, where asking image by image cost a request per image and shard (and
        shipped each vector) on every anonymous listing."""
        shown = [
            stored
            for stored in self.store
            if not stored.private and self.store.visible(stored.image_id)
        ]
        from_log = [stored.image_id for stored in shown if stored.origin == ORIGIN_LOG]
        indexed = self.search.visible_ids(from_log) if from_log else set()
        return [
            stored.image_id
            for stored in shown
            if stored.origin != ORIGIN_LOG or stored.image_id in indexed
        ]

    def image_bytes(self, image: VisibleImage) -> bytes:
        """The image's bytes: from the store, else fetched from its URI.

        Raises :class:`UnknownImageError` (deleted meanwhile),
        :class:`NoImageBytesError` or :class:`~streams.remote_fetch.FetchError`.
        """
        if image.in_store:
            return self.store.get(image.image_id)
        if not image.uri:
            raise NoImageBytesError(image.image_id)
        return self.thumbnails.fetch(image.uri)

    def preview(self, image: VisibleImage, size: int) -> bytes:
        """A JPEG preview at most ``size`` pixels on a side (see :meth:`image_bytes`;
        also :class:`~encoders.preprocess.PreprocessError` for bytes that are no image)."""
        if image.in_store or not image.uri:
            return render_thumbnail(self.image_bytes(image), self.limits, size)
        return self.thumbnails.preview(image.image_id, image.uploaded_at, image.uri, size)

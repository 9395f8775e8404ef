"""Thumbnails: JPEG previews of stored images, and of images that live at an http(s) URI.

A backend may publish an upload straight to Kafka with an ``http(s)`` URI:
the image is indexed, but its bytes never pass through the API's store. Its
thumbnail is fetched from the URI by the same guarded fetcher the workers use
(:mod:`streams.remote_fetch`: deadline, size cap, no private addresses unless
allowed) and the rendered preview is kept in a small in-memory LRU, so a
result page of 24 such images costs 24 fetches once, not per view.

The cache is keyed by the image's id, the upload time of its indexed version
and the preview size: a re-upload (a new ``uploaded_at``) never gets the old
picture. It is consulted only *after* the caller checked that the image is
visible now, so a preview cached while an image was public is never served
once it is private or deleted.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict

from encoders.preprocess import ImageLimits, decode_image
from streams.remote_fetch import RemoteFetch, fetch
from streams.settings import Settings

THUMBNAIL_SIZE = 160
MAX_PREVIEW_SIZE = 1024
# Rendered previews kept per API process: ~4,000 of ~8 KB (160 px JPEGs).
CACHE_BYTES = 32 * 1024 * 1024


def render_thumbnail(data: bytes, limits: ImageLimits, size: int) -> bytes:
    """A JPEG of the image in ``data``, at most ``size`` pixels on a side.

    Raises :class:`~encoders.preprocess.PreprocessError` for bytes that are not
    an image within ``limits``.
    """
    image = decode_image(data, limits)
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


class PreviewCache:
    """Rendered previews by key, least recently used first out, bounded in bytes."""

    def __init__(self, max_bytes: int = CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, float, int], bytes] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: tuple[str, float, int]) -> bytes | None:
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
            return found

    def put(self, key: tuple[str, float, int], preview: bytes) -> None:
        if len(preview) > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            self._bytes += len(preview) - (len(old) if old is not None else 0)
            self._entries[key] = preview
            while self._bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= len(evicted)


class UriThumbnails:
    """Previews of indexed images that live at an http(s) URI, fetched once and cached.

    Raises :class:`~streams.remote_fetch.FetchError` when the URI cannot be read
    (refused address, timeout, too large, HTTP error) and
    :class:`~encoders.preprocess.PreprocessError` when what it serves is not an
    image; neither is cached, so a server that comes back is tried again.
    """

    def __init__(
        self,
        policy: RemoteFetch,
        max_bytes: int,
        limits: ImageLimits,
        cache: PreviewCache | None = None,
    ) -> None:
        self.policy = policy
        self.max_bytes = max_bytes
        self.limits = limits
        self.cache = cache or PreviewCache()

    @classmethod
    def from_settings(cls, settings: Settings, limits: ImageLimits) -> UriThumbnails:
        """The workers' fetch policy (``VISEARCH_IMAGE_FETCH_*``) and size cap."""
        return cls(settings.fetch_policy(), settings.max_image_bytes, limits)

    def fetch(self, uri: str) -> bytes:
        """The bytes at ``uri``, within the size cap and the fetch policy."""
        return fetch(uri, self.max_bytes, self.policy)

    def preview(self, image_id: str, uploaded_at: float, uri: str, size: int) -> bytes:
        """The JPEG preview of ``image_id`` (indexed from an upload at ``uploaded_at``)."""
        key = (image_id, uploaded_at, size)
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        preview = render_thumbnail(self.fetch(uri), self.limits, size)
        self.cache.put(key, preview)
        return preview

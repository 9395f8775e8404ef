"""Accepting an image: check it decodes, store it, publish ImageUploaded.

Shared by the HTTP API, ``visearch ingest`` and the restart replay, so an
upload means the same thing whichever door it came through.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from encoders.preprocess import ImageLimits, decode_image
from streams.image_source import file_uri
from streams.publisher import EventPublisher
from streams.schemas import ImageUpdated, ImageUploaded
from streams.settings import Settings
from visearch.catalog.store import ImageStore, StoredImage


def accept_upload(
    settings: Settings,
    store: ImageStore,
    publisher: EventPublisher,
    image_id: str,
    data: bytes,
    owner_id: str = "anonymous",
    private: bool = False,
    tags: Sequence[str] = (),
) -> ImageUploaded:
    """Validate, store and publish one image; raises PreprocessError on bad bytes."""
    decode_image(data, ImageLimits.from_settings(settings))
    stored = StoredImage(image_id, owner_id, private, time.time(), tuple(tags))
    store.put(stored, data)
    return publish_stored(settings, store, publisher, stored)


def publish_stored(
    settings: Settings, store: ImageStore, publisher: EventPublisher, stored: StoredImage
) -> ImageUploaded:
    """Publish an upload event for an image already in the store."""
    event = ImageUploaded(
        image_id=stored.image_id,
        owner_id=stored.owner_id,
        uploaded_at=time.time(),
        uri=file_uri(store.path_of(stored.image_id)),
        private=stored.private,
        tags=list(stored.tags) or None,
    )
    publisher.publish(settings.topics.uploads, stored.image_id, event)
    return event


def publish_update(
    settings: Settings,
    store: ImageStore,
    publisher: EventPublisher,
    image_id: str,
    action: str,
    tags: Sequence[str] = (),
) -> ImageUpdated:
    """Record a visibility change (or new ``tags``) in the store, then publish it.

    The store changes first: a restart replays the store, so a deleted image
    must already be gone from it and a private one marked private there; and
    searches check the store's denylist, so from the acknowledgement on no
    search returns a deleted, private or flagged image, even before the index
    has applied the event. The broker's acknowledgement is awaited, so
    "accepted" means durable in the log.
    """
    if action == "delete":
        store.delete(image_id)
    elif action in ("private", "public"):
        store.set_private(image_id, action == "private")
    elif action in ("flag", "unflag"):
        store.set_flagged(image_id, action == "flag")
    elif action == "tags":
        store.set_tags(image_id, list(tags))
    else:
        raise ValueError(f"unknown update action {action!r}")
    event = ImageUpdated(
        image_id=image_id,
        action=action,
        updated_at=time.time(),
        tags=list(tags) if action == "tags" else None,
    )
    publisher.publish(settings.topics.updates, image_id, event, timeout_s=10.0)
    return event

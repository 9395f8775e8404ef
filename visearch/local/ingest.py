"""``visearch ingest DIR``: publish a folder of the user's own images."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from encoders.preprocess import PreprocessError
from streams.publisher import EventPublisher
from streams.settings import Settings
from visearch.catalog.corpus import find_images, image_id_for
from visearch.catalog.store import ImageStore
from visearch.catalog.uploads import accept_upload

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestSummary:
    published: int
    already_stored: int
    rejected: dict[str, str]


def ingest_folder(
    settings: Settings,
    store: ImageStore,
    publisher: EventPublisher,
    folder: Path,
    owner_id: str = "ingest",
    skip_stored: bool = True,
    progress: bool = True,
) -> IngestSummary:
    """Store and publish every image under ``folder``; undecodable files are reported."""
    published = already = 0
    rejected: dict[str, str] = {}
    for path in tqdm(find_images(folder), desc="ingest", unit="img", disable=not progress):
        image_id = image_id_for(path, folder)
        if skip_stored and image_id in store:
            already += 1
            continue
        try:
            accept_upload(settings, store, publisher, image_id, path.read_bytes(), owner_id)
        except PreprocessError as exc:
            rejected[str(path)] = str(exc)
            log.warning("skipping %s: %s", path, exc)
            continue
        published += 1
    publisher.flush()
    return IngestSummary(published, already, rejected)

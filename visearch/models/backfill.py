"""``visearch model backfill VERSION``: re-embed the image catalogue with a deployed model.

The catalogue is the image store (every image accepted through the API,
``ingest`` or ``run``, with owner and private flag; deleted images are gone
from it). Each image goes through the workers' own embedding code
(:func:`streams.embedding.embed_uploads`, tiles included) with the candidate
encoder, and its ImageEmbedded record is published to the embeddings log,
where the candidate's shards index it. The record carries the image's
original upload time, so a newer upload of the same image (which the
workers already embed with every active version) always wins.

Live uploads keep priority: the backfill runs in its own process at a
bounded rate (images per second). It is resumable: the last image id done
is saved after every batch (ids are processed in sorted order), and a
restarted backfill continues after it. Re-sending an image is harmless: the
index treats the same image twice as one entry.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from encoders.preprocess import ImageLimits
from encoders.tiles import tile_boxes
from streams.atomic_file import atomic_write_chunks
from streams.embedding import RawMessage, embed_uploads
from streams.encoder_set import encoder_from_settings
from streams.errors import VisearchError
from streams.image_source import file_uri
from streams.model_registry import ModelRegistry, ModelWatcher
from streams.publisher import EventPublisher
from streams.schemas import ImageUploaded, encode
from streams.settings import Settings
from visearch.catalog.store import ImageStore

BATCH = 16


class BackfillError(VisearchError, RuntimeError):
    """The version is not a deployed candidate, or its model cannot be loaded."""


@dataclass(frozen=True)
class BackfillReport:
    version: str
    published: int
    failed: dict[str, str]
    skipped_done: int
    seconds: float


def candidate_model_dir(settings: Settings, version: str, timeout_s: float = 30.0) -> Path:
    """The model directory of deployed candidate ``version``, from the models topic."""
    registry = ModelRegistry.serving_from(settings.resolved_model_dir)
    watcher = ModelWatcher(settings, registry.apply)
    try:
        if not watcher.start_and_catch_up(timeout_s):
            raise BackfillError("the models topic could not be read")
    finally:
        watcher.stop()
    model = registry.get(version)
    if model is None or model.state != "candidate":
        state = "unknown" if model is None else model.state
        raise BackfillError(f"model {version} is {state}, not a deployed candidate")
    return Path(model.model_dir)


def progress_path(settings: Settings, version: str) -> Path:
    return settings.data_dir / "backfill" / f"{version}.json"


def backfill(
    settings: Settings,
    version: str,
    rate_per_s: float = 20.0,
    restart: bool = False,
    progress: bool = True,
) -> BackfillReport:
    """Publish ``version``'s embedding of every catalogued image not done yet."""
    model_dir = candidate_model_dir(settings, version)
    encoder = encoder_from_settings(model_dir, settings)
    if encoder.version != version:
        raise BackfillError(f"{model_dir} holds model {encoder.version}, not {version}")
    store = ImageStore(settings.image_store_dir)
    state_file = progress_path(settings, version)
    done_through = "" if restart or not state_file.exists() else _read_progress(state_file)
    catalogue = sorted(store, key=lambda image: image.image_id)
    todo = [image for image in catalogue if image.image_id > done_through]
    limits = ImageLimits.from_settings(settings)
    tiles = tile_boxes(settings.tiles)
    published = 0
    failed: dict[str, str] = {}
    started = time.monotonic()
    with EventPublisher(settings) as publisher:
        bar = tqdm(total=len(todo), desc=f"backfill {version}", unit="img", disable=not progress)
        for first in range(0, len(todo), BATCH):
            batch = todo[first : first + BATCH]
            messages = [
                RawMessage(
                    settings.topics.uploads,
                    -1,  # not from the uploads log: a backfill; the offset is the batch index
                    index,
                    encode(
                        ImageUploaded(
                            image_id=image.image_id,
                            owner_id=image.owner_id,
                            uploaded_at=image.uploaded_at,
                            uri=file_uri(store.path_of(image.image_id)),
                            private=image.private,
                        )
                    ),
                )
                for index, image in enumerate(batch)
            ]
            outcome = embed_uploads(messages, encoder, [store.root], limits, tiles)
            for record in outcome.embedded:
                publisher.publish(settings.topics.embeddings, record.image_id, record)
            for letter in outcome.dead_letters:  # e.g. a file that became unreadable
                failed[batch[letter.offset].image_id] = f"{letter.error_code}: {letter.message}"
            publisher.flush()
            published += len(outcome.embedded)
            _write_progress(state_file, batch[-1].image_id)
            bar.update(len(batch))
            # rate limit: the batch may not finish before its share of time has passed
            time.sleep(max(0.0, started + (first + len(batch)) / rate_per_s - time.monotonic()))
        bar.close()
    return BackfillReport(
        version,
        published,
        failed,
        len(catalogue) - len(todo),
        time.monotonic() - started,
    )


def _read_progress(path: Path) -> str:
    return str(json.loads(path.read_text())["done_through"])


def _write_progress(path: Path, image_id: str) -> None:
    atomic_write_chunks(path, [json.dumps({"done_through": image_id}).encode()])

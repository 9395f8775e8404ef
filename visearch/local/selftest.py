"""``visearch selftest``: the real pipeline end to end, measured.

Starts a private stack (own broker port and topic prefix, temporary image
store), waits for the worker to embed a warm-up image, then publishes real
photos at a steady rate and records, per image, produced -> searchable
(the shard's own timestamp of the upsert). Finally it queries every image
with a crop of about half its area and counts rank-1 hits.
"""

from __future__ import annotations

import math
import random
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from encoders.preprocess import CropBox, decode_image, original_size
from streams.settings import Settings
from visearch.catalog.corpus import find_images
from visearch.catalog.store import StoredImage
from visearch.catalog.uploads import publish_stored
from visearch.local.stack import LocalStack, isolated_settings
from visearch.models.serving import ensure_exported


@dataclass(frozen=True)
class SelftestReport:
    """The one JSON object ``selftest --json`` prints."""

    images: int
    searchable: int
    rank1: int
    rank1_ratio: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    crop_area: float
    model_version: str
    ok: bool

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def random_crop(width: int, height: int, area: float, rng: random.Random) -> CropBox:
    """A box covering ``area`` of the image, random aspect (0.5-2x) and position."""
    aspect = math.exp(rng.uniform(math.log(0.5), math.log(2.0)))
    crop_w = min(1.0, math.sqrt(area * aspect))
    crop_h = min(1.0, area / crop_w)
    left = rng.uniform(0.0, 1.0 - crop_w)
    top = rng.uniform(0.0, 1.0 - crop_h)
    return CropBox(left * width, top * height, (left + crop_w) * width, (top + crop_h) * height)


def run_selftest(
    settings: Settings,
    image_dir: Path,
    count: int = 24,
    rate_per_s: float = 20.0,
    crop_area: float = 0.5,
    seed: int = 0,
    timeout_s: float = 120.0,
) -> SelftestReport:
    """Run the selftest against a fresh private stack built from ``settings``."""
    rng = random.Random(seed)
    paths = rng.sample(find_images(image_dir), count + 1)
    ensure_exported(settings.resolved_model_dir, image_dir)
    with tempfile.TemporaryDirectory(prefix="visearch-selftest-") as tmp:
        private = isolated_settings(settings, Path(tmp), "selftest")
        with LocalStack(private) as stack:
            assert stack.publisher is not None and stack.search is not None
            ids = [f"selftest-{i:03d}" for i in range(len(paths))]
            for image_id, path in zip(ids, paths, strict=True):
                stack.store.put(
                    StoredImage(image_id, "selftest", False, time.time()), path.read_bytes()
                )
            # Warm-up: the first image waits for the worker to load the model and join.
            publish_stored(private, stack.store, stack.publisher, stack.store.metadata(ids[0]))
            stack.publisher.flush()
            if stack.wait_searchable(ids[:1], timeout_s):
                raise TimeoutError(f"the warm-up image was not searchable within {timeout_s} s")
            produced: dict[str, float] = {}
            for image_id in ids[1:]:
                event = publish_stored(
                    private, stack.store, stack.publisher, stack.store.metadata(image_id)
                )
                produced[image_id] = event.uploaded_at
                stack.publisher.flush()
                time.sleep(1.0 / rate_per_s)
            missing = stack.wait_searchable(list(produced), timeout_s)
            latencies = [
                (stack.searchable_at(i) or 0.0) - produced[i] for i in produced if i not in missing
            ]
            rank1 = 0
            for image_id in produced:
                data = stack.store.get(image_id)
                width, height = original_size(decode_image(data))
                box = random_crop(width, height, crop_area, rng)
                hits = stack.search.search_bytes(data, 1, box).hits
                rank1 += bool(hits) and hits[0].image_id == image_id
            millis = np.array(latencies or [math.nan]) * 1000.0
            images = len(produced)
            return SelftestReport(
                images=images,
                searchable=images - len(missing),
                rank1=rank1,
                rank1_ratio=rank1 / images,
                p50_ms=round(float(np.percentile(millis, 50)), 2),
                p99_ms=round(float(np.percentile(millis, 99)), 2),
                max_ms=round(float(np.max(millis)), 2),
                crop_area=crop_area,
                model_version=stack.search.encoder.version,
                ok=not missing and rank1 >= 0.9 * images,
            )

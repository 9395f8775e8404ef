"""Hard crop queries: a small part of an image, recompressed, must find the image.

A "hard crop" covers 3-15 % of the image's area, with an aspect of 0.5-2 and a
random position, at least 8 px a side, and is rejected when 90 % or more of
it is white or transparent background (Tux Paint stamps are cut-outs: a crop
of empty margin matches anything). It is saved as JPEG quality 70, as a
screenshot or re-shared photo would be. The relevant documents of a crop are
its source image and the source's exact pixel duplicates (one stamp can ship
in two folders). ``bench/crop_tiles.py`` measures tile schemes on the same
crops, from the same functions.
"""

from __future__ import annotations

import io
import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from encoders.preprocess import CropBox, decode_image
from visearch.evaluation.dataset import (
    QUERIES_DIR,
    Qrels,
    copy_corpus,
    prepare_output,
    write_set,
)

MIN_CROP_AREA, MAX_CROP_AREA = 0.03, 0.15
MIN_ASPECT, MAX_ASPECT = 0.5, 2.0
MIN_CROP_SIDE = 8
MAX_BACKGROUND = 0.90
WHITE_LEVEL = 250  # a composited pixel with every channel >= this is background
JPEG_QUALITY = 70
CROP_TRIES = 200


def hard_crop(image: Image.Image, rng: np.random.Generator) -> CropBox | None:
    """A random 3-15 % crop holding content, or ``None`` if none is found."""
    width, height = image.size
    background = np.asarray(image).min(axis=2) >= WHITE_LEVEL
    area = width * height
    for _ in range(CROP_TRIES):
        fraction = rng.uniform(MIN_CROP_AREA, MAX_CROP_AREA)
        aspect = math.exp(rng.uniform(math.log(MIN_ASPECT), math.log(MAX_ASPECT)))
        w = round(math.sqrt(fraction * area * aspect))
        h = round(math.sqrt(fraction * area / aspect))
        if not (MIN_CROP_SIDE <= w <= width and MIN_CROP_SIDE <= h <= height):
            continue
        if not MIN_CROP_AREA <= w * h / area <= MAX_CROP_AREA:
            continue
        x = int(rng.integers(0, width - w + 1))
        y = int(rng.integers(0, height - h + 1))
        if background[y : y + h, x : x + w].mean() >= MAX_BACKGROUND:
            continue
        return CropBox(x, y, x + w, y + h)
    return None


def jpeg_bytes(image: Image.Image, quality: int = JPEG_QUALITY) -> bytes:
    """``image`` encoded as a baseline JPEG (deterministic bytes for the same pixels)."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def duplicate_groups(images: Sequence[Image.Image]) -> dict[int, list[int]]:
    """Image index -> indices of every image with exactly the same pixels (itself included)."""
    fingerprints: dict[bytes, list[int]] = defaultdict(list)
    for i, image in enumerate(images):
        fingerprints[image.size[0].to_bytes(4, "big") + image.tobytes()].append(i)
    return {i: group for group in fingerprints.values() for i in group}


def crop_queries(
    images: Sequence[Image.Image], count: int, seed: int
) -> Iterator[tuple[int, bytes | None, float]]:
    """Up to ``count`` hard crops of distinct, seeded source images.

    Yields (source index, JPEG bytes, area fraction); a source drawn without a
    valid crop (all margin) yields ``None`` bytes so callers can count it. The
    same seed gives the same crops.
    """
    rng = np.random.default_rng(seed)
    made = 0
    for index in rng.permutation(len(images)):
        if made >= count:
            return
        image = images[int(index)]
        box = hard_crop(image, rng)
        if box is None:
            yield int(index), None, 0.0
            continue
        left, top, right, bottom = box.to_pixels(*image.size)
        area = (right - left) * (bottom - top) / (image.width * image.height)
        made += 1
        yield int(index), jpeg_bytes(image.crop((left, top, right, bottom))), area


def build_crop_set(source: Path, out: Path, count: int | None = None, seed: int = 0) -> int:
    """Corpus = every image under ``source``; queries = hard crops. Returns the query count."""
    prepare_output(out)
    placed = copy_corpus(source, out)
    ids = list(placed)
    images = [decode_image(placed[i].read_bytes()) for i in ids]
    duplicates = duplicate_groups(images)
    qrels: Qrels = {}
    areas = []
    for index, data, area in crop_queries(images, count or len(images), seed):
        if data is None:
            continue
        query = f"{ids[index]}-crop"
        (out / QUERIES_DIR / f"{query}.jpg").write_bytes(data)
        qrels[query] = {ids[i]: 1 for i in duplicates[index]}
        areas.append(area)
    manifest = {
        "builder": "crops",
        "source": str(source),
        "seed": seed,
        "crop_area": [MIN_CROP_AREA, MAX_CROP_AREA],
        "mean_crop_area": round(float(np.mean(areas)), 4) if areas else None,
        "jpeg_quality": JPEG_QUALITY,
    }
    write_set(out, qrels, manifest)
    return len(qrels)

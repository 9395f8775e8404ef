"""DISC-style edited copies: transformed versions of corpus images as queries.

The Image Similarity Challenge (DISC21) builds its copy-detection queries by
editing reference images: crops, colour changes, rotations and flips,
overlays of text or other images, greyscale, blur, and recompression, often
several at once. Here each query is a seeded chain of one to three such edits
of a corpus image, always ending in a JPEG save (quality 30-85); the edits of
every query are recorded in the manifest, so a failure can be traced to an
edit. As in DISC, ``negatives`` edited queries are made from images held out
of the corpus: they have no match, are not judged, and count against
micro-AP when they score high.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

from encoders.preprocess import decode_image
from visearch.catalog.corpus import find_images
from visearch.evaluation.crops import jpeg_bytes
from visearch.evaluation.dataset import QUERIES_DIR, Qrels, copy_corpus, prepare_output, write_set

Edit = Callable[[Image.Image, np.random.Generator, Image.Image], Image.Image]
WHITE = (255, 255, 255)


def _crop(image: Image.Image, rng: np.random.Generator, _: Image.Image) -> Image.Image:
    """Keep 40-90 % of the area at a random position."""
    width, height = image.size
    keep = np.sqrt(rng.uniform(0.4, 0.9))
    w, h = max(1, round(width * keep)), max(1, round(height * keep))
    x, y = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
    return image.crop((x, y, x + w, y + h))


def _colour(image: Image.Image, rng: np.random.Generator, _: Image.Image) -> Image.Image:
    """Brightness, contrast and saturation each scaled by 0.6-1.4."""
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        image = enhancer(image).enhance(float(rng.uniform(0.6, 1.4)))
    return image


def _rotate(image: Image.Image, rng: np.random.Generator, _: Image.Image) -> Image.Image:
    """A quarter turn, or a tilt of 5-30 degrees either way with white corners."""
    if rng.random() < 0.5:
        return image.rotate(90 * int(rng.integers(1, 4)), expand=True)
    angle = float(rng.uniform(5, 30)) * (1 if rng.random() < 0.5 else -1)
    return image.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True, fillcolor=WHITE)


def _flip(image: Image.Image, rng: np.random.Generator, _: Image.Image) -> Image.Image:
    return ImageOps.mirror(image)


def _text(image: Image.Image, rng: np.random.Generator, _: Image.Image) -> Image.Image:
    """A random word in a random colour, 8-20 % of the height, somewhere on the image."""
    image = image.copy()
    size = max(8, int(image.height * rng.uniform(0.08, 0.2)))
    font = ImageFont.load_default(size=size)
    letters = "ABCDEFGHJKLMNPQRSTUVWXYZ0123456789"
    word = "".join(letters[int(i)] for i in rng.integers(0, len(letters), int(rng.integers(3, 9))))
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    x = int(rng.integers(0, max(1, image.width // 2)))
    y = int(rng.integers(0, max(1, image.height - size)))
    ImageDraw.Draw(image).text((x, y), word, fill=colour, font=font)
    return image


def _overlay(image: Image.Image, rng: np.random.Generator, other: Image.Image) -> Image.Image:
    """Another image pasted over 10-25 % of this one (DISC's overlay of an image)."""
    image = image.copy()
    fraction = np.sqrt(rng.uniform(0.10, 0.25))
    patch = other.copy()
    patch.thumbnail((max(1, int(image.width * fraction)), max(1, int(image.height * fraction))))
    x = int(rng.integers(0, image.width - patch.width + 1))
    y = int(rng.integers(0, image.height - patch.height + 1))
    image.paste(patch, (x, y))
    return image


def _grayscale(image: Image.Image, rng: np.random.Generator, _: Image.Image) -> Image.Image:
    return ImageOps.grayscale(image).convert("RGB")


def _blur(image: Image.Image, rng: np.random.Generator, _: Image.Image) -> Image.Image:
    return image.filter(ImageFilter.GaussianBlur(float(rng.uniform(1.0, 3.0))))


def _downscale(image: Image.Image, rng: np.random.Generator, _: Image.Image) -> Image.Image:
    """Shrink to 25-60 % of the size (a thumbnail re-shared)."""
    scale = float(rng.uniform(0.25, 0.6))
    size = (max(8, round(image.width * scale)), max(8, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR)


EDITS: dict[str, Edit] = {
    "crop": _crop,
    "colour": _colour,
    "rotate": _rotate,
    "flip": _flip,
    "text": _text,
    "overlay": _overlay,
    "grayscale": _grayscale,
    "blur": _blur,
    "downscale": _downscale,
}


def edit_image(
    image: Image.Image, rng: np.random.Generator, other: Image.Image
) -> tuple[bytes, list[str]]:
    """One to three distinct edits in a random order, then JPEG 30-85; bytes and edit names."""
    names = [str(n) for n in rng.choice(list(EDITS), size=int(rng.integers(1, 4)), replace=False)]
    for name in names:
        image = EDITS[name](image, rng, other)
    quality = int(rng.integers(30, 86))
    return jpeg_bytes(image, quality), [*names, f"jpeg{quality}"]


def build_edit_set(
    source: Path, out: Path, count: int | None = None, negatives: int = 0, seed: int = 0
) -> int:
    """Corpus = images under ``source`` less ``negatives`` held out; queries = edited copies.

    Returns the number of judged queries.
    """
    prepare_output(out)
    rng = np.random.default_rng(seed)
    paths = find_images(source)
    held_out = [paths[int(i)] for i in rng.choice(len(paths), size=negatives, replace=False)]
    placed = copy_corpus(source, out, frozenset(held_out))
    ids = list(placed)
    picked = rng.permutation(len(ids))[: count or len(ids)]
    jobs = [(ids[int(i)], placed[ids[int(i)]]) for i in picked]
    jobs += [(f"negative-{n:04d}", path) for n, path in enumerate(held_out)]
    qrels: Qrels = {}
    edits: dict[str, list[str]] = {}
    for doc, path in jobs:
        other = decode_image(placed[ids[int(rng.integers(0, len(ids)))]].read_bytes())
        data, names = edit_image(decode_image(path.read_bytes()), rng, other)
        query = f"{doc}-edit"
        (out / QUERIES_DIR / f"{query}.jpg").write_bytes(data)
        edits[query] = names
        if doc in placed:
            qrels[query] = {doc: 1}
    manifest = {"builder": "edits", "source": str(source), "seed": seed, "edits": edits}
    write_set(out, qrels, manifest)
    return len(qrels)

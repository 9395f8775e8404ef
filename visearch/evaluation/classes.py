"""Class-based sets: every image of the same class is relevant to a query.

Leave-one-out retrieval: the queries are corpus images themselves (linked
under the same id), so each is searched as that image and never finds itself
(see :mod:`.dataset`); every other image of its class is relevant. Two
sources:

* a folder of category folders, e.g. the Tux Paint stamps
  (``/usr/share/tuxpaint/stamps/animals/...``); the class is the first
  ``level`` folders of an image's path, and classes smaller than
  ``min_class`` are left out (a class of one has nothing to find);
* Fashion-MNIST (Debian ``dataset-fashion-mnist``: gzipped IDX files), a
  seeded, class-balanced sample of 28x28 greyscale pictures of 10 garment
  kinds, written as PNGs.
"""

from __future__ import annotations

import gzip
import struct
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

from visearch.catalog.corpus import find_images
from visearch.evaluation.dataset import (
    CORPUS_DIR,
    QUERIES_DIR,
    EvalSetError,
    Qrels,
    copy_corpus,
    link_or_copy,
    prepare_output,
    write_set,
)

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_LABELS = (
    "tshirt-top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
)


def _write_class_queries(out: Path, classes: dict[str, str], count: int | None, seed: int) -> Qrels:
    """Link ``count`` seeded corpus images as queries; qrels = the rest of their class."""
    members: dict[str, list[str]] = defaultdict(list)
    for image_id, label in classes.items():
        members[label].append(image_id)
    corpus = {p.stem: p for p in find_images(out / CORPUS_DIR)}
    ids = sorted(classes)
    picked = np.random.default_rng(seed).permutation(len(ids))[: count or len(ids)]
    qrels: Qrels = {}
    for i in sorted(int(i) for i in picked):
        query = ids[i]
        link_or_copy(corpus[query], out / QUERIES_DIR / corpus[query].name)
        qrels[query] = {doc: 1 for doc in members[classes[query]] if doc != query}
    return qrels


def build_folder_class_set(
    source: Path,
    out: Path,
    level: int = 1,
    min_class: int = 5,
    count: int | None = None,
    seed: int = 0,
) -> int:
    """Classes from category folders under ``source``; returns the query count."""
    paths = find_images(source)
    label_of = {p: "/".join(p.relative_to(source).parts[:-1][:level]) for p in paths}
    sizes: dict[str, int] = defaultdict(int)
    for label in label_of.values():
        sizes[label] += 1
    small = frozenset(p for p, label in label_of.items() if sizes[label] < min_class or not label)
    if len(small) == len(paths):
        raise EvalSetError(f"no folder under {source} holds {min_class} or more images")
    prepare_output(out)
    placed = copy_corpus(source, out, small)
    classes = {image_id: label_of[path] for image_id, path in placed.items()}
    qrels = _write_class_queries(out, classes, count, seed)
    manifest = {
        "builder": "classes",
        "source": str(source),
        "level": level,
        "min_class": min_class,
        "seed": seed,
        "classes": {label: sizes[label] for label in sorted(set(classes.values()))},
    }
    write_set(out, qrels, manifest)
    return len(qrels)


def read_idx(path: Path) -> np.ndarray:
    """A gzipped IDX array (the MNIST family's format): big-endian dims, then uint8 data."""
    with gzip.open(path, "rb") as handle:
        data = handle.read()
    zero, dtype, dims = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise EvalSetError(f"{path} is not an unsigned-byte IDX file")
    shape = struct.unpack(f">{dims}I", data[4 : 4 + 4 * dims])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def build_fashion_mnist_set(
    out: Path,
    per_class: int = 100,
    split: str = "t10k",
    count: int | None = None,
    seed: int = 0,
    source: Path = FASHION_MNIST,
) -> int:
    """A class-balanced Fashion-MNIST sample as PNGs; returns the query count."""
    images_file = source / f"{split}-images-idx3-ubyte.gz"
    labels_file = source / f"{split}-labels-idx1-ubyte.gz"
    if not images_file.is_file() or not labels_file.is_file():
        raise EvalSetError(
            f"Fashion-MNIST {split!r} is not in {source}: install Debian's dataset-fashion-mnist"
        )
    images, labels = read_idx(images_file), read_idx(labels_file)
    rng = np.random.default_rng(seed)
    prepare_output(out)
    classes: dict[str, str] = {}
    for label, name in enumerate(FASHION_LABELS):
        members = np.flatnonzero(labels == label)
        for index in sorted(rng.choice(members, size=min(per_class, len(members)), replace=False)):
            image_id = f"fmnist-{split}-{int(index):05d}"
            Image.fromarray(images[index], "L").save(out / CORPUS_DIR / f"{image_id}.png")
            classes[image_id] = name
    qrels = _write_class_queries(out, classes, count, seed)
    manifest = {
        "builder": "fashion-mnist",
        "source": str(source),
        "split": split,
        "per_class": per_class,
        "seed": seed,
        "classes": list(FASHION_LABELS),
    }
    write_set(out, qrels, manifest)
    return len(qrels)

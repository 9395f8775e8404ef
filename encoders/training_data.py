"""Training inputs for the projection head: backbone features of views, and click pairs.

The backbone is frozen (two shared CPU cores cannot fine-tune a CNN on
hundreds of images in minutes), so what training needs of an image is its
backbone embedding under a few augmentations. Those are computed once, with
the exported base model in ONNX Runtime (~3x torch eager here), on views made
by :mod:`encoders.augment` and preprocessed exactly as serving does. View 0 of
every image is the image itself (no augmentation): click pairs use it for
positives and negatives, as the index holds unaugmented images.

Click pairs (``streams.schemas.LabeledPair``) name images by id; pairs whose
query or positive is not among the training images are counted, not fatal
(images get deleted, and a pairs file may cover more than a training folder).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
from tqdm import tqdm

from encoders.augment import AugmentConfig, augment, view_rng
from encoders.preprocess import ImageLimits, PreprocessError, decode_image, preprocess_image
from streams.schemas import LabeledPair

log = logging.getLogger(__name__)

CLEAN_VIEW = 0


class Embedder(Protocol):
    """What feature extraction needs of an encoder (``OnnxEncoder`` has it)."""

    def embed(self, inputs: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class ViewFeatures:
    """Backbone embeddings ``(images, 1 + views, dim)``; row order follows ``image_ids``."""

    image_ids: list[str]
    features: np.ndarray
    skipped: dict[str, str] = field(default_factory=dict)


def compute_view_features(
    images: Mapping[str, Path],
    encoder: Embedder,
    views: int,
    seed: int,
    augment_config: AugmentConfig | None = None,
    limits: ImageLimits | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> ViewFeatures:
    """Embed each image as itself plus ``views`` seeded augmentations.

    Images that fail to decode are left out and reported in ``skipped``
    (image id -> reason): one bad upload must not stop a training run.
    """
    augment_config = augment_config or AugmentConfig()
    limits = limits or ImageLimits()
    ids: list[str] = []
    rows: list[np.ndarray] = []
    skipped: dict[str, str] = {}
    pending: list[np.ndarray] = []
    per_image = 1 + views
    images_per_batch = max(1, batch_size // per_image)

    def flush() -> None:
        if pending:
            vectors = encoder.embed(np.stack(pending))
            rows.extend(vectors.reshape(-1, per_image, vectors.shape[1]))
            pending.clear()

    for image_id in tqdm(sorted(images), desc="views", unit="img", disable=not progress):
        try:
            image = decode_image(images[image_id].read_bytes(), limits)
        except (OSError, PreprocessError) as exc:
            skipped[image_id] = str(exc)
            log.warning("skipping %s: %s", image_id, exc)
            continue
        ids.append(image_id)
        pending.append(preprocess_image(image))
        for view in range(1, per_image):
            pending.append(
                preprocess_image(augment(image, view_rng(seed, image_id, view), augment_config))
            )
        if len(pending) >= images_per_batch * per_image:
            flush()
    flush()
    if not ids:
        raise ValueError("no training image could be decoded")
    return ViewFeatures(ids, np.asarray(np.stack(rows), dtype=np.float32), skipped)


@dataclass(frozen=True)
class PairIndex:
    """Click pairs as row numbers into :class:`ViewFeatures`, ready to batch.

    ``negatives`` is padded with -1 to the longest list.
    """

    query: np.ndarray
    positive: np.ndarray
    negatives: np.ndarray
    weights: np.ndarray
    unknown_pairs: int = 0
    unknown_negatives: int = 0

    def __len__(self) -> int:
        return len(self.query)


def index_pairs(pairs: Sequence[LabeledPair], image_ids: Sequence[str]) -> PairIndex:
    """Map pairs' image ids to feature rows; count what cannot be mapped.

    A pair whose query or positive is unknown, or whose positive is its
    query, is dropped (``unknown_pairs``); an unknown negative is dropped
    from its pair (``unknown_negatives``) and the pair kept.
    """
    row_of = {image_id: row for row, image_id in enumerate(image_ids)}
    queries: list[int] = []
    positives: list[int] = []
    negatives: list[list[int]] = []
    weights: list[float] = []
    unknown_pairs = unknown_negatives = 0
    for pair in pairs:
        query, positive = row_of.get(pair.query_image_id), row_of.get(pair.positive_image_id)
        if query is None or positive is None or query == positive:
            unknown_pairs += 1
            continue
        known = [row_of[n] for n in pair.negative_image_ids or [] if n in row_of]
        unknown_negatives += len(pair.negative_image_ids or []) - len(known)
        queries.append(query)
        positives.append(positive)
        negatives.append([n for n in known if n not in (query, positive)])
        weights.append(pair.weight)
    width = max((len(n) for n in negatives), default=0)
    padded = np.full((len(negatives), width), -1, dtype=np.int64)
    for row, known in enumerate(negatives):
        padded[row, : len(known)] = known
    return PairIndex(
        np.asarray(queries, dtype=np.int64),
        np.asarray(positives, dtype=np.int64),
        padded,
        np.asarray(weights, dtype=np.float32),
        unknown_pairs,
        unknown_negatives,
    )


def cached_view_features(
    cache: Path, key: str, compute: Callable[[], ViewFeatures]
) -> ViewFeatures:
    """``compute()`` once per ``key``: a resumed run skips the slow part of training."""
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as stored:
            if str(stored["key"]) == key:
                skipped = dict(
                    zip(stored["skipped_ids"].tolist(), stored["skipped_why"].tolist(), strict=True)
                )
                return ViewFeatures(stored["image_ids"].tolist(), stored["features"], skipped)
    result = compute()
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.name + ".tmp.npz")
    np.savez(
        tmp,
        key=np.asarray(key),
        image_ids=np.asarray(result.image_ids),
        features=result.features,
        skipped_ids=np.asarray(list(result.skipped), dtype=str),
        skipped_why=np.asarray(list(result.skipped.values()), dtype=str),
    )
    tmp.replace(cache)
    return result

"""Translating a similarity threshold from the base model's scale to a trained model's.

The near-duplicate collapse (``VISEARCH_DEDUP_THRESHOLD``, 0.96) was chosen on
the pretrained model's cosine similarities. A trained head pulls images of a
class together, so distinct images of one class pass 0.96 far more often and
are dropped as "duplicates" of each other: on the Tux Paint held-out split
the collapse took 3.7 points of mAP from the trained model and 0.8 from the
pretrained one (docs/training.md, Measured).

So a trained model carries a *similarity scale* in its metadata: matched
quantiles of the pairwise similarities of its training images under the
base model and under the trained one. A threshold ``t`` on the base scale
becomes the trained similarity at the same quantile: the new model collapses
the same share of image pairs as the base model did at ``t``. The map is
monotone and leaves 1.0 (identical pixels) and anything above 1 (collapse
off) where they are.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

# Quantile levels of the pairwise similarities, dense in the upper tail where
# thresholds live (the top 1e-6 of pairs still has ~30 pairs at 8,000 images).
LEVELS = np.concatenate([np.linspace(0.0, 0.9, 10), 1.0 - np.geomspace(0.1, 1e-6, 61)[1:]])
MAX_IMAGES = 8000  # pairwise similarities of at most this many images (32M pairs)

SimilarityScale = Mapping[str, Sequence[float]]


def calibrate_scale(base: np.ndarray, trained: np.ndarray, seed: int = 0) -> dict[str, list[float]]:
    """Matched quantiles of the pairwise similarities of the same images under two models.

    ``base`` and ``trained`` are L2-normalised embeddings, one row per image in
    the same order. Returns ``{"base": [...], "trained": [...]}``, both
    ascending and of equal length, for :func:`translate_threshold`.
    """
    if len(base) != len(trained) or len(base) < 2:
        raise ValueError("need the same two or more images embedded by both models")
    if len(base) > MAX_IMAGES:
        keep = np.random.default_rng(seed).choice(len(base), MAX_IMAGES, replace=False)
        base, trained = base[keep], trained[keep]
    upper = np.triu_indices(len(base), k=1)
    quantiles = [
        np.quantile((vectors @ vectors.T)[upper], LEVELS).astype(float)
        for vectors in (np.asarray(base, np.float32), np.asarray(trained, np.float32))
    ]
    return {
        "base": np.maximum.accumulate(quantiles[0]).round(6).tolist(),
        "trained": np.maximum.accumulate(quantiles[1]).round(6).tolist(),
    }


def translate_threshold(threshold: float, scale: SimilarityScale | None) -> float:
    """``threshold`` on the base model's scale, expressed on the trained model's.

    No scale (a pretrained or exported model) or a threshold above 1 (the
    collapse is off) is returned as is. Between the highest calibrated base
    quantile and 1 the map is linear up to 1.0 -> 1.0.
    """
    if not scale or threshold > 1.0:
        return threshold
    base = [*scale["base"], 1.0]
    trained = [*scale["trained"], 1.0]
    return float(np.interp(threshold, base, trained))

"""Re-ranking after the nearest-neighbour step.

Filtering of deleted, private and flagged images happens inside the index
scan (a bitmap selector read under the partition lock), so re-ranking only
sees visible images. Near-duplicates (the same photo re-uploaded, resized,
recompressed) are collapsed greedily: walking the results best-first, a
result is dropped when its cosine similarity to one already kept reaches the
threshold.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from index.partition import Hit


def collapse_near_duplicates(hits: Iterable[Hit], threshold: float, limit: int) -> list[Hit]:
    """Best-first hits without near-duplicates of each other, at most ``limit``.

    Every hit must carry its vector (search with ``with_vectors=True``).
    """
    kept: list[Hit] = []
    # Kept vectors as rows of one growing matrix: stacking a new array per hit
    # made a full-depth collapse (eval --depth all) quadratic in copies.
    matrix: np.ndarray | None = None
    for hit in hits:
        vector = hit.vector
        if vector is None:
            raise ValueError(f"hit {hit.image_id!r} has no vector to compare")
        if (
            threshold <= 1.0
            and matrix is not None
            and kept
            and float(np.max(matrix[: len(kept)] @ vector)) >= threshold
        ):
            continue
        if matrix is None:
            matrix = np.empty((max(1, min(limit, 64)), len(vector)), dtype=np.float32)
        elif len(kept) == len(matrix):
            matrix = np.concatenate([matrix, np.empty_like(matrix)])
        matrix[len(kept)] = vector
        kept.append(hit)
        if len(kept) == limit:
            break
    return kept


def merge_best(hit_lists: Iterable[list[Hit]]) -> list[Hit]:
    """One list, best score per image, best first."""
    best: dict[str, Hit] = {}
    for hits in hit_lists:
        for hit in hits:
            if hit.image_id not in best or hit.score > best[hit.image_id].score:
                best[hit.image_id] = hit
    return sorted(best.values(), key=lambda hit: hit.score, reverse=True)

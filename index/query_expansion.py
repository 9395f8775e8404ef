"""Query expansion: search again with the query blended with its best results.

alpha-weighted query expansion (alpha-QE, Radenović, Tolias and Chum, "Fine-tuning
CNN image retrieval with no human annotation", 2018): the expanded query is
the query plus its top ``neighbours`` results' vectors, each weighted by its
similarity to the query raised to ``alpha``, L2-normalised. Images of the
query's kind that the query alone ranks low share features with its nearest
neighbours, so the second search finds more of them: class-level retrieval
gains most (docs/evaluation.md, Query expansion: Fashion-MNIST mAP 0.560 -> 0.581 with 3
neighbours, at the cost of a second index scan).

The neighbours are results the caller has already filtered (deleted, private
and flagged images removed), so a hidden image never shapes what a query
finds, not even through its vector.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from index.partition import Hit

MAX_NEIGHBOURS = 50


@dataclass(frozen=True)
class QueryExpansion:
    """How many of the first search's results to blend into the query, and how
    sharply to weight them by similarity (``alpha`` 0: plain average)."""

    neighbours: int
    alpha: float = 3.0

    def __post_init__(self) -> None:
        if not 1 <= self.neighbours <= MAX_NEIGHBOURS:
            raise ValueError(f"query expansion needs 1..{MAX_NEIGHBOURS} neighbours")
        if not (np.isfinite(self.alpha) and self.alpha >= 0):
            raise ValueError("query expansion alpha must be a finite number >= 0")

    def expand(self, query: np.ndarray, hits: Sequence[Hit]) -> np.ndarray:
        """``query`` plus the first ``neighbours`` hits' vectors, weighted; unit length.

        The query keeps weight 1 (its similarity to itself). Hits with a
        negative similarity get weight 0. Every hit must carry its vector.
        """
        expanded = np.asarray(query, dtype=np.float32).copy()
        for hit in hits[: self.neighbours]:
            if hit.vector is None:
                raise ValueError(f"hit {hit.image_id!r} has no vector to expand with")
            weight = max(hit.score, 0.0) ** self.alpha  # alpha 0: every hit weighs 1
            expanded += np.float32(weight) * hit.vector
        norm = float(np.linalg.norm(expanded))
        return expanded / norm if norm > 0 else np.asarray(query, dtype=np.float32)

"""Query path: preprocess (+crop) -> embed -> scatter to shards -> merge -> re-rank.

Shards are called in-process here (the embedded default). Results are
over-fetched so that ``k`` remain after the query image itself and
near-duplicates are removed; if too few remain, the fetch doubles.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from encoders.preprocess import CropBox, ImageLimits, preprocess
from encoders.runtime import OnnxEncoder
from index.faiss_index import SearchParams
from index.partition import Hit
from index.rerank import collapse_near_duplicates, merge_best

MAX_FETCH = 4096


class ShardLike(Protocol):
    """What the search service needs of a shard, in-process or remote."""

    def __len__(self) -> int: ...

    def search(
        self,
        query: np.ndarray,
        k: int,
        params: SearchParams | None = None,
        with_vectors: bool = False,
    ) -> list[Hit]: ...


@dataclass(frozen=True)
class SearchResult:
    """Ranked hits plus what produced them and how long each step took."""

    hits: list[Hit]
    model_version: str
    timings_ms: dict[str, float] = field(default_factory=dict)


class SearchService:
    """Embeds a query image and searches every shard."""

    def __init__(
        self,
        encoder: OnnxEncoder,
        shards: Sequence[ShardLike],
        limits: ImageLimits | None = None,
        dedup_threshold: float = 0.96,
        params: SearchParams | None = None,
    ) -> None:
        self.encoder = encoder
        self.shards = list(shards)
        self.limits = limits or ImageLimits()
        self.dedup_threshold = dedup_threshold
        self.params = params or SearchParams()

    @property
    def size(self) -> int:
        return sum(len(shard) for shard in self.shards)

    def search_bytes(
        self,
        data: bytes,
        k: int,
        crop: CropBox | None = None,
        exclude_image_id: str | None = None,
    ) -> SearchResult:
        """Search with an encoded image; raises PreprocessError on bad input."""
        started = time.perf_counter()
        inputs = preprocess(data, crop, self.limits)[None]
        decoded = time.perf_counter()
        query = self.encoder.embed(inputs)[0]
        embedded = time.perf_counter()
        hits = self.search_vector(query, k, exclude_image_id)
        done = time.perf_counter()
        return SearchResult(
            hits=hits,
            model_version=self.encoder.version,
            timings_ms={
                "preprocess": (decoded - started) * 1000,
                "embed": (embedded - decoded) * 1000,
                "search": (done - embedded) * 1000,
                "total": (done - started) * 1000,
            },
        )

    def search_vector(
        self,
        query: np.ndarray,
        k: int,
        exclude_image_id: str | None = None,
        params: SearchParams | None = None,
    ) -> list[Hit]:
        """Scatter ``query`` to every shard, merge, re-rank; ``k`` results when they exist."""
        params = params or self.params
        fetch = k + 1 + k // 2
        while True:
            per_shard = [shard.search(query, fetch, params, True) for shard in self.shards]
            candidates = (h for h in merge_best(per_shard) if h.image_id != exclude_image_id)
            kept = collapse_near_duplicates(candidates, self.dedup_threshold, k)
            exhausted = all(len(hits) < fetch for hits in per_shard)  # nothing more to fetch
            if len(kept) >= k or exhausted or fetch >= MAX_FETCH:
                return kept
            fetch = min(2 * fetch, MAX_FETCH)

"""Query path: preprocess (+crop) -> embed -> scatter to shards -> merge -> re-rank.

Shards are called in-process here (the embedded default). The merge keeps the
best score per image, drops the query image itself, and returns ``k`` results.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from encoders.preprocess import CropBox, ImageLimits, preprocess
from encoders.runtime import OnnxEncoder
from index.partition import Hit
from index.shard import IndexShard


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
        shards: Sequence[IndexShard],
        limits: ImageLimits | None = None,
    ) -> None:
        self.encoder = encoder
        self.shards = list(shards)
        self.limits = limits or ImageLimits()

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
        self, query: np.ndarray, k: int, exclude_image_id: str | None = None
    ) -> list[Hit]:
        """Scatter ``query`` to every shard, merge, drop the query image itself."""
        fetch = k + (1 if exclude_image_id else 0)
        best: dict[str, Hit] = {}
        for shard in self.shards:
            for hit in shard.search(query, fetch):
                if hit.image_id == exclude_image_id:
                    continue
                if hit.image_id not in best or hit.score > best[hit.image_id].score:
                    best[hit.image_id] = hit
        return sorted(best.values(), key=lambda hit: hit.score, reverse=True)[:k]

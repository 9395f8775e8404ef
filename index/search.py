"""Query path: preprocess (+crop) -> embed -> scatter to shards -> merge -> re-rank.

Shards are called in-process here (the embedded default). Results are
over-fetched so that ``k`` remain after the query image itself and
near-duplicates are removed; if too few remain, the fetch doubles.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
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
        visible: Callable[[str], bool] | None = None,
    ) -> None:
        # One tuple, replaced in one assignment: a model switch can never pair a
        # query embedded by one version with the index of another.
        self._serving: tuple[OnnxEncoder, list[ShardLike]] = (encoder, list(shards))
        self.limits = limits or ImageLimits()
        self.dedup_threshold = dedup_threshold
        # A last check against the system of record (the image store), for the
        # window between an acknowledged delete / make-private and the index
        # applying it from the log.
        self.visible = visible
        self.params = params or SearchParams()

    @property
    def encoder(self) -> OnnxEncoder:
        return self._serving[0]

    @property
    def shards(self) -> list[ShardLike]:
        return self._serving[1]

    def use(self, encoder: OnnxEncoder, shards: Sequence[ShardLike]) -> None:
        """Serve with another model version and its index, atomically (a model switch)."""
        self._serving = (encoder, list(shards))

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
        encoder, shards = self._serving
        started = time.perf_counter()
        inputs = preprocess(data, crop, self.limits)[None]
        decoded = time.perf_counter()
        query = encoder.embed(inputs)[0]
        embedded = time.perf_counter()
        hits = self.search_vector(query, k, exclude_image_id, shards=shards)
        done = time.perf_counter()
        return SearchResult(
            hits=hits,
            model_version=encoder.version,
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
        shards: Sequence[ShardLike] | None = None,
    ) -> list[Hit]:
        """Scatter ``query`` to every shard, merge, re-rank; ``k`` results when they exist."""
        params = params or self.params
        shards = self.shards if shards is None else shards
        fetch = k + 1 + k // 2
        while True:
            per_shard = [shard.search(query, fetch, params, True) for shard in shards]
            candidates = (
                h
                for h in merge_best(per_shard)
                if h.image_id != exclude_image_id
                and (self.visible is None or self.visible(h.image_id))
            )
            kept = collapse_near_duplicates(candidates, self.dedup_threshold, k)
            exhausted = all(len(hits) < fetch for hits in per_shard)  # nothing more to fetch
            if len(kept) >= k or exhausted or fetch >= MAX_FETCH:
                return kept
            fetch = min(2 * fetch, MAX_FETCH)

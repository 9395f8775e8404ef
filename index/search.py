"""Query path: preprocess (+crop) -> embed -> (query expansion: search, blend the
query with its best results) -> scatter to shards -> merge -> re-rank (-> pixel
verification of the top hits, when configured).

Shards, in-process or remote, are asked all at once with one deadline per
query (``index/scatter.py``: copies, failover, hedging, partial answers).
Results are over-fetched so that ``k`` remain after the query image itself
and near-duplicates are removed; if too few remain, the fetch doubles.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
from PIL import Image

from encoders.preprocess import CropBox, ImageLimits, crop_image, decode_image, preprocess_image
from encoders.runtime import OnnxEncoder
from encoders.similarity_scale import translate_threshold
from index.crop_verify import CropVerifier, QueryVerification, query_pixels
from index.faiss_index import SearchParams
from index.filters import SearchFilter
from index.partition import Hit, IndexedImage
from index.query_expansion import QueryExpansion
from index.query_windows import QueryWindows
from index.rerank import collapse_near_duplicates, merge_best
from index.scatter import Scatter, ScatterReport, ShardCopies

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

    def indexed_image(self, image_id: str) -> IndexedImage | None: ...

    def visible_ids(self, image_ids: Sequence[str]) -> set[str]: ...


class ViewVectors:
    """A query's view embeddings, computed when first asked for (an unsure search), and
    how many inputs that embedded (what a search cost in encoder passes)."""

    def __init__(self, encoder: OnnxEncoder, windows: QueryWindows, image: Image.Image) -> None:
        self.encoder = encoder
        self.windows = windows
        self.image = image
        self.embedded = 0

    def __call__(self) -> np.ndarray:
        vectors = self.encoder.embed(np.stack(self.windows.views(self.image)))
        self.embedded += len(vectors)
        return vectors


@dataclass(frozen=True)
class SearchResult:
    """Ranked hits plus what produced them and how long each step took."""

    hits: list[Hit]
    model_version: str
    timings_ms: dict[str, float] = field(default_factory=dict)
    verified: int = 0  # hits confirmed by a pixel match (crop verification)
    # Model inputs embedded for the query: 1 for an image, plus its views when the
    # search was unsure; 0 when the index's vector of a stored image stood in.
    embedded: int = 0
    # Shards that had no answering copy before the deadline: the hits are the others'.
    missing_shards: list[int] = field(default_factory=list)

    @property
    def partial(self) -> bool:
        return bool(self.missing_shards)


class SearchService:
    """Embeds a query image and searches every shard."""

    def __init__(
        self,
        encoder: OnnxEncoder,
        shards: Sequence[ShardLike | ShardCopies],
        limits: ImageLimits | None = None,
        dedup_threshold: float = 0.96,
        params: SearchParams | None = None,
        visible: Callable[[str], bool] | None = None,
        verifier: CropVerifier | None = None,
        expansion: QueryExpansion | None = None,
        windows: QueryWindows | None = None,
        deadline_s: float = 1.0,
        strict: bool = False,
        owner_of: Callable[[str], int] | None = None,
    ) -> None:
        self.limits = limits or ImageLimits()
        # Which shard an image id is routed to: lookups by id ask it first.
        self.owner_of = owner_of
        # One deadline per scatter; strict: no partial answers (ShardsUnavailableError).
        self.deadline_s = deadline_s
        self.strict = strict
        # On the base model's similarity scale; each serving model translates it.
        self.dedup_threshold = dedup_threshold
        # One tuple, replaced in one assignment: a model switch can never pair a
        # query embedded by one version with the index (or the near-duplicate
        # threshold) of another.
        self._serving: tuple[OnnxEncoder, Scatter, float] = self._serving_tuple(encoder, shards)
        # A last check against the system of record (the image store), for the
        # window between an acknowledged delete / make-private and the index
        # applying it from the log.
        self.visible = visible
        self.params = params or SearchParams()
        # Crop queries: the top hits re-ranked by a pixel match (index/crop_verify.py).
        self.verifier = verifier
        # Class-level quality: a first search's best results refine the query.
        self.expansion = expansion
        # Queries that contain their image (screenshots, padding): unsure searches
        # are repeated with windows of the query (index/query_windows.py).
        self.windows = windows

    @property
    def encoder(self) -> OnnxEncoder:
        return self._serving[0]

    @property
    def scatter(self) -> Scatter:
        """The serving index's shards, as they are asked."""
        return self._serving[1]

    @property
    def shards(self) -> list[ShardLike]:
        """Each serving shard's first copy (an in-process shard has only one)."""
        return [group.copies[0] for group in self.scatter.shards]

    @property
    def model_dedup_threshold(self) -> float:
        """The near-duplicate threshold on the serving model's own similarity scale."""
        return self._serving[2]

    def use(self, encoder: OnnxEncoder, shards: Sequence[ShardLike | ShardCopies]) -> None:
        """Serve with another model version and its index, atomically (a model switch)."""
        self._serving = self._serving_tuple(encoder, shards)

    def scatter_over(self, shards: Sequence[ShardLike | ShardCopies]) -> Scatter:
        """How this service asks ``shards`` (its deadline and strictness)."""
        return Scatter.of(shards, self.deadline_s, self.strict, owner_of=self.owner_of)

    def _serving_tuple(
        self, encoder: OnnxEncoder, shards: Sequence[ShardLike | ShardCopies]
    ) -> tuple[OnnxEncoder, Scatter, float]:
        return (
            encoder,
            self.scatter_over(shards),
            self._on_scale_of(encoder, self.dedup_threshold),
        )

    @staticmethod
    def _on_scale_of(encoder: OnnxEncoder, threshold: float) -> float:
        """A similarity threshold set on the base model's scale, on ``encoder``'s."""
        # Duck-typed encoders (evaluation's raw pixels) have no metadata: no scale.
        metadata = getattr(encoder, "metadata", None)
        return translate_threshold(threshold, getattr(metadata, "similarity_scale", None))

    @property
    def size(self) -> int:
        return len(self.scatter)

    def search_bytes(
        self,
        data: bytes,
        k: int,
        crop: CropBox | None = None,
        exclude_image_id: str | None = None,
        where: SearchFilter | None = None,
        stored_whole: bool = False,
    ) -> SearchResult:
        """Search with an encoded image, among the images ``where`` selects (all when
        ``None``); raises PreprocessError on bad input.

        ``stored_whole``: the bytes are a stored image searched whole (by id, its
        index vector not current yet): like :meth:`search_indexed`, no crop
        verification and no query views. A search must not cost six encoder
        passes and a pixel check of 100 candidates only because the index has
        not caught up with a re-upload: under load that is when it lags, and
        the extra CPU made it lag more (the soak at 100 uploads/s searched
        re-uploaded ids this way).
        """
        encoder, scatter, dedup = self._serving
        started = time.perf_counter()
        image = decode_image(data, self.limits)
        inputs = preprocess_image(image, crop)[None]
        decoded = time.perf_counter()
        query = encoder.embed(inputs)[0]
        embedded = time.perf_counter()
        pixel_checks = not (stored_whole and crop is None)
        verification = self.verification(image, crop) if pixel_checks else None
        views = self.window_vectors(encoder, image, crop) if pixel_checks else None
        report = ScatterReport()
        hits = self.search_vector(
            query,
            k,
            exclude_image_id,
            self.params_for(where),
            scatter=scatter,
            dedup=dedup,
            verification=verification,
            window_vectors=views,
            report=report,
        )
        done = time.perf_counter()
        verify_s = 0.0 if verification is None else verification.seconds
        return SearchResult(
            hits=hits,
            model_version=encoder.version,
            timings_ms={
                "preprocess": (decoded - started) * 1000,
                "embed": (embedded - decoded) * 1000,
                "search": (done - embedded - verify_s) * 1000,
                "verify": verify_s * 1000,
                "total": (done - started) * 1000,
            },
            verified=0 if verification is None else verification.verified,
            embedded=1 + (0 if views is None else views.embedded),
            missing_shards=sorted(report.missing),
        )

    def indexed_image(self, image_id: str) -> IndexedImage | None:
        """What the serving index holds of a visible ``image_id`` (vector, upload time,
        URI); None when no shard has it visible."""
        return self._serving[1].indexed_image(image_id)

    def visible_ids(self, image_ids: Sequence[str]) -> set[str]:
        """Those of ``image_ids`` the serving index holds visible: one request per shard
        (a corpus listing asked each image of each shard in turn, vector included)."""
        return self._serving[1].visible_ids(image_ids)

    def params_for(self, where: SearchFilter | None) -> SearchParams:
        """The service's search parameters, restricted to ``where`` when given."""
        return self.params if where is None else replace(self.params, where=where)

    def search_indexed(
        self, image_id: str, not_before: float, k: int, where: SearchFilter | None = None
    ) -> SearchResult | None:
        """Search with the vector the index holds for ``image_id``, if it may stand in.

        "More like this image" on a stored image needs no decoding and no
        encoder pass: the serving index already holds the image's global
        vector, from the same model. It stands in only if it comes from an
        upload at ``not_before`` or later (the store's time of the current
        bytes: a re-upload not yet indexed must not be answered with the old
        image) and the image is visible. Crop verification and query views do
        not apply: the query is a whole image of the index, not a crop of one or
        a picture containing one. ``None``: embed the stored bytes.
        """
        encoder, scatter, dedup = self._serving
        started = time.perf_counter()
        found = scatter.indexed_image(image_id)
        if found is None or found.uploaded_at < not_before:
            return None
        report = ScatterReport()
        hits = self.search_vector(
            found.vector, k, image_id, self.params_for(where), scatter, dedup, report=report
        )
        elapsed_ms = (time.perf_counter() - started) * 1000
        timings = {"preprocess": 0.0, "embed": 0.0, "search": elapsed_ms, "verify": 0.0}
        return SearchResult(
            hits,
            encoder.version,
            {**timings, "total": elapsed_ms},
            missing_shards=sorted(report.missing),
        )

    def verification(self, image: Image.Image, crop: CropBox | None) -> QueryVerification | None:
        """Crop verification for this query (``image`` is the decoded query, before
        ``crop``), to pass to :meth:`search_vector`; ``None`` when it is off."""
        if self.verifier is None:
            return None
        return QueryVerification(self.verifier, query_pixels(image, crop))

    def window_vectors(
        self, encoder: OnnxEncoder, image: Image.Image, crop: CropBox | None = None
    ) -> ViewVectors | None:
        """The embeddings of the views of ``image`` (cropped to ``crop``), computed only if
        called: most searches are sure of their result and never need them."""
        if self.windows is None:
            return None
        return ViewVectors(encoder, self.windows, crop_image(image, crop))

    def search_vector(
        self,
        query: np.ndarray,
        k: int,
        exclude_image_id: str | None = None,
        params: SearchParams | None = None,
        scatter: Scatter | None = None,
        dedup: float | None = None,
        verification: QueryVerification | None = None,
        window_vectors: Callable[[], np.ndarray] | None = None,
        report: ScatterReport | None = None,
    ) -> list[Hit]:
        """Scatter ``query`` to every shard, merge, re-rank; ``k`` results when they exist.

        ``scatter`` and ``dedup`` (the threshold on the model's scale) default to
        the serving model's; a caller that embedded with one passes both of it.
        Shards that did not answer in time are added to ``report``'s missing.
        ``verification`` reorders the visible candidates *before* the
        near-duplicate collapse, so that a confirmed source is the one of its
        look-alikes that stays; at least its ``top`` candidates are fetched.
        With query expansion on, a first search (without verification) finds
        the visible neighbours that the query is blended with. When the result
        is unsure (:class:`~index.query_windows.QueryWindows`), each of
        ``window_vectors()`` is searched too and every image keeps its best score.
        """
        params = params or self.params
        _, serving_scatter, serving_dedup = self._serving
        scatter = serving_scatter if scatter is None else scatter
        dedup = serving_dedup if dedup is None else dedup
        report = ScatterReport() if report is None else report
        if self.expansion is not None:
            first = self._ranked(query, self.expansion.neighbours, exclude_image_id, params,
                                 scatter, dedup, None, report)  # fmt: skip
            query = self.expansion.expand(query, first)
        hits = self._ranked(
            query, k, exclude_image_id, params, scatter, dedup, verification, report
        )
        verified = 0 if verification is None else verification.verified
        if self.windows is None or window_vectors is None:
            return hits
        unsure = self._on_scale_of(self._serving[0], self.windows.below)
        if not self.windows.wanted(hits, verified, unsure):
            return hits
        views = [
            self._ranked(vector, k, exclude_image_id, params, scatter, dedup, None, report)
            for vector in window_vectors()
        ]
        merged = self.windows.merge(hits, views)
        return hits if merged is None else collapse_near_duplicates(merged, dedup, k)

    def _ranked(
        self,
        query: np.ndarray,
        k: int,
        exclude_image_id: str | None,
        params: SearchParams,
        scatter: Scatter,
        dedup: float,
        verification: QueryVerification | None,
        report: ScatterReport,
    ) -> list[Hit]:
        """One search: visible hits, verified if asked, near-duplicates collapsed."""
        fetch = max(k + 1 + k // 2, 0 if verification is None else verification.top)
        while True:
            per_shard = scatter.search(query, fetch, params, True, report)
            candidates: Iterable[Hit] = (
                h
                for h in merge_best(per_shard)
                if h.image_id != exclude_image_id
                and (self.visible is None or self.visible(h.image_id))
            )
            if verification is not None:  # it needs them all; otherwise stay lazy
                candidates = verification(list(candidates))
            kept = collapse_near_duplicates(candidates, dedup, k)
            exhausted = all(len(hits) < fetch for hits in per_shard)  # nothing more to fetch
            if len(kept) >= k or exhausted or fetch >= MAX_FETCH:
                return kept
            fetch = min(2 * fetch, MAX_FETCH)

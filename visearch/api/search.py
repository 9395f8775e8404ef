"""``POST /v1/search``: images like an uploaded one or a stored one, optionally cropped
and filtered."""

from __future__ import annotations

import time
import uuid
from typing import Annotated

from fastapi import APIRouter, File, Form, UploadFile
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from encoders.preprocess import CropBox, PreprocessError
from index.filters import FilterError, SearchFilter
from index.scatter import ShardsUnavailableError
from index.search import SearchResult
from visearch.api.context import ApiContext
from visearch.api.errors import coded_error, preprocess_error
from visearch.api.filter_form import filter_from_form


class SearchHit(BaseModel):
    image_id: str
    score: float = Field(
        description="cosine similarity; 1 + the pixel match (above 1) for a hit that crop "
        "verification confirmed as the query's source (VISEARCH_VERIFY_TOP)"
    )
    thumbnail_url: str
    uri: str | None = Field(
        default=None,
        description="the http(s) URI the image was published with, when it had one",
    )


class SearchResponse(BaseModel):
    search_id: str
    model_version: str
    results: list[SearchHit]
    timings_ms: dict[str, float]
    partial: bool = Field(
        default=False,
        description="some shards had no copy answering before VISEARCH_SEARCH_DEADLINE_MS: "
        "the results are the other shards' (missing_shards says which)",
    )
    missing_shards: list[int] = Field(default_factory=list)
    embedded: int = Field(
        default=0,
        description="model inputs embedded for the query: 1 for an image, plus its views "
        "when the search was unsure; 0 when the index's vector of a stored image stood in",
    )


def search_router(ctx: ApiContext) -> APIRouter:
    """The search endpoint over ``ctx``'s search service."""
    router = APIRouter()
    settings = ctx.settings

    @router.post("/v1/search", response_model=SearchResponse)
    async def search_images(
        image: Annotated[UploadFile | None, File()] = None,
        image_id: Annotated[str | None, Form()] = None,
        crop: Annotated[str | None, Form(description="left,top,right,bottom")] = None,
        crop_units: Annotated[str, Form(pattern="^(px|relative)$")] = "px",
        k: Annotated[int, Form(ge=1)] = 10,
        owner_ids: Annotated[str | None, Form(description="only these owners: a,b")] = None,
        tags_any: Annotated[str | None, Form(description="at least one of these tags")] = None,
        tags_all: Annotated[str | None, Form(description="every one of these tags")] = None,
        uploaded_after: Annotated[float | None, Form(description="Unix s, inclusive")] = None,
        uploaded_before: Annotated[float | None, Form(description="Unix s, exclusive")] = None,
    ) -> SearchResponse:
        """Images most similar to an uploaded image or a stored one, optionally cropped,
        optionally among those of some owners, tags or an upload-time range."""
        if k > settings.max_k:
            raise coded_error(422, "bad_k", f"k must be between 1 and {settings.max_k}")
        if (image is None) == (image_id is None):
            raise coded_error(422, "bad_query", "send exactly one of 'image' and 'image_id'")
        try:
            where = filter_from_form(owner_ids, tags_any, tags_all, uploaded_after, uploaded_before)
        except FilterError as exc:
            raise coded_error(422, "bad_filter", str(exc)) from exc
        data = await ctx.read_upload(image) if image is not None else None
        # Decoding, embedding and the index scan block for tens of ms: off the
        # event loop, so that interactions, uploads and other searches are not
        # queued behind them (ONNX Runtime and faiss release the GIL).
        return await run_in_threadpool(
            answer_search, ctx, data, image_id, crop, crop_units, k, where
        )

    return router


def answer_search(
    ctx: ApiContext,
    data: bytes | None,
    image_id: str | None,
    crop: str | None,
    crop_units: str,
    k: int,
    where: SearchFilter | None = None,
) -> SearchResponse:
    """The blocking part of a search (in a worker thread): read, decode, embed, scan.

    A whole stored image is searched with the vector the index holds for
    it when that is current (``SearchService.search_indexed``): no decode,
    no encoder pass; otherwise with its stored bytes embedded, and still
    without crop verification or query views.
    """
    search, metrics = ctx.search, ctx.metrics
    started = time.perf_counter()
    result = None
    try:
        if data is None:
            assert image_id is not None
            stored = ctx.visible_image(image_id)
            if crop is None:
                result = search.search_indexed(image_id, stored.uploaded_at, k, where)
            if result is None:
                data = ctx.image_bytes(stored, ctx.access.image_bytes)
        box = CropBox.parse(crop, relative=crop_units == "relative") if crop else None
        if result is None:
            assert data is not None
            stored_whole = image_id is not None  # its crop, if any, is still verified
            result = search.search_bytes(data, k, box, image_id, where, stored_whole)
    except PreprocessError as exc:
        metrics.searches.labels(outcome="bad_input").inc()
        raise preprocess_error(exc) from exc
    except ShardsUnavailableError as exc:  # VISEARCH_SEARCH_STRICT
        metrics.searches.labels(outcome="unavailable").inc()
        raise coded_error(503, "shards_unavailable", str(exc)) from exc
    metrics.search_seconds.observe(time.perf_counter() - started)
    metrics.searches.labels(outcome="partial" if result.partial else "ok").inc()
    return search_response(result)


def search_response(result: SearchResult) -> SearchResponse:
    """The API's answer for ``result``, under a new search id."""
    return SearchResponse(
        search_id=uuid.uuid4().hex,
        model_version=result.model_version,
        results=[
            SearchHit(
                image_id=hit.image_id,
                score=hit.score,
                thumbnail_url=f"/v1/images/{hit.image_id}/thumbnail",
                uri=hit.uri or None,
            )
            for hit in result.hits
        ],
        timings_ms=result.timings_ms,
        partial=result.partial,
        missing_shards=result.missing_shards,
        embedded=result.embedded,
    )

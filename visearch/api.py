"""The HTTP API and web page: search by image (+crop), upload, thumbnails, health.

Built around a running :class:`~visearch.stack.LocalStack`. Bad input gets a
4xx with a JSON ``{"detail": {"code", "message"}}`` body; nothing here raises
a 500 for a client's mistake.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, File, Form, Header, HTTPException, Query, UploadFile
from fastapi.responses import HTMLResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.registry import Collector
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from encoders.preprocess import CropBox, ImageLimits, PreprocessError
from feedback.prometheus import FeedbackCollector
from feedback.service import FeedbackService
from index.filters import FilterError, SearchFilter
from index.scatter import ShardsUnavailableError
from index.search import SearchService
from streams.publisher import EventPublisher
from streams.remote_fetch import FetchError
from streams.schemas import ID_PATTERN
from streams.settings import Settings
from visearch.api_errors import install_error_handlers
from visearch.filter_form import checked_tags, filter_from_form, tags_from_form
from visearch.http_guard import (
    DEFAULT_BODY_BYTES,
    MULTIPART_OVERHEAD_BYTES,
    RequestGuard,
    RoutePolicy,
    api_routes,
    bearer_token_matches,
    page_security_policy,
)
from visearch.image_access import ImageAccess, NoImageBytesError, VisibleImage
from visearch.image_store import ImageStore, UnknownImageError, new_image_id
from visearch.interactions_api import (
    MAX_EVENT_BYTES,
    FeedbackSource,
    RemoteFeedback,
    interactions_router,
)
from visearch.models_api import models_router
from visearch.rollout import ModelRollout
from visearch.thumbnails import MAX_PREVIEW_SIZE, THUMBNAIL_SIZE, UriThumbnails
from visearch.uploads import accept_upload, publish_update


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


class UploadResponse(BaseModel):
    image_id: str
    status: str


class UpdateRequest(BaseModel):
    action: Literal["private", "public", "flag", "unflag", "tags"]
    tags: list[str] | None = Field(
        default=None, description="the image's new tags, with action 'tags' (and only then)"
    )


class ApiMetrics:
    """Request counters and latency histograms in base units (seconds)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.searches = Counter(
            "visearch_searches_total", "Search requests answered", ["outcome"], registry=registry
        )
        self.search_seconds = Histogram(
            "visearch_search_duration_seconds",
            "Search latency inside the API (decode + embed + search)",
            buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0),
            registry=registry,
        )
        self.uploads = Counter(
            "visearch_uploads_total", "Images accepted through the API", registry=registry
        )
        self.updates = Counter(
            "visearch_image_updates_total",
            "Visibility changes accepted through the API",
            ["action"],
            registry=registry,
        )
        self.uri_fetch_failures = Counter(
            "visearch_image_uri_fetch_failures_total",
            "Images a search by id or a thumbnail could not fetch from their http(s) URI",
            ["code"],
            registry=registry,
        )


def _error(status: int, code: str, message: str) -> HTTPException:
    return HTTPException(status_code=status, detail={"code": code, "message": message})


def _unknown_image(image_id: str) -> HTTPException:
    return _error(404, "unknown_image", f"no image with id {image_id!r}")


# Decode failures are the client's to fix (400), a bad crop box 422, and a full
# decode budget (encoders.preprocess.DecodeBudget) a 503 to retry.
PREPROCESS_STATUS = {"bad_crop": 422, "decoder_busy": 503}


def _preprocess_error(exc: PreprocessError) -> HTTPException:
    status = PREPROCESS_STATUS.get(exc.code, 400)
    headers = {"Retry-After": "1"} if status == 503 else None
    return HTTPException(status, {"code": exc.code, "message": exc.message}, headers=headers)


def create_api(
    settings: Settings,
    search: SearchService,
    store: ImageStore,
    publisher: EventPublisher,
    registry: CollectorRegistry | None = None,
    feedback: FeedbackService | None = None,
    readiness: Callable[[], dict[str, dict[str, object]]] | None = None,
    rollout: ModelRollout | None = None,
    collectors: Sequence[Collector] = (),
) -> FastAPI:
    """The FastAPI application over a running search service.

    ``feedback``: the in-process aggregator (its metrics join ``/metrics``);
    without it the live summary comes from ``VISEARCH_FEEDBACK_URL`` if set.
    ``readiness``: the checks behind ``/readyz`` (``LocalStack.readiness``).
    ``rollout``: model versions (``/v1/models``), when the shards are local.
    ``collectors``: more Prometheus collectors for ``/metrics`` (``LocalStack.collectors``).
    """
    metrics = ApiMetrics(registry or CollectorRegistry())
    if feedback is not None:
        metrics.registry.register(FeedbackCollector(feedback.state))
    for collector in collectors:
        metrics.registry.register(collector)
    limits = ImageLimits.from_settings(settings)
    access = ImageAccess(store, search, UriThumbnails.from_settings(settings, limits), limits)
    app = FastAPI(
        title="visearch",
        version="0.1.0",
        description="Real-time visual search: find images that look like this one.",
    )
    install_error_handlers(app)

    def require_token(authorization: Annotated[str | None, Header()] = None) -> None:
        """Write endpoints need ``Authorization: Bearer <VISEARCH_API_TOKEN>`` when set.

        :class:`~visearch.http_guard.RequestGuard` refuses them before their body
        is read; this dependency marks them (and documents them in OpenAPI).
        """
        if settings.api_token and not bearer_token_matches(authorization, settings.api_token):
            raise _error(401, "unauthorized", "a valid bearer token is required")

    async def read_upload(upload: UploadFile) -> bytes:
        data = await upload.read(settings.max_upload_bytes + 1)
        if len(data) > settings.max_upload_bytes:
            raise _error(
                413, "too_large", f"uploads are limited to {settings.max_upload_bytes} bytes"
            )
        return data

    source: FeedbackSource | None = feedback
    if source is None and settings.feedback_url:
        source = RemoteFeedback(settings.feedback_url)
    app.include_router(interactions_router(settings, publisher, source, require_token))
    app.include_router(models_router(rollout, require_token, settings.api_token))
    page = resources.files("visearch").joinpath("web/index.html").read_text()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index_page() -> str:
        return page

    @app.post("/v1/search", response_model=SearchResponse)
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
            raise _error(422, "bad_k", f"k must be between 1 and {settings.max_k}")
        if (image is None) == (image_id is None):
            raise _error(422, "bad_query", "send exactly one of 'image' and 'image_id'")
        try:
            where = filter_from_form(owner_ids, tags_any, tags_all, uploaded_after, uploaded_before)
        except FilterError as exc:
            raise _error(422, "bad_filter", str(exc)) from exc
        data = await read_upload(image) if image is not None else None
        # Decoding, embedding and the index scan block for tens of ms: off the
        # event loop, so that interactions, uploads and other searches are not
        # queued behind them (ONNX Runtime and faiss release the GIL).
        return await run_in_threadpool(answer_search, data, image_id, crop, crop_units, k, where)

    def visible_image(image_id: str) -> VisibleImage:
        """An image anyone may see, in the store or only in the index; 404 for the rest.

        Private, flagged, deleted and unknown ids answer alike, so neither a
        search by id nor a thumbnail (nor an error about either) tells that a
        hidden image exists, let alone its neighbours or its size.
        """
        try:
            return access.visible(image_id)
        except UnknownImageError as exc:
            raise _unknown_image(image_id) from exc

    def image_bytes(image: VisibleImage, read: Callable[[VisibleImage], bytes]) -> bytes:
        """``read(image)``: its bytes or preview, with the failures as HTTP errors."""
        try:
            return read(image)
        except UnknownImageError as exc:
            raise _unknown_image(image.image_id) from exc
        except NoImageBytesError as exc:
            raise _error(404, exc.code, exc.message) from exc
        except FetchError as exc:
            metrics.uri_fetch_failures.labels(code=exc.code).inc()
            raise _error(502, "image_unreachable", f"{exc.code}: {exc.message}") from exc

    def answer_search(
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
        no encoder pass.
        """
        started = time.perf_counter()
        result = None
        try:
            if data is None:
                assert image_id is not None
                stored = visible_image(image_id)
                if crop is None:
                    result = search.search_indexed(image_id, stored.uploaded_at, k, where)
                if result is None:
                    data = image_bytes(stored, access.image_bytes)
            box = CropBox.parse(crop, relative=crop_units == "relative") if crop else None
            if result is None:
                assert data is not None
                result = search.search_bytes(data, k, box, image_id, where)
        except PreprocessError as exc:
            metrics.searches.labels(outcome="bad_input").inc()
            raise _preprocess_error(exc) from exc
        except ShardsUnavailableError as exc:  # VISEARCH_SEARCH_STRICT
            metrics.searches.labels(outcome="unavailable").inc()
            raise _error(503, "shards_unavailable", str(exc)) from exc
        metrics.search_seconds.observe(time.perf_counter() - started)
        metrics.searches.labels(outcome="partial" if result.partial else "ok").inc()
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
        )

    @app.post(
        "/v1/images",
        response_model=UploadResponse,
        status_code=202,
        dependencies=[Depends(require_token)],
    )
    async def upload_image(
        image: Annotated[UploadFile, File()],
        image_id: Annotated[str | None, Form()] = None,
        owner_id: Annotated[str, Form(max_length=128)] = "anonymous",
        private: Annotated[bool, Form()] = False,
        tags: Annotated[str | None, Form(description="comma-separated, at most 32")] = None,
    ) -> UploadResponse:
        """Store an image and publish it for embedding; searchable within a second."""
        try:
            tag_list = tags_from_form(tags)
        except FilterError as exc:
            raise _error(422, "bad_tags", str(exc)) from exc
        new_id = image_id or new_image_id()
        if not ID_PATTERN.fullmatch(new_id):
            raise _error(
                422, "bad_image_id", "image_id must match [A-Za-z0-9][A-Za-z0-9._-]{0,127}"
            )
        data = await read_upload(image)
        try:
            # Validation decodes the image and the store writes it to disk: off the loop.
            await run_in_threadpool(
                accept_upload, settings, store, publisher, new_id, data, owner_id, private, tag_list
            )
        except PreprocessError as exc:
            raise _preprocess_error(exc) from exc
        metrics.uploads.inc()
        return UploadResponse(image_id=new_id, status="accepted")

    def update_image(image_id: str, action: str, tags: list[str] | None = None) -> UploadResponse:
        try:
            publish_update(settings, store, publisher, image_id, action, tags or ())
        except UnknownImageError as exc:
            raise _unknown_image(image_id) from exc
        metrics.updates.labels(action=action).inc()
        return UploadResponse(image_id=image_id, status="accepted")

    @app.patch(
        "/v1/images/{image_id}",
        response_model=UploadResponse,
        status_code=202,
        dependencies=[Depends(require_token)],
    )
    def patch_image(image_id: str, request: UpdateRequest) -> UploadResponse:
        """Make an image private or public, flag or unflag it, or replace its tags
        (``{"action": "tags", "tags": [...]}``); effective within a second."""
        if (request.action == "tags") != (request.tags is not None):
            raise _error(422, "bad_tags", "send tags exactly with action 'tags'")
        try:
            tags = checked_tags(request.tags or [])
        except FilterError as exc:
            raise _error(422, "bad_tags", str(exc)) from exc
        return update_image(image_id, request.action, tags)

    @app.delete(
        "/v1/images/{image_id}",
        response_model=UploadResponse,
        status_code=202,
        dependencies=[Depends(require_token)],
    )
    def delete_image(image_id: str) -> UploadResponse:
        """Delete an image: gone from the store now, from every result within a second."""
        return update_image(image_id, "delete")

    @app.get("/v1/images/{image_id}/thumbnail", responses={200: {"content": {"image/jpeg": {}}}})
    def thumbnail(
        image_id: str, size: Annotated[int, Query(ge=16, le=MAX_PREVIEW_SIZE)] = THUMBNAIL_SIZE
    ) -> Response:
        """A JPEG preview of a visible image, at most ``size`` pixels on a side: from
        the store, or fetched from the http(s) URI it was published with (then
        cached; 502 ``image_unreachable`` when the URI cannot be read).

        Not cacheable by shared caches: an image made private or deleted must
        disappear at once, not when a proxy's copy expires.
        """
        image = visible_image(image_id)
        try:
            preview = image_bytes(image, lambda found: access.preview(found, size))
        except PreprocessError as exc:
            raise _preprocess_error(exc) from exc
        return Response(
            preview,
            media_type="image/jpeg",
            headers={"Cache-Control": "private, no-store"},
        )

    @app.get("/v1/corpus")
    def corpus(
        limit: Annotated[int, Query(ge=1, le=500)] = 60,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, object]:
        """Public, unflagged stored image ids, for the page's picker (a copy the worker
        kept of an inline Kafka upload only while the index holds it visible)."""
        public = access.public_ids()
        return {"total": len(public), "image_ids": public[offset : offset + limit]}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness, answered on the event loop: a sync handler waited for a free worker
        thread, so 45 concurrent slow searches pushed its p99 past 100 ms."""
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"description": "a check failed; the body lists them"}})
    def readyz() -> dict[str, object]:
        """Ready to serve: broker reachable, indexes recovered and caught up, workers alive."""
        checks = readiness() if readiness is not None else {}
        failing = sorted(name for name, check in checks.items() if not check["ok"])
        if failing:
            raise HTTPException(
                503,
                {
                    "code": "not_ready",
                    "message": f"failing checks: {', '.join(failing)}",
                    "checks": checks,
                },
            )
        return {
            "status": "ok",
            "indexed": search.size,
            "model_version": search.encoder.version,
            "checks": checks,
        }

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    upload_bytes = settings.max_upload_bytes + MULTIPART_OVERHEAD_BYTES
    body_caps = {
        "/v1/search": upload_bytes,
        "/v1/images": upload_bytes,
        "/v1/interactions": settings.max_interactions_per_request * MAX_EVENT_BYTES,
    }
    app.add_middleware(
        RequestGuard,
        token=settings.api_token,
        policies=[
            (
                route,
                RoutePolicy(
                    body_caps.get(route.path, DEFAULT_BODY_BYTES),
                    any(d.call is require_token for d in route.dependant.dependencies),
                ),
            )
            for route in api_routes(app.routes)
        ],
        body_timeout_s=settings.http_body_timeout_s,
        content_security_policy=page_security_policy(page),
    )
    return app

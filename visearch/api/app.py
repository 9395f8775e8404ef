"""The HTTP API and web page: search by image (+crop), upload, thumbnails, health.

Built around a running :class:`~visearch.local.stack.LocalStack`. Bad input gets a
4xx with a JSON ``{"detail": {"code", "message"}}`` body; nothing here raises
a 500 for a client's mistake. Each resource is a router of its own
(``search_api``, ``images_api``, ``interactions_api``, ``models_api``) over one
:class:`~visearch.api.context.ApiContext`; this module assembles them with the
page, health, metrics and the request guard.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib import resources

from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.registry import Collector

from encoders.preprocess import ImageLimits
from feedback.prometheus import FeedbackCollector
from feedback.service import FeedbackService
from index.search import SearchService
from streams.publisher import EventPublisher
from streams.settings import Settings
from visearch.api.context import ApiContext, ApiMetrics, token_dependency
from visearch.api.errors import install_error_handlers
from visearch.api.guard import (
    DEFAULT_BODY_BYTES,
    MULTIPART_OVERHEAD_BYTES,
    RequestGuard,
    RoutePolicy,
    api_routes,
    page_security_policy,
)
from visearch.api.images import images_router
from visearch.api.interactions import (
    MAX_EVENT_BYTES,
    FeedbackSource,
    RemoteFeedback,
    interactions_router,
)
from visearch.api.models import models_router
from visearch.api.search import search_router
from visearch.catalog.access import ImageAccess
from visearch.catalog.store import ImageStore
from visearch.catalog.thumbnails import UriThumbnails
from visearch.models.rollout import ModelRollout

__all__ = ["ApiMetrics", "create_api"]


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
    require_token = token_dependency(settings)
    ctx = ApiContext(settings, search, store, publisher, metrics, access, require_token)
    app = FastAPI(
        title="visearch",
        version="0.1.0",
        description="Real-time visual search: find images that look like this one.",
    )
    install_error_handlers(app)
    source: FeedbackSource | None = feedback
    if source is None and settings.feedback_url:
        source = RemoteFeedback(settings.feedback_url)
    app.include_router(search_router(ctx))
    app.include_router(images_router(ctx))
    app.include_router(interactions_router(settings, publisher, source, require_token))
    app.include_router(models_router(rollout, require_token, settings.api_token))
    page = resources.files("visearch.api").joinpath("web/index.html").read_text()

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index_page() -> str:
        return page

    add_health_routes(app, search, metrics, readiness)
    install_request_guard(app, settings, require_token, page)
    return app


def add_health_routes(
    app: FastAPI,
    search: SearchService,
    metrics: ApiMetrics,
    readiness: Callable[[], dict[str, dict[str, object]]] | None,
) -> None:
    """``/healthz``, ``/readyz`` and ``/metrics``."""

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


def install_request_guard(
    app: FastAPI, settings: Settings, require_token: Callable[..., None], page: str
) -> None:
    """The guard in front of every route: body caps per route, the token before the
    body for the routes that depend on ``require_token``, the page's CSP."""
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

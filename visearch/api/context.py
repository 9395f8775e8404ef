"""What the API's routers share: settings, services, metrics and the token check.

One object built by :func:`visearch.api.app.create_api` and handed to each router
(search, images), so that a router is a plain function of what it uses
instead of a closure inside one long factory.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Header, UploadFile
from prometheus_client import CollectorRegistry, Counter, Histogram

from index.search import SearchService
from streams.publisher import EventPublisher
from streams.remote_fetch import FetchError
from streams.settings import Settings
from visearch.api.errors import coded_error, unknown_image
from visearch.api.guard import bearer_token_matches
from visearch.catalog.access import ImageAccess, NoImageBytesError, VisibleImage
from visearch.catalog.store import ImageStore, UnknownImageError


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


def token_dependency(settings: Settings) -> Callable[..., None]:
    """The dependency that marks write endpoints: ``Authorization: Bearer
    <VISEARCH_API_TOKEN>`` when a token is set.

    :class:`~visearch.api.guard.RequestGuard` refuses them before their body
    is read (it finds them by this very function); the dependency documents
    them in OpenAPI and checks again.
    """

    def require_token(authorization: Annotated[str | None, Header()] = None) -> None:
        if settings.api_token and not bearer_token_matches(authorization, settings.api_token):
            raise coded_error(401, "unauthorized", "a valid bearer token is required")

    return require_token


@dataclass(frozen=True)
class ApiContext:
    """Everything a router of the API needs."""

    settings: Settings
    search: SearchService
    store: ImageStore
    publisher: EventPublisher
    metrics: ApiMetrics
    access: ImageAccess
    require_token: Callable[..., None]

    def visible_image(self, image_id: str) -> VisibleImage:
        """An image anyone may see, in the store or only in the index; 404 for the rest.

        Private, flagged, deleted and unknown ids answer alike, so neither a
        search by id nor a thumbnail (nor an error about either) tells that a
        hidden image exists, let alone its neighbours or its size.
        """
        try:
            return self.access.visible(image_id)
        except UnknownImageError as exc:
            raise unknown_image(image_id) from exc

    def image_bytes(self, image: VisibleImage, read: Callable[[VisibleImage], bytes]) -> bytes:
        """``read(image)``: its bytes or preview, with the failures as HTTP errors."""
        try:
            return read(image)
        except UnknownImageError as exc:
            raise unknown_image(image.image_id) from exc
        except NoImageBytesError as exc:
            raise coded_error(404, exc.code, exc.message) from exc
        except FetchError as exc:
            self.metrics.uri_fetch_failures.labels(code=exc.code).inc()
            raise coded_error(502, "image_unreachable", f"{exc.code}: {exc.message}") from exc

    async def read_upload(self, upload: UploadFile) -> bytes:
        """An uploaded file's bytes; 413 past ``VISEARCH_MAX_UPLOAD_BYTES``."""
        limit = self.settings.max_upload_bytes
        data = await upload.read(limit + 1)
        if len(data) > limit:
            raise coded_error(413, "too_large", f"uploads are limited to {limit} bytes")
        return data

"""``visearch feedback``: the feedback aggregator as its own process (Helm's feedback workers).

Serves ``/metrics`` (the feedback counters, histogram and gauges),
``/v1/feedback`` (the summary the API's panel shows through
``VISEARCH_FEEDBACK_URL``), ``/healthz`` and ``/readyz``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from feedback.prometheus import FeedbackCollector
from feedback.service import FeedbackService
from streams.settings import Settings
from visearch.api.serving import serve


def feedback_app(service: FeedbackService) -> FastAPI:
    """HTTP endpoints over a running :class:`FeedbackService`."""
    registry = CollectorRegistry()
    registry.register(FeedbackCollector(service.state))
    app = FastAPI(title="visearch feedback", version="0.1.0")

    @app.get("/v1/feedback")
    def summary() -> dict[str, Any]:
        return service.summary()

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> dict[str, str]:
        if not service.is_alive():
            raise HTTPException(503, {"code": "not_ready", "message": "consumer stopped"})
        return {"status": "ok"}

    return app


def run_feedback_process(settings: Settings) -> None:
    """Aggregate until SIGTERM / Ctrl-C; the state is checkpointed on the way out."""
    with FeedbackService(settings) as service:
        serve(feedback_app(service), settings.http_host, settings.feedback_http_port, settings)

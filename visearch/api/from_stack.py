"""The HTTP API over a whole :class:`~visearch.local.stack.LocalStack`: every part wired in.

One place that knows which parts of a running stack the API uses (search,
image store, publisher, feedback, readiness checks, model rollout, extra
Prometheus collectors), so ``visearch run``, ``visearch api`` and the tests
serve the same application.
"""

from __future__ import annotations

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from streams.settings import Settings
from visearch.api.app import create_api
from visearch.local.stack import LocalStack


def stack_api(
    stack: LocalStack,
    registry: CollectorRegistry | None = None,
    settings: Settings | None = None,
) -> FastAPI:
    """The API of ``stack`` (``settings`` overrides the stack's, e.g. a token in a test)."""
    assert stack.search is not None and stack.publisher is not None, "start the stack first"
    return create_api(
        settings or stack.settings,
        stack.search,
        stack.store,
        stack.publisher,
        registry or CollectorRegistry(),
        feedback=stack.feedback,
        readiness=stack.readiness,
        rollout=stack.rollout,
        collectors=stack.collectors(),
    )

"""``POST /v1/interactions`` (the page's beacon) and ``GET /v1/feedback`` (live metrics).

Interactions are validated with the same schema code the aggregator uses
(:func:`streams.schemas.decode`), so the API and the stream never disagree
on what a valid event is. A batch is all-or-nothing: one bad event rejects
the request with the index and reason of every bad event, and nothing is
published, so a client can fix and resend without creating duplicates.
"""

from __future__ import annotations

import json
import urllib.error
from collections.abc import Callable
from typing import Any, Protocol

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, Field

from streams.http_json import request_json
from streams.publisher import EventPublisher
from streams.schemas import Interaction, SchemaError, decode
from streams.settings import MAX_INTERACTIONS_PER_REQUEST, Settings

# Bytes per event a well-formed interaction needs, generously; bounds the body.
MAX_EVENT_BYTES = 2048
# Errors listed in a 422: enough to fix a client, never a reply the size of the request.
MAX_LISTED_ERRORS = 10


class InteractionBatch(BaseModel):
    """Interaction events, each with the fields of :class:`streams.schemas.Interaction`:
    event_id, user_id, search_id, query_image_id (empty for an uploaded query),
    displayed_image_id, position (0-based), type (impression, click or dwell),
    timestamp (seconds since the epoch), and optionally dwell_ms, lat, lon and
    model_version (from the search response).

    The list's length is checked before any element is (a body of 10^6 zeros
    used to be validated element by element, on the event loop, into a 105 MB
    reply); the configured batch limit is then checked by :func:`validate_batch`.
    """

    events: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_INTERACTIONS_PER_REQUEST)


class InteractionsAccepted(BaseModel):
    accepted: int


class FeedbackSource(Protocol):
    """Where the live feedback summary comes from: in-process or a feedback process."""

    def summary(self) -> dict[str, Any]: ...


class RemoteFeedback:
    """The summary of a ``visearch feedback`` process, over HTTP."""

    def __init__(self, url: str, timeout_s: float = 2.0) -> None:
        self.url = url.rstrip("/") + "/v1/feedback"
        self.timeout_s = timeout_s

    def summary(self) -> dict[str, Any]:
        try:
            return request_json(self.url, timeout_s=self.timeout_s)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise HTTPException(
                503,
                {"code": "feedback_unavailable", "message": f"{self.url}: {exc}"},
            ) from exc


def validate_batch(raw_events: list[dict[str, Any]], limit: int) -> list[Interaction]:
    """Every event decoded, or HTTP 422 listing each bad one with its reason."""
    if len(raw_events) > limit:
        raise HTTPException(
            413, {"code": "too_many_events", "message": f"at most {limit} events per request"}
        )
    events, errors = [], []
    for index, raw in enumerate(raw_events):
        try:
            events.append(decode(Interaction, json.dumps(raw)))
        except SchemaError as exc:
            errors.append({"index": index, "code": exc.code, "message": exc.message})
    if errors:
        raise HTTPException(
            422,
            {
                "code": "bad_interactions",
                "message": f"{len(errors)} of {len(raw_events)} events are invalid; "
                f"none were accepted (the first {min(len(errors), MAX_LISTED_ERRORS)} listed)",
                "errors": errors[:MAX_LISTED_ERRORS],
            },
        )
    return events


def interactions_router(
    settings: Settings,
    publisher: EventPublisher,
    feedback: FeedbackSource | None,
    require_token: Callable[..., None],
) -> APIRouter:
    """The interaction and feedback endpoints."""
    router = APIRouter()
    guards = [Depends(require_token)] if settings.interactions_require_token else []

    @router.post(
        "/v1/interactions",
        response_model=InteractionsAccepted,
        status_code=202,
        dependencies=guards,
    )
    def post_interactions(batch: InteractionBatch) -> InteractionsAccepted:
        """Log impressions, clicks and dwell times (batched; all-or-nothing).

        The body is capped at ``max_interactions_per_request`` x 2 KiB before it
        is parsed (:class:`visearch.api.guard.RequestGuard`).
        """
        parsed = validate_batch(batch.events, settings.max_interactions_per_request)
        topic = settings.topics.interactions
        for event in parsed:  # keyed by search id: a session stays in one partition
            publisher.publish(topic, event.search_id, event)
        publisher.flush(timeout_s=10)
        return InteractionsAccepted(accepted=len(parsed))

    @router.get("/v1/feedback")
    def feedback_summary() -> dict[str, Any]:
        """Live CTR (overall, by position, by model version, per window) and time spent."""
        if feedback is None:
            raise HTTPException(
                503, {"code": "feedback_unavailable", "message": "no feedback aggregator here"}
            )
        return feedback.summary()

    return router

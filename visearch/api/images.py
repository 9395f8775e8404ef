"""``/v1/images``: upload, change visibility or tags, delete, thumbnails; and
``/v1/corpus``, the page's picker."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, File, Form, Query, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from encoders.preprocess import PreprocessError
from index.filters import FilterError
from streams.schemas import ID_PATTERN
from visearch.api.context import ApiContext
from visearch.api.errors import coded_error, preprocess_error, unknown_image
from visearch.api.filter_form import checked_tags, tags_from_form
from visearch.catalog.store import UnknownImageError, new_image_id
from visearch.catalog.thumbnails import MAX_PREVIEW_SIZE, THUMBNAIL_SIZE
from visearch.catalog.uploads import accept_upload, publish_update


class UploadResponse(BaseModel):
    image_id: str
    status: str


class UpdateRequest(BaseModel):
    action: Literal["private", "public", "flag", "unflag", "tags"]
    tags: list[str] | None = Field(
        default=None, description="the image's new tags, with action 'tags' (and only then)"
    )


def images_router(ctx: ApiContext) -> APIRouter:
    """Writes need the API token (``ctx.require_token``); reads only show visible images."""
    router = APIRouter()
    writes = {
        "response_model": UploadResponse,
        "status_code": 202,
        "dependencies": [Depends(ctx.require_token)],
    }

    @router.post("/v1/images", **writes)  # type: ignore[arg-type]
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
            raise coded_error(422, "bad_tags", str(exc)) from exc
        new_id = image_id or new_image_id()
        if not ID_PATTERN.fullmatch(new_id):
            raise coded_error(
                422, "bad_image_id", "image_id must match [A-Za-z0-9][A-Za-z0-9._-]{0,127}"
            )
        data = await ctx.read_upload(image)
        try:
            # Validation decodes the image and the store writes it to disk: off the loop.
            await run_in_threadpool(
                accept_upload,
                ctx.settings,
                ctx.store,
                ctx.publisher,
                new_id,
                data,
                owner_id,
                private,
                tag_list,
            )
        except PreprocessError as exc:
            raise preprocess_error(exc) from exc
        ctx.metrics.uploads.inc()
        return UploadResponse(image_id=new_id, status="accepted")

    @router.patch("/v1/images/{image_id}", **writes)  # type: ignore[arg-type]
    def patch_image(image_id: str, request: UpdateRequest) -> UploadResponse:
        """Make an image private or public, flag or unflag it, or replace its tags
        (``{"action": "tags", "tags": [...]}``); effective within a second."""
        if (request.action == "tags") != (request.tags is not None):
            raise coded_error(422, "bad_tags", "send tags exactly with action 'tags'")
        try:
            tags = checked_tags(request.tags or [])
        except FilterError as exc:
            raise coded_error(422, "bad_tags", str(exc)) from exc
        return update_image(ctx, image_id, request.action, tags)

    @router.delete("/v1/images/{image_id}", **writes)  # type: ignore[arg-type]
    def delete_image(image_id: str) -> UploadResponse:
        """Delete an image: gone from the store now, from every result within a second."""
        return update_image(ctx, image_id, "delete")

    _add_read_routes(router, ctx)
    return router


def _add_read_routes(router: APIRouter, ctx: ApiContext) -> None:
    """Thumbnails and the corpus listing: visible images only, no token."""

    @router.get("/v1/images/{image_id}/thumbnail", responses={200: {"content": {"image/jpeg": {}}}})
    def thumbnail(
        image_id: str, size: Annotated[int, Query(ge=16, le=MAX_PREVIEW_SIZE)] = THUMBNAIL_SIZE
    ) -> Response:
        """A JPEG preview of a visible image, at most ``size`` pixels on a side: from
        the store, or fetched from the http(s) URI it was published with (then
        cached; 502 ``image_unreachable`` when the URI cannot be read).

        Not cacheable by shared caches: an image made private or deleted must
        disappear at once, not when a proxy's copy expires.
        """
        image = ctx.visible_image(image_id)
        try:
            preview = ctx.image_bytes(image, lambda found: ctx.access.preview(found, size))
        except PreprocessError as exc:
            raise preprocess_error(exc) from exc
        return Response(
            preview,
            media_type="image/jpeg",
            headers={"Cache-Control": "private, no-store"},
        )

    @router.get("/v1/corpus")
    def corpus(
        limit: Annotated[int, Query(ge=1, le=500)] = 60,
        offset: Annotated[int, Query(ge=0)] = 0,
    ) -> dict[str, object]:
        """Public, unflagged stored image ids, for the page's picker (a copy the worker
        kept of an inline Kafka upload only while the index holds it visible)."""
        public = ctx.access.public_ids()
        return {"total": len(public), "image_ids": public[offset : offset + limit]}


def update_image(
    ctx: ApiContext, image_id: str, action: str, tags: list[str] | None = None
) -> UploadResponse:
    """Record ``action`` in the store, publish it, answer 202; 404 for an unknown id."""
    try:
        publish_update(ctx.settings, ctx.store, ctx.publisher, image_id, action, tags or ())
    except UnknownImageError as exc:
        raise unknown_image(image_id) from exc
    ctx.metrics.updates.labels(action=action).inc()
    return UploadResponse(image_id=image_id, status="accepted")

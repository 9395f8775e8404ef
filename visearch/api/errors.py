"""One error shape for every 4xx: ``{"detail": {"code", "message"}}``.

The endpoints raise their own errors in that shape; these handlers bring
FastAPI's and Starlette's own answers (request validation, unknown route,
wrong method) into it too, so a client needs one parser for every failure.
Request validation keeps FastAPI's per-field list under ``errors``: the first
:data:`MAX_LISTED_ERRORS`, without the offending input (pydantic puts the whole
value in each error; a list of 10^6 zeros came back as a 105 MB reply).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from encoders.preprocess import PreprocessError

STATUS_CODES = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}
MAX_LISTED_ERRORS = 10
# Decode failures are the client's to fix (400), a bad crop box 422, and a full
# decode budget (encoders.preprocess.DecodeBudget) a 503 to retry.
PREPROCESS_STATUS = {"bad_crop": 422, "decoder_busy": 503}


def coded_error(status: int, code: str, message: str) -> HTTPException:
    """An error answer in the one shape every endpoint uses."""
    return HTTPException(status_code=status, detail={"code": code, "message": message})


def unknown_image(image_id: str) -> HTTPException:
    """The one answer for unknown, private, flagged and deleted ids alike."""
    return coded_error(404, "unknown_image", f"no image with id {image_id!r}")


def preprocess_error(exc: PreprocessError) -> HTTPException:
    """An image the API could not use, as 400, 422 (crop) or 503 (decode budget full)."""
    status = PREPROCESS_STATUS.get(exc.code, 400)
    headers = {"Retry-After": "1"} if status == 503 else None
    return HTTPException(status, {"code": exc.code, "message": exc.message}, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on ``app``."""

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        listed = [
            {key: value for key, value in error.items() if key in ("type", "loc", "msg", "ctx")}
            for error in exc.errors()[:MAX_LISTED_ERRORS]
        ]
        errors = jsonable_encoder(listed, custom_encoder={bytes: _describe_bytes})
        where = ", ".join(".".join(str(p) for p in e.get("loc", ())) for e in errors[:5])
        detail = {"code": "bad_request", "message": f"invalid request: {where}", "errors": errors}
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail: Any = exc.detail
        if not (isinstance(detail, dict) and "code" in detail):
            code = STATUS_CODES.get(exc.status_code, f"http_{exc.status_code}")
            detail = {"code": code, "message": str(detail)}
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)


def _describe_bytes(value: bytes) -> str:
    """Never echo uploaded bytes back into an error."""
    return f"<{len(value)} bytes>"

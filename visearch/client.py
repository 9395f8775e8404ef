"""A Python client of the search API, sync and async, on httpx.

Apps and notebooks should not write multipart requests by hand, nor parse
error bodies: ``Client`` searches by file, bytes, PIL image or stored id (with
a crop), uploads, changes visibility, deletes and sends interactions, and
returns typed results. Every error answer becomes an :class:`ApiError`
carrying the API's machine-readable ``code`` (docs/http-api.md); 503 answers
(``decoder_busy``, ``not_ready``, ``shards_unavailable``) and connection
failures are retried with exponential backoff, honouring ``Retry-After``.

    from visearch.client import Client

    with Client("http://127.0.0.1:8080", token=None) as api:
        hits = api.search("photo.jpg", crop=(0.2, 0.2, 0.6, 0.6)).results
        api.upload("photo.jpg", image_id="photo-1", owner_id="me")
        api.set_visibility("photo-1", "private")
        mine = api.search(image_id="photo-1", where=SearchFilter.of(owner_ids=["me"]))

``AsyncClient`` has the same methods, awaited.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import httpx
from PIL import Image

from index.filters import SearchFilter
from streams.errors import VisearchError

ImageInput: TypeAlias = str | Path | bytes | Image.Image
Crop: TypeAlias = tuple[float, float, float, float]
RETRY_STATUSES = frozenset({502, 503, 504})
VISIBILITY_ACTIONS = ("private", "public", "flag", "unflag")


class ApiError(VisearchError):
    """An error answer of the API: HTTP ``status``, machine-readable ``code``, ``message``."""

    def __init__(self, status: int, code: str, message: str, body: Any = None) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.body = body


@dataclass(frozen=True)
class SearchHit:
    image_id: str
    score: float  # cosine similarity; above 1 for a hit crop verification confirmed
    thumbnail_url: str
    # The http(s) URI the image was published with (a backend's upload to Kafka).
    uri: str | None = None


@dataclass(frozen=True)
class SearchResult:
    search_id: str
    model_version: str
    results: list[SearchHit]
    timings_ms: dict[str, float]
    partial: bool = False  # some shards did not answer in time (missing_shards)
    missing_shards: list[int] = field(default_factory=list)
    embedded: int = 0  # model inputs embedded for the query (1 + views when unsure)

    @property
    def ids(self) -> list[str]:
        return [hit.image_id for hit in self.results]


@dataclass(frozen=True)
class Upload:
    image_id: str
    status: str


def _image_bytes(image: ImageInput) -> bytes:
    """The encoded image to send: file contents, bytes as given, a PIL image as PNG."""
    if isinstance(image, bytes):
        return image
    if isinstance(image, Image.Image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()
    return Path(image).read_bytes()


def _search_form(
    image: ImageInput | None,
    image_id: str | None,
    k: int,
    crop: Crop | None,
    crop_units: str,
    where: SearchFilter | None,
) -> tuple[dict[str, str], dict[str, Any] | None]:
    if (image is None) == (image_id is None):
        raise ValueError("give exactly one of image and image_id")
    data = {"k": str(k), "crop_units": crop_units}
    data.update(_filter_form(where))
    if crop is not None:
        data["crop"] = ",".join(f"{v:g}" for v in crop)
    if image_id is not None:
        data["image_id"] = image_id
        return data, None
    assert image is not None
    return data, {"image": ("query", _image_bytes(image), "application/octet-stream")}


def _filter_form(where: SearchFilter | None) -> dict[str, str]:
    """A filter as the search form's fields (lists comma-separated)."""
    if where is None:
        return {}
    return {
        name: ",".join(value) if isinstance(value, list) else repr(float(value))
        for name, value in where.to_json().items()
    }


def _result(body: Mapping[str, Any]) -> SearchResult:
    return SearchResult(
        search_id=body["search_id"],
        model_version=body["model_version"],
        results=[
            SearchHit(h["image_id"], float(h["score"]), h["thumbnail_url"], h.get("uri"))
            for h in body["results"]
        ],
        timings_ms=dict(body.get("timings_ms", {})),
        partial=bool(body.get("partial", False)),
        missing_shards=list(body.get("missing_shards", [])),
        embedded=int(body.get("embedded", 0)),
    )


def _check(response: httpx.Response) -> Any:
    """The JSON body of a success; :class:`ApiError` with the API's code otherwise."""
    if response.is_success:
        return response.json() if response.content else None
    try:
        body = response.json()
        detail = body.get("detail", body) if isinstance(body, dict) else {}
        code, message = str(detail.get("code", "http_error")), str(detail.get("message", ""))
    except ValueError:
        body, code, message = response.text, "http_error", response.text[:200]
    raise ApiError(response.status_code, code, message or response.reason_phrase, body)


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff for 502/503/504 and connection errors; ``Retry-After`` wins."""

    attempts: int = 4
    first_s: float = 0.2
    max_s: float = 5.0

    def delay(self, attempt: int, response: httpx.Response | None) -> float:
        after = response.headers.get("Retry-After") if response is not None else None
        if after is not None and after.isdigit():
            return min(float(after), self.max_s)
        return min(self.first_s * 2**attempt, self.max_s)


class _Requests:
    """What both clients share: base URL, token, timeouts, retries, request building."""

    def __init__(
        self, base_url: str, token: str | None, timeout_s: float, retry: RetryPolicy | None
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()

    def retryable(self, attempt: int, response: httpx.Response | None) -> bool:
        last = attempt + 1 >= self.retry.attempts
        return not last and (response is None or response.status_code in RETRY_STATUSES)

    def outcome(
        self, attempt: int, response: httpx.Response | None, error: httpx.TransportError | None
    ) -> float | None:
        """Seconds to wait before the next attempt, or ``None`` when ``response`` is the
        answer; re-raises ``error`` when no attempt is left (the one retry rule of both)."""
        if error is not None:
            if not self.retryable(attempt, None):
                raise error
            return self.retry.delay(attempt, None)
        assert response is not None
        if not response.is_success and self.retryable(attempt, response):
            return self.retry.delay(attempt, response)
        return None


class Client(_Requests):
    """Synchronous client; a context manager (or call :meth:`close`)."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(base_url, token, timeout_s, retry)
        self._http = httpx.Client(base_url=self.base_url, headers=self.headers, timeout=timeout_s)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        for attempt in range(self.retry.attempts):
            response, error = None, None
            try:
                response = self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                error = exc
            wait = self.outcome(attempt, response, error)
            if wait is None:
                return _check(response)  # type: ignore[arg-type]  # set when wait is None
            time.sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def search(
        self,
        image: ImageInput | None = None,
        *,
        image_id: str | None = None,
        k: int = 10,
        crop: Crop | None = None,
        crop_units: str = "relative",
        where: SearchFilter | None = None,
    ) -> SearchResult:
        """Images like ``image`` (a path, bytes or PIL image) or a stored ``image_id``;
        ``crop`` = (left, top, right, bottom), relative (0-1) by default or ``"px"``;
        ``where``: only images of some owners, tags or an upload-time range."""
        data, files = _search_form(image, image_id, k, crop, crop_units, where)
        return _result(self._send("POST", "/v1/search", data=data, files=files))

    def upload(
        self,
        image: ImageInput,
        *,
        image_id: str | None = None,
        owner_id: str | None = None,
        private: bool = False,
        tags: Sequence[str] = (),
    ) -> Upload:
        data = _upload_form(image_id, owner_id, private, tags)
        files = {"image": ("upload", _image_bytes(image), "application/octet-stream")}
        body = self._send("POST", "/v1/images", data=data, files=files)
        return Upload(body["image_id"], body["status"])

    def set_visibility(self, image_id: str, action: str) -> None:
        """``private``, ``public``, ``flag`` or ``unflag``."""
        self._send("PATCH", f"/v1/images/{image_id}", json=_visibility(action))

    def set_tags(self, image_id: str, tags: Sequence[str]) -> None:
        """Replace an image's tags (what ``where`` filters select on)."""
        self._send("PATCH", f"/v1/images/{image_id}", json=_tags(tags))

    def delete(self, image_id: str) -> None:
        self._send("DELETE", f"/v1/images/{image_id}")

    def send_interactions(self, events: Iterable[Mapping[str, Any]]) -> int:
        """Impressions, clicks, dwells (docs/feedback.md); returns how many were accepted."""
        body = self._send("POST", "/v1/interactions", json={"events": list(events)})
        return int(body["accepted"])

    def thumbnail(self, image_id: str, size: int = 160) -> bytes:
        """The JPEG preview of a public image."""
        response = self._http.get(f"/v1/images/{image_id}/thumbnail", params={"size": size})
        if not response.is_success:
            _check(response)
        return response.content


class AsyncClient(_Requests):
    """The same as :class:`Client`, for asyncio code (``async with``)."""

    def __init__(
        self,
        base_url: str,
        token: str | None = None,
        timeout_s: float = 30.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__(base_url, token, timeout_s, retry)
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=self.headers, timeout=timeout_s
        )

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(self, method: str, path: str, **kwargs: Any) -> Any:
        for attempt in range(self.retry.attempts):
            response, error = None, None
            try:
                response = await self._http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                error = exc
            wait = self.outcome(attempt, response, error)
            if wait is None:
                return _check(response)  # type: ignore[arg-type]  # set when wait is None
            await asyncio.sleep(wait)
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def search(
        self,
        image: ImageInput | None = None,
        *,
        image_id: str | None = None,
        k: int = 10,
        crop: Crop | None = None,
        crop_units: str = "relative",
        where: SearchFilter | None = None,
    ) -> SearchResult:
        data, files = _search_form(image, image_id, k, crop, crop_units, where)
        return _result(await self._send("POST", "/v1/search", data=data, files=files))

    async def upload(
        self,
        image: ImageInput,
        *,
        image_id: str | None = None,
        owner_id: str | None = None,
        private: bool = False,
        tags: Sequence[str] = (),
    ) -> Upload:
        data = _upload_form(image_id, owner_id, private, tags)
        files = {"image": ("upload", _image_bytes(image), "application/octet-stream")}
        body = await self._send("POST", "/v1/images", data=data, files=files)
        return Upload(body["image_id"], body["status"])

    async def set_visibility(self, image_id: str, action: str) -> None:
        await self._send("PATCH", f"/v1/images/{image_id}", json=_visibility(action))

    async def set_tags(self, image_id: str, tags: Sequence[str]) -> None:
        await self._send("PATCH", f"/v1/images/{image_id}", json=_tags(tags))

    async def delete(self, image_id: str) -> None:
        await self._send("DELETE", f"/v1/images/{image_id}")

    async def send_interactions(self, events: Iterable[Mapping[str, Any]]) -> int:
        body = await self._send("POST", "/v1/interactions", json={"events": list(events)})
        return int(body["accepted"])


def _upload_form(
    image_id: str | None, owner_id: str | None, private: bool, tags: Sequence[str]
) -> dict[str, str]:
    data = {"private": "true" if private else "false"}
    if tags:
        data["tags"] = ",".join(tags)
    if image_id is not None:
        data["image_id"] = image_id
    if owner_id is not None:
        data["owner_id"] = owner_id
    return data


def _visibility(action: str) -> dict[str, str]:
    if action not in VISIBILITY_ACTIONS:
        raise ValueError(f"action must be one of {', '.join(VISIBILITY_ACTIONS)}")
    return {"action": action}


def _tags(tags: Sequence[str]) -> dict[str, Any]:
    return {"action": "tags", "tags": list(tags)}


__all__: Sequence[str] = [
    "ApiError", "AsyncClient", "Client", "RetryPolicy", "SearchFilter", "SearchHit",
    "SearchResult", "Upload",
]  # fmt: skip

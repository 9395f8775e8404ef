"""Shards in other processes, over HTTP: the server side and the client side.

The wire format is JSON with vectors as base64 little-endian float32 (the same
encoding as the embeddings log), except for the API's searches, which are
compact bytes both ways (``index/query_wire.py``, ``index/hits_wire.py``),
answered before FastAPI (``index/binary_search_path.py``) and sent through
pooled keep-alive sockets (``streams/keepalive.py``), as are the lookups. The
client has the same ``search`` and ``__len__`` as an in-process
:class:`~index.shard.IndexShard`, so the search service scatters to either
without knowing which. It keeps its connections open (pooled per shard copy):
a new TCP connection per request cost a round trip and a socket per shard per
query.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from fastapi import FastAPI, HTTPException, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, Field

from index.binary_search_path import SEARCH_PATH, BinarySearchPath
from index.faiss_index import SearchParams
from index.filters import FilterError, SearchFilter
from index.hits_wire import MEDIA_TYPE, decode_hits, encode_hits
from index.partition import Hit, IndexedImage
from index.query_wire import MEDIA_TYPE as QUERY_MEDIA_TYPE
from index.query_wire import encode_query
from index.shard import IndexShard
from streams.errors import VisearchError
from streams.keepalive import Exchange, KeepAlivePool
from streams.schemas import ID_PATTERN, SchemaError, decode_floats, vector_to_b64


class RemoteShardError(VisearchError, RuntimeError):
    """A shard process did not answer, or answered with an error."""


class ShardSearchRequest(BaseModel):
    vector_b64: str
    k: int = Field(ge=1, le=4096)
    ef_search: int = Field(default=64, ge=1, le=4096)
    nprobe: int = Field(default=16, ge=1, le=65536)
    with_vectors: bool = False
    # "binary": the compact hits answer of index/hits_wire.py (the API's scatter asks for it)
    format: str = Field(default="json", pattern="^(json|binary)$")
    # A filter's wire form (SearchFilter.to_json); absent: every visible image.
    where: dict[str, Any] | None = None


# Ids per visibility request (a corpus listing asks in chunks of this many).
MAX_VISIBLE_IDS = 10_000


class VisibleIdsRequest(BaseModel):
    image_ids: list[str] = Field(max_length=MAX_VISIBLE_IDS)


def create_shard_api(
    shard: IndexShard,
    shard_id: int,
    registry: CollectorRegistry | None = None,
    search_threads: int = 0,
) -> FastAPI:
    """The HTTP face of one shard process; ``/metrics`` serves ``registry`` when given;
    binary searches run on the event loop, or on ``search_threads`` threads."""
    app = FastAPI(title="visearch shard", version="0.1.0")
    app.add_middleware(BinarySearchPath, shard=shard, threads=search_threads)

    @app.post("/v1/shard/search", response_model=None)
    def search(request: ShardSearchRequest) -> dict[str, Any] | Response:
        try:
            query = decode_floats(request.vector_b64, (shard.dim,), "vector_b64")
        except SchemaError as exc:
            raise HTTPException(422, {"code": exc.code, "message": exc.message}) from exc
        try:
            where = None if request.where is None else SearchFilter.from_json(request.where)
        except FilterError as exc:
            raise HTTPException(422, {"code": "bad_filter", "message": str(exc)}) from exc
        params = SearchParams(ef_search=request.ef_search, nprobe=request.nprobe, where=where)
        hits = shard.search(query, request.k, params, request.with_vectors)
        if request.format == "binary":
            return Response(encode_hits(hits), media_type=MEDIA_TYPE)
        return {
            "hits": [
                {
                    "image_id": hit.image_id,
                    "score": hit.score,
                    **({"uri": hit.uri} if hit.uri else {}),
                    **({"vector_b64": vector_to_b64(hit.vector)} if hit.vector is not None else {}),
                }
                for hit in hits
            ]
        }

    @app.get("/v1/shard/status")
    def status() -> dict[str, Any]:
        return {
            "shard_id": shard_id,
            "model_version": shard.model_version,
            "epoch": shard.epoch,
            "partitions": sorted(shard.partitions),
            "images": len(shard),
            "consumed_offsets": shard.consumed_offsets,
            "recovered_offsets": shard.recovered_offsets,
        }

    @app.get("/v1/shard/images/{image_id}")
    def image(image_id: str) -> dict[str, Any]:
        found = shard.indexed_image(image_id)
        if found is None:
            return {"image_id": image_id, "visible": False}
        return {
            "image_id": image_id,
            "visible": True,
            "vector_b64": vector_to_b64(found.vector),
            "uploaded_at": found.uploaded_at,
            "uri": found.uri,
        }

    @app.post("/v1/shard/visible")
    def visible(request: VisibleIdsRequest) -> dict[str, list[str]]:
        return {"visible": sorted(shard.visible_ids(request.image_ids))}

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    if registry is not None:

        @app.get("/metrics", include_in_schema=False)
        def metrics() -> Response:
            return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


class RemoteShard:
    """Client of a shard process; quacks like an in-process IndexShard for search."""

    def __init__(self, base_url: str, dim: int, timeout_s: float = 2.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.dim = dim
        self.timeout_s = timeout_s
        # Keep-alive connections the scatter's threads share: binary searches (once
        # per query and shard) and the JSON lookups (status, an image, visibility).
        self._pool = KeepAlivePool(self.base_url, timeout_s)

    def close(self) -> None:
        self._pool.close()

    def __len__(self) -> int:
        return int(self.status()["images"])

    def __contains__(self, image_id: str) -> bool:
        return self._lookup(image_id) is not None

    def status(self) -> dict[str, Any]:
        return self._call("GET", "/v1/shard/status")

    def indexed_image(self, image_id: str) -> IndexedImage | None:
        answer = self._lookup(image_id)
        if answer is None:
            return None
        vector = decode_floats(answer["vector_b64"], (self.dim,), "vector_b64")
        return IndexedImage(vector, float(answer["uploaded_at"]), str(answer.get("uri", "")))

    def _lookup(self, image_id: str) -> dict[str, Any] | None:
        """The shard's answer for a visible ``image_id``; None when it is not visible,
        or is no id an image can have (nothing to ask: and nothing for a path)."""
        if not ID_PATTERN.fullmatch(image_id):
            return None
        answer = self._call("GET", f"/v1/shard/images/{image_id}")
        return answer if answer["visible"] else None

    def visible_ids(self, image_ids: Sequence[str]) -> set[str]:
        """Those of ``image_ids`` the shard holds visible, asked in chunks."""
        visible: set[str] = set()
        for start in range(0, len(image_ids), MAX_VISIBLE_IDS):
            chunk = list(image_ids[start : start + MAX_VISIBLE_IDS])
            answer = self._call("POST", "/v1/shard/visible", {"image_ids": chunk})
            visible.update(set(chunk).intersection(answer["visible"]))  # only what was asked
        return visible

    def search(
        self,
        query: np.ndarray,
        k: int,
        params: SearchParams | None = None,
        with_vectors: bool = False,
    ) -> list[Hit]:
        return self.start_search(query, k, params, with_vectors).finish()

    def start_search(
        self,
        query: np.ndarray,
        k: int,
        params: SearchParams | None = None,
        with_vectors: bool = False,
    ) -> PendingSearch:
        """Send the search now; its hits come from the returned object's ``finish``."""
        body = encode_query(query, k, params or SearchParams(), with_vectors)
        try:
            exchange = self._pool.send(SEARCH_PATH, body, QUERY_MEDIA_TYPE)
        except OSError as exc:
            raise RemoteShardError(f"shard {self.base_url} failed on search: {exc}") from exc
        return PendingSearch(self.base_url, self.dim, exchange)

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One JSON request and its JSON object answer; any failure is a
        :class:`RemoteShardError`."""
        try:
            if method == "GET":
                answer = self._pool.get(path)
            else:
                answer = self._pool.post(path, json.dumps(body).encode(), "application/json")
        except OSError as exc:
            raise RemoteShardError(f"shard {self.base_url} failed on {path}: {exc}") from exc
        if not 200 <= answer.status < 300:
            raise RemoteShardError(
                f"shard {self.base_url} answered {path} with {answer.status}: "
                f"{answer.body[:200].decode(errors='replace')}"
            )
        try:
            parsed = json.loads(answer.body)
        except ValueError as exc:
            raise RemoteShardError(f"shard {self.base_url} sent bad JSON on {path}") from exc
        if not isinstance(parsed, dict):
            raise RemoteShardError(f"shard {self.base_url} answered {path} with no JSON object")
        return parsed


class PendingSearch:
    """A search sent to a shard process, its answer not read yet."""

    def __init__(self, base_url: str, dim: int, exchange: Exchange) -> None:
        self.base_url, self.dim, self.exchange = base_url, dim, exchange

    def fileno(self) -> int:
        return self.exchange.fileno()

    def abandon(self) -> None:
        self.exchange.abandon()

    def finish(self, timeout_s: float | None = None) -> list[Hit]:
        """The shard's hits (blocks until they arrive, each read at most ``timeout_s``
        when given); a :class:`RemoteShardError` when it fails or answers anything
        but hits."""
        try:
            answer = self.exchange.finish(timeout_s)
        except OSError as exc:
            raise RemoteShardError(f"shard {self.base_url} failed on search: {exc}") from exc
        if answer.status != 200:
            raise RemoteShardError(
                f"shard {self.base_url} answered search with {answer.status}: "
                f"{answer.body[:200].decode(errors='replace')}"
            )
        try:
            return decode_hits(answer.body, self.dim)
        except ValueError as exc:
            raise RemoteShardError(f"shard {self.base_url} sent bad hits: {exc}") from exc

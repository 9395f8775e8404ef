"""The shard's search in bytes, answered before the web framework sees the request.

The scatter asks every shard for every query, so a shard request's overhead
is multiplied by the shard count: through FastAPI (middleware, routing,
pydantic, base64, a worker-thread hop) a 1280-d search of 2,000 vectors cost
2.8 ms of CPU across both ends for 0.27 ms of search, and 8 shard processes
on 2 cores spent most of a query on it (``bench.scatter``). This ASGI
middleware answers ``POST /v1/shard/search`` with a ``VSQ1`` body
(``index/query_wire.py``) itself: it reads the body (capped), searches on the
event loop's thread (a shard search is a few ms at most, and the hop to a
worker thread cost ~0.45 ms of a 1.1 ms request), or on a pool of threads
when ``VISEARCH_SHARD_SEARCH_THREADS`` asks for one (a shard with several
cores and concurrent queries), and answers ``VSH2`` hits.
Every other request, the JSON search included, goes on to the app.
"""

from __future__ import annotations

import asyncio
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from index.hits_wire import MEDIA_TYPE as HITS_MEDIA_TYPE
from index.hits_wire import encode_hits
from index.query_wire import HEADER, MAX_FILTER_BYTES, QueryWireError, decode_query
from index.query_wire import MEDIA_TYPE as QUERY_MEDIA_TYPE
from index.shard import IndexShard
from streams.asgi_answer import send_answer, send_error

SEARCH_PATH = "/v1/shard/search"

Scope = dict[str, Any]
Receive = Any
Send = Any


class BinarySearchPath:
    """ASGI middleware: binary shard searches here, everything else to ``app``."""

    def __init__(self, app: Any, shard: IndexShard, threads: int = 0) -> None:
        self.app = app
        self.shard = shard
        self.max_body = HEADER.size + MAX_FILTER_BYTES + 4 * shard.dim
        # 0: search on the event loop's thread; N: on N threads (several cores at once)
        self.pool = ThreadPoolExecutor(threads, "shard-search") if threads else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._is_binary_search(scope):
            await self.app(scope, receive, send)
            return
        body = await self._body(receive)
        if body is None:
            await send_error(send, 413, "too_large", f"body over {self.max_body} bytes")
            return
        try:
            request = decode_query(body, self.shard.dim)
        except QueryWireError as exc:
            await send_error(send, 422, exc.code, exc.message)
            return
        search = functools.partial(
            self.shard.search, request.query, request.k, request.params, request.with_vectors
        )
        if self.pool is None:
            hits = search()
        else:
            hits = await asyncio.get_running_loop().run_in_executor(self.pool, search)
        await send_answer(send, 200, encode_hits(hits), HITS_MEDIA_TYPE)

    @staticmethod
    def _is_binary_search(scope: Scope) -> bool:
        if scope["type"] != "http" or scope["path"] != SEARCH_PATH or scope["method"] != "POST":
            return False
        for name, value in scope["headers"]:
            if name == b"content-type":
                return bool(value.split(b";")[0].strip() == QUERY_MEDIA_TYPE.encode())
        return False

    async def _body(self, receive: Receive) -> bytes | None:
        """The request body, or None past ``max_body`` (the rest is not read)."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return b""
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

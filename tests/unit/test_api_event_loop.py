"""The search endpoint runs its blocking work off the event loop.

Decoding, embedding and the index scan take tens of ms (hundreds on a busy
machine); run on the event loop they queued every other request behind them:
interactions, uploads, health checks and other searches.
"""

from __future__ import annotations

import asyncio
import io
import threading
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from index.search import SearchService
from index.shard import IndexShard
from streams.settings import Settings
from visearch.api.app import create_api
from visearch.catalog.store import ImageStore

DIM = 8


class BlockedEncoder:
    """Stands in for ONNX Runtime: an embed that holds its thread until released (the
    real one holds it for milliseconds and releases the GIL, as this one does)."""

    version = "blocked"
    dim = DIM

    def __init__(self) -> None:
        self.calls = 0
        self.entered = threading.Event()
        self.release = threading.Event()

    def embed(self, inputs: np.ndarray) -> np.ndarray:
        self.calls += 1
        self.entered.set()
        assert self.release.wait(30), "never released"
        vectors = np.ones((len(inputs), DIM), dtype=np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def test_health_check_answers_while_a_search_embeds(tmp_path: Path) -> None:
    encoder = BlockedEncoder()
    shard = IndexShard(DIM, "blocked", [0])
    service = SearchService(encoder, [shard])  # type: ignore[arg-type]
    app = create_api(Settings(), service, ImageStore(tmp_path / "store"), publisher=None)  # type: ignore[arg-type]

    async def scenario() -> tuple[int, bool, int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            search = asyncio.create_task(
                client.post("/v1/search", files={"image": ("q.png", _png(), "image/png")})
            )
            assert await asyncio.to_thread(encoder.entered.wait, 30)  # the search embeds now
            # answered while the search still holds its thread (a hang fails here)
            health = await asyncio.wait_for(client.get("/healthz"), timeout=30)
            search_still_running = not search.done()
            encoder.release.set()
            response = await search
            return health.status_code, search_still_running, response.status_code

    health_status, search_still_running, status = asyncio.run(scenario())
    assert health_status == 200 and search_still_running
    assert status == 200 and encoder.calls == 1

"""The search endpoint runs its blocking work off the event loop.

Decoding, embedding and the index scan take tens of ms (hundreds on a busy
machine); run on the event loop they queued every other request behind them:
interactions, uploads, health checks and other searches.
"""

from __future__ import annotations

import asyncio
import io
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from index.search import SearchService
from index.shard import IndexShard
from streams.settings import Settings
from visearch.api import create_api
from visearch.image_store import ImageStore

EMBED_S = 0.5
DIM = 8


class SlowEncoder:
    """Stands in for ONNX Runtime: a slow embed that releases the GIL, as the real one does."""

    version = "slow"
    dim = DIM

    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()

    def embed(self, inputs: np.ndarray) -> np.ndarray:
        with self.lock:
            self.calls += 1
        time.sleep(EMBED_S)
        vectors = np.ones((len(inputs), DIM), dtype=np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def test_health_check_answers_while_a_search_embeds(tmp_path: Path) -> None:
    encoder = SlowEncoder()
    shard = IndexShard(DIM, "slow", [0])
    service = SearchService(encoder, [shard])  # type: ignore[arg-type]
    app = create_api(Settings(), service, ImageStore(tmp_path / "store"), publisher=None)  # type: ignore[arg-type]

    async def scenario() -> tuple[float, float, int, int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            started = time.perf_counter()
            search = asyncio.create_task(
                client.post("/v1/search", files={"image": ("q.png", _png(), "image/png")})
            )
            await asyncio.sleep(0.1)  # the search is embedding now
            health = await client.get("/healthz")
            health_s = time.perf_counter() - started
            response = await search
            search_s = time.perf_counter() - started
            return health_s, search_s, response.status_code, health.status_code

    health_s, search_s, status, health_status = asyncio.run(scenario())
    assert status == 200 and health_status == 200 and encoder.calls == 1
    assert search_s >= EMBED_S
    assert health_s < EMBED_S - 0.1, f"/healthz waited {health_s:.2f} s behind the search"

"""End-to-end search latency: ``POST /v1/search`` over real HTTP vs the in-process call.

Builds the index the service would build (its partition factory, 8
partitions) with N images: the demo corpus's real photos embedded by the
model under test, the rest synthetic neighbours of them (a real vector plus
noise, re-normalised, so the score distribution stays image-like). Then, on
the same real query photos (JPEG, a third of them cropped):

- baseline: ``SearchService.search_bytes`` called in-process (decode +
  embed + search + re-rank, no HTTP);
- the API over HTTP with uvicorn, 1 client and 8 concurrent clients
  (clients are threads of this process; ONNX Runtime and faiss release the
  GIL, the HTTP parsing does not, so the 8-client figure is pessimistic);
- search by a stored photo's id over HTTP, 1 client (the index's vector is
  the query: no decode, no encoder), against the same photos sent as bytes.

    python -m bench.search_api                # int8, 100,000 images, 300 queries per setting
    python -m bench.search_api --quick        # int8, 20,000 images, 60 queries
    python -m bench.search_api --model fp32
    VISEARCH_ANN_THRESHOLD=10000 VISEARCH_INDEX_FACTORY=IVF256,Flat python -m bench.search_api
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from bench.embed import ensure_models
from bench.output import bench_parser, emit, machine
from bench.support import percentile
from encoders.preprocess import preprocess
from encoders.runtime import OnnxEncoder
from index.shard import IndexShard
from streams.broker import EmbeddedBroker, free_port
from streams.encoder_set import encoder_from_settings
from streams.publisher import EventPublisher
from streams.settings import Settings
from streams.topics import ensure_topics
from visearch.api.app import create_api
from visearch.api.serving import serve_in_thread
from visearch.catalog.corpus import DEMO_CORPUS, find_images
from visearch.catalog.store import ImageStore, StoredImage
from visearch.processes.shards import partition_factory, search_service

BENCH = "search_api"
K = 24


def build_index(
    settings: Settings, encoder: OnnxEncoder, photos: list[Path], total: int, seed: int
) -> IndexShard:
    """The service's partitions, filled with real embeddings plus synthetic neighbours."""
    partitions = range(settings.embedding_partitions)
    shard = IndexShard(
        encoder.dim, encoder.version, partitions, partition_factory(settings, encoder.dim)
    )
    real = []
    for start in range(0, len(photos), 16):
        batch = np.stack([preprocess(p.read_bytes()) for p in photos[start : start + 16]])
        real.append(encoder.embed(batch))
    vectors = np.vstack(real)
    rng = np.random.default_rng(seed)
    for number in range(total):
        if number < len(vectors):
            vector = vectors[number]
        else:
            base = vectors[rng.integers(len(vectors))]
            noisy = base + rng.normal(0, 0.35 / np.sqrt(encoder.dim), encoder.dim)
            vector = (noisy / np.linalg.norm(noisy)).astype(np.float32)
        shard.partitions[number % len(partitions)].upsert(f"img-{number}", vector, 1.0)
    for part in shard.partitions.values():
        part.wait_idle()
    return shard


def store_photos(store: ImageStore, photos: list[Path]) -> list[str]:
    """The real photos in the image store under their index ids (``build_index``'s
    ``img-N``), stored before their indexed upload, so the index's vectors are current."""
    for number, path in enumerate(photos):
        store.put(StoredImage(f"img-{number}", "bench", False, 0.5), path.read_bytes())
    return [f"img-{number}" for number in range(len(photos))]


def query_images(photos: list[Path], count: int, seed: int) -> list[tuple[bytes, str | None]]:
    """Real photos as JPEG (quality 85); every third with a relative crop box."""
    rng = random.Random(seed)
    queries = []
    for number, path in enumerate(rng.sample(photos, min(count, len(photos)))):
        buffer = io.BytesIO()
        Image.open(path).convert("RGB").save(buffer, "JPEG", quality=85)
        crop = None
        if number % 3 == 0:
            left, top = rng.uniform(0, 0.4), rng.uniform(0, 0.4)
            crop = f"{left:.3f},{top:.3f},{left + 0.5:.3f},{top + 0.5:.3f}"
        queries.append((buffer.getvalue(), crop))
    return queries


def percentiles(latencies_ms: list[float]) -> tuple[float, float]:
    return percentile(latencies_ms, 50), percentile(latencies_ms, 95)


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def upload_request(query: tuple[bytes, str | None]) -> dict[str, Any]:
    """``POST /v1/search`` arguments for a query photo sent as bytes (cropped if it has a box)."""
    data, crop = query
    form = {"k": str(K)}
    if crop:
        form.update(crop=crop, crop_units="relative")
    return {"files": {"image": ("q.jpg", data, "image/jpeg")}, "data": form}


def by_id_request(image_id: str) -> dict[str, Any]:
    """``POST /v1/search`` arguments for "more like this" stored image."""
    return {"data": {"image_id": image_id, "k": str(K)}}


def http_latencies(
    url: str, requests: list[dict[str, Any]], rounds: int, clients: int
) -> tuple[list[float], float]:
    """Per-request milliseconds and requests/s with ``clients`` concurrent clients."""
    local = threading.local()

    def one(index: int) -> float:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, timeout=30)

        def post() -> None:
            response = local.client.post("/v1/search", **requests[index % len(requests)])
            response.raise_for_status()

        return timed(post)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = list(pool.map(one, range(rounds)))
    return latencies, rounds / (time.perf_counter() - started)


def index_bench_arguments(description: str) -> argparse.ArgumentParser:
    """The options of a bench over the service's index: size, searches, model, seed."""
    parser = bench_parser(description, "20,000 images, 60 searches per setting")
    parser.add_argument("--model", choices=("int8", "fp32"), default="int8")
    parser.add_argument("--images", type=int, help="index size (default 100000, quick 20000)")
    parser.add_argument("--queries", type=int, help="searches per setting (default 300, quick 60)")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def index_and_rounds(args: argparse.Namespace) -> tuple[int, int]:
    """Index size and searches per setting, from the options or the (quick) defaults."""
    total = args.images or (20_000 if args.quick else 100_000)
    return total, args.queries or (60 if args.quick else 300)


def bench_settings(model: str, data_dir: Path) -> tuple[Settings, Path]:
    """Settings from the environment (VISEARCH_* overrides, e.g. the ANN threshold) with a
    scratch data dir, a free broker port and the chosen model, exported if missing."""
    base = Settings.from_env()
    fp32_dir = base.resolved_model_dir
    int8_dir = fp32_dir.with_name(fp32_dir.name + "-int8")
    ensure_models(fp32_dir, int8_dir, DEMO_CORPUS)
    model_dir = int8_dir if model == "int8" else fp32_dir
    settings = base.with_overrides(
        data_dir=data_dir, model_dir=str(model_dir), broker_port=free_port()
    )
    return settings, model_dir


def main() -> None:
    args = index_bench_arguments(__doc__.splitlines()[0]).parse_args()
    total, rounds = index_and_rounds(args)

    with tempfile.TemporaryDirectory() as tmp:
        settings, model_dir = bench_settings(args.model, Path(tmp))
        settings = settings.with_overrides(topic_prefix=f"bench-search-{free_port()}")
        encoder = encoder_from_settings(model_dir, settings)
        photos = find_images(DEMO_CORPUS)
        shard = build_index(settings, encoder, photos, total, args.seed)
        search = search_service(settings, encoder, [shard])
        queries = query_images(photos, 50, args.seed)
        store = ImageStore(settings.image_store_dir)
        stored = store_photos(store, photos)
        context = {
            "machine": machine(),
            "model": args.model,
            "index_images": total,
            "partitions": settings.embedding_partitions,
            "index": {p.kind for p in shard.partitions.values()}.pop(),
            "factory": settings.index_factory,
            "k": K,
        }

        def in_process(index: int) -> float:
            from encoders.preprocess import CropBox

            data, crop = queries[index % len(queries)]
            box = CropBox.parse(crop, relative=True) if crop else None
            return timed(lambda: search.search_bytes(data, K, box))

        for index in range(10):  # warm-up: ORT sessions, faiss, allocator
            in_process(index)
        baseline = [in_process(index) for index in range(rounds)]
        base_p50, base_p95 = percentiles(baseline)

        with EmbeddedBroker(settings.broker_host, settings.broker_port):
            ensure_topics(settings)
            with EventPublisher(settings) as publisher:
                app = create_api(settings, search, store, publisher)
                with serve_in_thread(app) as url:
                    uploads = [upload_request(query) for query in queries]
                    http_latencies(url, uploads, 10, 1)  # warm-up
                    for clients in (1, 8):
                        latencies, rate = http_latencies(url, uploads, rounds, clients)
                        p50, p95 = percentiles(latencies)
                        emit(
                            BENCH, "search_p50_ms", p50, "ms", base_p50, clients=clients, **context
                        )
                        emit(
                            BENCH, "search_p95_ms", p95, "ms", base_p95, clients=clients, **context
                        )
                        emit(BENCH, "search_requests_per_s", rate, "req/s", None, clients=clients,
                             mean_ms=statistics.fmean(latencies), **context)  # fmt: skip
                        if clients == 1:
                            bytes_p50, bytes_p95 = p50, p95
                    # "More like this" on the stored photos: the index's vectors, no encoder.
                    by_id = [by_id_request(image_id) for image_id in stored]
                    latencies, _ = http_latencies(url, by_id, rounds, 1)
                    p50, p95 = percentiles(latencies)
                    compared = {"baseline_name": "by bytes over HTTP, 1 client", **context}
                    emit(BENCH, "search_by_id_p50_ms", p50, "ms", bytes_p50, **compared)
                    emit(BENCH, "search_by_id_p95_ms", p95, "ms", bytes_p95, **compared)


if __name__ == "__main__":
    main()

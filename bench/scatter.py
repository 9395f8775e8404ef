"""Scatter-gather over shard processes: does a query wait for the slowest shard, or the sum?

``python -m bench.scatter [--quick]``: one embedded broker; 20,000 (``--quick``:
5,000) 1280-d L2-normalised vectors from a 1,000-centre Gaussian mixture
published as embedding events; then 1, 2, 4 and 8 real ``visearch shard``
processes, each owning its share of the partitions (exact search, as the
service below ``VISEARCH_ANN_THRESHOLD``). For each shard count, the same
queries (held-out vectors, ``fetch`` 16 with vectors, as a k = 10 search asks)
go through the service's parallel scatter (``index/scatter.py``) and, as the
baseline in the same run, through a sequential loop over the same pooled
clients. Last, 4 shards x 2 copies: p95 and missing answers while one copy is
SIGKILLed mid-run and restarted.

JSON lines: ``search_p95_ms`` (with ``shards``, ``baseline`` = sequential p95),
``search_p50_ms``, ``sequential_p95_ms``, ``p95_ratio_to_one_shard`` and
``failover_p95_ms`` (with ``missing``: searches that lacked a shard) and
``cpu_ms_per_search`` (this process and the shard processes together; baseline
= the same for the sequential loop).
"""

from __future__ import annotations

import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.output import bench_parser, emit, machine
from bench.support import ShardProcess, percentile, shard_processes, wait_shard_images
from encoders.model_dir import read_metadata
from index.faiss_index import SearchParams
from index.remote import RemoteShard
from index.scatter import Scatter, ScatterReport, ShardCopies
from streams.broker import EmbeddedBroker
from streams.publisher import EventPublisher
from streams.schemas import ImageEmbedded, vector_to_b64
from streams.settings import Settings
from streams.topics import ensure_topics
from visearch.catalog.corpus import DEMO_CORPUS
from visearch.local.stack import isolated_settings
from visearch.models.serving import ensure_exported

BENCH = "scatter"
FETCH = 16  # what a k = 10 search fetches per shard: k + 1 + k // 2
SHARD_COUNTS = (1, 2, 4, 8)


def mixture(count: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    centres = rng.standard_normal((1000, dim)).astype(np.float32)
    vectors = centres[rng.integers(0, 1000, count)] + 0.5 * rng.standard_normal(
        (count, dim)
    ).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def publish_vectors(settings: Settings, vectors: np.ndarray, version: str) -> None:
    """The vectors as the worker would publish them, keyed by image id."""
    publisher = EventPublisher(settings, linger_ms=20)
    try:
        now = time.time()
        for n, vector in enumerate(vectors):
            image_id = f"v-{n:07d}"
            event = ImageEmbedded(
                image_id=image_id, model_version=version, dim=len(vector),
                vector_b64=vector_to_b64(vector), uploaded_at=now, embedded_at=now,
                source_partition=0, source_offset=n,
            )  # fmt: skip
            publisher.publish(settings.topics.embeddings, image_id, event, timeout_s=None)
        publisher.flush()
    finally:
        publisher.stop()


def timed(call: Callable[[], object], queries: int) -> list[float]:
    samples = []
    for _ in range(queries):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def measure(
    settings: Settings, root: Path, shards: int, queries: np.ndarray, total: int
) -> dict[str, list[float]]:
    """Parallel and sequential scatter latencies over ``shards`` shard processes."""
    config = settings.with_overrides(index_shards=shards)
    copies = [[ShardProcess(config, k, 0, root / f"s{shards}")] for k in range(shards)]
    with shard_processes(copies) as processes:
        wait_shard_images(processes, total)
        dim = queries.shape[1]
        clients = [RemoteShard(shard[0].url, dim) for shard in processes]
        scatter = Scatter([ShardCopies(k, [c]) for k, c in enumerate(clients)], deadline_s=10)
        params = SearchParams()
        iterator = iter(np.concatenate([queries] * 8))

        def parallel() -> None:
            report = ScatterReport()
            scatter.search(next(iterator), FETCH, params, True, report)
            assert not report.partial

        def sequential() -> None:
            query = next(iterator)
            for client in clients:
                client.search(query, FETCH, params, True)

        def cpu_ms() -> float:
            """CPU so far of this process (the scatter's end) and the shard processes."""
            return 1000 * (time.process_time() + sum(shard[0].cpu_seconds() for shard in processes))

        timed(parallel, 20)  # warm-up: connections, faiss, the shards' first requests
        timed(sequential, 20)
        samples: dict[str, list[float]] = {"parallel": [], "sequential": []}
        cpu = {"parallel": 0.0, "sequential": 0.0}
        block = len(queries) // 4
        for _ in range(4):  # alternating blocks: drift on a shared machine hits both alike
            for name, call in (("parallel", parallel), ("sequential", sequential)):
                before = cpu_ms()
                samples[name] += timed(call, block)
                cpu[name] += cpu_ms() - before
        samples["cpu_ms_per_search"] = [cpu["parallel"] / (4 * block)]
        samples["sequential_cpu_ms_per_search"] = [cpu["sequential"] / (4 * block)]
        return samples


def failover(
    settings: Settings, root: Path, queries: np.ndarray, total: int
) -> tuple[list[float], int]:
    """4 shards x 2 copies; one copy SIGKILLed a third of the way in, then restarted."""
    config = settings.with_overrides(index_shards=4)
    copies = [[ShardProcess(config, k, r, root / "copies") for r in range(2)] for k in range(4)]
    with shard_processes(copies) as processes:
        wait_shard_images(processes, total)
        dim = queries.shape[1]
        groups = [
            ShardCopies(k, [RemoteShard(copy.url, dim) for copy in shard], unhealthy_s=2)
            for k, shard in enumerate(processes)
        ]
        scatter = Scatter(groups, deadline_s=1.0)
        params = SearchParams()
        missing = 0
        samples: list[float] = []
        victim = processes[1][0]
        restart = threading.Timer(2.0, victim.start)
        for n, query in enumerate(np.concatenate([queries] * 3)):
            if n == len(queries):
                victim.kill()
                restart.start()
            report = ScatterReport()
            started = time.perf_counter()
            scatter.search(query, FETCH, params, True, report)
            samples.append((time.perf_counter() - started) * 1000)
            missing += report.partial
        restart.join()
        return samples, missing


def run(quick: bool) -> None:
    base = Settings.from_env()
    ensure_exported(base.resolved_model_dir, DEMO_CORPUS)
    metadata = read_metadata(base.resolved_model_dir)
    rng = np.random.default_rng(0)
    count, queries_n = (5_000, 200) if quick else (20_000, 400)
    vectors = mixture(count + queries_n, metadata.dim, rng)
    corpus, queries = vectors[:count], vectors[count:]
    context = {"machine": machine(), "quick": quick, "vectors": count, "dim": metadata.dim}
    with tempfile.TemporaryDirectory(prefix="visearch-scatter-") as tmp:
        root = Path(tmp)
        settings = isolated_settings(base, root / "api", f"scatter-{uuid.uuid4().hex[:6]}")
        # Exact search at every shard count: one shard holding all 20,000 would reach
        # the default ANN threshold and train an IVF in the middle of its measurement.
        settings = settings.with_overrides(ann_threshold=count + 1)
        broker = EmbeddedBroker(settings.broker_host, settings.broker_port).start()
        try:
            ensure_topics(settings)
            publish_vectors(settings, corpus, metadata.version)
            p95_one = None
            for shards in SHARD_COUNTS:
                samples = measure(settings, root, shards, queries, count)
                p95, seq95 = (
                    percentile(samples["parallel"], 95),
                    percentile(samples["sequential"], 95),
                )
                p95_one = p95 if p95_one is None else p95_one
                emit(BENCH, "search_p95_ms", p95, "ms", seq95, shards=shards, **context)
                emit(BENCH, "search_p50_ms", percentile(samples["parallel"], 50), "ms",
                     percentile(samples["sequential"], 50), shards=shards, **context)  # fmt: skip
                emit(BENCH, "sequential_p95_ms", seq95, "ms", None, shards=shards, **context)
                emit(BENCH, "p95_ratio_to_one_shard", p95 / p95_one, "ratio", None,
                     shards=shards, **context)  # fmt: skip
                # Both ends' CPU per search: on a machine with fewer cores than shard
                # processes, CPU / cores bounds how far parallel can beat sequential.
                emit(BENCH, "cpu_ms_per_search", samples["cpu_ms_per_search"][0], "ms",
                     samples["sequential_cpu_ms_per_search"][0], shards=shards,
                     **context)  # fmt: skip
            samples, missing = failover(settings, root, queries, count)
            emit(BENCH, "failover_p95_ms", percentile(samples, 95), "ms", None, shards=4,
                 copies=2, searches=len(samples), missing=missing, **context)  # fmt: skip
        finally:
            broker.stop()


def main() -> None:
    parser = bench_parser(__doc__, "5,000 vectors, 200 queries")
    run(parser.parse_args().quick)


if __name__ == "__main__":
    main()

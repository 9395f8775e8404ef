"""Per-node figures for the 100-200 billion image plan (docs/scaling.md).

Everything the plan extrapolates from is measured here, on this machine, in
one run, and printed as JSON lines through ``bench.output.emit``:

- ``bytes_per_vector`` of IVF-PQ at code sizes m = 16, 32, 64 bytes (faiss
  serialisation of a trained, filled index / n: codes + 8-byte ids + lists),
  baseline IVF-Flat (the default index) on the same vectors;
- ``recall_at_10`` of each (PQ distances only) and ``recall_10_in_100`` (true
  top-10 found among PQ's top 100: what a re-rank of 100 candidates against
  exact vectors recovers), baseline IVF-Flat at the same nprobe;
- ``search_p50_ms`` / ``search_p99_ms`` for one query on one thread, and
  ``scan_rate`` = codes scanned per second per core (n * nprobe / nlist /
  latency), which is how latency grows with shard size;
- ``add_rate``: vectors/s added to a trained IVF-PQ on one thread;
- ``embed_per_core``: images/s through the ONNX encoder with one thread
  (batch 16, preprocessed Tux Paint photos), baseline two threads.

Vectors: bench/index.py's seeded generator (real-photo embeddings projected to
256-d, clustered with bridges and noise). ``--quick`` uses 100k vectors and 256
lists (~2 min on 2 idle cores, PQ training dominates); the default 300k and
512. The machine is shared with other jobs, so figures can be noisy: the plan
applies a 2x margin to latency for that reason.

    python -m bench.scale_sim [--quick]
"""

from __future__ import annotations

import time

import faiss
import numpy as np

from bench.index import (
    DIM,
    MODEL_DIR,
    Generator,
    K,
    exact_topk,
    limit_numpy_threads,
    log,
    recall_at_k,
    seed_embeddings,
)
from bench.output import bench_parser, emit, machine
from encoders.preprocess import PreprocessError, preprocess
from encoders.runtime import OnnxEncoder
from visearch.catalog.corpus import DEMO_CORPUS, find_images

BENCH = "scale_sim"
NPROBE = 32
CODE_SIZES = (16, 32, 64)


def index_bytes(index: faiss.Index) -> int:
    """Serialised size: what a snapshot holds and, for IVF, what RAM holds."""
    return int(faiss.serialize_index(index).size)


def timed_queries(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-query latency (s) and the ids found, one query at a time after a warm-up."""
    index.search(queries[:5], k)
    seconds = np.empty(len(queries))
    found = np.empty((len(queries), k), dtype=np.int64)
    for i, query in enumerate(queries):
        started = time.perf_counter()
        _, ids = index.search(query[None, :], k)
        seconds[i] = time.perf_counter() - started
        found[i] = ids[0]
    return seconds, found


def build(factory: str, train: np.ndarray, data: np.ndarray) -> tuple[faiss.Index, float]:
    """A trained, filled index and its add rate (vectors/s)."""
    index = faiss.index_factory(DIM, factory, faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.downcast_index(faiss.extract_index_ivf(index))
    if isinstance(ivf, faiss.IndexIVFPQ):
        # The factory turns on polysemous training (for Hamming pre-filtering,
        # which nothing here uses); it took 170 s of one core for PQ32 on 10k points.
        ivf.do_polysemous_training = False
    started = time.perf_counter()
    index.train(train)
    log(f"{factory}: trained in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    index.add(data)
    return index, len(data) / (time.perf_counter() - started)


def bench_index(n: int, n_queries: int, nlist: int, tags: dict[str, object]) -> None:
    rng = np.random.default_rng(7)
    embeddings, _ = seed_embeddings(log_progress=False)
    gen = Generator.fit(embeddings, rng)
    data = gen.draw(n, rng)
    queries = gen.draw(n_queries, rng)
    # faiss wants >= 39 training points per centroid (256 PQ centroids, nlist IVF ones).
    train = data[rng.choice(n, size=min(n, 40 * max(nlist, 256)), replace=False)]
    log(f"data: {n} vectors drawn")
    _, truth = exact_topk(queries, [data])
    log("exact top-10 computed")
    scanned = n * NPROBE / nlist

    flat, flat_add = build(f"IVF{nlist},Flat", train, data)
    flat.nprobe = NPROBE
    flat_s, flat_found = timed_queries(flat, queries, K)
    flat_bytes = index_bytes(flat) / n
    flat_recall = recall_at_k(flat_found.tolist(), truth)
    flat_p50 = float(np.percentile(flat_s, 50) * 1000)
    flat_p99 = float(np.percentile(flat_s, 99) * 1000)
    emit(BENCH, "bytes_per_vector", flat_bytes, "B", None, index=f"IVF{nlist},Flat", **tags)
    emit(BENCH, "recall_at_10", flat_recall, "ratio", None, index=f"IVF{nlist},Flat", **tags)
    emit(BENCH, "search_p50_ms", flat_p50, "ms", None, index=f"IVF{nlist},Flat", **tags)
    emit(BENCH, "scan_rate", scanned / np.median(flat_s), "vectors/s", None,
         index=f"IVF{nlist},Flat", **tags)  # fmt: skip
    del flat

    for m in CODE_SIZES:
        factory = f"IVF{nlist},PQ{m}"
        index, add_rate = build(factory, train, data)
        index.nprobe = NPROBE
        seconds, found = timed_queries(index, queries, 100)
        label = {"index": factory, **tags}
        emit(BENCH, "bytes_per_vector", index_bytes(index) / n, "B", flat_bytes, **label)
        emit(BENCH, "recall_at_10", recall_at_k(found[:, :K].tolist(), truth), "ratio",
             flat_recall, **label)  # fmt: skip
        in_100 = np.mean(
            [len(set(f) & set(t.tolist())) / K for f, t in zip(found, truth, strict=True)]
        )
        emit(BENCH, "recall_10_in_100", float(in_100), "ratio", flat_recall, **label)
        p50 = float(np.percentile(seconds, 50) * 1000)
        emit(BENCH, "search_p50_ms", p50, "ms", flat_p50, **label)
        emit(BENCH, "search_p99_ms", float(np.percentile(seconds, 99) * 1000), "ms", flat_p99,
             **label)  # fmt: skip
        emit(BENCH, "scan_rate", scanned / np.median(seconds), "vectors/s",
             scanned / np.median(flat_s), **label)  # fmt: skip
        emit(BENCH, "add_rate", add_rate, "vectors/s", flat_add, **label)
        del index


def bench_embed(images: int) -> None:
    """Images/s per core through ONNX Runtime fp32, batch 16, decode excluded."""
    inputs = []
    for path in find_images(DEMO_CORPUS)[: images * 2]:
        try:
            inputs.append(preprocess(path.read_bytes()))
        except PreprocessError:
            continue
        if len(inputs) == images:
            break
    batch = np.stack(inputs)
    rates = {}
    for threads in (2, 1):
        encoder = OnnxEncoder(MODEL_DIR, threads=threads, providers=["CPUExecutionProvider"])
        encoder.embed(batch[:16])
        started = time.perf_counter()
        for i in range(0, len(batch), 16):
            encoder.embed(batch[i : i + 16])
        rates[threads] = len(batch) / (time.perf_counter() - started)
    emit(BENCH, "embed_per_core", rates[1], "images/s", rates[2] / 2, threads=1, batch=16,
         baseline_is="2 threads / 2", images=len(batch))  # fmt: skip


def main() -> None:
    parser = bench_parser(__doc__, "100k vectors, 256 lists")
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)
    limit_numpy_threads(1)
    n, n_queries, nlist = (100_000, 100, 256) if args.quick else (300_000, 300, 512)
    tags: dict[str, object] = {"n": n, "dim": DIM, "nprobe": NPROBE, "nlist": nlist,
                               "queries": n_queries, "machine": machine()}  # fmt: skip
    bench_index(n, n_queries, nlist, tags)
    bench_embed(32 if args.quick else 96)


if __name__ == "__main__":
    main()

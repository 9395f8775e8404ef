"""Search latency beside busy Python threads, by GIL switch interval.

Why ``VISEARCH_GIL_SWITCH_INTERVAL_MS`` defaults to 1 ms (streams/gil_tuning.py):
a search over the service's 8 partitions makes a faiss call per partition
(and one more for the hits' vectors), each releasing the GIL; coming back,
the thread waits for whichever Python thread took the GIL meanwhile, up to
the switch interval. Two threads run Python loops beside the searches (as
ingest, feedback and Kafka threads do in the API process). Baseline: the same
searches at CPython's default interval (5 ms), in the same run.

    python -m bench.gil_switch            # 6,000 vectors, 1280-d, 300 searches per interval
    python -m bench.gil_switch --quick    # 2,000 vectors, 100 searches
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import numpy as np

from bench.output import bench_parser, emit, machine
from bench.support import percentile
from index.partition import Partition

BENCH = "gil_switch"
DIM = 1280
PARTITIONS = 8
FETCH = 16  # what the service fetches per partition for k = 10
DEFAULT_INTERVAL_MS = 5.0  # CPython's
INTERVALS_MS = (1.0, 0.2)


def filled_partitions(vectors: int, seed: int = 0) -> list[Partition]:
    """The service's partition count, with random unit vectors spread over them."""
    rng = np.random.default_rng(seed)
    partitions = [Partition(DIM) for _ in range(PARTITIONS)]
    for number in range(vectors):
        vector = rng.standard_normal(DIM).astype(np.float32)
        partitions[number % PARTITIONS].upsert(
            f"img-{number}", vector / np.linalg.norm(vector), 1.0
        )
    return partitions


def busy_python(stop: threading.Event) -> None:
    """A thread that wants the GIL most of the time, as ingest and Kafka threads do."""
    while not stop.is_set():
        total = 0
        for number in range(20_000):
            total += number
        time.sleep(0.001)


def latencies_ms(partitions: list[Partition], searches: int) -> list[float]:
    """One search = every partition searched with vectors, as the service does."""
    rng = np.random.default_rng(1)
    times = []
    for _ in range(searches):
        query = rng.standard_normal(DIM).astype(np.float32)
        query /= np.linalg.norm(query)
        started = time.perf_counter()
        for part in partitions:
            part.search(query, FETCH, None, True)
        times.append((time.perf_counter() - started) * 1000)
        time.sleep(0.005)
    return times


def measure(partitions: list[Partition], interval_ms: float, searches: int) -> tuple[float, float]:
    """p50 and p95 of a search with two busy Python threads, at ``interval_ms``."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(interval_ms / 1000)
    stop = threading.Event()
    threads = [threading.Thread(target=busy_python, args=(stop,), daemon=True) for _ in range(2)]
    for thread in threads:
        thread.start()
    try:
        times = latencies_ms(partitions, searches)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        sys.setswitchinterval(before)
    return percentile(times, 50), percentile(times, 95)


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--vectors", type=int, help="index size (default 6000, quick 2000)")
    parser.add_argument("--searches", type=int, help="per interval (default 300, quick 100)")
    args = parser.parse_args()
    vectors = args.vectors or (2_000 if args.quick else 6_000)
    searches = args.searches or (100 if args.quick else 300)
    partitions = filled_partitions(vectors)
    latencies_ms(partitions, 20)  # warm-up
    base_p50, base_p95 = measure(partitions, DEFAULT_INTERVAL_MS, searches)
    context: dict[str, Any] = {
        "machine": machine(),
        "vectors": vectors,
        "searches": searches,
        "busy_threads": 2,
    }
    for name, value in (("search_p50_ms", base_p50), ("search_p95_ms", base_p95)):
        emit(BENCH, name, value, "ms", None, interval_ms=DEFAULT_INTERVAL_MS, **context)
    for interval in INTERVALS_MS:
        p50, p95 = measure(partitions, interval, searches)
        compared: dict[str, Any] = {
            "baseline_name": "switch interval 5 ms",
            "interval_ms": interval,
            **context,
        }
        emit(BENCH, "search_p50_ms", p50, "ms", base_p50, **compared)
        emit(BENCH, "search_p95_ms", p95, "ms", base_p95, **compared)


if __name__ == "__main__":
    main()

"""visearch's index against the vector stores users would pick, on the same data.

Systems, each in its own process, each with its default index:
``visearch`` (one shard of the service's partitions as ``visearch run`` builds
them: ``IndexShard`` + ``partition_factory(Settings())``, in-process, no Kafka,
HTTP or encoder), raw ``faiss`` (``IndexIDMap2(IndexFlatIP)``: the exact
floor), ``usearch`` (HNSW), ``chroma`` (in-memory client), ``lancedb`` (no
index: its default) and ``milvus`` (Milvus Lite, AUTOINDEX). Peers come with
the ``bench`` extra (``pip install -e '.[bench]'``); one that is not installed
is reported as such, never silently dropped.

Per system and data set: bulk load rate (until searchable on its final index),
search p50/p95 over held-out queries with recall@10 against exact inner
product, insert → found (single inserts paced at 100/s, each polled with a
search for its own vector until it is in the top 10), delete → gone (deletes of
loaded vectors at 100/s, polled until they leave the top 10), and memory per
vector (resident memory of the process tree after the load minus before, plus
the bytes its files take on disk, over n).

Data: ``mixture`` (unit vectors around 1,000 Gaussian centres, 256-d) and
``photos`` (the demo corpus's photos embedded by the ONNX encoder, projected
to 256-d, with generated neighbours: ``bench.index.Generator``). Queries are
fresh draws (not in the index).

The systems take turns: every system loads (the others stopped with SIGSTOP,
so no system's background threads run while another is timed), then the
rounds of searches go round them, one round a system at a time, then each
does its writes. Timed one after another, a system's p95 depended on when it
ran (this machine's speed drifts over minutes). The systems stay loaded
together until the end: at 1M, all six take ~13 GB between them (the sum of
their bytes per vector, some of it files on disk).

Prints JSON lines (``bench``, ``metric``, ``value``, ``unit``, ``baseline`` =
raw faiss in the same run, ``system``, ``n``, ``data``, ...) on stdout and a
table with fairness notes on stderr.

Run: ``python -m bench.peers [--quick] [--n 20000,100000,1000000]
[--data mixture,photos] [--systems visearch,faiss,usearch,chroma,lancedb,milvus]``;
``--crossover`` times visearch's exact search against its ANN plan at several
sizes (where ``DEFAULT_ANN_THRESHOLD`` comes from); ``--stall --n 20000,131072``
times searches and inserts while the plan trains and rebuilds across those
boundaries (the move to ANN, a retrain to a larger nlist).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TextIO

import numpy as np

from bench.output import bench_parser, emit, machine
from bench.support import middle, percentile, process_state, process_tree

DIM = 256
K = 10
SYSTEMS = ("visearch", "faiss", "usearch", "chroma", "lancedb", "milvus")
DATA_SETS = ("mixture", "photos")
PACKAGES = {
    "visearch": "visearch",
    "faiss": "faiss-cpu",
    "usearch": "usearch",
    "chroma": "chromadb",
    "lancedb": "lancedb",
    "milvus": "milvus-lite",
}
NOTES = {
    "visearch": "in-process IndexShard, 8 partitions (the service's), IVF{nlist},Flat past "
    "20k vectors, nprobe 16 (raised to scan at least 1,250 rows while the lists are short); "
    "a write is searchable when upsert returns",
    "faiss": "in-process IndexIDMap2(IndexFlatIP): exact, delete = remove_ids (O(n) shift)",
    "usearch": "in-process HNSW (connectivity 16, expansion_search 64), f32",
    "chroma": "in-process EphemeralClient (HNSW M16, ef 100, l2 on unit vectors = same "
    "ranking as inner product)",
    "lancedb": "embedded, files on local disk, no vector index (its default), l2",
    "milvus": "Milvus Lite: a local server process over a unix socket (gRPC), AUTOINDEX, "
    "default consistency; its RSS counted with ours",
}
PACE_S = 0.01  # 100 writes per second
SEARCH_ROUNDS = 5  # the query set this many times; the median round's p95 is reported
POLL_TIMEOUT_S = 10.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------- peers


class Store(Protocol):
    """What the benchmark does to every system."""

    def load(self, ids: np.ndarray, vectors: np.ndarray) -> None: ...

    def insert(self, key: int, vector: np.ndarray) -> None: ...

    def delete(self, key: int) -> None: ...

    def search(self, query: np.ndarray, k: int) -> list[int]: ...

    def disk_bytes(self) -> int: ...


class VisearchStore:
    def __init__(self, workdir: Path) -> None:
        from index.shard import IndexShard, partition_for
        from streams.process_tuning import tune_process
        from streams.settings import Settings
        from visearch.processes.shards import partition_factory, search_params

        settings = Settings()
        tune_process(settings)  # as every visearch process does at start
        self.partitions = settings.embedding_partitions
        self.route = partition_for
        self.params = search_params(settings)
        self.shard = IndexShard(
            DIM, "bench", range(self.partitions), partition_factory(settings, DIM)
        )
        self.clock = time.time()

    def _tick(self) -> float:
        self.clock += 1e-3
        return self.clock

    def load(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        load_shard(self.shard, ids, vectors, self._tick())
        plan = self.shard.plan
        assert plan is not None
        while True:  # searchable on the final index: every re-plan done
            self.shard.wait_idle()
            settled = not any(plan.stale(p) for p in plan.partitions())
            if settled and plan.wanted(plan.live()) == plan.current():
                return
            plan.check()

    def index_name(self) -> str:
        """The index the shard ended on (e.g. ``IVF4096,Flat``)."""
        return self.shard.plan.current() if self.shard.plan is not None else "?"

    def _part(self, key: int) -> Any:
        return self.shard.partitions[self.route(str(key), self.partitions)]

    def insert(self, key: int, vector: np.ndarray) -> None:
        self._part(key).upsert(str(key), vector, self._tick())

    def delete(self, key: int) -> None:
        self._part(key).update(str(key), "delete", self._tick())

    def search(self, query: np.ndarray, k: int) -> list[int]:
        return [int(hit.image_id) for hit in self.shard.search(query, k, self.params)]

    def disk_bytes(self) -> int:
        return 0


class FaissStore:
    def __init__(self, workdir: Path) -> None:
        import faiss

        self.faiss = faiss
        self.index = faiss.IndexIDMap2(faiss.IndexFlatIP(DIM))

    def load(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.index.add_with_ids(vectors, ids.astype(np.int64))

    def insert(self, key: int, vector: np.ndarray) -> None:
        self.index.add_with_ids(vector[None, :], np.array([key], dtype=np.int64))

    def delete(self, key: int) -> None:
        self.index.remove_ids(np.array([key], dtype=np.int64))  # type: ignore[arg-type]

    def search(self, query: np.ndarray, k: int) -> list[int]:
        _, found = self.index.search(query[None, :], k)
        return [int(i) for i in found[0] if i >= 0]

    def disk_bytes(self) -> int:
        return 0


class UsearchStore:
    def __init__(self, workdir: Path) -> None:
        from usearch.index import Index

        self.index = Index(ndim=DIM, metric="ip", dtype="f32")

    def load(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.index.add(ids.astype(np.uint64), vectors)

    def insert(self, key: int, vector: np.ndarray) -> None:
        self.index.add(key, vector)

    def delete(self, key: int) -> None:
        self.index.remove(key)

    def search(self, query: np.ndarray, k: int) -> list[int]:
        return [int(key) for key in self.index.search(query, k).keys]

    def disk_bytes(self) -> int:
        return 0


class ChromaStore:
    def __init__(self, workdir: Path) -> None:
        import chromadb

        self.client = chromadb.EphemeralClient()
        self.collection = self.client.create_collection("bench")

    def load(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        batch = self.client.get_max_batch_size()
        for start in range(0, len(ids), batch):
            chunk = slice(start, start + batch)
            self.collection.add(
                ids=[str(i) for i in ids[chunk].tolist()], embeddings=vectors[chunk]
            )

    def insert(self, key: int, vector: np.ndarray) -> None:
        self.collection.add(ids=[str(key)], embeddings=vector[None, :])

    def delete(self, key: int) -> None:
        self.collection.delete(ids=[str(key)])

    def search(self, query: np.ndarray, k: int) -> list[int]:
        found = self.collection.query(query_embeddings=query[None, :], n_results=k, include=[])
        return [int(i) for i in found["ids"][0]]

    def disk_bytes(self) -> int:
        return 0


class LanceStore:
    def __init__(self, workdir: Path) -> None:
        import lancedb

        self.path = workdir / "lancedb"
        self.db = lancedb.connect(str(self.path))
        self.table: Any = None

    def _rows(self, ids: np.ndarray, vectors: np.ndarray) -> Any:
        import pyarrow as pa

        flat = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1))
        return pa.table(
            {
                "id": pa.array(ids.astype(np.int64)),
                "vector": pa.FixedSizeListArray.from_arrays(flat, DIM),
            }
        )

    def load(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        self.table = self.db.create_table("bench", data=self._rows(ids, vectors))

    def insert(self, key: int, vector: np.ndarray) -> None:
        self.table.add(self._rows(np.array([key]), vector[None, :]))

    def delete(self, key: int) -> None:
        self.table.delete(f"id = {int(key)}")

    def search(self, query: np.ndarray, k: int) -> list[int]:
        found = self.table.search(query).limit(k).select(["id"]).to_arrow()
        return [int(i) for i in found.column("id").to_pylist()]

    def disk_bytes(self) -> int:
        return directory_bytes(self.path)


class MilvusStore:
    def __init__(self, workdir: Path) -> None:
        from pymilvus import MilvusClient

        self.path = workdir / "milvus"
        self.path.mkdir()
        self.client = MilvusClient(str(self.path / "bench.db"))
        self.client.create_collection("bench", dimension=DIM, metric_type="IP", auto_id=False)

    def load(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        for start in range(0, len(ids), 5_000):
            rows = [
                {"id": int(i), "vector": v.tolist()}
                for i, v in zip(
                    ids[start : start + 5_000], vectors[start : start + 5_000], strict=True
                )
            ]
            self.client.insert("bench", rows)
        self.client.flush("bench")

    def insert(self, key: int, vector: np.ndarray) -> None:
        self.client.insert("bench", [{"id": int(key), "vector": vector.tolist()}])

    def delete(self, key: int) -> None:
        self.client.delete("bench", ids=[int(key)])

    def search(self, query: np.ndarray, k: int) -> list[int]:
        found = self.client.search("bench", data=[query.tolist()], limit=k)
        return [int(hit["id"]) for hit in found[0]]

    def disk_bytes(self) -> int:
        return directory_bytes(self.path)


STORES: dict[str, Callable[[Path], Store]] = {
    "visearch": VisearchStore,
    "faiss": FaissStore,
    "usearch": UsearchStore,
    "chroma": ChromaStore,
    "lancedb": LanceStore,
    "milvus": MilvusStore,
}


def directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def tree_rss_bytes() -> int:
    """Resident memory of this process and its children (Milvus Lite's server)."""
    total = 0
    for pid in process_tree(int(Path("/proc/self").resolve().name)):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


# -------------------------------------------------------------------- worker


@dataclass
class Budget:
    """Seconds each phase may take: slow systems measure fewer queries, and say so."""

    seconds: float

    def over(self, started: float) -> bool:
        return time.perf_counter() - started > self.seconds


def poll(check: Callable[[], bool]) -> float | None:
    """Seconds until ``check()`` holds (checked back to back), ``None`` after the timeout."""
    started = time.perf_counter()
    while time.perf_counter() - started < POLL_TIMEOUT_S:
        if check():
            return time.perf_counter() - started
    return None


def run_worker(system: str, data_dir: Path, budget: Budget) -> None:
    """One system through every phase, in its own process, as the parent asks: the
    load (and its memory) at once, then a round of searches per ``round`` line
    on stdin, then the writes on ``writes``. Each answer is a JSON line on stdout.
    Between requests the parent keeps the process stopped (SIGSTOP), so the
    systems are timed in turns, round by round, on the same machine state."""
    answers = take_stdout()
    base = np.load(data_dir / "base.npy")
    queries = np.load(data_dir / "queries.npy")
    truth = np.load(data_dir / "truth.npy")
    inserts = np.load(data_dir / "inserts.npy")
    deletes = np.load(data_dir / "deletes.npy")
    n = len(base)
    with tempfile.TemporaryDirectory(prefix=f"peers-{system}-") as workdir:
        store = STORES[system](Path(workdir))
        rss_before = tree_rss_bytes()
        started = time.perf_counter()
        store.load(np.arange(n), base)
        load_s = time.perf_counter() - started
        memory = tree_rss_bytes() - rss_before + store.disk_bytes()
        # Only the deleted rows are needed again: the other systems wait loaded meanwhile.
        deleted = {int(key): base[key].copy() for key in deletes.tolist()}
        del base
        for query in queries[:10]:
            store.search(query, K)
        reply(
            answers,
            {
                "load_per_s": n / load_s,
                "bytes_per_vector": memory / n,
                "index": getattr(store, "index_name", lambda: None)(),
            },
        )
        for line in sys.stdin:
            if line.strip() == "round":
                reply(answers, search_round(store, queries, truth, budget))
            elif line.strip() == "writes":
                result = paced_writes(
                    "insert_found",
                    [Write(store, n + j, vector, True) for j, vector in enumerate(inserts)],
                    budget,
                )
                result |= paced_writes(
                    "delete_gone",
                    [Write(store, key, vector, False) for key, vector in deleted.items()],
                    budget,
                )
                reply(answers, result)
                return


def take_stdout() -> TextIO:
    """The worker's stdout, kept for its answers alone: file descriptor 1 then points
    at stderr, so whatever a peer library (or a process it starts) prints goes
    there instead of into the answers the parent reads line by line."""
    answers = os.fdopen(os.dup(1), "w")
    sys.stdout.flush()
    os.dup2(2, 1)
    return answers


def reply(answers: TextIO, answer: dict[str, Any]) -> None:
    """A worker's answer to its parent: one JSON line."""
    answers.write(json.dumps(answer) + "\n")
    answers.flush()


def search_round(
    store: Store, queries: np.ndarray, truth: np.ndarray, budget: Budget
) -> dict[str, Any]:
    """The queries back to back, once: p50 / p95, the true top 10 found, and whether the
    budget cut the round short."""
    latencies, found = [], 0
    started = time.perf_counter()
    spent = False
    for query, want in zip(queries, truth, strict=True):
        tick = time.perf_counter()
        got = store.search(query, K)
        latencies.append(time.perf_counter() - tick)
        found += len(set(got) & set(want.tolist()))
        if budget.over(started):
            spent = True
            break
    return {
        "p50_ms": percentile(latencies, 50) * 1e3,
        "p95_ms": percentile(latencies, 95) * 1e3,
        "asked": len(latencies),
        "found": found,
        "spent": spent,
    }


def summarize_rounds(rounds: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The search figures of a system's rounds: p50 and p95 are the median round's by
    p95 (each round's p95 is kept too), recall is the first round's.

    On this 2-vCPU machine one round's p95 moved by a third between rounds of the
    same process (visearch at 100k: 0.26-0.36 ms over four rounds; a query's
    latency in one round correlated 0.27 with its latency in the next): most of
    the tail is the machine, not the query, hence the rounds, and their turns
    between systems (:func:`run_systems`)."""
    first = rounds[0]
    median = middle(rounds, key=lambda r: float(r["p95_ms"]))
    return {
        "queries": first["asked"],
        "search_rounds": len(rounds),
        "search_p50_ms": median["p50_ms"],
        "search_p95_ms": median["p95_ms"],
        "search_p95_rounds_ms": [round(r["p95_ms"], 4) for r in rounds],
        "recall_at_10": first["found"] / (K * max(1, first["asked"])),
    }


@dataclass
class Write:
    """One insert or delete, and the search that tells when it took effect."""

    store: Store
    key: int
    vector: np.ndarray
    insert: bool

    def apply(self) -> None:
        if self.insert:
            self.store.insert(self.key, self.vector)
        else:
            self.store.delete(self.key)

    def visible(self) -> bool:
        return (self.key in self.store.search(self.vector, K)) == self.insert


def paced_writes(name: str, writes: Sequence[Write], budget: Budget) -> dict[str, Any]:
    """Each write at 100/s, then polled until visible; p50/p99 and the misses."""
    latencies: list[float] = []
    missed = 0
    started = time.perf_counter()
    for j, write in enumerate(writes):
        delay = started + j * PACE_S - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        tick = time.perf_counter()
        write.apply()
        waited = poll(write.visible)
        if waited is None:
            missed += 1
        else:
            latencies.append(time.perf_counter() - tick)
        if budget.over(started):
            break
    return {
        f"{name}_writes": len(latencies) + missed,
        f"{name}_missed": missed,
        f"{name}_p50_ms": percentile(latencies, 50) * 1e3,
        f"{name}_p99_ms": percentile(latencies, 99) * 1e3,
    }


# ---------------------------------------------------------------------- data


def make_data(kind: str, n: int, queries: int, writes: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    if kind == "mixture":
        centres = rng.standard_normal((1000, DIM)).astype(np.float32)

        def draw(count: int) -> np.ndarray:
            x = centres[rng.integers(0, 1000, count)]
            x = x + 0.3 * rng.standard_normal((count, DIM)).astype(np.float32)
            return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)

    else:
        from bench.index import Generator, seed_embeddings

        embeddings, _ = seed_embeddings(log_progress=False)
        generator = Generator.fit(embeddings, rng)

        def draw(count: int) -> np.ndarray:
            return generator.draw(count, rng).astype(np.float32)

    base = np.concatenate([draw(min(100_000, n - s)) for s in range(0, n, 100_000)])
    held_out = draw(queries)
    return {
        "base": base,
        "queries": held_out,
        "truth": exact_top(base, held_out),
        "inserts": draw(writes),
        "deletes": rng.choice(n, size=min(writes, n), replace=False),
    }


def exact_top(base: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Exact top-10 inner product, in chunks of the base."""
    best_scores = np.full((len(queries), K), -np.inf, dtype=np.float32)
    best_ids = np.zeros((len(queries), K), dtype=np.int64)
    for start in range(0, len(base), 200_000):
        scores = queries @ base[start : start + 200_000].T
        ids = np.argsort(-scores, axis=1)[:, :K]
        merged_scores = np.concatenate([best_scores, np.take_along_axis(scores, ids, 1)], 1)
        merged_ids = np.concatenate([best_ids, ids + start], 1)
        order = np.argsort(-merged_scores, axis=1)[:, :K]
        best_scores = np.take_along_axis(merged_scores, order, 1)
        best_ids = np.take_along_axis(merged_ids, order, 1)
    return best_ids


# ---------------------------------------------------------------------- main


def installed(system: str) -> str | None:
    try:
        return importlib.metadata.version(PACKAGES[system])
    except importlib.metadata.PackageNotFoundError:
        return None


METRICS = (
    ("search_p95_ms", "ms"),
    ("search_p50_ms", "ms"),
    ("recall_at_10", "ratio"),
    ("insert_found_p50_ms", "ms"),
    ("insert_found_p99_ms", "ms"),
    ("delete_gone_p50_ms", "ms"),
    ("delete_gone_p99_ms", "ms"),
    ("bytes_per_vector", "bytes"),
    ("load_per_s", "vectors/s"),
)


class Worker:
    """One system's worker process, stopped (SIGSTOP, with its children: Milvus Lite's
    server) whenever it is not answering a request, so that no system's
    background threads run while another is timed."""

    def __init__(self, system: str, data_dir: Path, budget_s: float, timeout_s: float) -> None:
        self.system = system
        self.timeout_s = timeout_s
        # Closed by close(): the worker's stderr, read for the reason when it fails.
        self._stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
        command = [sys.executable, "-m", "bench.peers", "--worker", system]
        command += ["--data-dir", str(data_dir), "--budget-s", str(budget_s)]
        self.process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, text=True
        )
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.error: str | None = None

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put("")  # end of output: the process exited

    def answer(self, command: str | None = None) -> dict[str, Any] | None:
        """The worker's answer to ``command`` (its load when ``None``), resumed for it and
        stopped after; ``None`` (and :attr:`error` set) if it failed or timed out."""
        if self.error is not None:
            return None
        self._signal(signal.SIGCONT)
        try:
            if command is not None:
                assert self.process.stdin is not None
                self.process.stdin.write(command + "\n")
                self.process.stdin.flush()
            line = self._lines.get(timeout=self.timeout_s)
        except queue.Empty:
            self._fail(f"timed out after {self.timeout_s:.0f} s")
            return None
        except OSError as exc:  # its stdin closed: it died
            line = ""
            self._stderr.write(str(exc))
        if not line:
            self.process.wait()
            self._stderr.seek(0)
            last = (self._stderr.read().strip().splitlines() or ["failed"])[-1]
            self._fail(last[:300])
            return None
        self._signal(signal.SIGSTOP)
        self._wait_stopped()
        return dict(json.loads(line))

    def close(self) -> None:
        """Resume (a stopped process does not act on a kill until resumed) and reap;
        once only (a reaped pid may be another process's by now)."""
        if self.process.returncode is not None:
            return
        self._signal(signal.SIGCONT)
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._stderr.close()

    def _fail(self, reason: str) -> None:
        self.error = reason
        self.close()

    def _wait_stopped(self, timeout_s: float = 2.0) -> None:
        """Until every process of the worker is stopped (a signal lands asynchronously):
        only then may another system's timing start."""
        deadline = time.monotonic() + timeout_s
        pids = process_tree(self.process.pid)
        while time.monotonic() < deadline and any(process_state(p) not in "TtXZ" for p in pids):
            time.sleep(0.001)

    def _signal(self, number: int) -> None:
        for pid in process_tree(self.process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, number)


def run_systems(
    systems: Sequence[str], data_dir: Path, budget_s: float, timeout_s: float
) -> dict[str, dict[str, Any]]:
    """Every system of ``systems`` on the data in ``data_dir``: each loads in turn (the
    others stopped), then the search rounds go round the systems, a round each
    in turn (starting one system later every round), then the writes in turn.

    This machine's speed drifts over minutes: timed one after another, a
    system's p95 depended on when it ran (usearch's moved 0.22-0.35 ms at 100k
    between runs of the same command). In turns, every system's median round
    comes from the same stretch of time."""
    results: dict[str, dict[str, Any]] = {}
    workers: dict[str, Worker] = {}
    try:
        for system in systems:
            version = installed(system)
            if version is None:
                results[system] = {"error": f"not installed ({PACKAGES[system]})"}
                continue
            log(f"{system} {version}: loading ...")
            worker = Worker(system, data_dir, budget_s, timeout_s)
            loaded = worker.answer()
            if loaded is None:  # the worker closed itself; its reason is the result
                results[system] = {"version": version, "error": worker.error or "failed to load"}
                continue
            results[system] = {"version": version, **loaded}
            workers[system] = worker
        rounds: dict[str, list[dict[str, Any]]] = {system: [] for system in workers}
        names = list(workers)
        for turn in range(SEARCH_ROUNDS if names else 0):
            first = turn % len(names)
            for system in names[first:] + names[:first]:
                done = rounds[system]
                if done and (done[0]["spent"] or done[-1]["asked"] < done[0]["asked"]):
                    continue  # its first round spent the budget: one round, fewer queries
                answer = workers[system].answer("round")
                if answer is not None:
                    done.append(answer)
        for system, worker in workers.items():
            if rounds[system]:
                results[system] |= summarize_rounds(rounds[system])
            log(f"{system}: writes ...")
            written = worker.answer("writes")
            if written is not None:
                results[system] |= written
            if worker.error is not None or not rounds[system]:
                results[system] = {"error": worker.error or "no search round answered"}
            worker.close()
    finally:  # never leave a worker stopped behind (an error, Ctrl-C)
        for worker in workers.values():
            worker.close()
    return results


def compare(args: argparse.Namespace) -> int:
    sizes = [int(s) for s in args.n.split(",")]
    systems = args.systems.split(",")
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        raise SystemExit(f"unknown systems {sorted(unknown)}; known: {', '.join(SYSTEMS)}")
    rows = []
    for kind in args.data.split(","):
        for n in sizes:
            data = make_data(kind, n, args.queries, args.writes, args.seed)
            with tempfile.TemporaryDirectory(prefix="peers-data-") as tmp:
                for name, array in data.items():
                    np.save(Path(tmp) / f"{name}.npy", array)
                log(f"{kind} n={n}:")
                results = run_systems(systems, Path(tmp), args.budget_s, args.timeout_s)
            rows += [(kind, n, system, result) for system, result in results.items()]
            report(kind, n, results)
    print_table(rows)
    return 0


def report(kind: str, n: int, results: dict[str, dict[str, Any]]) -> None:
    floor = results.get("faiss", {})
    for system, result in results.items():
        if "error" in result:
            emit(
                "peers",
                "error",
                float("nan"),
                "",
                system=system,
                n=n,
                data=kind,
                error=result["error"],
                machine=machine(),
            )
            continue
        for metric, unit in METRICS:
            value = result.get(metric)
            if value is None:
                continue
            emit(
                "peers",
                metric,
                value,
                unit,
                baseline=floor.get(metric),
                system=system,
                version=result.get("version"),
                n=n,
                data=kind,
                queries=result.get("queries"),
                index=result.get("index"),
                search_p95_rounds_ms=result.get("search_p95_rounds_ms"),
                insert_missed=result.get("insert_found_missed"),
                delete_missed=result.get("delete_gone_missed"),
                machine=machine(),
            )


def print_table(rows: list[tuple[str, int, str, dict[str, Any]]]) -> None:
    log("")
    log(
        f"{'data':<8}{'n':>9}  {'system':<10}{'search p50/p95 ms':>19}{'recall':>8}"
        f"{'insert p50/p99':>16}{'delete p50/p99':>16}{'B/vec':>8}{'load/s':>9}"
    )
    for kind, n, system, r in rows:
        if "error" in r:
            log(f"{kind:<8}{n:>9}  {system:<10}{r['error']}")
            continue
        log(
            f"{kind:<8}{n:>9}  {system:<10}"
            f"{r['search_p50_ms']:>9.2f} /{r['search_p95_ms']:>7.2f}{r['recall_at_10']:>8.4f}"
            f"{r['insert_found_p50_ms']:>7.1f} /{r['insert_found_p99_ms']:>7.1f}"
            f"{r['delete_gone_p50_ms']:>7.1f} /{r['delete_gone_p99_ms']:>7.1f}"
            f"{r['bytes_per_vector']:>8.0f}{r['load_per_s']:>9.0f}"
        )
    log("")
    log("Fairness notes:")
    for system in dict.fromkeys(system for _, _, system, _ in rows):
        log(f"  {system}: {NOTES[system]}")
    log(
        "  Every system runs in its own process on the same data and queries; in-process "
        "libraries pay no network hop, Milvus Lite pays gRPC over a local socket. Writes "
        "count as visible when a search returns them (each system's default consistency). "
        f"Search p50/p95: the median of {SEARCH_ROUNDS} rounds of the queries by p95 (each "
        "round's p95 is in the JSON lines); recall: the first round's. The systems take "
        "turns, a round each, the others stopped (SIGSTOP) meanwhile, so that their rounds "
        "share the machine's state; loads and writes also run one system at a time."
    )


def load_shard(shard: Any, ids: np.ndarray, vectors: np.ndarray, at: float) -> None:
    """``vectors[i]`` as image ``str(ids[i])``, each in the partition Kafka's routing
    gives it, written in batches of 10,000 per partition."""
    from index.partition import Upsert
    from index.shard import partition_for

    count = len(shard.partitions)
    owner = np.array([partition_for(str(i), count) for i in ids.tolist()])
    for number, part in shard.partitions.items():
        rows = np.flatnonzero(owner == number).tolist()
        for start in range(0, len(rows), 10_000):
            chunk = rows[start : start + 10_000]
            part.upsert_many([Upsert(str(ids[r]), vectors[r], at) for r in chunk])


def exact_partition() -> Any:
    """A service-default partition that stays exact until its plan is told otherwise."""
    from index.partition import Partition

    return Partition(DIM, ann_threshold=10**12, background=False)


def crossover(args: argparse.Namespace) -> int:
    """visearch exact vs its ANN plan, one shard of 8 partitions, at each size."""
    from index.shard import IndexShard

    for n in [int(s) for s in args.n.split(",")]:
        data = make_data("mixture", n, args.queries, 0, args.seed)
        for label in ("exact", "ann"):
            shard = IndexShard(DIM, "bench", range(8), exact_partition)
            load_shard(shard, np.arange(n), data["base"], 1.0)
            if label == "ann" and shard.plan is not None:  # every row in: train once, move
                shard.plan.threshold = 1
                shard.plan.check()
            latencies, found = [], 0
            for query, want in zip(data["queries"], data["truth"], strict=True):
                tick = time.perf_counter()
                hits = shard.search(query, K)
                latencies.append(time.perf_counter() - tick)
                found += len({int(h.image_id) for h in hits} & set(want.tolist()))
            plan = shard.plan.current() if shard.plan is not None else "?"
            for metric, value, unit in (
                ("search_p50_ms", percentile(latencies, 50) * 1e3, "ms"),
                ("search_p95_ms", percentile(latencies, 95) * 1e3, "ms"),
                ("recall_at_10", found / (K * len(latencies)), "ratio"),
            ):
                emit(
                    "peers_crossover",
                    metric,
                    value,
                    unit,
                    index=label,
                    factory=plan,
                    n=n,
                    machine=machine(),
                )
    return 0


def search_until(
    shard: Any, queries: np.ndarray, params: Any, latencies: list[float], done: Any
) -> None:
    """Search back to back (2 ms apart) until ``done`` is set, timing each search."""
    while not done.is_set():
        for query in queries:
            tick = time.perf_counter()
            shard.search(query, K, params)
            latencies.append(time.perf_counter() - tick)
            time.sleep(0.002)
            if done.is_set():
                return


def stall(args: argparse.Namespace) -> int:
    """Search and insert latency while visearch's plan retrains and moves partitions:
    load just under a boundary, then insert at 100/s across it with searches running."""
    import threading

    from index.ann_plan import nlist_for
    from index.shard import IndexShard, partition_for
    from streams.settings import Settings
    from visearch.processes.shards import partition_factory, search_params

    settings = Settings()
    for boundary in [int(s) for s in args.n.split(",")]:
        before = boundary - 1_000
        data = make_data("mixture", before + 2_000, args.queries, 0, args.seed)
        shard = IndexShard(DIM, "bench", range(8), partition_factory(settings, DIM))
        load_shard(shard, np.arange(before), data["base"][:before], 1.0)
        shard.wait_idle()
        plan = shard.plan
        assert plan is not None
        start_factory = plan.current()
        searches: list[float] = []
        inserts: list[float] = []
        done = threading.Event()

        searcher = threading.Thread(
            target=search_until,
            args=(shard, data["queries"], search_params(settings), searches, done),
        )
        searcher.start()
        started = time.perf_counter()
        for j, i in enumerate(range(before, before + 2_000)):
            delay = started + j * PACE_S - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            tick = time.perf_counter()
            part = shard.partitions[partition_for(str(i), len(shard.partitions))]
            part.upsert(str(i), data["base"][i], 2.0)
            inserts.append(time.perf_counter() - tick)
        shard.wait_idle()
        settled_s = time.perf_counter() - started
        done.set()
        searcher.join()
        context: dict[str, Any] = {
            "boundary": boundary,
            "from": start_factory,
            "to": plan.current(),
            "nlist_expected": nlist_for(before + 2_000),
            "searches": len(searches),
            "settled_s": round(settled_s, 1),
            "machine": machine(),
        }
        for metric, values in (("replan_search", searches), ("replan_insert", inserts)):
            emit("peers_stall", f"{metric}_p99_ms", percentile(values, 99) * 1e3, "ms", **context)
            emit("peers_stall", f"{metric}_max_ms", max(values) * 1e3, "ms", **context)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = bench_parser(__doc__, "20k vectors, 200 queries and writes")
    parser.add_argument("--n", default=None, help="comma-separated sizes (default 20k,100k,1M)")
    parser.add_argument("--data", default=",".join(DATA_SETS), help="mixture,photos")
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--queries", type=int, default=None, help="default 1000, quick 200")
    parser.add_argument("--writes", type=int, default=None, help="inserts and deletes each")
    parser.add_argument("--budget-s", type=float, default=None, help="per phase and system")
    parser.add_argument("--timeout-s", type=float, default=3600.0, help="per system")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--crossover", action="store_true", help=crossover.__doc__)
    parser.add_argument("--stall", action="store_true", help=stall.__doc__)
    parser.add_argument("--worker", choices=SYSTEMS, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick = args.quick
    args.n = args.n or ("20000" if quick else "20000,100000,1000000")
    args.queries = args.queries or (200 if quick else 1000)
    args.writes = args.writes if args.writes is not None else (200 if quick else 1000)
    args.budget_s = args.budget_s or (60.0 if quick else 180.0)
    if args.worker:
        run_worker(args.worker, args.data_dir, Budget(args.budget_s))
        return 0
    if args.crossover:
        return crossover(args)
    if args.stall:
        return stall(args)
    return compare(args)


if __name__ == "__main__":
    sys.exit(main())

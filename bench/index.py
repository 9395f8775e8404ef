"""Live-index benchmark (issue 5): our Partition against raw faiss and numpy.

For Flat, HNSW32, HNSW48, the default index (``Settings().index_factory``,
IVF1024,Flat) and IVF-PQ on the same data, in the same run:
build time, add rate, single-query latency p50/p95 on one thread, recall@10
against exact search, and bytes per vector, measured both through
``index.partition.Partition`` and through raw faiss with the *same trained
index* (the raw index is built once with ``train_and_add`` and loaded into the
Partition with ``import_state``, so the two differ only by our wrapper: the
row bitmap filter, per-call parameters, the lock and the image-id mapping).
Then, for the default index with the default search parameters (both from
``streams.settings.Settings()``: ``index_factory``, ``nprobe``, ``ef_search``):
recovery time (``save_snapshot`` of the partition at n, then a fresh Partition
and ``load_snapshot``, each timed, against the 30 s goal, and whether the loaded
partition returns identical results), recall after deleting a random 30 % of ids
through ``Partition.update`` (tombstones only, then after the compaction the
default ``compact_ratio`` triggers), and the memory of a partition after five
delete-all / re-add cycles against its steady state.

Data (realistic, seeded, stated in the output): the ~800 Tux Paint stamps
embedded by the exported ONNX encoder (1280-d, cached in ``data/bench/``),
projected to 256-d by a seeded random orthogonal matrix and re-normalised; each
vector picks a seed photo (popularity weights log-normal) and a second one,
starts on the segment between them (weight beta ~ U(0, 0.5) on the second, so
clusters are bridged and IVF cells cut through dense regions), adds a Gaussian
perturbation inside the first seed's own random 32-d subspace at a scale mixing
a per-seed spread (log-uniform 0.5-1.5) and a per-vector factor (log-uniform
0.5-2), plus isotropic noise (norm 0.2), then is L2-normalised. Queries are
fresh draws from the same process (not in the index). Ground truth is exact
top-10 inner product by numpy (chunked matrix products).

Latency: ``faiss.omp_set_num_threads(threads)`` and numpy's OpenBLAS limited
to ``threads`` through its C API (threadpoolctl is not installed); each query
is timed alone with ``time.perf_counter`` after a warm-up, ours / raw / raw
with the same bitmap selector interleaved query by query so that machine load
hits all three alike.

Prints JSON lines ``{"bench", "metric", "value", "unit", "baseline", "ratio",
"index", "n", "machine", ...}`` through ``bench.output.emit``
on stdout and a table on stderr.
Run: ``python bench/index.py [--quick] [--n N] [--seed S] [--threads T]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from bench.output import bench_parser

# This file is bench/index.py: running it puts bench/ first on sys.path, where
# "index" would resolve to this script instead of the project's index package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

import argparse  # noqa: E402
import ctypes  # noqa: E402
import gc  # noqa: E402
import math  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from typing import Any  # noqa: E402

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from bench.output import emit, machine  # noqa: E402
from bench.support import percentile  # noqa: E402
from encoders.preprocess import PreprocessError, preprocess  # noqa: E402
from encoders.runtime import OnnxEncoder  # noqa: E402
from index.ann_plan import resolve_factory  # noqa: E402
from index.faiss_index import (  # noqa: E402
    SearchParams,
    build_index,
    search_parameters,
    train_and_add,
)
from index.partition import Hit, Partition  # noqa: E402
from index.snapshot import SnapshotInfo, load_snapshot, save_snapshot  # noqa: E402
from streams.settings import Settings  # noqa: E402
from visearch.catalog.corpus import DEMO_CORPUS, find_images  # noqa: E402

BENCH = "index"
ROOT = _HERE.parent
MODEL_DIR = ROOT / "data" / "models" / "efficientnet-lite0"
CACHE_DIR = ROOT / "data" / "bench"
DIM = 256
K = 10
SUBSPACE = 32  # dimensions of each seed's perturbation subspace
SEED_SPREAD = (0.5, 1.5)  # log-uniform per seed
VECTOR_SCALE = (0.5, 2.0)  # log-uniform per vector, multiplies the seed spread
NOISE = 0.2  # norm of the isotropic noise
MIX_MAX = 0.5  # weight on the second seed ~ U(0, MIX_MAX)
UPLOADED_AT = 1.0
WARMUP = 20
DELETE_FRACTION = 0.30
CHURN_CYCLES = 5
RECOVERY_GOAL_S = 30.0
MACHINE = machine()
DISTRIBUTION = (
    "Tux Paint stamps -> efficientnet-lite0 ONNX 1280-d -> seeded random orthogonal "
    f"projection to {DIM}-d; vector = (1-b) seed_a + b seed_b (log-normal popularity, "
    f"b ~ U(0, {MIX_MAX})) + Gaussian in seed_a's random {SUBSPACE}-d subspace, "
    f"scale = seed spread U_log{SEED_SPREAD} x "
    f"vector factor U_log{VECTOR_SCALE}, + isotropic noise (norm {NOISE}); L2-normalised"
)


# ------------------------------------------------------------------- output


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def limit_numpy_threads(threads: int) -> str:
    """Limit numpy's bundled OpenBLAS (not faiss's) to ``threads``; says how."""
    libs = sorted((Path(np.__file__).parent.parent / "numpy.libs").glob("*openblas*.so*"))
    for path in libs:
        lib = ctypes.CDLL(str(path))
        for name in (
            "scipy_openblas_set_num_threads64_",
            "openblas_set_num_threads64_",
            "openblas_set_num_threads",
        ):
            setter = getattr(lib, name, None)
            if setter is not None:
                setter(ctypes.c_int(threads))
                return f"{path.name}:{name}({threads})"
    return "not limited (numpy's OpenBLAS not found)"


def percentile_ms(seconds: np.ndarray, q: float) -> float:
    return percentile(list(seconds), q) * 1000.0


# --------------------------------------------------------------------- data


def seed_embeddings(log_progress: bool = True) -> tuple[np.ndarray, str]:
    """Tux Paint stamps embedded by the ONNX encoder, cached as .npy."""
    encoder = OnnxEncoder(MODEL_DIR, threads=2, providers=["CPUExecutionProvider"])
    cache = CACHE_DIR / f"tuxpaint-{encoder.metadata.name}-{encoder.version}.npy"
    if cache.exists():
        return np.load(cache), f"{cache.relative_to(ROOT)} (cached)"
    started = time.perf_counter()
    inputs = []
    for path in find_images(DEMO_CORPUS):
        try:
            inputs.append(preprocess(path.read_bytes()))
        except PreprocessError as exc:
            log(f"skipping {path}: {exc}")
    batches = [encoder.embed(np.stack(inputs[i : i + 16])) for i in range(0, len(inputs), 16)]
    embeddings = np.concatenate(batches).astype(np.float32)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp.npy")
    np.save(tmp, embeddings)
    tmp.replace(cache)
    if log_progress:
        log(f"embedded {len(embeddings)} stamps in {time.perf_counter() - started:.1f} s")
    return embeddings, f"{cache.relative_to(ROOT)} (embedded now)"


@dataclass
class Generator:
    """The seeded vector distribution described in the module docstring."""

    seeds: np.ndarray  # (S, DIM) unit vectors
    weights: np.ndarray  # (S,) popularity
    bases: np.ndarray  # (S, DIM, SUBSPACE) orthonormal columns
    spreads: np.ndarray  # (S,)

    @classmethod
    def fit(cls, embeddings: np.ndarray, rng: np.random.Generator) -> Generator:
        projection, _ = np.linalg.qr(rng.standard_normal((embeddings.shape[1], DIM)))
        seeds = (embeddings @ projection).astype(np.float32)
        seeds /= np.linalg.norm(seeds, axis=1, keepdims=True)
        count = len(seeds)
        weights = rng.lognormal(0.0, 1.0, count)
        bases = np.stack(
            [np.linalg.qr(rng.standard_normal((DIM, SUBSPACE)))[0] for _ in range(count)]
        ).astype(np.float32)
        lo, hi = np.log(SEED_SPREAD)
        spreads = np.exp(rng.uniform(lo, hi, count)).astype(np.float32)
        return cls(seeds, weights / weights.sum(), bases, spreads)

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        owner = rng.choice(len(self.seeds), size=n, p=self.weights)
        other = rng.choice(len(self.seeds), size=n, p=self.weights)
        beta = rng.uniform(0.0, MIX_MAX, n).astype(np.float32)[:, None]
        lo, hi = np.log(VECTOR_SCALE)
        scale = self.spreads[owner] * np.exp(rng.uniform(lo, hi, n)).astype(np.float32)
        out = np.empty((n, DIM), dtype=np.float32)
        order = np.argsort(owner, kind="stable")
        counts = np.bincount(owner, minlength=len(self.seeds))
        start = 0
        for seed, count in enumerate(counts.tolist()):
            if count == 0:
                continue
            rows = order[start : start + count]
            start += count
            z = rng.standard_normal((count, SUBSPACE)).astype(np.float32)
            z *= (scale[rows] / np.sqrt(SUBSPACE))[:, None]
            noise = rng.standard_normal((count, DIM)).astype(np.float32)
            noise *= NOISE / np.sqrt(DIM)
            base = (1 - beta[rows]) * self.seeds[seed] + beta[rows] * self.seeds[other[rows]]
            out[rows] = base + z @ self.bases[seed].T + noise
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out


def exact_topk(
    queries: np.ndarray,
    blocks: Sequence[np.ndarray],
    k: int = K,
    alive: np.ndarray | None = None,
    chunk: int = 65_536,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` inner product over the concatenation of ``blocks``."""
    best_s = np.full((len(queries), k), -np.inf, dtype=np.float32)
    best_i = np.full((len(queries), k), -1, dtype=np.int64)
    offset = 0
    for block in blocks:
        for start in range(0, len(block), chunk):
            part = block[start : start + chunk]
            scores = queries @ part.T
            if alive is not None:
                scores[:, ~alive[offset + start : offset + start + len(part)]] = -np.inf
            kk = min(k, scores.shape[1])
            pick = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
            all_s = np.concatenate([best_s, np.take_along_axis(scores, pick, 1)], axis=1)
            all_i = np.concatenate([best_i, pick + offset + start], axis=1)
            order = np.argsort(-all_s, axis=1, kind="stable")[:, :k]
            best_s = np.take_along_axis(all_s, order, 1)
            best_i = np.take_along_axis(all_i, order, 1)
        offset += len(block)
    return best_s, best_i


def recall_at_k(found: Sequence[Sequence[int]], truth: np.ndarray) -> float:
    hits = [len(set(f[:K]) & set(t[:K].tolist())) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(hits)) / K


# --------------------------------------------------------------- index specs


@dataclass(frozen=True)
class Setting:
    label: str
    params: SearchParams
    default: bool = False


@dataclass(frozen=True)
class Spec:
    name: str
    factory: str
    settings: tuple[Setting, ...]


def params_label(factory: str, params: SearchParams) -> str:
    """The knob that matters for ``factory``: efSearch (HNSW), nprobe (IVF), or none."""
    if "HNSW" in factory:
        return f"efSearch={params.ef_search}"
    if "IVF" in factory:
        return f"nprobe={params.nprobe}"
    return "exact"


def default_setting(settings: Settings, n: int) -> tuple[str, Setting]:
    """The service's default index and search parameters, from ``Settings``, as one
    partition of ``n`` vectors resolves them (``{nlist}`` filled in)."""
    factory = resolve_factory(settings.index_factory, n)
    params = SearchParams(ef_search=settings.ef_search, nprobe=settings.nprobe)
    return factory, Setting(params_label(factory, params), params, default=True)


def specs_for(n: int, settings: Settings, quick: bool = False) -> list[Spec]:
    """Candidates in build order; the default index (``settings``) is one of them.

    ``quick`` leaves HNSW48 out (its graph build alone would break the minute).
    """
    nlist = 2 ** round(math.log2(math.sqrt(n)))  # 1024 at 1M, 256 at 100k
    factory, default = default_setting(settings, n)

    def hnsw(ef: int) -> Setting:
        return Setting(f"efSearch={ef}", SearchParams(ef_search=ef))

    def ivf(nprobe: int) -> Setting:
        return Setting(f"nprobe={nprobe}", SearchParams(nprobe=nprobe))

    # The default index is also measured at twice its default effort.
    if "IVF" in factory:
        more: tuple[Setting, ...] = (ivf(2 * default.params.nprobe),)
    elif "HNSW" in factory:
        more = (hnsw(2 * default.params.ef_search),)
    else:
        more = ()
    candidates = [
        Spec("Flat", "Flat", (Setting("exact", SearchParams()),)),
        Spec("HNSW32", "HNSW32", (hnsw(64), hnsw(128))),
        *([] if quick else [Spec("HNSW48", "HNSW48", (hnsw(128),))]),
        Spec(factory, factory, more),
        Spec(f"IVF{nlist},PQ32", f"IVF{nlist},PQ32", (ivf(32),)),
    ]
    specs: list[Spec] = []
    for spec in candidates:
        if spec.factory == factory:
            if any(s.factory == factory for s in specs):
                continue  # the default was one of the fixed candidates
            others = tuple(s for s in spec.settings if s.label != default.label)
            spec = Spec(spec.name, spec.factory, (default, *others))
        specs.append(spec)
    return specs


def raw_params(index: faiss.Index, params: SearchParams) -> faiss.SearchParameters | None:
    """What a raw faiss user passes: the same knobs, no selector."""
    concrete = faiss.downcast_index(index)
    if isinstance(concrete, faiss.IndexHNSW):
        return faiss.SearchParametersHNSW(efSearch=params.ef_search)  # type: ignore[attr-defined]
    if faiss.try_extract_index_ivf(index) is not None:
        return faiss.SearchParametersIVF(nprobe=params.nprobe)  # type: ignore[call-arg]
    return None


def image_ids(n: int, prefix: str = "v") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def partition_from_index(raw: faiss.Index, factory: str, ids: list[str]) -> tuple[Partition, float]:
    """A Partition holding a copy of ``raw`` via import_state, as a snapshot load would.

    The bookkeeping mirrors what export_state produces for images upserted one by one
    (one row each, uploaded at UPLOADED_AT); its layout is taken from a real export.
    """
    probe = Partition(DIM, factory=factory, background=False)
    probe.upsert("probe", np.ones(DIM, dtype=np.float32) / np.sqrt(DIM), UPLOADED_AT)
    _, template = probe.export_state()
    probe_state = template["states"]["probe"]
    if probe_state[:2] != [0, 1]:
        raise RuntimeError(f"unexpected export_state layout: {probe_state}")
    tail = probe_state[2:]
    rows = len(ids)
    all_set = np.packbits(np.ones(rows, dtype=bool), bitorder="little").tobytes().hex()
    state: dict[str, Any] = {
        "kind": "exact" if factory == "Flat" else "ann",
        "rows": rows,
        "row_image": ids,
        "alive": all_set,
        "allowed": all_set,  # every row visible
        "states": {image_id: [row, 1, *tail] for row, image_id in enumerate(ids)},
        "max_rows_per_image": 1,
    }
    if set(state) != set(template):
        raise RuntimeError(f"export_state keys changed: {sorted(template)}")
    blob = faiss.serialize_index(raw).tobytes()
    part = Partition(DIM, factory=factory, background=False)
    started = time.perf_counter()
    part.import_state(blob, state)
    return part, time.perf_counter() - started


# ------------------------------------------------------------------- timing


def time_interleaved(
    variants: dict[str, Callable[[np.ndarray], Any]], queries: np.ndarray
) -> dict[str, tuple[np.ndarray, list[Any]]]:
    """Each query alone through every variant (rotating order), after a warm-up."""
    names = list(variants)
    for i in range(min(WARMUP, len(queries))):
        for name in names:
            variants[name](queries[i : i + 1])
    times = {name: np.zeros(len(queries)) for name in names}
    outputs: dict[str, list[Any]] = {name: [] for name in names}
    for i in range(len(queries)):
        q = queries[i : i + 1]
        for j in range(len(names)):
            name = names[(i + j) % len(names)]
            fn = variants[name]
            t0 = time.perf_counter()
            out = fn(q)
            times[name][i] = time.perf_counter() - t0
            outputs[name].append(out)
    return {name: (times[name], outputs[name]) for name in names}


def hit_rows(hits: list[list[Hit]], n: int) -> list[int]:
    """Row numbers of ``v{i}`` / ``x{j}`` hits (x rows follow the n v rows)."""
    rows = []
    for hit in hits[0]:
        number = int(hit.image_id[1:])
        rows.append(number if hit.image_id[0] == "v" else n + number)
    return rows


# -------------------------------------------------------------- experiments


@dataclass
class Context:
    n: int
    threads: int
    data: np.ndarray
    extra: np.ndarray  # vectors for the incremental add-rate test
    queries: np.ndarray
    truth: np.ndarray
    latency_queries: int  # Flat/brute force time fewer queries at large n
    brute_p50: float
    brute_p95: float
    compaction: bool
    summary: list[dict[str, object]]
    default_name: str  # the default index (Settings().index_factory)
    default: Setting  # its default search parameters (Settings().nprobe / ef_search)

    def tags(self, index: str, n: int | None = None) -> dict[str, Any]:
        """The context every JSON line carries: index, n, machine."""
        return {"index": index, "n": self.n if n is None else n, "machine": MACHINE}


def bench_spec(ctx: Context, spec: Spec) -> tuple[Partition, float] | None:
    """Everything for one index type; returns the default partition for later tests."""
    n = ctx.n
    tags = ctx.tags(spec.name)
    faiss.omp_set_num_threads(ctx.threads)
    raw = build_index(DIM, spec.factory)
    started = time.perf_counter()
    train_and_add(raw, ctx.data)  # no polysemous training for PQ (train_and_add turns it off)
    build_s = time.perf_counter() - started
    emit(
        BENCH,
        "build_s",
        build_s,
        "s",
        None,
        **tags,
        threads=ctx.threads,
        what="raw faiss train_and_add (train on <=100k sample + bulk add)",
    )
    part, load_s = partition_from_index(raw, spec.factory, image_ids(n))
    emit(BENCH, "snapshot_load_s", load_s, "s", None, **tags, what="Partition.import_state")

    # Memory: ours (Partition.memory) vs the raw serialized index.
    raw_bytes = faiss.serialize_index(raw).nbytes
    report = part.memory()
    emit(
        BENCH,
        "bytes_per_vector",
        report.bytes_per_vector,
        "B",
        raw_bytes / n,
        **tags,
        baseline_is="raw faiss serialize_index size / n",
        raw_vector_bytes=DIM * 4,
    )

    # Latency and recall: ours / raw / raw + the same bitmap selector, interleaved.
    queries = ctx.queries if spec.factory != "Flat" else ctx.queries[: ctx.latency_queries]
    truth = ctx.truth[: len(queries)]
    faiss.omp_set_num_threads(ctx.threads)
    bitmap = np.full((n + 7) // 8, 0xFF, dtype=np.uint8)
    selector = faiss.IDSelectorBitmap(n, faiss.swig_ptr(bitmap))
    default_recall = None
    for setting in spec.settings:
        plain = raw_params(raw, setting.params)
        with_bitmap = search_parameters(raw, selector, setting.params)

        def ours(
            q: np.ndarray, part: Partition = part, params: SearchParams = setting.params
        ) -> list[list[Hit]]:
            return part.search(q, K, params)

        def raw_search(
            q: np.ndarray, index: faiss.Index = raw, p: faiss.SearchParameters | None = plain
        ) -> tuple[np.ndarray, np.ndarray]:
            return index.search(q, K, params=p)

        def raw_bitmap(
            q: np.ndarray, index: faiss.Index = raw, p: faiss.SearchParameters = with_bitmap
        ) -> tuple[np.ndarray, np.ndarray]:
            return index.search(q, K, params=p)

        timed = time_interleaved(
            {"ours": ours, "raw": raw_search, "raw_bitmap": raw_bitmap}, queries
        )
        t_ours, out_ours = timed["ours"]
        t_raw, out_raw = timed["raw"]
        t_bm, _ = timed["raw_bitmap"]
        recall_ours = recall_at_k([hit_rows(h, n) for h in out_ours], truth)
        recall_raw = recall_at_k([o[1][0].tolist() for o in out_raw], truth)
        common = {"params": setting.label, "default": setting.default, "queries": len(queries)}
        common["threads"] = ctx.threads
        emit(BENCH, "recall_at_10", recall_ours, "ratio", recall_raw, **tags, **common)
        p50, p95 = percentile_ms(t_ours, 50), percentile_ms(t_ours, 95)
        raw50, raw95 = percentile_ms(t_raw, 50), percentile_ms(t_raw, 95)
        numpy = {"baseline_is": "numpy"}
        emit(BENCH, "p50_ms", p50, "ms", ctx.brute_p50, **tags, **numpy, **common)
        emit(BENCH, "p95_ms", p95, "ms", ctx.brute_p95, **tags, **numpy, **common)
        emit(
            BENCH,
            "overhead_vs_raw_faiss",
            p95,
            "ms",
            raw95,
            **tags,
            what="p95 ours / p95 raw faiss, same index and params",
            recall_ours=round(recall_ours, 4),
            recall_raw=round(recall_raw, 4),
            raw_p50_ms=round(raw50, 4),
            raw_bitmap_p95_ms=round(percentile_ms(t_bm, 95), 4),
            **common,
        )
        ctx.summary.append(
            {
                "index": spec.name,
                "params": setting.label + (" (default)" if setting.default else ""),
                "p50": p50,
                "p95": p95,
                "raw95": raw95,
                "recall": recall_ours,
                "raw_recall": recall_raw,
                "bpv": report.bytes_per_vector,
                "raw_bpv": raw_bytes / n,
                "build_s": build_s,
            }
        )
        if setting.default:
            default_recall = recall_ours

    if default_recall is not None:
        started = time.perf_counter()
        bench_recovery(ctx, part)
        log(f"recovery done in {time.perf_counter() - started:.1f} s")

    # Add rate: one vector per call, ours (Partition.upsert) vs raw index.add, both
    # into the loaded index (so the rate is the incremental one at size n).
    faiss.omp_set_num_threads(1)
    extra = ctx.extra
    ids = image_ids(len(extra), "x")
    started = time.perf_counter()
    for image_id, vector in zip(ids, extra, strict=True):
        part.upsert(image_id, vector, UPLOADED_AT)
    ours_s = time.perf_counter() - started
    started = time.perf_counter()
    for i in range(len(extra)):
        raw.add(extra[i : i + 1])
    raw_s = time.perf_counter() - started
    faiss.omp_set_num_threads(ctx.threads)
    emit(
        BENCH,
        "add_rate",
        len(extra) / ours_s,
        "vectors/s",
        len(extra) / raw_s,
        **tags,
        what="one vector per call into the loaded index: Partition.upsert vs raw add",
        added=len(extra),
        bulk_build_rate=round(n / build_s, 1),
    )
    for row in ctx.summary:
        if row["index"] == spec.name and "p95" in row:
            row["add_rate"] = len(extra) / ours_s
            row["raw_add_rate"] = len(extra) / raw_s
    del raw
    gc.collect()
    if default_recall is not None:
        return part, default_recall
    del part
    gc.collect()
    return None


def bench_recovery(ctx: Context, part: Partition) -> None:
    """save_snapshot of ``part``, then a fresh Partition + load_snapshot, each timed."""
    params = ctx.default.params
    tags = ctx.tags(ctx.default_name)
    info = SnapshotInfo(partition=0, offset=ctx.n, epoch="bench", model_version="bench")
    faiss.omp_set_num_threads(ctx.threads)
    with tempfile.TemporaryDirectory(prefix="visearch-bench-") as tmp:
        started = time.perf_counter()
        path = save_snapshot(Path(tmp), part, info)
        save_s = time.perf_counter() - started
        size = path.stat().st_size
        gc.collect()
        started = time.perf_counter()
        loaded = Partition(DIM, factory=part.factory, background=False)
        loaded_info = load_snapshot(path, loaded, info.model_version)
        recovery_s = time.perf_counter() - started
    expected = part.search(ctx.queries, K, params)
    found = loaded.search(ctx.queries, K, params)
    identical = found == expected and loaded_info == info  # Hit compares ids and scores
    emit(
        BENCH,
        "snapshot_save_s",
        save_s,
        "s",
        None,
        **tags,
        what="save_snapshot: export_state + zlib state + write + fsync + rename",
        snapshot_bytes=size,
    )
    emit(
        BENCH,
        "recovery_s",
        recovery_s,
        "s",
        RECOVERY_GOAL_S,
        **tags,
        baseline_is="recovery goal",
        what="fresh Partition + load_snapshot (file just written: in the page cache)",
        snapshot_bytes=size,
    )
    emit(
        BENCH,
        "recovery_identical",
        int(identical),
        "bool",
        None,
        **tags,
        what="loaded partition returns the same hits (ids and scores) on every query",
        queries=len(ctx.queries),
        params=ctx.default.label,
    )
    ctx.summary.append(
        {
            "index": ctx.default_name,
            "params": f"snapshot save {save_s:.1f} s, recovery {recovery_s:.1f} s, "
            f"identical={identical}",
        }
    )
    del loaded
    gc.collect()


def bench_deletes(ctx: Context, part: Partition, recall_before: float) -> None:
    """Recall of the default index after deleting 30 % of ids through Partition.update."""
    n, total = ctx.n, ctx.n + len(ctx.extra)
    name, params = ctx.default_name, ctx.default.params
    tags = ctx.tags(name)
    rng = np.random.default_rng([ctx.n, 30])
    doomed = rng.choice(total, size=int(DELETE_FRACTION * total), replace=False)
    alive = np.ones(total, dtype=bool)
    alive[doomed] = False
    part.compact_ratio = 1.0  # first: tombstones only, no compaction
    started = time.perf_counter()
    for row in doomed.tolist():
        image_id = f"v{row}" if row < n else f"x{row - n}"
        part.update(image_id, "delete", UPLOADED_AT + 1)
    delete_s = time.perf_counter() - started
    emit(BENCH, "delete_rate", len(doomed) / delete_s, "ids/s", None, **tags, deleted=len(doomed))
    _, truth = exact_topk(ctx.queries, [ctx.data, ctx.extra], alive=alive)
    faiss.omp_set_num_threads(ctx.threads)

    def measure(stage: str) -> float:
        timed = time_interleaved({"ours": lambda q: part.search(q, K, params)}, ctx.queries)
        seconds, outputs = timed["ours"]
        recall = recall_at_k([hit_rows(h, n) for h in outputs], truth)
        report = part.memory(exact_index_bytes=False)
        emit(
            BENCH,
            "recall_at_10_after_30pct_delete",
            recall,
            "ratio",
            recall_before,
            **tags,
            params=ctx.default.label,
            stage=stage,
            baseline_is="recall before deleting",
            kind=report.kind,
            rows=report.rows,
            live_rows=report.live_rows,
            p95_ms=round(percentile_ms(seconds, 95), 4),
        )
        label = f"{ctx.default.label}, 30% deleted, {stage}"
        ctx.summary.append({"index": name, "params": label, "recall": recall})
        return recall

    measure("tombstones (bitmap filter, no compaction)")
    if not ctx.compaction:
        return
    # The default compact_ratio (0.25) is past: the next update compacts, synchronously
    # here (background=False); in the service it runs on a thread beside searches.
    part.compact_ratio = 0.25
    rebuilds = part.rebuilds
    started = time.perf_counter()
    part.update(f"v{int(doomed[0])}" if doomed[0] < n else f"x{int(doomed[0]) - n}", "delete", 3.0)
    compaction_s = time.perf_counter() - started
    emit(
        BENCH,
        "compaction_s",
        compaction_s,
        "s",
        None,
        **tags,
        rebuilt=part.rebuilds - rebuilds,
        what=f"reconstruct live rows + train_and_add {part.factory}",
    )
    measure("after compaction")


def bench_churn(ctx: Context, gen: Generator, churn_n: int) -> None:
    """Memory after delete-all / re-add cycles vs the steady state of the same partition."""
    faiss.omp_set_num_threads(ctx.threads)
    name, params = ctx.default_name, ctx.default.params
    tags = ctx.tags(name, churn_n)
    vectors = gen.draw(churn_n, np.random.default_rng([ctx.n, 5]))
    queries = ctx.queries[:200]
    _, truth = exact_topk(queries, [vectors])
    part = Partition(DIM, factory=name, ann_threshold=churn_n, background=False)
    ids = image_ids(churn_n, "c")
    at = UPLOADED_AT
    started = time.perf_counter()
    for image_id, vector in zip(ids, vectors, strict=True):
        part.upsert(image_id, vector, at)
    fill_s = time.perf_counter() - started

    def recall() -> float:
        hits = part.search(queries, K, params)
        return recall_at_k([[int(h.image_id[1:]) for h in row] for row in hits], truth)

    steady = part.memory()
    steady_rss = rss_bytes()
    steady_recall = recall()
    cycle_s = []
    for _ in range(CHURN_CYCLES):
        started = time.perf_counter()
        at += 1
        for image_id in ids:
            part.update(image_id, "delete", at)
        at += 1
        for image_id, vector in zip(ids, vectors, strict=True):
            part.upsert(image_id, vector, at)
        cycle_s.append(time.perf_counter() - started)
    after = part.memory()
    total_after = after.index_bytes + after.map_bytes
    total_steady = steady.index_bytes + steady.map_bytes
    emit(
        BENCH,
        "churn_memory_bytes",
        total_after,
        "B",
        total_steady,
        **tags,
        what=f"Partition.memory() after {CHURN_CYCLES} delete-all/re-add cycles vs steady",
        steady_rows=steady.rows,
        rows=after.rows,
        live_rows=after.live_rows,
        kind=after.kind,
        rebuilds=part.rebuilds,
        fill_s=round(fill_s, 2),
        cycle_s=[round(s, 2) for s in cycle_s],
        ann_threshold=churn_n,
        process_rss_steady=steady_rss,
        process_rss_after=rss_bytes(),
    )
    emit(
        BENCH,
        "churn_bytes_per_vector",
        after.bytes_per_vector,
        "B",
        steady.bytes_per_vector,
        **tags,
    )
    emit(
        BENCH,
        "churn_recall_at_10",
        recall(),
        "ratio",
        steady_recall,
        **tags,
        queries=len(queries),
        params=ctx.default.label,
    )
    ctx.summary.append(
        {
            "index": name,
            "params": f"churn {churn_n}, {CHURN_CYCLES} cycles, B/vec after vs steady",
            "bpv": after.bytes_per_vector,
            "raw_bpv": steady.bytes_per_vector,
        }
    )


# --------------------------------------------------------------------- main


def print_table(summary: list[dict[str, object]]) -> None:
    columns = [  # header, key, width, format
        ("add/s", "add_rate", 9, ".0f"),
        ("raw add/s", "raw_add_rate", 10, ".0f"),
        ("p50 ms", "p50", 8, ".3f"),
        ("p95 ms", "p95", 8, ".3f"),
        ("raw p95", "raw95", 8, ".3f"),
        ("ovh", "overhead", 6, ".2f"),
        ("R@10", "recall", 7, ".3f"),
        ("raw R", "raw_recall", 7, ".3f"),
        ("B/vec", "bpv", 8, ".1f"),
        ("raw B", "raw_bpv", 8, ".1f"),
    ]
    log(f"{'index':<18}{'params':<66}" + "".join(h.rjust(w) for h, _, w, _ in columns))
    for row in summary:
        p95, raw95 = row.get("p95"), row.get("raw95")
        if isinstance(p95, float) and isinstance(raw95, float):
            row = {**row, "overhead": p95 / raw95}
        cells = []
        for _, key, width, spec in columns:
            value = row.get(key)
            cells.append(("-" if value is None else format(value, spec)).rjust(width))
        log(f"{row['index']!s:<18}{row['params']!s:<66}" + "".join(cells))


def rss_bytes() -> int:
    """Resident set size of this process (Linux), 0 where unknown."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = bench_parser(__doc__, "100k vectors, no HNSW48, under a minute")
    parser.add_argument("--n", type=int, default=None, help="vectors (default 1M, quick 100k)")
    parser.add_argument("--queries", type=int, default=None, help="default 1000, quick 200")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="faiss and numpy threads")
    parser.add_argument(
        "--compaction",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="rebuild after the 30%% delete (default: on, off with --quick)",
    )
    parser.add_argument("--churn-n", type=int, default=None, help="default 50k, quick 5k")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    settings = Settings()
    n = args.n or (100_000 if args.quick else 1_000_000)
    n_queries = args.queries or (200 if args.quick else 1000)
    churn_n = args.churn_n or (5_000 if args.quick else 50_000)
    compaction = (not args.quick) if args.compaction is None else args.compaction
    faiss.omp_set_num_threads(args.threads)
    numpy_threads = limit_numpy_threads(args.threads)

    embeddings, source = seed_embeddings()
    streams = np.random.SeedSequence(args.seed).spawn(4)
    gen = Generator.fit(embeddings, np.random.default_rng(streams[0]))
    t0 = time.perf_counter()
    data = gen.draw(n, np.random.default_rng(streams[1]))
    queries = gen.draw(n_queries, np.random.default_rng(streams[2]))
    extra = gen.draw(2_000 if n <= 200_000 else 10_000, np.random.default_rng(streams[3]))
    gen_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    top_scores, truth = exact_topk(queries, [data])
    truth_s = time.perf_counter() - t0
    log(f"{n} vectors generated in {gen_s:.1f} s, ground truth in {truth_s:.1f} s")
    sample = data[np.random.default_rng(args.seed).choice(n, 1000, replace=False)]
    random_cos = float((queries @ sample.T).mean())
    emit(
        BENCH,
        "top10_cosine",
        float(top_scores[:, -1].mean()),
        "cosine",
        random_cos,
        index="data",
        n=n,
        machine=MACHINE,
        baseline_is="mean cosine query - random vector",
        top1_cosine=round(float(top_scores[:, 0].mean()), 4),
        seeds=len(embeddings),
        seed_source=source,
        distribution=DISTRIBUTION,
        queries=n_queries,
        seed=args.seed,
        generate_s=round(gen_s, 2),
        ground_truth_s=round(truth_s, 2),
        threads=args.threads,
        numpy_threads=numpy_threads,
        faiss_omp_threads=faiss.omp_get_max_threads(),
    )

    # numpy brute force, one query at a time (matrix-vector product + argpartition).
    latency_queries = n_queries if n <= 200_000 else 100

    def brute(q: np.ndarray) -> np.ndarray:
        scores = data @ q[0]
        top = np.argpartition(-scores, K - 1)[:K]
        return top[np.argsort(-scores[top])]

    timed = time_interleaved({"numpy": brute}, queries[:latency_queries])
    seconds, outputs = timed["numpy"]
    brute_recall = recall_at_k([o.tolist() for o in outputs], truth[:latency_queries])
    brute_p50, brute_p95 = percentile_ms(seconds, 50), percentile_ms(seconds, 95)
    brute_tags = {"index": "numpy brute force", "n": n, "machine": MACHINE}
    emit(BENCH, "brute_force_p50_ms", brute_p50, "ms", None, **brute_tags)
    emit(
        BENCH,
        "brute_force_p95_ms",
        brute_p95,
        "ms",
        None,
        **brute_tags,
        queries=latency_queries,
        recall_at_10=round(brute_recall, 4),
        numpy_threads=numpy_threads,
    )

    ctx = Context(
        n,
        args.threads,
        data,
        extra,
        queries,
        truth,
        latency_queries,
        brute_p50,
        brute_p95,
        compaction,
        [{"index": "numpy brute force", "params": "", "p50": brute_p50, "p95": brute_p95}],
        *default_setting(settings, n),
    )
    default: tuple[Partition, float] | None = None
    for spec in specs_for(n, settings, args.quick):
        t0 = time.perf_counter()
        result = bench_spec(ctx, spec)
        log(f"{spec.name} done in {time.perf_counter() - t0:.1f} s")
        if result is not None:
            default = result
            t0 = time.perf_counter()
            bench_deletes(ctx, *default)
            log(f"deletes done in {time.perf_counter() - t0:.1f} s")
            default = None
            gc.collect()
    t0 = time.perf_counter()
    bench_churn(ctx, gen, churn_n)
    log(f"churn done in {time.perf_counter() - t0:.1f} s")
    runtime = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    emit(
        BENCH,
        "runtime_s",
        runtime,
        "s",
        None,
        index="all",
        n=n,
        machine=MACHINE,
        quick=args.quick,
        peak_rss_bytes=peak,
        default_index=ctx.default_name,
        default_params=ctx.default.label,
    )
    print_table(ctx.summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Encoder benchmark (issue 4 item 6): torch eager fp32 vs ONNX Runtime fp32 and int8.

Throughput is images/s from PNG *bytes* to embeddings: ``encoders.preprocess``
(decode + letterbox + normalise) and the forward pass are both inside the
timed region; reading the files is not. The same seeded sample of real Tux
Paint stamps goes through every runtime, at batch 16 and batch 1, in two
layouts on this machine's CPU:

* 1 process with 2 threads (intra-op threads of torch / ORT);
* 2 processes with 1 thread each (``multiprocessing``, spawn), both embedding
  the whole sample at once behind a barrier; images/s is the aggregate:
  2 x sample / (last finish - first start).

Runtimes: ``torch_fp32`` is the product's ``EmbeddingNet`` (``load_pretrained``)
in eager mode, ``inference_mode``, channels_last (faster than the default
layout here, so the baseline is not handicapped); ``ort_fp32`` and
``ort_int8`` are ``encoders.runtime.OnnxEncoder`` on the exported model
directories (CPU provider). Every worker is started and warmed up (one full
pass over the sample at each batch size) before timing; then each round runs
every runtime x batch once, runtimes rotated round by round so that a
neighbour's CPU burst does not land on one runtime only; the best of the
rounds is reported. Workers also return the embeddings of the first images,
checked against each other (torch and ORT fp32 must agree).

Quality: category retrieval on the Tux Paint set embedded by ORT fp32 and
int8. Each image queries all the others, ranked by cosine; relevant = same
top-level category folder; mAP and P@1 by ``visearch.evaluation.ir_metrics`` (checked
against trec_eval). Images whose category has no other image are not queries
(they stay in the corpus). The int8 model was calibrated on 128 of these
images (``visearch quantize``), so this is not a held-out measurement.

Prints JSON lines through ``bench.output.emit`` (baseline = torch fp32
of the same run, same images, same layout and batch, or ORT fp32 for quality)
on stdout and a table on stderr. Run from the repository root: ``python -m
bench.embed [--quick] [--images DIR]``.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing as mp
import os
import queue
import sys
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

import numpy as np

from bench import output as bench_output
from bench.output import bench_parser
from encoders.model_dir import is_exported
from encoders.preprocess import preprocess
from streams.settings import Settings
from visearch.catalog.corpus import DEMO_CORPUS, find_images
from visearch.evaluation.ir_metrics import evaluate
from visearch.models.serving import ensure_exported

BENCH = "embed"
RUNTIMES = ("torch_fp32", "ort_fp32", "ort_int8")
BASELINE = "torch_fp32"
BATCHES = (16, 1)
LAYOUTS = ((1, 2), (2, 1))  # (processes, threads per process)
CHECK_IMAGES = 8
QUALITY_CHUNK = 64
WORKER_TIMEOUT_S = 600.0

Embedder = Callable[[np.ndarray], np.ndarray]


def emit(metric: str, value: float, unit: str, baseline: float | None, **extra: object) -> None:
    """One JSON line in the project's benchmark convention, tagged with the machine."""
    bench_output.emit(BENCH, metric, value, unit, baseline, machine=bench_output.machine(), **extra)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ runtimes


def make_embedder(runtime: str, model_dirs: dict[str, Path], threads: int) -> Embedder:
    """A function ``(n, 3, 224, 224)`` float32 -> ``(n, 1280)`` for one runtime."""
    if runtime == "torch_fp32":
        import torch

        from encoders.backbone import load_pretrained

        torch.set_num_threads(threads)
        torch.set_num_interop_threads(1)
        with contextlib.redirect_stdout(sys.stderr):  # the loader prints; stdout is JSON
            model = load_pretrained().to(memory_format=torch.channels_last)

        def embed_torch(batch: np.ndarray) -> np.ndarray:
            x = torch.from_numpy(batch).contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                return model(x).numpy()

        return embed_torch
    from encoders.runtime import OnnxEncoder

    encoder = OnnxEncoder(model_dirs[runtime], threads=threads, providers=["CPUExecutionProvider"])
    return encoder.embed


def embed_bytes(embed: Embedder, data: Sequence[bytes], batch: int) -> list[np.ndarray]:
    """Preprocess and embed ``data`` in batches of ``batch``: the timed unit of work."""
    outputs = []
    for start in range(0, len(data), batch):
        arrays = np.stack([preprocess(item) for item in data[start : start + batch]])
        outputs.append(embed(arrays))
    return outputs


def worker(
    runtime: str,
    model_dirs: dict[str, Path],
    threads: int,
    paths: Sequence[Path],
    barrier: Barrier,
    commands: Queue[Any],
    results: Queue[Any],
) -> None:
    """One benchmark process: load, warm up, then time a pass per command."""
    try:
        embed = make_embedder(runtime, model_dirs, threads)
        data = [path.read_bytes() for path in paths]
        for batch in BATCHES:  # warm-up: a full untimed pass at each batch size
            first = np.concatenate(embed_bytes(embed, data, batch))[:CHECK_IMAGES]
        results.put(("ready", first))
        while (batch := commands.get()) is not None:
            barrier.wait()
            start = time.perf_counter()  # CLOCK_MONOTONIC: comparable across processes
            embed_bytes(embed, data, batch)
            results.put(("done", (start, time.perf_counter())))
    except BaseException:  # report any failure instead of leaving the parent waiting
        barrier.abort()
        results.put(("error", f"{runtime}: {traceback.format_exc()}"))


class Group:
    """The worker processes of one runtime in one layout."""

    def __init__(
        self,
        ctx: Any,
        runtime: str,
        model_dirs: dict[str, Path],
        processes: int,
        threads: int,
        paths: Sequence[Path],
    ) -> None:
        self.runtime = runtime
        self.processes = processes
        self.results: Queue[Any] = ctx.Queue()
        self.commands: list[Queue[Any]] = [ctx.Queue() for _ in range(processes)]
        # Kept on self: a barrier collected before the children unpickle it is gone.
        self.barrier = ctx.Barrier(processes)
        self.procs = [
            ctx.Process(
                target=worker,
                args=(runtime, model_dirs, threads, list(paths), self.barrier, cmd, self.results),
                daemon=True,
            )
            for cmd in self.commands
        ]
        for proc in self.procs:
            proc.start()

    def _collect(self, kind: str) -> list[Any]:
        replies = []
        deadline = time.monotonic() + WORKER_TIMEOUT_S
        while len(replies) < len(self.procs):
            try:
                tag, payload = self.results.get(timeout=1.0)
            except queue.Empty:
                dead = [p.exitcode for p in self.procs if not p.is_alive()]
                if dead or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"{self.runtime} worker gave no answer (exit codes {dead})"
                    ) from None
                continue
            if tag == "error":
                raise RuntimeError(f"worker failed: {payload}")
            assert tag == kind, (tag, kind)
            replies.append(payload)
        return replies

    def wait_ready(self) -> np.ndarray:
        """Block until every worker is warm; the first images' embeddings."""
        return self._collect("ready")[0]

    def time_pass(self, batch: int, n_images: int) -> float:
        """Aggregate images/s of one pass of every worker over the sample."""
        for cmd in self.commands:
            cmd.put(batch)
        spans = self._collect("done")
        wall = max(end for _, end in spans) - min(start for start, _ in spans)
        return self.processes * n_images / wall

    def close(self) -> None:
        for cmd in self.commands:
            cmd.put(None)
        for proc in self.procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()


def measure_throughput(
    model_dirs: dict[str, Path], paths: Sequence[Path], rounds: int
) -> tuple[dict[tuple[str, int, int], float], dict[str, np.ndarray]]:
    """Best images/s per (runtime, processes, batch), and each runtime's check embeddings."""
    ctx = mp.get_context("spawn")
    best: dict[tuple[str, int, int], float] = {}
    check: dict[str, np.ndarray] = {}
    for processes, threads in LAYOUTS:
        started = time.perf_counter()
        groups = [Group(ctx, r, model_dirs, processes, threads, paths) for r in RUNTIMES]
        try:
            for group in groups:
                check.setdefault(group.runtime, group.wait_ready())
            log(f"  {processes} process(es): warm in {time.perf_counter() - started:.0f}s")
            for round_ in range(rounds):
                shift = round_ % len(groups)
                for group in groups[shift:] + groups[:shift]:
                    for batch in BATCHES:
                        rate = group.time_pass(batch, len(paths))
                        key = (group.runtime, processes, batch)
                        best[key] = max(best.get(key, 0.0), rate)
        finally:
            for group in groups:
                group.close()
        log(f"  {processes} process(es): done in {time.perf_counter() - started:.0f}s")
    return best, check


def preprocess_rate(paths: Sequence[Path], rounds: int) -> float:
    """images/s of decode + letterbox + normalise alone, one thread, best of ``rounds``."""
    data = [path.read_bytes() for path in paths]
    best = 0.0
    for _ in range(rounds + 1):  # the first round is a warm-up that can only lose
        start = time.perf_counter()
        for item in data:
            preprocess(item)
        best = max(best, len(data) / (time.perf_counter() - start))
    return best


# ------------------------------------------------------------------- quality


def category_of(path: Path, root: Path) -> str:
    """Top-level folder under ``root`` ("" for images directly in it)."""
    parts = path.relative_to(root).parts
    return parts[0] if len(parts) > 1 else ""


def embed_corpus(
    model_dirs: dict[str, Path], paths: Sequence[Path], threads: int
) -> dict[str, np.ndarray]:
    """ORT fp32 and int8 embeddings of every image (each preprocessed once)."""
    embedders = {r: make_embedder(r, model_dirs, threads) for r in RUNTIMES if r != BASELINE}
    outputs: dict[str, list[np.ndarray]] = {r: [] for r in embedders}
    for start in range(0, len(paths), QUALITY_CHUNK):
        arrays = [preprocess(p.read_bytes()) for p in paths[start : start + QUALITY_CHUNK]]
        for runtime, embed in embedders.items():
            for offset in range(0, len(arrays), BATCHES[0]):
                outputs[runtime].append(embed(np.stack(arrays[offset : offset + BATCHES[0]])))
    return {r: np.concatenate(v) for r, v in outputs.items()}


def category_retrieval(vectors: np.ndarray, labels: Sequence[str]) -> dict[str, float]:
    """Leave-one-out cosine retrieval by category: trec_eval ``map``, ``P_1``, ``num_q``."""
    ids = [f"img{i:05d}" for i in range(len(labels))]
    counts = Counter(labels)
    members: dict[str, list[str]] = {}
    for doc, label in zip(ids, labels, strict=True):
        members.setdefault(label, []).append(doc)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    sims = unit @ unit.T
    run: dict[str, list[str]] = {}
    qrels: dict[str, dict[str, int]] = {}
    for i, (query, label) in enumerate(zip(ids, labels, strict=True)):
        if counts[label] < 2:
            continue
        order = np.argsort(-sims[i], kind="stable")
        run[query] = [ids[j] for j in order if j != i]
        qrels[query] = {doc: 1 for doc in members[label] if doc != query}
    return evaluate(run, qrels, ks=(1,))


# ---------------------------------------------------------------------- main


def ensure_models(fp32_dir: Path, int8_dir: Path, images: Path) -> None:
    """Export / quantise the models if missing (the product's own commands)."""
    ensure_exported(fp32_dir, images)
    if not is_exported(int8_dir):
        from visearch.cli.main import main as cli_main

        log(f"quantising {fp32_dir} into {int8_dir}")
        with contextlib.redirect_stdout(sys.stderr):
            cli_main(["quantize", "--model", str(fp32_dir), "--out", str(int8_dir)])


def main(argv: Sequence[str] | None = None) -> int:
    parser = bench_parser(__doc__, "fewer images and rounds, <= 60 s")
    parser.add_argument("--images", type=Path, default=DEMO_CORPUS, help="folder of real images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timing-images", type=int, help="default 128 (--quick: 32)")
    parser.add_argument("--rounds", type=int, help="timed rounds, best reported; default 3")
    parser.add_argument("--quality-images", type=int, help="default all (--quick: 200)")
    parser.add_argument("--model-dir", type=Path, default=Settings().resolved_model_dir)
    parser.add_argument("--int8-dir", type=Path, help="default: <model-dir>-int8")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    fp32_dir = args.model_dir.resolve()
    int8_dir = (args.int8_dir or fp32_dir.with_name(fp32_dir.name + "-int8")).resolve()
    ensure_models(fp32_dir, int8_dir, args.images)
    model_dirs = {"ort_fp32": fp32_dir, "ort_int8": int8_dir}

    rng = np.random.default_rng(args.seed)
    paths = find_images(args.images)
    n_timing = args.timing_images or (32 if args.quick else 128)
    n_timing = max(BATCHES[0], n_timing - n_timing % BATCHES[0])  # whole batches of 16
    rounds = args.rounds or (2 if args.quick else 3)
    pick = rng.choice(len(paths), size=n_timing, replace=n_timing > len(paths))
    timing_paths = [paths[i] for i in sorted(pick)]
    n_quality = args.quality_images or (200 if args.quick else len(paths))
    pick = rng.choice(len(paths), size=min(n_quality, len(paths)), replace=False)
    quality_paths = [paths[i] for i in sorted(pick)]
    log(
        f"{len(paths)} images in {args.images}; timing {len(timing_paths)} x {rounds} rounds, "
        f"quality {len(quality_paths)}"
    )

    rates, check = measure_throughput(model_dirs, timing_paths, rounds)
    pre_rate = preprocess_rate(timing_paths, rounds)
    for runtime in RUNTIMES[1:]:
        cosines = (check[BASELINE] * check[runtime]).sum(axis=1)
        log(f"  check: {runtime} vs torch cosine min {cosines.min():.4f}")
        if runtime == "ort_fp32":
            assert cosines.min() > 0.999, f"ORT fp32 differs from torch (cosine {cosines.min()})"
    timing_done = time.perf_counter() - started

    labels = [category_of(p, args.images) for p in quality_paths]
    vectors = embed_corpus(model_dirs, quality_paths, threads=2)
    quality = {r: category_retrieval(v, labels) for r, v in vectors.items()}
    pair_cos = (vectors["ort_fp32"] * vectors["ort_int8"]).sum(axis=1)
    elapsed = time.perf_counter() - started

    common = {"n_images": len(timing_paths), "rounds": rounds, "seed": args.seed}
    for (runtime, processes, batch), rate in rates.items():
        emit(
            "decode_embed_images_per_s",
            rate,
            "images/s",
            rates[(BASELINE, processes, batch)],
            runtime=runtime,
            baseline_runtime=BASELINE,
            processes=processes,
            threads_per_process=dict(LAYOUTS)[processes],
            batch=batch,
            **common,
        )
    for processes, threads in LAYOUTS:
        for batch in BATCHES:
            layout = {"processes": processes, "threads_per_process": threads, "batch": batch}
            int8_rate = rates[("ort_int8", processes, batch)]
            fp32_rate = rates[("ort_fp32", processes, batch)]
            torch_rate = rates[(BASELINE, processes, batch)]
            emit("ort_int8_vs_torch_fp32", int8_rate, "images/s", torch_rate, **layout, **common)
            emit("ort_int8_vs_ort_fp32", int8_rate, "images/s", fp32_rate, **layout, **common)
    emit("preprocess_images_per_s", pre_rate, "images/s", None, processes=1, threads=1, **common)

    n_classes = len({label for label, n in Counter(labels).items() if n >= 2})
    qextra = {
        "n_images": len(quality_paths),
        "n_queries": int(quality["ort_fp32"]["num_q"]),
        "n_classes": n_classes,
        "seed": args.seed,
    }
    base = quality["ort_fp32"]
    for runtime, scores in quality.items():
        extra = {"runtime": runtime, "baseline_runtime": "ort_fp32", **qextra}
        emit("category_map", scores["map"], "fraction", base["map"], **extra)
        emit("category_p@1", scores["P_1"], "fraction", base["P_1"], **extra)
    int8 = quality["ort_int8"]
    emit(
        "map_int8_minus_fp32",
        100.0 * (int8["map"] - base["map"]),
        "points",
        None,
        map_fp32=round(base["map"], 4),
        map_int8=round(int8["map"], 4),
        **qextra,
    )
    emit(
        "p@1_int8_minus_fp32",
        100.0 * (int8["P_1"] - base["P_1"]),
        "points",
        None,
        p1_fp32=round(base["P_1"], 4),
        p1_int8=round(int8["P_1"], 4),
        **qextra,
    )
    emit(
        "cosine_int8_vs_fp32",
        float(pair_cos.mean()),
        "cosine",
        None,
        min=round(float(pair_cos.min()), 4),
        **qextra,
    )
    load = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    emit(
        "runtime",
        elapsed,
        "s",
        None,
        timing_s=round(timing_done, 1),
        quick=args.quick,
        loadavg_1m=load,
    )

    log(f"\nimages/s, decode + preprocess + embed, best of {rounds} on {len(timing_paths)} images")
    header = "".join(f"{f'{p}p x{t}t b{b}':>14}" for p, t in LAYOUTS for b in BATCHES)
    log(f"{'runtime':12}{header}")
    for runtime in RUNTIMES:
        cells = "".join(f"{rates[(runtime, p, b)]:14.1f}" for p, _ in LAYOUTS for b in BATCHES)
        log(f"{runtime:12}{cells}")
    ratios = "".join(
        f"{rates[('ort_int8', p, b)] / rates[(BASELINE, p, b)]:13.2f}x"
        for p, _ in LAYOUTS
        for b in BATCHES
    )
    log(f"{'int8/torch':12}{ratios}")
    log(f"preprocess alone: {pre_rate:.0f} images/s on one thread")
    log(f"\ncategory retrieval on {len(quality_paths)} images, {n_classes} categories")
    for runtime, scores in quality.items():
        log(f"{runtime:12} mAP {scores['map']:.4f}  P@1 {scores['P_1']:.4f}")
    diff = 100.0 * (int8["map"] - base["map"])
    log(f"int8 - fp32: mAP {diff:+.2f} points, P@1 {100 * (int8['P_1'] - base['P_1']):+.2f}")
    log(f"cosine int8 vs fp32: mean {pair_cos.mean():.4f}, min {pair_cos.min():.4f}")
    log(f"runtime {elapsed:.0f}s (timing {timing_done:.0f}s), load {load[0]} -> {load[1]}")
    return 0 if all(math.isfinite(s["map"]) for s in quality.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

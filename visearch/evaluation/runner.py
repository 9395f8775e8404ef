"""``visearch eval``: embed the corpus and queries, index, search, score.

Every step is the service's code (see :mod:`.embedding` and :mod:`.searching`);
scores are :mod:`visearch.evaluation.ir_metrics`, which agrees with trec_eval. Queries
are embedded like a search by image (the whole query image, no tiles). A
query that is itself a corpus image (same id, same bytes) reuses that image's
global vector, which is exactly what embedding it again would give: class
sets of N images then cost N passes, not 2N.

Micro-AP (the copy-detection measure) pools every returned (query, doc, score)
of every query, unjudged queries included, so distractor queries with no
match in the corpus count against it as they should.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from encoders.preprocess import ImageLimits, decode_image
from encoders.tiles import tile_boxes
from index.search import SearchService
from streams.settings import Settings
from visearch.evaluation.curves import precision_recall_curve, recall_curve, relevance_matrix
from visearch.evaluation.dataset import EvalSet, EvalSetError
from visearch.evaluation.embedding import Encoder, embed_images
from visearch.evaluation.filters import QueryFilters
from visearch.evaluation.ir_metrics import (
    average_precision,
    evaluate,
    micro_average_precision,
    ndcg_at_k,
    precision_at_k,
    recall_at_k,
    reciprocal_rank,
)
from visearch.evaluation.searching import SERVICE_INDEX, build_search, index_kinds
from visearch.processes.shards import crop_verifier, query_expansion, query_windows

KS = (1, 5, 10, 100)


@dataclass(frozen=True)
class EvalOptions:
    """How to run an evaluation; defaults are the service's settings."""

    tiles: str = "none"  # a scheme of encoders.tiles
    index: str = SERVICE_INDEX
    partitions: int | None = None
    depth: int = 100
    dedup_threshold: float | None = None
    verify_top: int = 0  # crop verification of the top hits (0: off; index/crop_verify.py)
    query_expansion: int = 0  # neighbours blended into each query (0: off)
    query_windows: str = "none"  # query-side multi-crop for unsure searches (index/query_windows)
    query_turns: bool = False  # ... and the query turned by a quarter
    batch_size: int = 32
    progress: bool = True


@dataclass
class EvalResult:
    """A ranked run with its scores, curves and what produced them."""

    run: dict[str, list[tuple[str, float]]]
    metrics: dict[str, float]
    per_query: list[dict[str, Any]]
    recall_at_k: list[float]
    precision_at_recall: list[float]
    config: dict[str, Any]
    timings_s: dict[str, float] = field(default_factory=dict)


def _reusable(eval_set: EvalSet) -> dict[str, int]:
    """Queries that are byte-identical corpus images: query id -> corpus row."""
    rows = {image_id: row for row, image_id in enumerate(eval_set.corpus)}
    same: dict[str, int] = {}
    for query, path in eval_set.queries.items():
        doc = eval_set.corpus.get(query)
        if doc is not None and (
            os.path.samefile(doc, path) or doc.read_bytes() == path.read_bytes()
        ):
            same[query] = rows[query]
    return same


def run_eval(
    eval_set: EvalSet, encoder: Encoder, settings: Settings, options: EvalOptions
) -> EvalResult:
    """Evaluate ``encoder`` on ``eval_set`` through the service's index and search."""
    if options.depth < 1:
        raise EvalSetError(f"depth must be >= 1, got {options.depth}")
    timings: dict[str, float] = {}
    started = time.perf_counter()
    limits = ImageLimits.from_settings(settings)
    corpus_ids = list(eval_set.corpus)
    corpus_vectors, query_vectors, embedded = _embed_set(eval_set, encoder, limits, options)
    timings["embed"] = time.perf_counter() - started

    mark = time.perf_counter()
    # against the corpus files, as the service verifies against its image store
    verifier = crop_verifier(
        settings, eval_set.corpus.__getitem__, options.verify_top, len(eval_set.corpus)
    )
    filters = eval_set.filters or QueryFilters()
    service = build_search(
        encoder,
        corpus_ids,
        corpus_vectors,
        settings,
        options.index,
        options.partitions,
        options.dedup_threshold,
        verifier,
        query_expansion(settings, options.query_expansion),
        query_windows(settings, options.query_windows, options.query_turns),
        filters.of,
    )
    timings["index"] = time.perf_counter() - mark

    mark = time.perf_counter()
    run, verified = _search_set(eval_set, encoder, service, query_vectors, filters, limits, options)
    timings["search"] = time.perf_counter() - mark

    admitted = filters.admitted(eval_set.qrels)  # a filtered query: judged on what it admits
    judged = [q for q in eval_set.judged_queries if any(g > 0 for g in admitted[q].values())]
    ranked = {q: [doc for doc, _ in run[q]] for q in judged}
    qrels = {q: admitted[q] for q in judged}
    metrics = evaluate(ranked, qrels, KS)
    truth = [(q, d) for q, docs in admitted.items() for d, g in docs.items() if g > 0]
    metrics["micro_ap"] = micro_average_precision(
        [(q, doc, score) for q, hits in run.items() for doc, score in hits], truth
    )
    hits_matrix, totals = relevance_matrix(ranked, qrels, judged)
    timings["total"] = time.perf_counter() - started
    config = {
        "model_version": encoder.version,
        "tiles": options.tiles,
        "index": options.index,
        "index_kinds": index_kinds(service),
        "partitions": options.partitions or settings.embedding_partitions,
        "depth": options.depth,
        "dedup_threshold": service.dedup_threshold,
        "verify_top": options.verify_top,
        "verified_queries": verified,
        "query_expansion": options.query_expansion,
        "query_expansion_alpha": settings.query_expansion_alpha,
        "query_windows": options.query_windows,
        "query_turns": options.query_turns,
        "query_windows_below": settings.query_windows_below,
        "model_dedup_threshold": round(service.model_dedup_threshold, 6),
        "corpus_images": len(corpus_ids),
        "queries": len(eval_set.queries),
        "judged_queries": len(judged),
        "filtered_queries": len(filters.queries),
        "embedded_images": embedded,
        "cpu_count": os.cpu_count(),
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }
    return EvalResult(
        run=run,
        metrics=metrics,
        per_query=_per_query(ranked, qrels, run),
        recall_at_k=recall_curve(hits_matrix, totals),
        precision_at_recall=precision_recall_curve(hits_matrix, totals),
        config=config,
        timings_s={k: round(v, 3) for k, v in timings.items()},
    )


def _embed_set(
    eval_set: EvalSet, encoder: Encoder, limits: ImageLimits, options: EvalOptions
) -> tuple[np.ndarray, dict[str, np.ndarray], int]:
    """The corpus's vectors (with tiles), each query's vector, and how many images
    were embedded (a query that is a corpus image reuses its vector)."""
    tiles = tile_boxes(options.tiles)
    reused = _reusable(eval_set)
    fresh_queries = [q for q in eval_set.queries if q not in reused]
    total = len(eval_set.corpus) + len(fresh_queries)
    with tqdm(
        total=total, desc="embed", unit="img", disable=not options.progress, smoothing=0.1
    ) as bar:
        corpus_vectors = embed_images(
            list(eval_set.corpus.values()), encoder, tiles, limits, options.batch_size, bar
        )
        query_vectors = {q: corpus_vectors[row, 0] for q, row in reused.items()}
        if fresh_queries:
            fresh = embed_images(
                [eval_set.queries[q] for q in fresh_queries],
                encoder,
                (),
                limits,
                options.batch_size,
                bar,
            )
            query_vectors.update(zip(fresh_queries, fresh[:, 0], strict=True))
    return corpus_vectors, query_vectors, total


def _search_set(
    eval_set: EvalSet,
    encoder: Encoder,
    service: SearchService,
    query_vectors: dict[str, np.ndarray],
    filters: QueryFilters,
    limits: ImageLimits,
    options: EvalOptions,
) -> tuple[dict[str, list[tuple[str, float]]], int]:
    """Every query through the service as the API searches; the ranked run, and how
    many queries crop verification confirmed."""
    run: dict[str, list[tuple[str, float]]] = {}
    verified = 0
    for query in tqdm(eval_set.queries, desc="search", unit="query", disable=not options.progress):
        exclude = query if query in eval_set.corpus else None
        verification = window_vectors = None
        if service.verifier is not None or service.windows is not None:
            image = decode_image(eval_set.queries[query].read_bytes(), limits)
            verification = service.verification(image, None)
            window_vectors = service.window_vectors(encoder, image)  # type: ignore[arg-type]
        hits = service.search_vector(
            query_vectors[query],
            options.depth,
            exclude,
            service.params_for(filters.queries.get(query)),
            verification=verification,
            window_vectors=window_vectors,
        )
        verified += verification is not None and verification.verified > 0
        run[query] = [(hit.image_id, hit.score) for hit in hits]
    return run, verified


def _per_query(
    ranked: dict[str, list[str]],
    qrels: dict[str, dict[str, int]],
    run: dict[str, list[tuple[str, float]]],
) -> list[dict[str, Any]]:
    """One row per judged query: its scores (ir_metrics'), first relevant rank, top result."""
    measures = {
        "rr": reciprocal_rank(ranked, qrels),
        "ap": average_precision(ranked, qrels),
        "p_1": precision_at_k(ranked, qrels, 1),
        "p_5": precision_at_k(ranked, qrels, 5),
        "recall_1": recall_at_k(ranked, qrels, 1),
        "recall_5": recall_at_k(ranked, qrels, 5),
        "recall_10": recall_at_k(ranked, qrels, 10),
        "ndcg_10": ndcg_at_k(ranked, qrels, 10),
    }
    rows = []
    for query, docs in ranked.items():
        judged = qrels[query]
        first = next((rank for rank, doc in enumerate(docs, 1) if judged.get(doc, 0) > 0), 0)
        top_doc, top_score = run[query][0] if run[query] else ("", float("nan"))
        rows.append(
            {
                "query": query,
                "relevant": sum(1 for grade in judged.values() if grade > 0),
                "first_relevant_rank": first,
                **{name: scores.per_query[query] for name, scores in measures.items()},
                "top_doc": top_doc,
                "top_score": top_score,
            }
        )
    return rows

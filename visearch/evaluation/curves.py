"""Recall@k and precision-recall curves of a ranked run, for tables and plots.

Same conventions as :mod:`visearch.evaluation.ir_metrics` (trec_eval's): relevance > 0 is
relevant, recall divides by the relevant documents in the qrels (retrieved or
not), and the precision-recall curve is trec_eval's interpolated precision at
the 11 recall levels 0, 0.1, ..., 1 (``iprec_at_recall``), averaged over the
queries: at recall r, the best precision reached at any recall >= r, with
trec_eval's rounding of a level to a number of relevant documents.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

RECALL_LEVELS = tuple(i / 10 for i in range(11))


def relevance_matrix(
    run: Mapping[str, Sequence[str]], qrels: Mapping[str, Mapping[str, int]], queries: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """``(queries x depth)`` 0/1 relevance of the ranked docs, and relevant docs per query."""
    depth = max((len(run.get(q, ())) for q in queries), default=0)
    hits = np.zeros((len(queries), depth), dtype=np.float64)
    totals = np.zeros(len(queries), dtype=np.float64)
    for i, query in enumerate(queries):
        judged = qrels.get(query, {})
        ranked = run.get(query, ())
        hits[i, : len(ranked)] = [judged.get(doc, 0) > 0 for doc in ranked]
        totals[i] = sum(1 for grade in judged.values() if grade > 0)
    return hits, totals


def recall_curve(hits: np.ndarray, totals: np.ndarray) -> list[float]:
    """Mean recall@k for k = 1..depth (queries without relevant docs score 0)."""
    if hits.size == 0:
        return []
    found = np.cumsum(hits, axis=1)
    recall = np.divide(found, totals[:, None], out=np.zeros_like(found), where=totals[:, None] > 0)
    return [float(v) for v in recall.mean(axis=0)]


def precision_recall_curve(hits: np.ndarray, totals: np.ndarray) -> list[float]:
    """Mean interpolated precision at :data:`RECALL_LEVELS` (trec_eval ``iprec_at_recall``)."""
    if hits.size == 0:
        return [0.0] * len(RECALL_LEVELS)
    ranks = np.arange(1, hits.shape[1] + 1, dtype=np.float64)
    found = np.cumsum(hits, axis=1)
    at_relevant = np.where(hits > 0, found / ranks, 0.0)  # the curve's points
    curve = np.zeros((len(hits), len(RECALL_LEVELS)), dtype=np.float64)
    for j, level in enumerate(RECALL_LEVELS):
        # trec_eval turns a level into a count of relevant docs: (long)(level * R + 0.9),
        # so with R = 3 the level 0.7 is reached by 2 docs (2.0999... + 0.9 truncates to 2).
        needed = np.floor(level * totals + 0.9)
        curve[:, j] = np.where(found >= needed[:, None], at_relevant, 0.0).max(axis=1)
    return [float(v) for v in curve.mean(axis=0)]

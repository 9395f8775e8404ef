"""Click-derived judgements: an evaluation set from what users actually clicked.

Two gradings, both on the brief's 0-5 scale:

- from labelled pairs (``visearch pairs export``): each image clicked from a
  query's results is relevant, graded by the number of sessions in which it
  was clicked (capped at 5). Simple, but it grades exposure as much as
  relevance: whatever a model showed first in many sessions collects clicks.
- from the interactions log (``visearch interactions export``): a
  position-based click model fitted to every impression and click
  (:mod:`feedback.click_model`) estimates each result's attractiveness for
  the query apart from where and how often it was shown; grades are linear
  in it (:func:`feedback.click_model.graded_relevance`).

The corpus is every image of the source folder, with the ids ``visearch
ingest`` gives them (the ids the events use). Judgements only cover what
some model showed: a model that finds relevant images nobody was shown gets
no credit for them, so judgements from one model's sessions are conservative
for another; pool sessions served by every model compared.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

from feedback.click_model import fit_position_model, graded_relevance, impressions_from_events
from feedback.trainer_feed import load_interactions, load_pairs
from visearch.evaluation.dataset import (
    CORPUS_DIR,
    QUERIES_DIR,
    EvalSetError,
    Qrels,
    copy_corpus,
    link_or_copy,
    prepare_output,
    write_set,
)

MAX_GRADE = 5


def click_qrels(pairs_file: Path, known: set[str]) -> tuple[Qrels, int]:
    """Graded judgements from pairs whose images are in ``known``; also the pairs left out."""
    clicks: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    sessions: dict[tuple[str, str], set[str]] = defaultdict(set)
    unknown = 0
    for pair in load_pairs(pairs_file):
        query, clicked = pair.query_image_id, pair.positive_image_id
        if query not in known or clicked not in known or query == clicked:
            unknown += 1
            continue
        sessions[(query, clicked)].add(pair.search_id)
    for (query, clicked), searches in sessions.items():
        clicks[query][clicked] = min(MAX_GRADE, len(searches))
    return {q: dict(docs) for q, docs in clicks.items()}, unknown


def click_model_qrels(interactions_file: Path, known: set[str]) -> tuple[Qrels, dict[str, Any]]:
    """Graded judgements from the click model fitted to the interactions of ``known`` images;
    also what the fit found (for the manifest)."""
    log = impressions_from_events(load_interactions(interactions_file))
    impressions = [i for i in log.impressions if i[0] in known and i[1] in known]
    if not impressions:
        return {}, {}
    fit = fit_position_model(impressions)
    qrels, reference = graded_relevance(fit, MAX_GRADE)
    return qrels, {
        "impressions": len(impressions),
        "impressions_left_out": len(log.impressions) - len(impressions),
        "clicks": sum(clicked for *_, clicked in impressions),
        "clicks_without_impression": log.clicks_without_impression,
        "searches_without_query": log.searches_without_query,
        "examination_by_position": [round(float(t), 4) for t in fit.examination],
        "attractiveness_of_top_grade": round(reference, 4),
        "em_iterations": fit.iterations,
    }


def build_click_set(
    source: Path, out: Path, pairs_file: Path | None = None, interactions_file: Path | None = None
) -> int:
    """The set in ``out`` from exactly one of the two logs; returns the number of judged queries."""
    if (pairs_file is None) == (interactions_file is None):
        raise EvalSetError("clicks needs either --pairs FILE or --interactions FILE")
    log_file = pairs_file or interactions_file
    assert log_file is not None
    if not log_file.is_file():
        command = "pairs" if pairs_file else "interactions"
        raise EvalSetError(f"{log_file} does not exist: export it with `visearch {command} export`")
    prepare_output(out)
    placed = set(copy_corpus(source, out))
    manifest: dict[str, Any] = {"builder": "clicks", "source": str(source)}
    if pairs_file is not None:
        qrels, unknown = click_qrels(pairs_file, placed)
        manifest.update(grading="sessions", pairs=str(pairs_file), pairs_left_out=unknown)
    else:
        assert interactions_file is not None
        qrels, fit = click_model_qrels(interactions_file, placed)
        manifest.update(grading="click-model", interactions=str(interactions_file), **fit)
    if not qrels:
        raise EvalSetError(f"no click in {log_file} names two images under {source}")
    corpus_files = {p.stem: p for p in (out / CORPUS_DIR).iterdir()}
    for query in qrels:
        link_or_copy(corpus_files[query], out / QUERIES_DIR / corpus_files[query].name)
    write_set(out, qrels, {**manifest, "max_grade": MAX_GRADE})
    return len(qrels)

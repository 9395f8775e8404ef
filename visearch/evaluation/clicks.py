"""Click-derived judgements: an evaluation set from what users actually clicked.

Built from labelled pairs (``visearch pairs export``): for every query image,
each image clicked from its results is relevant, graded by the number of
sessions in which it was clicked (capped at 5, the brief's top grade), so
nDCG rewards ranking the most-clicked images first. The corpus is every image
of the source folder, with the ids ``visearch ingest`` gives them (the ids
the pairs use). Judgements only cover what some model showed: a model that
finds relevant images nobody was shown gets no credit for them, so this set
is conservative for a new model against the one that served the clicks.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from feedback.trainer_feed import load_pairs
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


def build_click_set(source: Path, pairs_file: Path, out: Path) -> int:
    """The set in ``out``; returns the number of judged queries."""
    if not pairs_file.is_file():
        raise EvalSetError(
            f"{pairs_file} does not exist: export pairs with `visearch pairs export`"
        )
    prepare_output(out)
    placed = copy_corpus(source, out)
    qrels, unknown = click_qrels(pairs_file, set(placed))
    if not qrels:
        raise EvalSetError(f"no pair in {pairs_file} names two images under {source}")
    corpus_files = {p.stem: p for p in (out / CORPUS_DIR).iterdir()}
    for query in qrels:
        link_or_copy(corpus_files[query], out / QUERIES_DIR / corpus_files[query].name)
    manifest = {
        "builder": "clicks",
        "source": str(source),
        "pairs": str(pairs_file),
        "pairs_left_out": unknown,
        "max_grade": MAX_GRADE,
    }
    write_set(out, qrels, manifest)
    return len(qrels)

"""Evaluation sets on disk: corpus and query folders, TREC qrels, a manifest.

Ids are file stems, so a result list can be read next to the folder without a
mapping file; two images with the same stem in one folder are therefore an
error, not a silent overwrite. Qrels are TREC's ``query 0 doc relevance``
lines (relevance 0..5; what trec_eval and pytrec_eval read). Every qrels line
must name a query and a document that exist: a typo would otherwise turn into
a relevant document that can never be found, i.e. a quietly lower score.

A query whose id is also a corpus id is the same image searched by id (as the
service does with ``image_id``): that document is left out of its results.
Class-based sets use this for leave-one-out retrieval.

Builders write the layout :func:`write_set` produces: ``corpus/``,
``queries/``, ``qrels.txt`` and ``manifest.json`` (what was built, how, seed).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from streams.errors import VisearchError
from visearch.catalog.corpus import CorpusError, find_images, image_id_for

if TYPE_CHECKING:
    from visearch.evaluation.filters import QueryFilters

CORPUS_DIR = "corpus"
QUERIES_DIR = "queries"
QRELS_FILE = "qrels.txt"
MANIFEST_FILE = "manifest.json"
FILTERS_FILE = "filters.json"  # optional: visearch/evaluation/filters.py

Qrels = dict[str, dict[str, int]]


class EvalSetError(VisearchError, ValueError):
    """An evaluation set that cannot be evaluated as it stands; the message says why."""


@dataclass(frozen=True)
class EvalSet:
    """Images by id and the judgements that relate them."""

    corpus: dict[str, Path]
    queries: dict[str, Path]
    qrels: Qrels
    # Corpus attributes and per-query filters (filters.json); none by default.
    filters: QueryFilters | None = field(default=None, compare=False)

    @property
    def judged_queries(self) -> list[str]:
        """Queries with at least one relevant document (the ones metrics average over)."""
        return [q for q in self.queries if any(g > 0 for g in self.qrels.get(q, {}).values())]


def images_by_stem(folder: Path) -> dict[str, Path]:
    """Image files under ``folder`` keyed by file stem; a repeated stem is an error."""
    try:
        paths = find_images(folder)
    except CorpusError as exc:
        raise EvalSetError(str(exc)) from exc
    by_stem: dict[str, Path] = {}
    for path in paths:
        if path.stem in by_stem:
            raise EvalSetError(
                f"two images in {folder} share the id {path.stem!r} "
                f"({by_stem[path.stem]} and {path}); ids are file stems and must be unique"
            )
        by_stem[path.stem] = path
    return by_stem


def read_qrels(path: Path) -> Qrels:
    """TREC qrels: ``query iteration doc relevance`` per line, whitespace-separated."""
    if not path.is_file():
        raise EvalSetError(f"qrels file {path} does not exist")
    qrels: Qrels = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 4:
            raise EvalSetError(f"{path}:{number}: expected 'query 0 doc relevance', got {line!r}")
        query, _, doc, grade = fields
        try:
            relevance = int(grade)
        except ValueError:
            raise EvalSetError(f"{path}:{number}: relevance {grade!r} is not an integer") from None
        if not 0 <= relevance <= 5:
            raise EvalSetError(f"{path}:{number}: relevance {relevance} is outside 0..5")
        qrels.setdefault(query, {})[doc] = relevance
    return qrels


def format_qrels(qrels: Mapping[str, Mapping[str, int]]) -> str:
    """TREC qrels text, sorted so that the same judgements give the same bytes."""
    lines = [
        f"{query} 0 {doc} {grade}"
        for query in sorted(qrels)
        for doc, grade in sorted(qrels[query].items())
    ]
    return "".join(line + "\n" for line in lines)


def load_eval_set(
    corpus_dir: Path, queries_dir: Path, qrels_file: Path, filters_file: Path | None = None
) -> EvalSet:
    """Read and cross-check a set: every qrels query and document must exist; with
    ``filters_file`` (visearch/evaluation/filters.py), every id it names too."""
    from visearch.evaluation.filters import load_filters

    corpus = images_by_stem(corpus_dir)
    queries = images_by_stem(queries_dir)
    qrels = read_qrels(qrels_file)
    unknown_queries = sorted(set(qrels) - set(queries))
    if unknown_queries:
        raise EvalSetError(
            f"{len(unknown_queries)} qrels queries have no image in {queries_dir}: "
            f"{', '.join(unknown_queries[:5])}"
        )
    for query, judgements in qrels.items():
        missing = sorted(set(judgements) - set(corpus))
        if missing:
            raise EvalSetError(
                f"qrels of query {query!r} name documents missing from {corpus_dir}: "
                f"{', '.join(missing[:5])}"
            )
        if query in judgements and query in corpus:
            raise EvalSetError(
                f"query {query!r} judges itself, but a query is never its own result "
                "(it has a corpus id, so it is searched as that image)"
            )
    filters = None if filters_file is None else load_filters(filters_file, corpus, queries)
    result = EvalSet(corpus, queries, qrels, filters)
    if not result.judged_queries:
        raise EvalSetError(f"no query in {qrels_file} has a relevant document (relevance > 0)")
    return result


def set_dir_sources(root: Path) -> dict[str, Path]:
    """The ``corpus``, ``queries`` and ``qrels`` paths of a set in the builders' layout
    (and its ``filters.json`` when it has one)."""
    sources = {"corpus": root / CORPUS_DIR, "queries": root / QUERIES_DIR}
    sources["qrels"] = root / QRELS_FILE
    if (root / FILTERS_FILE).is_file():
        sources["filters"] = root / FILTERS_FILE
    return sources


def load_set_dir(root: Path) -> EvalSet:
    """A set in the builders' layout (``corpus/``, ``queries/``, ``qrels.txt``)."""
    sources = set_dir_sources(root)
    return load_eval_set(
        sources["corpus"], sources["queries"], sources["qrels"], sources.get("filters")
    )


def link_or_copy(source: Path, target: Path) -> None:
    """Hard-link when possible (no extra disk for a corpus of the source photos)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def write_set(root: Path, qrels: Qrels, manifest: Mapping[str, Any]) -> None:
    """Write the qrels and the manifest (with counts) of a set whose images are in place."""
    (root / QRELS_FILE).write_text(format_qrels(qrels))
    counts = {
        "corpus_images": len(find_images(root / CORPUS_DIR)),
        "query_images": len(find_images(root / QUERIES_DIR)),
        "qrels": sum(len(j) for j in qrels.values()),
    }
    (root / MANIFEST_FILE).write_text(json.dumps({**manifest, **counts}, indent=2) + "\n")


def prepare_output(root: Path) -> None:
    """An empty output folder for a builder (created, or existing and empty).

    A folder that already holds files is refused: builders add files, and a
    leftover image from an earlier build would join the new corpus unjudged.
    """
    if root.exists() and any(root.iterdir()):
        raise EvalSetError(f"{root} is not empty; builders write into a new folder")
    (root / CORPUS_DIR).mkdir(parents=True, exist_ok=True)
    (root / QUERIES_DIR).mkdir(parents=True, exist_ok=True)


def copy_corpus(source: Path, root: Path, skip: frozenset[Path] = frozenset()) -> dict[str, Path]:
    """Link every image under ``source`` into ``root/corpus`` under a unique id.

    Ids come from the path relative to ``source`` (``animals/cat.png`` ->
    ``animals-cat``, :func:`visearch.catalog.corpus.image_id_for`) because photo
    collections repeat file names across folders. Returns id -> source path.
    """
    placed: dict[str, Path] = {}
    for path in find_images(source):
        if path in skip:
            continue
        image_id = image_id_for(path, source)
        if image_id in placed:
            raise EvalSetError(f"{path} and {placed[image_id]} both map to the id {image_id!r}")
        link_or_copy(path, root / CORPUS_DIR / f"{image_id}{path.suffix.lower()}")
        placed[image_id] = path
    return placed

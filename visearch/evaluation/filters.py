"""Filtered queries in an evaluation set: ``filters.json``.

A set may carry, beside its qrels, the attributes of its corpus images and a
filter per query, so that ``visearch eval`` measures filtered search the way
the service runs it (the filter inside the index scan)::

    {
      "attributes": {"shoe-1": {"owner_id": "shop42", "tags": ["shoes"], "uploaded_at": 10.0}},
      "queries": {"q-7": {"owner_ids": ["shop42"], "tags_any": ["shoes", "boots"]}}
    }

A query's filter uses the fields of ``POST /v1/search`` (``owner_ids``,
``tags_any``, ``tags_all``, ``uploaded_after``, ``uploaded_before``). Images
without attributes have no owner, no tags and upload time 0. A filtered query
is judged only on the documents its filter admits: a relevant image outside
the filter cannot be returned, and counting it would only lower every system's
recall alike.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from index.filters import FilterError, SearchFilter
from streams.schemas import SchemaError, check_tags
from visearch.evaluation.dataset import EvalSetError, Qrels


@dataclass(frozen=True)
class ImageAttributes:
    """What a filter reads of one corpus image."""

    owner_id: str = ""
    tags: tuple[str, ...] = ()
    uploaded_at: float = 0.0


@dataclass(frozen=True)
class QueryFilters:
    """Corpus attributes and per-query filters of one set (empty: no filtered queries)."""

    attributes: dict[str, ImageAttributes] = field(default_factory=dict)
    queries: dict[str, SearchFilter] = field(default_factory=dict)

    def of(self, image_id: str) -> ImageAttributes:
        return self.attributes.get(image_id, NO_ATTRIBUTES)

    def admitted(self, qrels: Qrels) -> Qrels:
        """``qrels`` with each filtered query's judgements cut to what its filter admits."""
        cut: Qrels = {}
        for query, judgements in qrels.items():
            where = self.queries.get(query)
            if where is None:
                cut[query] = judgements
                continue
            cut[query] = {
                doc: grade
                for doc, grade in judgements.items()
                if where.matches(self.of(doc).owner_id, self.of(doc).tags, self.of(doc).uploaded_at)
            }
        return cut


NO_ATTRIBUTES = ImageAttributes()


def load_filters(path: Path, corpus: Iterable[str], queries: Iterable[str]) -> QueryFilters:
    """Read ``filters.json``; every id must be in the set, every value valid."""
    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise EvalSetError(f"{path}: not a readable JSON file: {exc}") from exc
    if not isinstance(body, dict) or set(body) - {"attributes", "queries"}:
        raise EvalSetError(f"{path}: expected an object with 'attributes' and 'queries'")
    corpus_ids, query_ids = set(corpus), set(queries)
    attributes = {}
    for image_id, fields in body.get("attributes", {}).items():
        if image_id not in corpus_ids:
            raise EvalSetError(f"{path}: attributes name {image_id!r}, which is not in the corpus")
        attributes[image_id] = _attributes(path, image_id, fields)
    filters = {}
    for query, fields in body.get("queries", {}).items():
        if query not in query_ids:
            raise EvalSetError(f"{path}: a filter names query {query!r}, which is not in the set")
        try:
            filters[query] = SearchFilter.from_json(fields if isinstance(fields, dict) else {})
        except FilterError as exc:
            raise EvalSetError(f"{path}: the filter of query {query!r}: {exc}") from exc
    return QueryFilters(attributes, filters)


def _attributes(path: Path, image_id: str, fields: Any) -> ImageAttributes:
    if not isinstance(fields, dict) or set(fields) - {"owner_id", "tags", "uploaded_at"}:
        raise EvalSetError(
            f"{path}: attributes of {image_id!r} must be an object of owner_id, tags, uploaded_at"
        )
    tags = fields.get("tags", [])
    try:
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise SchemaError("invalid_value", "tags must be a list of strings")
        check_tags(tags)
        return ImageAttributes(
            str(fields.get("owner_id", "")), tuple(tags), float(fields.get("uploaded_at", 0.0))
        )
    except (SchemaError, TypeError, ValueError) as exc:
        raise EvalSetError(f"{path}: attributes of {image_id!r}: {exc}") from exc

"""An index built the way the service builds one, searched the way it searches.

Vectors are spread over partitions with the same key hash Kafka's default
partitioner applies to the embeddings topic (murmur2 of the image id), kept in
an :class:`index.shard.IndexShard` made of the service's partitions
(:func:`visearch.processes.shards.partition_factory`), and queried through
:meth:`index.search.SearchService.search_vector`: per-partition search, merge,
self-exclusion and near-duplicate collapse. What differs from the live service
is only that vectors are upserted directly instead of arriving through Kafka,
and rebuilds run in the foreground, so the index is complete before the first
query.

``--index`` picks the partitions' index: ``service`` (the configured factory,
which at evaluation sizes is usually still exact, as in the service),
``exact``, or any faiss factory string (``HNSW32``, ``IVF64,Flat``), in which
case each partition is rebuilt as that index at its last upsert, trained on all
of its vectors, to measure what ANN costs in quality.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from index.crop_verify import CropVerifier
from index.partition import EXACT_FACTORY, Partition
from index.query_expansion import QueryExpansion
from index.query_windows import QueryWindows
from index.search import SearchService
from index.shard import IndexShard, partition_for
from streams.settings import Settings
from visearch.evaluation.dataset import EvalSetError
from visearch.evaluation.embedding import Encoder
from visearch.evaluation.filters import NO_ATTRIBUTES, ImageAttributes
from visearch.processes.shards import partition_factory, search_params

SERVICE_INDEX = "service"
EXACT_INDEX = "exact"


def _factories(settings: Settings, dim: int, spec: str, rows: Sequence[int]) -> Iterator[Partition]:
    if spec == SERVICE_INDEX:
        make = partition_factory(settings, dim, background=False)
        return (make() for _ in rows)
    if spec == EXACT_INDEX:
        exact = settings.with_overrides(index_factory=EXACT_FACTORY)
        make = partition_factory(exact, dim, background=False)
        return (make() for _ in rows)
    # The shard's partitions move to the ANN index together once all rows are in.
    total = max(1, sum(rows))
    custom = settings.with_overrides(index_factory=spec, ann_threshold=total)
    make = partition_factory(custom, dim, background=False)
    return (make() for _ in rows)


def build_search(
    encoder: Encoder,
    ids: Sequence[str],
    vectors: np.ndarray,
    settings: Settings,
    spec: str = SERVICE_INDEX,
    partitions: int | None = None,
    dedup_threshold: float | None = None,
    verifier: CropVerifier | None = None,
    expansion: QueryExpansion | None = None,
    windows: QueryWindows | None = None,
    attributes: Callable[[str], ImageAttributes] | None = None,
) -> SearchService:
    """Index ``vectors`` (``(n, rows per image, dim)``) under ``ids`` (with each image's
    ``attributes`` for filtered queries); a search service on it."""
    attributes_of = attributes or (lambda _: NO_ATTRIBUTES)
    count = partitions or settings.embedding_partitions
    if count < 1:
        raise EvalSetError(f"partitions must be >= 1, got {count}")
    owner = [partition_for(image_id, count) for image_id in ids]
    rows = np.bincount(np.asarray(owner, dtype=np.int64), minlength=count) * vectors.shape[1]
    try:
        made = _factories(settings, encoder.dim, spec, rows.tolist())
        shard = IndexShard(encoder.dim, encoder.version, range(count), lambda: next(made))
        for image_id, partition, image_vectors in zip(ids, owner, vectors, strict=True):
            known = attributes_of(image_id)
            shard.partitions[partition].upsert(
                image_id,
                image_vectors,
                known.uploaded_at,
                owner_id=known.owner_id,
                tags=known.tags,
            )
    except (ValueError, RuntimeError) as exc:  # faiss: bad factory, too few points to train
        raise EvalSetError(f"index {spec!r} over {count} partitions: {exc}") from exc
    dedup = settings.dedup_threshold if dedup_threshold is None else dedup_threshold
    return SearchService(
        encoder,  # type: ignore[arg-type]  # only .version and .embed are used here
        [shard],
        dedup_threshold=dedup,
        params=search_params(settings),
        verifier=verifier,
        expansion=expansion,
        windows=windows,
    )


def index_kinds(service: SearchService) -> list[str]:
    """The kind (exact / ann) of every partition, for the record of what was measured."""
    kinds = (getattr(shard, "partitions", {}).values() for shard in service.shards)
    return sorted({part.kind for part in itertools.chain.from_iterable(kinds)})

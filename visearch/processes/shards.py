"""Starting index shards (in the API process or their own) and the search service over them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from encoders.preprocess import ImageLimits
from encoders.runtime import OnnxEncoder
from index.crop_verify import CACHE_SIZE, CropVerifier
from index.faiss_index import SearchParams
from index.partition import Partition
from index.query_expansion import QueryExpansion
from index.query_windows import QueryWindows, window_boxes
from index.remote import RemoteShard
from index.scatter import ShardCopies
from index.search import SearchService, ShardLike
from index.shard import IndexShard, owned_partitions, partition_for
from streams.errors import VisearchError
from streams.settings import Settings
from streams.shard_consumer import ShardConsumer


class ShardStartError(VisearchError, RuntimeError):
    """A shard could not recover or reach its topic."""


def search_params(settings: Settings) -> SearchParams:
    return SearchParams(ef_search=settings.ef_search, nprobe=settings.nprobe)


def search_service(
    settings: Settings,
    encoder: OnnxEncoder,
    shards: Sequence[ShardLike | ShardCopies],
    visible: Callable[[str], bool] | None = None,
    image_path: Callable[[str], Path] | None = None,
) -> SearchService:
    """The search service as configured: image limits, near-duplicate collapse, ANN effort,
    query expansion, and crop verification when it is on and the images' files are at
    hand (``image_path``)."""
    verifier = None if image_path is None else crop_verifier(settings, image_path)
    return SearchService(
        encoder,
        shards,
        ImageLimits.from_settings(settings),
        dedup_threshold=settings.dedup_threshold,
        params=search_params(settings),
        visible=visible,
        verifier=verifier,
        expansion=query_expansion(settings),
        windows=query_windows(settings),
        deadline_s=settings.search_deadline_ms / 1000,
        strict=settings.search_strict,
        owner_of=shard_router(settings),
    )


def shard_router(settings: Settings) -> Callable[[str], int]:
    """The shard an image id lives in: its embeddings partition (Kafka's default
    partitioner on the id, as the workers key their records), owned by shard
    ``partition mod VISEARCH_INDEX_SHARDS``."""
    partitions, shards = settings.embedding_partitions, settings.index_shards
    return lambda image_id: partition_for(image_id, partitions) % shards


def remote_shards(settings: Settings, dim: int) -> list[ShardCopies]:
    """The shard processes of ``VISEARCH_SHARD_URLS``, every copy of each."""
    return [
        ShardCopies(
            shard_id,
            [RemoteShard(url, dim, timeout_s=settings.search_deadline_ms / 1000) for url in urls],
            unhealthy_s=settings.shard_unhealthy_s,
        )
        for shard_id, urls in enumerate(settings.remote_shards)
    ]


def query_windows(
    settings: Settings, scheme: str | None = None, turns: bool | None = None
) -> QueryWindows | None:
    """Query views of unsure searches as configured (``scheme`` and ``turns`` override
    VISEARCH_QUERY_WINDOWS and VISEARCH_QUERY_TURNS); ``None`` when both are off."""
    boxes = window_boxes(settings.query_windows if scheme is None else scheme)
    turns = settings.query_turns if turns is None else turns
    if not boxes and not turns:
        return None
    return QueryWindows(boxes, turns, settings.query_windows_below, settings.query_windows_margin)


def query_expansion(settings: Settings, neighbours: int | None = None) -> QueryExpansion | None:
    """Query expansion as configured (``neighbours`` overrides VISEARCH_QUERY_EXPANSION);
    ``None`` when it is off."""
    neighbours = settings.query_expansion if neighbours is None else neighbours
    if not neighbours:
        return None
    return QueryExpansion(neighbours, settings.query_expansion_alpha)


def crop_verifier(
    settings: Settings,
    image_path: Callable[[str], Path],
    top: int | None = None,
    cache_size: int = CACHE_SIZE,
) -> CropVerifier | None:
    """Crop verification as configured (``top`` overrides VISEARCH_VERIFY_TOP), reading
    candidates through ``image_path``; ``None`` when it is off."""
    top = settings.verify_top if top is None else top
    if not top:
        return None
    return CropVerifier(
        image_path,
        top=top,
        min_score=settings.verify_min_score,
        scales=settings.verify_scales,
        limits=ImageLimits.from_settings(settings),
        cache_size=cache_size,
    )


def partition_factory(
    settings: Settings, dim: int, background: bool = True
) -> Callable[[], Partition]:
    """How the service makes a partition; ``visearch eval`` builds its index with it too
    (with ``background=False``, so that a rebuild to ANN never races its searches)."""

    def make_partition() -> Partition:
        return Partition(
            dim,
            settings.index_factory,
            ann_threshold=settings.ann_threshold,
            compact_ratio=settings.compact_ratio,
            background=background,
            min_scanned_rows=settings.min_scanned_rows,
        )

    return make_partition


def start_shard(
    settings: Settings, dim: int, model_version: str, shard_id: int
) -> tuple[IndexShard, ShardConsumer]:
    """Build shard ``shard_id``, recover it from its snapshots and start consuming."""
    make_partition = partition_factory(settings, dim)
    partitions = owned_partitions(settings.embedding_partitions, shard_id, settings.index_shards)
    snapshot_dir = settings.data_dir / "index" / model_version
    shard = IndexShard(
        dim, model_version, partitions, make_partition, snapshot_dir, settings.recall_sample
    )
    consumer = ShardConsumer(
        shard,
        settings.kafka,
        settings.topics.embeddings,
        settings.fetch_max_wait_ms,
        settings.snapshot_interval_s,
        settings.idle_fetch_max_wait_ms,
    )
    consumer.start()
    consumer.ready.wait(120)
    if consumer.error is not None or not consumer.ready.is_set():
        consumer.stop()
        raise ShardStartError(f"index shard {shard_id} cannot start: {consumer.error}")
    return shard, consumer


def run_shard_process(settings: Settings) -> None:
    """``visearch shard``: one shard, served over HTTP until stopped."""
    from prometheus_client import CollectorRegistry

    from encoders.model_dir import read_metadata
    from index.remote import create_shard_api
    from streams.topics import ensure_topics
    from visearch.api.serving import serve
    from visearch.processes.shard_metrics import ShardCollector

    ensure_topics(settings)
    metadata = read_metadata(settings.resolved_model_dir)
    shard_id = settings.resolved_shard_id
    shard, consumer = start_shard(settings, metadata.dim, metadata.version, shard_id)
    registry = CollectorRegistry()
    registry.register(ShardCollector(lambda: [(shard_id, shard, consumer)]))
    try:
        serve(
            create_shard_api(shard, shard_id, registry, settings.shard_search_threads),
            settings.http_host,
            settings.shard_http_port,
            settings,
        )
    finally:
        consumer.stop()
        consumer.join(timeout=30)

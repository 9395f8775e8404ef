"""One model version's encoder and its local index shards, started and stopped together.

The stack holds one for the serving version and one per candidate during a
rollout: the candidate's shards read the same embeddings log and index only
records of their version, so its index fills from live uploads and from the
backfill while searches keep using the serving one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Self

from index.shard import IndexShard
from streams.encoder_set import encoder_from_settings
from streams.lifecycle import Lifecycle
from streams.settings import Settings
from streams.shard_consumer import ShardConsumer
from visearch.processes.shards import start_shard


class VersionIndex(Lifecycle):
    """Encoder + local shards of one model version."""

    def __init__(self, settings: Settings, model_dir: Path) -> None:
        self.settings = settings
        self.encoder = encoder_from_settings(model_dir, settings)
        self.shards: list[IndexShard] = []
        self.consumers: list[ShardConsumer] = []

    @property
    def version(self) -> str:
        return self.encoder.version

    def start(self) -> Self:
        try:
            for shard_id in range(self.settings.index_shards):
                shard, consumer = start_shard(
                    self.settings, self.encoder.dim, self.encoder.version, shard_id
                )
                self.shards.append(shard)
                self.consumers.append(consumer)
        except BaseException:
            self.stop()
            raise
        return self

    def image_ids(self) -> set[str]:
        return set().union(*(shard.image_ids() for shard in self.shards))

    def stop(self) -> None:
        for consumer in self.consumers:
            consumer.stop()
        for consumer in self.consumers:
            consumer.join(timeout=5)
        self.consumers = []

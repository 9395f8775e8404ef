"""Each index shard's freshness and consumer lag on /metrics, read at scrape time.

``visearch_shard_freshness_seconds{shard}``: a histogram of upload -> searchable
for every vector the shard applied (``index/freshness.py``), the signal the
chart's freshness alert reads. ``visearch_shard_consumer_lag{shard, partition}``:
records of the embeddings topic not yet applied, from the shard's own fetch
responses (no consumer group exists for kafka-exporter to report: every shard
copy reads the log on its own). ``visearch_shard_images{shard}``: images held.
``visearch_shard_recall_at_10{shard}``: recall@10 of sampled live queries
against exact search (``index/recall_monitor.py``), once there are samples.
``visearch_shard_filter_rows_bytes{shard}``: memory of the rows a shard keeps
for selective filters (``index/shard_rows.py``; 0 until a filter needs them).
The API serves these for its in-process shards; each `visearch shard` process
for itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from index.shard import IndexShard
from streams.log_follower import LogFollower

# (shard id, the shard, the consumer feeding it when there is one)
ShardSources = Callable[[], Sequence[tuple[int, IndexShard, LogFollower | None]]]


class ShardCollector(Collector):
    def __init__(self, sources: ShardSources) -> None:
        self.sources = sources

    def collect(self) -> Iterator[Metric]:
        freshness = HistogramMetricFamily(
            "visearch_shard_freshness_seconds",
            "Upload (the event's uploaded_at) to searchable in this shard, per vector applied",
            labels=["shard"],
        )
        lag = GaugeMetricFamily(
            "visearch_shard_consumer_lag",
            "Embeddings records not yet applied by this shard, per partition",
            labels=["shard", "partition"],
        )
        images = GaugeMetricFamily(
            "visearch_shard_images", "Images this shard holds", labels=["shard"]
        )
        recall = GaugeMetricFamily(
            "visearch_shard_recall_at_10",
            "Recall@10 of a sample of live queries against exact search, recent samples",
            labels=["shard"],
        )
        filter_rows = GaugeMetricFamily(
            "visearch_shard_filter_rows_bytes",
            "Memory of the rows kept for selective filters (codes, flags, times, lists)",
            labels=["shard"],
        )
        for shard_id, shard, consumer in self.sources():
            filter_rows.add_metric([str(shard_id)], shard.shard_rows_bytes)
            buckets, total = shard.freshness.snapshot()
            freshness.add_metric([str(shard_id)], buckets, total)
            images.add_metric([str(shard_id)], len(shard))
            for partition, records in sorted((consumer.lag if consumer else {}).items()):
                lag.add_metric([str(shard_id), str(partition)], records)
            measured = shard.recall.recall() if shard.recall is not None else None
            if measured is not None:
                recall.add_metric([str(shard_id)], measured)
        yield freshness
        yield lag
        yield images
        yield recall
        yield filter_rows

"""Each shard's upload -> searchable histogram and consumer lag, as Prometheus reads them."""

from __future__ import annotations

import time

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from index.freshness import FreshnessHistogram, RecentTimes
from index.shard import IndexShard
from streams.schemas import ImageEmbedded, ImageUpdated, vector_to_b64
from streams.settings import Settings
from streams.shard_consumer import ShardConsumer
from visearch.processes.shard_metrics import ShardCollector


def test_the_histogram_is_cumulative_and_clamps_a_clock_behind() -> None:
    histogram = FreshnessHistogram((0.1, 1.0))
    for seconds in (0.05, 0.1, 0.5, 3.0, -0.2):
        histogram.observe(seconds)
    buckets, total = histogram.snapshot()
    assert buckets == [("0.1", 3), ("1.0", 4), ("+Inf", 5)]  # 0.1 is inside "le 0.1"
    assert total == 3.65


def _embedded(image_id: str, uploaded_at: float) -> ImageEmbedded:
    return ImageEmbedded(
        image_id=image_id, model_version="m", dim=4, vector_b64=vector_to_b64(np.ones(4)),
        uploaded_at=uploaded_at, embedded_at=uploaded_at, source_partition=0, source_offset=0,
    )  # fmt: skip


def test_a_shard_observes_each_applied_vector_and_the_collector_serves_it() -> None:
    shard = IndexShard(4, "m", [0, 1])
    now = time.time()
    shard.apply(_embedded("a", now - 0.03), 0, 0)
    shard.apply(_embedded("b", now - 20), 1, 0)
    shard.apply(ImageUpdated(image_id="a", action="delete", updated_at=now), 0, 1)  # no vector
    other = _embedded("c", now)
    other.model_version = "another"  # skipped: not this shard's model
    shard.apply(other, 0, 2)
    consumer = ShardConsumer(shard, Settings().kafka, "embeddings")  # not started
    consumer.lag.update({0: 0, 1: 7})
    registry = CollectorRegistry()
    registry.register(ShardCollector(lambda: [(3, shard, consumer)]))
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(generate_latest(registry).decode())
        for s in family.samples
    }
    bucket = "visearch_shard_freshness_seconds_bucket"
    assert samples[(bucket, (("le", "0.05"), ("shard", "3")))] == 1
    assert samples[(bucket, (("le", "10.0"), ("shard", "3")))] == 1
    assert samples[(bucket, (("le", "30.0"), ("shard", "3")))] == 2
    assert samples[("visearch_shard_freshness_seconds_count", (("shard", "3"),))] == 2
    assert samples[("visearch_shard_consumer_lag", (("partition", "1"), ("shard", "3")))] == 7
    assert samples[("visearch_shard_images", (("shard", "3"),))] == 1  # "a" was deleted
    # no filter asked for the shard's rows (index/shard_rows.py): none are kept
    assert samples[("visearch_shard_filter_rows_bytes", (("shard", "3"),))] == 0


def test_searchable_times_keep_only_the_most_recent_images() -> None:
    times = RecentTimes(capacity=3)
    for n, image_id in enumerate(["a", "b", "c", "a", "d"]):  # "a" again: now the newest
        times[image_id] = float(n)
    assert len(times) == 3 and "b" not in times and times.get("b") is None
    assert (times["c"], times["a"], times["d"]) == (2.0, 3.0, 4.0)

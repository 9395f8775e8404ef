"""Feedback aggregation throughput and CTR-gauge lag on the real broker.

Fills the interactions topic of a fresh embedded broker with realistic
sessions (10 impressions, position-biased clicks, dwell), then measures in
the same run:

- baseline: a bare aiokafka consumer reading every record (no decoding);
- visearch: the feedback consumer (kafka-python fetch, schema decode,
  dedup, three window sizes, sessions and pairs) on one thread, i.e. one core;
- the aggregator alone on pre-decoded events, and decoding alone, to show
  where the time goes;
- lag: events published at a steady rate while the service runs; the time
  from publishing a batch to the summary (what /metrics and the CTR gauge
  read) counting it.

    python -m bench.feedback            # 200k events, lag at 2k events/s for 20 s
    python -m bench.feedback --quick    # 30k events, 5 s of lag probes
"""

from __future__ import annotations

import asyncio
import json
import random
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.output import bench_parser, emit, machine
from feedback.aggregation import PartitionAggregator
from feedback.service import FeedbackService
from streams.broker import EmbeddedBroker, free_port
from streams.publisher import EventPublisher
from streams.schemas import Interaction, decode
from streams.settings import Settings
from streams.topics import ensure_topics

BENCH = "feedback"


def session_events(rng: random.Random, number: int, now: float) -> list[dict[str, object]]:
    """One search session: 10 impressions, position-biased clicks with dwell."""
    search = f"bench-s{number}"
    events: list[dict[str, object]] = []
    for position in range(10):
        shown = {
            "user_id": f"u{rng.randrange(1000)}",
            "search_id": search,
            "query_image_id": f"q{rng.randrange(5000)}",
            "displayed_image_id": f"img{rng.randrange(100_000)}",
            "position": position,
            "timestamp": now + rng.uniform(0, 2),
            "model_version": "bench-model",
        }
        events.append({**shown, "event_id": f"{search}-i{position}", "type": "impression"})
        if rng.random() < 0.3 * 0.8**position:
            events.append({**shown, "event_id": f"{search}-c{position}", "type": "click"})
            events.append(
                {
                    **shown,
                    "event_id": f"{search}-d{position}",
                    "type": "dwell",
                    "dwell_ms": rng.randrange(500, 60_000),
                }
            )
    return events


def make_events(count: int, seed: int = 0) -> list[bytes]:
    rng = random.Random(seed)
    now = time.time() - 60
    out: list[bytes] = []
    number = 0
    while len(out) < count:
        out.extend(json.dumps(e).encode() for e in session_events(rng, number, now + number * 0.01))
        number += 1
    return out[:count]


def fill_topic(settings: Settings, values: list[bytes]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(
        bootstrap_servers=settings.bootstrap_servers, linger_ms=20, batch_size=256 * 1024
    )
    for value in values:
        key = json.loads(value)["search_id"].encode()
        producer.send(settings.topics.interactions, key=key, value=value)
    producer.flush()
    producer.close()


async def bare_aiokafka_read(settings: Settings, count: int) -> float:
    """Seconds for plain aiokafka to read ``count`` records from the beginning."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        enable_auto_commit=False,
        fetch_max_wait_ms=settings.fetch_max_wait_ms,
        max_partition_fetch_bytes=4 * 1024 * 1024,
    )
    await consumer.start()
    try:
        partitions = [
            TopicPartition(settings.topics.interactions, p)
            for p in range(settings.interaction_partitions)
        ]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        seen = 0
        started = time.perf_counter()
        while seen < count:
            batches = await consumer.getmany(timeout_ms=200, max_records=5000)
            seen += sum(len(records) for records in batches.values())
        return time.perf_counter() - started
    finally:
        await consumer.stop()


def visearch_read(settings: Settings, count: int) -> tuple[float, dict[str, object]]:
    """Seconds for the feedback service to aggregate ``count`` records (fresh state)."""
    started = time.perf_counter()
    with FeedbackService(settings) as service:
        while sum(service.state.offsets.values()) < count:
            time.sleep(0.005)
        elapsed = time.perf_counter() - started
        return elapsed, service.summary()


def lag_probe(settings: Settings, rate: float, duration_s: float) -> list[float]:
    """Publish batches at ``rate`` events/s; seconds until the summary counts each batch."""
    rng = random.Random(1)
    lags: list[float] = []
    with FeedbackService(settings) as service, EventPublisher(settings) as publisher:
        base = sum(service.state.offsets.values())
        sent = 0
        number = 10_000_000
        deadline = time.monotonic() + duration_s
        while time.monotonic() < deadline:
            tick = time.monotonic()
            batch: list[dict[str, object]] = []
            while len(batch) < rate / 10:
                batch.extend(session_events(rng, number, time.time()))
                number += 1
            for event in batch:
                publisher.publish_raw(
                    settings.topics.interactions,
                    str(event["search_id"]).encode(),
                    json.dumps(event).encode(),
                )
            publisher.flush()
            sent += len(batch)
            published = time.monotonic()
            while sum(service.state.offsets.values()) - base < sent:
                time.sleep(0.001)
            lags.append(time.monotonic() - published)
            time.sleep(max(0.0, tick + 0.1 - time.monotonic()))
    return lags


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--events", type=int)
    args = parser.parse_args()
    count = args.events or (30_000 if args.quick else 200_000)
    lag_seconds = 5.0 if args.quick else 20.0
    context = {"machine": machine(), "events": count}

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings().with_overrides(
            data_dir=Path(tmp),
            broker_port=free_port(),
            topic_prefix=f"bench-feedback-{free_port()}",
        )
        with EmbeddedBroker(settings.broker_host, settings.broker_port):
            ensure_topics(settings)
            values = make_events(count)
            fill_topic(settings, values)
            baseline_s = asyncio.run(bare_aiokafka_read(settings, count))
            visearch_s, summary = visearch_read(settings, count)
            baseline_rate = count / baseline_s
            emit(BENCH, "aggregate_events_per_s", count / visearch_s, "events/s",
                 baseline_rate, threads=1, **context)  # fmt: skip

            decoded_started = time.perf_counter()
            events = [decode(Interaction, value) for value in values]
            decode_s = time.perf_counter() - decoded_started
            aggregator = PartitionAggregator()
            agg_started = time.perf_counter()
            for event in events:
                aggregator.process(event, event.timestamp + 1)
            aggregate_s = time.perf_counter() - agg_started
            emit(BENCH, "decode_events_per_s", count / decode_s, "events/s", baseline_rate,
                 **context)  # fmt: skip
            emit(BENCH, "aggregator_only_events_per_s", count / aggregate_s, "events/s",
                 baseline_rate, **context)  # fmt: skip
            emit(BENCH, "check_impressions_counted", float(summary["impressions"]), "events",
                 None, **context)  # fmt: skip

            lags = lag_probe(settings, 2000.0, lag_seconds)
            for q in (50, 99):
                emit(BENCH, f"ctr_gauge_lag_p{q}_s", float(np.percentile(lags, q)), "s", None,
                     rate_events_per_s=2000, batches=len(lags), **context)  # fmt: skip


if __name__ == "__main__":
    main()

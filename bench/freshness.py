"""Freshness under load: uploads at a fixed rate, produced -> searchable per image.

Runs a private stack (embedded broker unless VISEARCH_KAFKA_BOOTSTRAP is set,
the Faust embedding worker, the in-process index shard) and publishes real
photos at ``--rate`` per second for ``--duration`` seconds. For every upload it
records the publish time and the moment the shard applied its vector (after
which any search finds it). Baseline, in the same run on the same broker: one
bare aiokafka hop (produce -> consume) at the same rate, the floor that any
Kafka pipeline pays.

    python -m bench.freshness            # 100/s for 60 s
    python -m bench.freshness --quick    # 50/s for 10 s
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.output import bench_parser, emit, machine
from bench.support import percentile
from streams.image_source import file_uri
from streams.publisher import EventPublisher
from streams.schemas import ImageUploaded
from streams.settings import Settings
from visearch.catalog.corpus import DEMO_CORPUS, find_images, image_id_for
from visearch.catalog.store import StoredImage
from visearch.local.stack import LocalStack, isolated_settings
from visearch.models.serving import with_serving_model

BENCH = "freshness"


async def bare_aiokafka_hop(bootstrap: str, topic: str, rate: float, count: int) -> list[float]:
    """Produce -> consume latency of one hop with plain aiokafka (fetch wait 20 ms)."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, fetch_max_wait_ms=20, auto_offset_reset="latest"
    )
    await producer.start()
    await consumer.start()
    latencies: list[float] = []
    try:
        await consumer.seek_to_end()
        await asyncio.sleep(0.5)

        async def consume() -> None:
            async for message in consumer:
                latencies.append(time.time() - float(message.value.decode()))
                if len(latencies) >= count:
                    return

        task = asyncio.create_task(consume())
        for _ in range(count):
            await producer.send_and_wait(topic, str(time.time()).encode())
            await asyncio.sleep(1.0 / rate)
        await asyncio.wait_for(task, timeout=30)
    finally:
        await consumer.stop()
        await producer.stop()
    return latencies


def store_sources(stack: LocalStack, sources: list[Path], image_dir: Path) -> list[str]:
    """Store each source photo once (id from its path, for searches by id); uploads under
    new ids point at the source files (``image_dir`` must be in VISEARCH_IMAGE_ROOTS: an
    event may name no other image's file in the store)."""
    for path in sources:
        stored = StoredImage(image_id_for(path, image_dir), "bench", False, time.time())
        stack.store.put(stored, path.read_bytes())
    return [file_uri(path) for path in sources]


def publish_upload(
    publisher: EventPublisher, settings: Settings, image_id: str, uri: str
) -> ImageUploaded:
    """Publish an upload event as a backend would (straight to the topic, not awaited)."""
    event = ImageUploaded(image_id=image_id, owner_id="bench", uploaded_at=time.time(), uri=uri)
    publisher.publish(settings.topics.uploads, image_id, event)
    return event


def warm_up(stack: LocalStack, uri: str) -> None:
    """One upload end to end, so that start-up costs stay out of the measurements."""
    assert stack.publisher is not None
    warmup = f"warmup-{uuid.uuid4().hex[:6]}"
    publish_upload(stack.publisher, stack.settings, warmup, uri)
    stack.publisher.flush()
    if stack.wait_searchable([warmup], 120):
        raise TimeoutError("the worker did not come up")


def first_after_idle(
    stack: LocalStack, settings: Settings, uris: list[str], idle_s: float
) -> list[float]:
    """Produced -> searchable (ms) of single uploads each after ``idle_s`` of nothing.

    Idle consumers back off their fetch waits (streams/fetch_backoff.py); the
    first record after an idle spell waits for the fetch in flight on each
    hop, so this is the freshness a user sees after a quiet period.
    """
    assert stack.publisher is not None
    latencies = []
    for n in range(3):
        time.sleep(idle_s)
        image_id = f"after-idle-{n}"
        event = publish_upload(stack.publisher, settings, image_id, uris[n % len(uris)])
        stack.publisher.flush()
        if stack.wait_searchable([image_id], 60):
            continue
        latencies.append(((stack.searchable_at(image_id) or 0.0) - event.uploaded_at) * 1000.0)
    return latencies


def run(settings: Settings, rate: float, duration: float, image_dir: Path, idle_s: float) -> None:
    settings, _ = with_serving_model(settings, image_dir)  # what `visearch run` serves
    sources = find_images(image_dir)
    with tempfile.TemporaryDirectory(prefix="visearch-bench-") as tmp:
        private = isolated_settings(settings, Path(tmp), "bench").with_overrides(
            image_roots=str(image_dir)
        )
        with LocalStack(private) as stack:
            assert stack.publisher is not None
            uris = store_sources(stack, sources, image_dir)
            warm_up(stack, uris[0])

            produced: dict[str, float] = {}
            lag_samples: list[int] = []
            total = int(rate * duration)
            started = time.perf_counter()
            next_sample = started + 1.0
            for n in range(total):
                target = started + n / rate
                while (now := time.perf_counter()) < target:
                    time.sleep(min(0.002, target - now))
                image_id = f"fresh-{n:06d}"
                event = publish_upload(stack.publisher, private, image_id, uris[n % len(uris)])
                produced[image_id] = event.uploaded_at
                if time.perf_counter() >= next_sample:
                    lag_samples.append(sum(1 for i in produced if stack.searchable_at(i) is None))
                    next_sample += 1.0
            stack.publisher.flush()
            publish_s = time.perf_counter() - started
            missing = stack.wait_searchable(list(produced), 120)
            drained_s = time.perf_counter() - started
            latencies = [
                ((stack.searchable_at(i) or 0.0) - t) * 1000.0
                for i, t in produced.items()
                if i not in missing
            ]
            after_idle = first_after_idle(stack, private, uris, idle_s)
            hop = asyncio.run(
                bare_aiokafka_hop(private.bootstrap_servers, private.topics.dead_letter, rate, 200)
            )
    hop_ms = [v * 1000.0 for v in hop]
    context: dict[str, Any] = {"rate_per_s": rate, "duration_s": duration, "machine": machine()}
    for q, name in ((50, "p50"), (95, "p95"), (99, "p99")):
        emit(
            BENCH,
            f"freshness_{name}_ms",
            percentile(latencies, q),
            "ms",
            percentile(hop_ms, q),
            baseline_name="bare aiokafka hop",
            **context,
        )
    emit(BENCH, "freshness_max_ms", max(latencies), "ms", max(hop_ms), **context)
    emit(
        BENCH,
        "freshness_after_idle_max_ms",
        max(after_idle, default=float("nan")),
        "ms",
        percentile(latencies, 50),
        baseline_name="p50 under load",
        idle_s=idle_s,
        samples=[round(v, 1) for v in after_idle],
        **context,
    )
    emit(BENCH, "searchable", len(latencies), "images", len(produced), **context)
    emit(BENCH, "throughput", len(latencies) / drained_s, "images/s", total / publish_s, **context)
    emit(
        BENCH,
        "consumer_lag_max",
        float(max(lag_samples, default=0)),
        "images",
        None,
        lag_mean=statistics.fmean(lag_samples) if lag_samples else 0.0,
        **context,
    )


def main() -> None:
    parser = bench_parser(__doc__, "50/s for 10 s")
    parser.add_argument("--rate", type=float, default=100.0, help="uploads per second")
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of uploads")
    parser.add_argument("--images", type=Path, default=DEMO_CORPUS)
    parser.add_argument(
        "--idle",
        type=float,
        default=60.0,
        help="seconds of nothing before each of 3 single uploads",
    )
    args = parser.parse_args()
    if args.quick:
        args.rate, args.duration, args.idle = 50.0, 10.0, 15.0
    run(Settings.from_env(), args.rate, args.duration, args.images, args.idle)


if __name__ == "__main__":
    main()

"""The embedded broker's cost per fetch as its log grows, by record batches.

``python -m bench.broker_log [--quick]`` starts the embedded broker (Tansu,
in-memory) with a single-partition topic and grows the partition to each of
``SIZES`` record batches (``QUICK_SIZES`` with ``--quick``) of one record
each (what a producer that sends as soon as it can writes at a trickle: each
upload or embedding event its own batch). At each size it times rounds of
*produce one record, fetch it* (a consumer at the end of the log, fetch
wait 20 ms, as the stack's hot consumers): the broker's CPU per round, read
from /proc, and the round's wall time. Baseline: the same round on the empty
partition, in the same run. One more row, on a second topic, holds as many
records written in batches of ``BIG_BATCH``, which tells whether the cost
follows batches or records.

Why it matters: the stack's soak at the design load (100 uploads/s) writes
one batch per record into the uploads and embeddings logs, and a broker
whose fetch scans every batch of the partition grows its CPU per upload for
as long as it runs (this build has neither retention nor DeleteRecords to
bound the log).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bench.output import bench_parser, emit, machine
from bench.support import cpu_seconds
from streams.broker import EmbeddedBroker, free_port

BENCH = "broker_log"
RECORD = b"x" * 512  # about an upload event's size
BIG_BATCH = 500
SIZES = (0, 5_000, 10_000, 20_000)
QUICK_SIZES = (0, 5_000)
ROUND_SECONDS = 6.0


def _producer(bootstrap: str, **options: Any) -> Any:
    from kafka import KafkaProducer

    return KafkaProducer(bootstrap_servers=bootstrap, **options)


def grow(producer: Any, topic: str, batches: int) -> None:
    """Append ``batches`` one-record batches (each send waits for its answer)."""
    for _ in range(batches):
        producer.send(topic, RECORD, partition=0).get(timeout=30)


def grow_batched(bootstrap: str, topic: str, records: int) -> None:
    """Append ``records`` records in batches of ``BIG_BATCH``."""
    producer = _producer(bootstrap, linger_ms=100, batch_size=len(RECORD) * BIG_BATCH * 2)
    for _ in range(records):
        producer.send(topic, RECORD, partition=0)
    producer.flush()
    producer.close()


def rounds(
    broker_pid: int,
    bootstrap: str,
    producer: Any,
    topic: str,
    end: int,
    seconds: float = ROUND_SECONDS,
) -> tuple[float, float, int]:
    """(broker CPU ms per round, p50 round ms, rounds) of produce-one, fetch-it, for
    ``seconds``, from offset ``end`` (the records already written: this broker's
    end offset counts a batch of many records as one); each round's record is
    fetched before the next is produced."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, fetch_max_wait_ms=20, enable_auto_commit=False
    )
    partition = TopicPartition(topic, 0)
    consumer.assign([partition])
    consumer.seek(partition, end)
    walls: list[float] = []
    cpu_before, started = cpu_seconds(broker_pid), time.monotonic()
    while time.monotonic() - started < seconds:
        began = time.perf_counter()
        producer.send(topic, RECORD, partition=0).get(timeout=30)
        got = 0
        while not got:
            got = sum(len(records) for records in consumer.poll(timeout_ms=200).values())
        if got != 1:  # the round would time more than its own record
            raise RuntimeError(
                f"a round fetched {got} records: the consumer did not start at the end"
            )
        walls.append((time.perf_counter() - began) * 1000)
    cpu_ms = (cpu_seconds(broker_pid) - cpu_before) * 1000
    consumer.close()
    return cpu_ms / len(walls), statistics.median(walls), len(walls)


@contextmanager
def broker_with_topics() -> Iterator[tuple[str, int]]:
    """An embedded broker with the two single-partition topics the bench grows,
    ``single`` and ``batched``; yields (bootstrap servers, broker pid)."""
    from kafka.admin import KafkaAdminClient, NewTopic

    broker = EmbeddedBroker(port=free_port()).start()
    try:
        assert broker.pid is not None
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
        admin.create_topics([NewTopic("single", 1, 1), NewTopic("batched", 1, 1)])
        admin.close()
        yield broker.bootstrap_servers, broker.pid
    finally:
        broker.stop()


def run(sizes: tuple[int, ...], quick: bool) -> None:
    with broker_with_topics() as (bootstrap, pid):
        producer = _producer(bootstrap, linger_ms=0)
        context = {"machine": machine(), "quick": quick, "record_bytes": len(RECORD)}
        baseline = None
        written = 0
        for size in sizes:
            grow(producer, "single", size - written)
            written = size
            cpu_ms, wall_ms, count = rounds(pid, bootstrap, producer, "single", written)
            written += count
            baseline = baseline or cpu_ms
            emit(BENCH, "broker_cpu_ms_per_fetch", cpu_ms, "ms", baseline,
                 batches_before=size, records=size, rounds=count, round_p50_ms=round(wall_ms, 2),
                 **context)  # fmt: skip
        grow_batched(bootstrap, "batched", sizes[-1])
        cpu_ms, wall_ms, count = rounds(pid, bootstrap, producer, "batched", sizes[-1])
        emit(BENCH, "broker_cpu_ms_per_fetch", cpu_ms, "ms", baseline,
             batches_before=-(-sizes[-1] // BIG_BATCH), records=sizes[-1], rounds=count,
             round_p50_ms=round(wall_ms, 2), **context)  # fmt: skip
        producer.close()


def main() -> None:
    parser = bench_parser(__doc__, quick=f"sizes {QUICK_SIZES} instead of {SIZES}")
    args = parser.parse_args()
    run(QUICK_SIZES if args.quick else SIZES, args.quick)


if __name__ == "__main__":
    main()

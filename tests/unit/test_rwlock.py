"""The partitions' readers-writer lock: shared reads, exclusive writes, writers first."""

from __future__ import annotations

import threading
import time

from index.rwlock import RWLock

TIMEOUT_S = 10.0


def _wait_until(condition, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + TIMEOUT_S
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.001)


def test_readers_share_the_lock() -> None:
    lock = RWLock()
    inside = threading.Barrier(3, timeout=TIMEOUT_S)

    def read() -> None:
        with lock.read():
            inside.wait()  # all three hold the read lock at once, or this times out

    threads = [threading.Thread(target=read) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT_S)
    assert not any(thread.is_alive() for thread in threads)
    assert lock._readers == 0


def test_a_waiting_writer_goes_before_readers_that_came_after_it() -> None:
    """Reader 1 holds the lock; a writer waits; reader 2 arrives: the writer runs first,
    so a stream of searches cannot starve ingestion."""
    lock = RWLock()
    order: list[str] = []
    release_first = threading.Event()

    def first_reader() -> None:
        with lock.read():
            order.append("reader-1")
            release_first.wait(TIMEOUT_S)

    def writer() -> None:
        with lock.write():
            order.append("writer")

    def second_reader() -> None:
        with lock.read():
            order.append("reader-2")

    threads = [threading.Thread(target=first_reader)]
    threads[0].start()
    _wait_until(lambda: order == ["reader-1"], "the first reader")
    threads.append(threading.Thread(target=writer))
    threads[1].start()
    _wait_until(lambda: lock._writers_waiting == 1, "the writer to wait")
    threads.append(threading.Thread(target=second_reader))
    threads[2].start()
    release_first.set()
    for thread in threads:
        thread.join(TIMEOUT_S)
    assert order == ["reader-1", "writer", "reader-2"]


def test_writes_exclude_everything() -> None:
    lock = RWLock()
    active = {"readers": 0, "writers": 0}
    overlaps: list[dict[str, int]] = []
    guard = threading.Lock()

    def enter(kind: str) -> None:
        with guard:
            active[kind] += 1
            if active["writers"] > 1 or (active["writers"] and active["readers"]):
                overlaps.append(dict(active))

    def leave(kind: str) -> None:
        with guard:
            active[kind] -= 1

    def work(kind: str) -> None:
        context = lock.write if kind == "writers" else lock.read
        for _ in range(200):
            with context():
                enter(kind)
                leave(kind)

    threads = [threading.Thread(target=work, args=(k,)) for k in ["writers", "readers"] * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT_S)
    assert overlaps == []

"""A shard's joint scan (index/joint_scan.py) under concurrent writes: it reads
every partition's lists through raw pointers, so inserts that grow lists,
deletes, and rebuilds that replace a partition's index race it here, on real
faiss. No search may fail, and none may return an image deleted before it began."""

import threading
import time

import numpy as np

from index.faiss_index import SearchParams
from index.joint_scan import JointLists
from index.partition import Partition
from index.shard import IndexShard, partition_for

DIM = 16
PARTITIONS = 4


def _unit(rng, n):
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_searches_racing_inserts_deletes_and_rebuilds_never_fail_or_show_the_deleted(
    monkeypatch,
):
    joint_scans = {"count": 0}
    original = JointLists.best

    def counting(self, *args):
        joint_scans["count"] += 1
        return original(self, *args)

    monkeypatch.setattr(JointLists, "best", counting)
    rng = np.random.default_rng(21)
    shard = IndexShard(
        DIM,
        "m",
        range(PARTITIONS),
        lambda: Partition(DIM, "IVF{nlist},Flat", ann_threshold=1000, background=False),
    )
    base = _unit(rng, 3000)
    for i, vector in enumerate(base):
        image_id = f"img-{i}"
        shard.apply_vectors(partition_for(image_id, PARTITIONS), i, image_id, vector, 1.0)
    assert shard.plan is not None and shard.plan.current() != "Flat"

    deleted: set[str] = set()  # ids whose delete returned (read by the searchers)
    stop = threading.Event()
    failures: list[BaseException] = []
    leaks: list[str] = []
    searches = [0]

    def write() -> None:
        try:
            fresh = _unit(rng, 2400)
            for n in range(2400):
                if stop.is_set():
                    return
                image_id = f"new-{n}"  # grows the lists the searches are reading
                shard.apply_vectors(partition_for(image_id, PARTITIONS), n, image_id, fresh[n], 2.0)
                if n % 3 == 0:
                    gone = f"img-{n}"
                    shard.apply_update(partition_for(gone, PARTITIONS), n, gone, "delete", 3.0)
                    deleted.add(gone)
                if n % 400 == 399:  # a new index for a partition: a new stacked view
                    assert shard.partitions[n // 400 % PARTITIONS].rebuild()
        except BaseException as exc:  # reported by the test thread
            failures.append(exc)
        finally:
            stop.set()

    def search() -> None:
        queries = _unit(np.random.default_rng(threading.get_ident() % 2**32), 64)
        try:
            while not stop.is_set():
                for query in queries:
                    gone_before = set(deleted)
                    hits = shard.search(query, 10, SearchParams(nprobe=16))
                    leaks.extend(h.image_id for h in hits if h.image_id in gone_before)
                    searches[0] += 1
                    time.sleep(0)  # let the writer have the GIL between searches
        except BaseException as exc:  # reported by the test thread
            failures.append(exc)
            stop.set()

    threads = [threading.Thread(target=write)] + [threading.Thread(target=search) for _ in range(2)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a thread hung (deadlock?)"
    assert not failures, failures
    assert not leaks, f"deleted images returned: {leaks[:5]}"
    assert searches[0] > 100 and joint_scans["count"] > 100
    assert shard._joint is not None and time.monotonic() - started < 120
    assert len(deleted) == 800  # the writer got through

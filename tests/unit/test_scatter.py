"""Scatter-gather: every shard at once, failover and hedging over copies, one deadline.

The shards here are stand-ins whose answers are controlled by events (pure logic:
the real shard processes are in tests/integration/test_local_cluster.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np
import pytest

from index.faiss_index import SearchParams
from index.partition import Hit, IndexedImage
from index.scatter import (
    LATENCY_WINDOW,
    Scatter,
    ScatterReport,
    ShardCopies,
    ShardsUnavailableError,
)

QUERY = np.zeros(4, dtype=np.float32)
PARAMS = SearchParams()


class FakeShard:
    """Answers ``[Hit(name, 1.0)]`` after ``before()`` returns; raises when ``broken``."""

    def __init__(self, name: str, before: Callable[[], object] = lambda: None) -> None:
        self.name = name
        self.before = before
        self.broken = False
        self.calls = 0
        self.lookups = 0
        self.lookup_before: Callable[[], object] = lambda: None

    def __len__(self) -> int:
        return 1

    def search(
        self,
        query: np.ndarray,
        k: int,
        params: SearchParams | None = None,
        with_vectors: bool = False,
    ) -> list[Hit]:
        self.calls += 1
        self.before()
        if self.broken:
            raise ConnectionError(f"{self.name} is down")
        return [Hit(self.name, 1.0)]

    def indexed_image(self, image_id: str) -> IndexedImage | None:
        self.lookups += 1
        self.lookup_before()
        if self.broken:
            raise ConnectionError(f"{self.name} is down")
        return IndexedImage(QUERY, 0.0) if image_id == self.name else None

    def visible_ids(self, image_ids: list[str]) -> set[str]:
        self.lookup_before()
        if self.broken:
            raise ConnectionError(f"{self.name} is down")
        return {self.name} & set(image_ids)


def names(answers: list[list[Hit]]) -> list[str]:
    return [hits[0].image_id for hits in answers]


def test_every_shard_is_asked_at_once() -> None:
    """Each shard waits until all four were called: a one-by-one scatter never gets there."""
    together = threading.Barrier(4, timeout=5)
    scatter = Scatter.of([FakeShard(f"s{i}", together.wait) for i in range(4)], deadline_s=10)
    report = ScatterReport()
    assert names(scatter.search(QUERY, 10, PARAMS, False, report)) == ["s0", "s1", "s2", "s3"]
    assert not report.partial and report.retries == report.hedges == 0


def test_a_failed_copy_is_retried_on_another_and_skipped_while_unhealthy() -> None:
    first, second = FakeShard("a"), FakeShard("b")
    first.broken = True
    shard = ShardCopies(0, [first, second], unhealthy_s=60)
    scatter = Scatter([shard, ShardCopies(1, [FakeShard("c")])], deadline_s=10)
    report = ScatterReport()
    assert names(scatter.search(QUERY, 10, PARAMS, False, report)) == ["b", "c"]
    assert report.retries == 1 and not report.partial
    assert not shard.healthy(0) and shard.healthy(1)
    for _ in range(4):  # the round robin would pick "a" every other time: it is skipped
        assert names(scatter.search(QUERY, 10, PARAMS, False)) == ["b", "c"]
    assert first.calls == 1 and second.calls == 5


def test_when_every_copy_is_unhealthy_they_are_tried_anyway() -> None:
    first, second = FakeShard("a"), FakeShard("b")
    first.broken = second.broken = True
    shard = ShardCopies(0, [first, second], unhealthy_s=60)
    scatter = Scatter([shard, ShardCopies(1, [FakeShard("c")])], deadline_s=10)
    report = ScatterReport()
    assert names(scatter.search(QUERY, 10, PARAMS, False, report)) == ["c"]
    assert report.missing == {0}
    second.broken = False  # a copy comes back: found at once, not after unhealthy_s
    assert names(scatter.search(QUERY, 10, PARAMS, False)) == ["b", "c"]


def test_a_slow_copy_is_hedged_and_the_first_answer_wins() -> None:
    release = threading.Event()
    slow, fast = FakeShard("slow", release.wait), FakeShard("fast")
    shard = ShardCopies(0, [slow, fast])
    scatter = Scatter([shard, ShardCopies(1, [FakeShard("c")])], deadline_s=30)
    report = ScatterReport()
    try:
        answers = scatter.search(QUERY, 10, PARAMS, False, report)
    finally:
        release.set()
    assert names(answers) == ["fast", "c"]
    assert report.hedges == 1 and not report.partial and slow.calls == 1


def test_a_shard_without_an_answer_by_the_deadline_is_missing_or_fails_a_strict_search() -> None:
    release = threading.Event()
    stuck = FakeShard("stuck", release.wait)
    try:
        shards = [ShardCopies(0, [FakeShard("a")]), ShardCopies(1, [stuck])]
        report = ScatterReport()
        answers = Scatter(shards, deadline_s=0.2).search(QUERY, 10, PARAMS, False, report)
        assert names(answers) == ["a"] and report.missing == {1} and report.partial
        assert not release.is_set()  # it returned while the shard was still stuck
        with pytest.raises(ShardsUnavailableError, match=r"shard\(s\) 1 answered"):
            Scatter(shards, deadline_s=0.2, strict=True).search(QUERY, 10, PARAMS, False)
    finally:
        release.set()


def test_one_shard_with_one_copy_is_called_directly() -> None:
    caller = threading.current_thread()
    seen: list[threading.Thread] = []
    shard = FakeShard("only", lambda: seen.append(threading.current_thread()))
    scatter = Scatter.of([shard])
    assert names(scatter.search(QUERY, 10, PARAMS, False)) == ["only"] and seen == [caller]
    shard.broken = True
    report = ScatterReport()
    assert scatter.search(QUERY, 10, PARAMS, False, report) == [] and report.missing == {0}


def test_sizes_and_stored_vectors_come_from_a_copy_that_answers() -> None:
    down, up = FakeShard("x"), FakeShard("x")
    down.broken = True
    scatter = Scatter([ShardCopies(0, [down, up]), ShardCopies(1, [FakeShard("y")])])
    assert len(scatter) == 2
    found = scatter.indexed_image("y")
    assert found is not None and found.uploaded_at == 0.0
    assert scatter.indexed_image("x") is not None and scatter.indexed_image("z") is None


def test_hedge_delay_follows_the_shards_recent_p95() -> None:
    shard = ShardCopies(0, [FakeShard("a")])
    assert shard.hedge_after() == 0.05  # too few answers yet: the default
    for i in range(100):
        shard.answered(0, 0.020 + (0.1 if i % 25 == 0 else 0.0))  # 4 % slow: above p95
    assert shard.hedge_after() == pytest.approx(0.02, abs=1e-3)
    for _ in range(LATENCY_WINDOW):  # the old answers leave the window
        shard.answered(0, 0.001)
    assert shard.hedge_after() == 0.01  # never sooner than HEDGE_MIN_S
    with pytest.raises(ValueError, match="no copy"):
        ShardCopies(3, [])


def test_a_lookup_by_id_asks_the_owning_shard_first() -> None:
    shards = [FakeShard(f"s{i}") for i in range(4)]
    owner = {"s0": 0, "s1": 1, "s2": 2, "s3": 2}  # s3's routing is wrong on purpose
    scatter = Scatter.of(shards, owner_of=owner.__getitem__)
    assert scatter.indexed_image("s2") is not None
    assert [shard.lookups for shard in shards] == [0, 0, 1, 0]
    # an id the routing misplaces is still found: its supposed owner, then the others
    assert scatter.indexed_image("s3") is not None
    assert [shard.lookups for shard in shards] == [1, 1, 2, 1]
    # no routing (or one past the shards): the first shard, then the others
    assert Scatter.of(shards, owner_of=lambda _: 9).indexed_image("s1") is not None
    assert [shard.lookups for shard in shards] == [2, 2, 3, 2]


def test_an_id_the_owner_does_not_show_is_asked_of_the_others_at_once() -> None:
    """Each other shard's lookup waits until all three were asked: one after another,
    the first would wait out the barrier and the image would not be found."""
    shards = [FakeShard(f"s{i}") for i in range(4)]
    together = threading.Barrier(3, timeout=5)
    for shard in shards[1:]:
        shard.lookup_before = together.wait
    scatter = Scatter.of(shards, owner_of=lambda _: 0, deadline_s=10)
    assert scatter.indexed_image("s3") is not None
    assert [shard.lookups for shard in shards] == [1, 1, 1, 1]
    together.reset()
    assert scatter.indexed_image("deleted") is None  # every shard asked, none has it
    assert [shard.lookups for shard in shards] == [2, 2, 2, 2]


def test_shards_that_do_not_answer_by_the_deadline_hide_the_image() -> None:
    shards = [FakeShard(f"s{i}") for i in range(3)]
    release = threading.Event()
    shards[2].lookup_before = lambda: release.wait(5)
    scatter = Scatter.of(shards, owner_of=lambda _: 0, deadline_s=0.2)
    assert scatter.indexed_image("s2") is None  # s2 holds it but is too slow
    release.set()


def test_the_router_names_the_shard_that_owns_the_ids_partition() -> None:
    from index.shard import owned_partitions, partition_for
    from streams.settings import Settings
    from visearch.processes.shards import shard_router

    settings = Settings(embedding_partitions=12, index_shards=5)
    route = shard_router(settings)
    for n in range(500):
        image_id = f"img-{n}"
        owned = owned_partitions(12, route(image_id), 5)
        assert partition_for(image_id, 12) in owned


def test_visibility_is_asked_of_every_shard_at_once() -> None:
    shards = [FakeShard(f"s{i}") for i in range(3)]
    together = threading.Barrier(3, timeout=5)
    for shard in shards:
        shard.lookup_before = together.wait
    scatter = Scatter.of(shards, deadline_s=10)
    assert scatter.visible_ids(["s0", "s2", "gone"]) == {"s0", "s2"}
    # a shard that does not answer by the deadline hides its images
    release = threading.Event()
    shards[2].lookup_before = lambda: release.wait(5)
    for shard in shards[:2]:
        shard.lookup_before = lambda: None
    slow = Scatter.of(shards, deadline_s=0.2)
    assert slow.visible_ids(["s0", "s2"]) == {"s0"}
    release.set()

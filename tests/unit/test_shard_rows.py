"""A shard's rows in shared arrays (index/shard_rows.py): a selective filter answered
from them must be what an exact filtered search over the current images answers,
through uploads, re-uploads (tiles included), deletes, private and public,
tag updates, a compaction's renumbering and a snapshot load, and while they are
built under concurrent writes.

The reference is :meth:`SearchFilter.matches` on a model of every image and a
brute-force scan of its vectors (an image scores its best row).
"""

import threading
from dataclasses import dataclass

import numpy as np
import pytest

import index.selective_filters
from index.faiss_index import SearchParams
from index.filters import SearchFilter
from index.partition import Partition
from index.row_codes import CodeScale
from index.shard import IndexShard, partition_for
from index.shard_rows import RowFacts, ShardRows

DIM = 16
PARTITIONS = 4
OWNERS = [f"o{i}" for i in range(40)]
TAGS = [f"t{i}" for i in range(30)]
K = 10


@dataclass
class Image:
    vectors: np.ndarray
    owner: str
    tags: tuple[str, ...]
    uploaded_at: float
    private: bool = False
    deleted: bool = False


def _unit(rng, n):
    x = rng.standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


class World:
    """A shard and the model it must agree with; every event newer than the last."""

    def __init__(self, rng, background=False):
        self.rng = rng
        self.clock = 1000.0
        self.images: dict[str, Image] = {}
        self.shard = IndexShard(
            DIM,
            "m",
            range(PARTITIONS),
            lambda: Partition(DIM, "IVF{nlist},Flat", 300, background=background),
        )

    def tick(self):
        self.clock += 1.0
        return self.clock

    def upload(self, image_id, tiles=0):
        vectors = _unit(self.rng, 1 + tiles)
        owner = str(self.rng.choice(OWNERS, p=_zipf(len(OWNERS))))
        tags = tuple(
            sorted(set(self.rng.choice(TAGS, self.rng.integers(0, 4), p=_zipf(len(TAGS)))))
        )
        private = bool(self.rng.random() < 0.1)
        at = self.tick()
        self.shard.apply_vectors(
            partition_for(image_id, PARTITIONS), 0, image_id, vectors, at, private, owner, tags
        )
        self.images[image_id] = Image(vectors, owner, tags, at, private)

    def update(self, image_id, action, tags=()):
        self.shard.apply_update(
            partition_for(image_id, PARTITIONS), 0, image_id, action, self.tick(), tags
        )
        image = self.images[image_id]
        if action == "delete":
            image.deleted = True
        elif action in ("private", "public"):
            image.private = action == "private"
        elif action == "tags":
            image.tags = tuple(tags)

    def live(self):
        return [i for i, image in self.images.items() if not image.deleted]

    def random_filter(self):
        kind = self.rng.integers(0, 5)
        times = [image.uploaded_at for image in self.images.values()]
        low = float(self.rng.uniform(min(times), max(times)))
        if kind == 0:
            return SearchFilter.of(owner_ids=[str(self.rng.choice(OWNERS[5:]))])
        if kind == 1:
            return SearchFilter.of(tags_any=list(self.rng.choice(TAGS[8:], 2, replace=False)))
        if kind == 2:
            return SearchFilter.of(tags_all=[TAGS[0], str(self.rng.choice(TAGS[6:]))])
        if kind == 3:
            return SearchFilter.of(uploaded_after=low, uploaded_before=low + 60)
        return SearchFilter.of(
            owner_ids=list(self.rng.choice(OWNERS[:8], 3, replace=False)),
            tags_any=[TAGS[1], TAGS[2]],
            uploaded_after=low,
        )

    def truth(self, where, query):
        scored = [
            (float((image.vectors @ query).max()), image_id)
            for image_id, image in self.images.items()
            if not image.deleted
            and not image.private
            and where.matches(image.owner, image.tags, image.uploaded_at)
        ]
        scored.sort(reverse=True)
        return scored[:K]

    def check(self, searches=12):
        """Filtered searches through the shard's rows equal the truth; returns how many
        went through them."""
        used = 0
        for _ in range(searches):
            where = self.random_filter()
            query = _unit(self.rng, 1)[0]
            before = self.shard.selective.answered
            hits = self.shard.search(query, K, SearchParams(where=where))
            used += self.shard.selective.answered - before
            truth = self.truth(where, query)
            assert [h.image_id for h in hits] == [image_id for _, image_id in truth], where
            shard_rows = self.shard.selective.rows
            if shard_rows is not None and shard_rows.current(
                [part.rows for part in self.shard.partitions.values()]
            ):  # the bound that decides without merging lists is a bound
                selection = shard_rows.select(where)
                assert selection.most >= len(selection.rows())
            assert np.allclose([h.score for h in hits], [score for score, _ in truth], atol=1e-5)
        return used


def _zipf(n):
    weights = 1 / np.arange(1, n + 1)
    return weights / weights.sum()


@pytest.fixture
def small_rows_min(monkeypatch):
    """Shards of a few thousand rows keep their rows in shared arrays too."""
    monkeypatch.setattr(index.selective_filters, "ROWS_MIN", 500)


def test_filters_through_shard_rows_equal_the_truth_through_every_kind_of_write(small_rows_min):
    rng = np.random.default_rng(0)
    world = World(rng)
    for i in range(2500):
        world.upload(f"img-{i}", tiles=2 if i % 50 == 0 else 0)
    world.shard.wait_idle()
    assert world.shard.selective.rows is None  # nothing built before a filter asks
    world.check(searches=2)  # the first selective filter builds them (at once here)
    assert world.shard.selective.rows is not None
    rows = sum(part.rows for part in world.shard.partitions.values())
    # codes and a flag a row at least, an upload time, ~2 posting entries: under 2x that
    assert rows * (DIM + 1) < world.shard.shard_rows_bytes < 2 * rows * (DIM + 1 + 8 + 2 * 8)
    assert world.check() > 0
    for round_number in range(6):
        live = world.live()
        for image_id in rng.choice(live, 40, replace=False):
            action = rng.choice(["delete", "private", "public", "tags", "upload"])
            if action == "tags":
                world.update(image_id, "tags", tuple(rng.choice(TAGS, 2, replace=False)))
            elif action == "upload":  # a re-upload: new vectors, owner, tags and time
                world.upload(image_id, tiles=int(rng.integers(0, 3)))
            else:
                world.update(image_id, action)
        for j in range(30):  # new images
            world.upload(f"new-{round_number}-{j}")
        assert world.check() > 0


def _built(seed):
    """A world of 2,500 images whose shard has built its rows (the first filters ask)."""
    world = World(np.random.default_rng(seed))
    for i in range(2500):
        world.upload(f"img-{i}")
    world.check(searches=2)
    assert world.shard.selective.rows is not None
    return world


def test_a_compaction_and_a_snapshot_load_make_a_partition_catch_up_again(small_rows_min):
    world = _built(1)
    shard_rows = world.shard.selective.rows
    part = world.shard.partitions[0]
    mine = [i for i in world.live() if partition_for(i, PARTITIONS) == 0]
    for image_id in mine[: len(mine) // 2]:
        world.update(image_id, "delete")
    part.rebuild()  # drops the deleted rows: every later row gets a new number
    assert shard_rows.covered[0] == 0  # that slot starts over
    assert world.check() > 0  # the first filter catches it up (at once here)
    assert shard_rows.covered[0] == part.rows
    other = world.shard.partitions[1]
    blob, state = other.export_state()
    other.import_state(blob, state)
    assert shard_rows.covered[1] == 0
    assert world.check() > 0


def test_rows_built_while_images_keep_arriving_answer_exactly(small_rows_min):
    rng = np.random.default_rng(2)
    world = World(rng, background=True)
    for i in range(3000):
        world.upload(f"img-{i}")
    world.shard.wait_idle()
    stop = threading.Event()
    errors = []

    def writer():
        writer_rng = np.random.default_rng(3)
        n = 0
        while not stop.is_set():
            image_id = f"late-{n}"
            vectors = _unit(writer_rng, 1)
            owner, tags = str(writer_rng.choice(OWNERS)), (str(writer_rng.choice(TAGS)),)
            try:
                at = world.tick()
                world.shard.apply_vectors(
                    partition_for(image_id, PARTITIONS),
                    0,
                    image_id,
                    vectors,
                    at,
                    False,
                    owner,
                    tags,
                )
                world.images[image_id] = Image(vectors, owner, tags, at)
            except Exception as error:  # pragma: no cover - reported below
                errors.append(error)
            n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(30):  # the first starts the build in the background
            world.shard.search(_unit(rng, 1)[0], K, SearchParams(where=world.random_filter()))
        world.shard.wait_idle()
    finally:
        stop.set()
        thread.join()
    assert not errors
    world.shard.wait_idle()
    shard_rows = world.shard.selective.rows
    assert shard_rows is not None
    assert shard_rows.current([part.rows for part in world.shard.partitions.values()])
    assert world.check() > 0


def test_a_broad_filter_walks_the_index_and_an_empty_one_is_no_filter(small_rows_min):
    world = _built(4)
    rng = world.rng
    broad = SearchFilter.of(uploaded_after=0.0)  # every image
    before = world.shard.selective.answered
    world.shard.search(_unit(rng, 1)[0], K, SearchParams(where=broad))
    assert world.shard.selective.answered == before  # the walk was cheaper
    shard_rows = world.shard.selective.rows
    assert shard_rows is not None and shard_rows.select(SearchFilter()) is None


def test_shard_rows_refuse_rows_out_of_order_and_ignore_rows_not_copied_yet():
    scale = CodeScale(DIM)
    scale.train(_unit(np.random.default_rng(5), 100))
    rows = ShardRows(DIM, 2, scale)
    facts = RowFacts(0, _unit(np.random.default_rng(6), 3), np.ones(3, bool), ["a"] * 3,
                     [("x",)] * 3, np.array([1.0, 2.0, 3.0]))  # fmt: skip
    rows.catch_up(1, facts)
    with pytest.raises(ValueError, match="covers 3 rows"):
        rows.catch_up(1, facts)
    rows.set_visible(1, 2, 5, False)  # rows 3.. are not here yet: only row 2 changes
    owner_a = SearchFilter.of(owner_ids=["a"])
    assert rows.select(owner_a).rows().tolist() == [1, 3]  # shard row = row * 2 + slot
    rows.retag(1, 0, 1, ("x",), ("y",))
    assert rows.select(SearchFilter.of(tags_any=["y"])).rows().tolist() == [1]
    assert rows.select(SearchFilter.of(tags_all=["x"])).rows().tolist() == [3]
    assert rows.select(SearchFilter.of(uploaded_after=1.5)).rows().tolist() == [3]
    rows.reset(1)
    assert rows.covered == [0, 0] and not len(rows.select(owner_a).rows())

"""A shard's rows in shared arrays: a selective filter found and scored once per shard.

A filter that selects few rows (0.1 % of a 1M shard: ~1,000) is answered by
scoring those rows, not by walking the index. Done partition by partition,
that is a dozen numpy calls and a lock in each of 8 partitions, ~75 us a
partition at 1M (posting lookup, visibility test, a gather of 8-bit codes,
a matrix product, a shortlist, the exact read-back), 0.60-0.65 ms p50 a query
in an ad-hoc loop, where the unfiltered search takes ~0.25 ms. The same
work over arrays that hold every partition's rows is one posting lookup,
one visibility test, one gather and one matrix product for the whole shard:
0.24-0.28 ms p50 in the same loop (1M vectors, 500 queries per kind).

Row ``g`` of a shard is row ``g // slots`` of the partition in slot
``g % slots``: partitions fill at about the same pace (keys are hashed), so
rows interleave with few holes and a partition's rows never move when
another grows. Kept per row: a visibility flag, the upload time (with a
zone map: min and max per block of rows, as a partition's own column) and
8-bit codes of the vectors on one scale for the shard (CodeScale); per
owner and per tag, per slot, the rows that carry it (a partition's
compaction or snapshot load drops only its own slot's lists).

The arrays copy what the partitions hold (they keep their own posting lists
for their index walks), so they cost memory: ~290 bytes a vector at 256-d
(256 of them codes). They are built only once a filter would read rows back
from a shard of at least ``ROWS_MIN`` rows, a chunk at a time under each
partition's read lock, and are kept current by the partitions' writes under
their write locks; a search uses them only while every slot covers every row
of its partition, checked under every partition's read lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np

from index.filters import GrowableRows, SearchFilter, time_mask, touched_blocks
from index.row_codes import CodeScale

# Shards smaller than this search filters partition by partition: at 100k the
# per-partition path already answers a 0.1 % filter within the unfiltered p95
# (bench.filtered), and the codes' scale wants a sample of 8k rows or more.
ROWS_MIN = 65_536
# Rows per block of the upload-time zone map.
TIME_BLOCK = 256
# Vectors the shard's code scale is trained on (a random sample of the live ones).
SCALE_SAMPLE = 8_192


class RowFacts(NamedTuple):
    """What a partition tells the shard's rows about its rows ``first ..``."""

    first: int
    vectors: np.ndarray  # (rows, dim) float32
    visible: np.ndarray  # a bool per row
    owners: list[str]
    tags: list[tuple[str, ...]]
    times: np.ndarray  # upload time per row (Unix seconds)


class _Ids(GrowableRows):
    """A growable array of shard rows (appended in any order)."""

    __slots__ = ()

    def remove(self, rows: np.ndarray) -> None:
        kept = self.view()[~np.isin(self.view(), rows)]
        self.rows[: len(kept)] = kept
        self.size = len(kept)


class ShardRows:
    """Every partition's rows of one shard, for a filter's matching rows and their
    approximate scores in one pass (module docstring).

    Writers (a partition's write, or a catch-up under its read lock) serialize on
    an internal mutex; readers hold every partition's read lock and check
    :meth:`current` first, so no writer runs while they read.
    """

    def __init__(self, dim: int, slots: int, scale: CodeScale) -> None:
        self.dim = dim
        self.slots = slots
        self.scale = scale
        self.covered = [0] * slots  # rows 0 .. covered - 1 of each partition are here
        self._mutex = threading.Lock()
        self._visible = np.zeros(0, dtype=bool)
        self._times = np.empty(0)
        self._block_min = np.empty(0)
        self._block_max = np.empty(0)
        self._codes = np.empty((0, dim), dtype=np.uint8)
        self._owners: list[dict[str, _Ids]] = [{} for _ in range(slots)]
        self._tags: list[dict[str, _Ids]] = [{} for _ in range(slots)]

    # ------------------------------------------------------------------ writes

    def catch_up(self, slot: int, facts: RowFacts) -> None:
        """Add a partition's rows ``facts.first ..`` (the next ones of its slot)."""
        with self._mutex:
            if facts.first != self.covered[slot]:
                raise ValueError(
                    f"slot {slot} covers {self.covered[slot]} rows; got rows from {facts.first}"
                )
            count = len(facts.visible)
            if not count:
                return
            rows = np.arange(facts.first, facts.first + count, dtype=np.int64) * self.slots + slot
            self._grow(int(rows[-1]) + 1)
            self._visible[rows] = facts.visible
            self._times[rows] = facts.times
            blocks = rows // TIME_BLOCK
            np.minimum.at(self._block_min, blocks, facts.times)
            np.maximum.at(self._block_max, blocks, facts.times)
            self._codes[rows] = self.scale.encode(facts.vectors)
            _post(self._owners[slot], rows, ((owner,) if owner else () for owner in facts.owners))
            _post(self._tags[slot], rows, facts.tags)
            self.covered[slot] = facts.first + count

    def set_visible(self, slot: int, first: int, count: int, visible: bool) -> None:
        """A partition's rows ``first .. first + count - 1`` became (in)visible."""
        with self._mutex:
            end = min(first + count, self.covered[slot])
            if end > first:
                self._visible[np.arange(first, end) * self.slots + slot] = visible

    def retag(
        self, slot: int, first: int, count: int, old: Iterable[str], new: Iterable[str]
    ) -> None:
        """An image's rows ``first ..`` changed tags from ``old`` to ``new``."""
        with self._mutex:
            end = min(first + count, self.covered[slot])
            if end <= first:
                return
            rows = np.arange(first, end, dtype=np.int64) * self.slots + slot
            old_set, new_set = set(old), set(new)
            lists = self._tags[slot]
            for tag in old_set - new_set:
                if tag in lists:
                    lists[tag].remove(rows)
            for tag in new_set - old_set:
                lists.setdefault(tag, _Ids()).extend(rows)

    def reset(self, slot: int) -> None:
        """Forget a partition's rows (it renumbered them, or loaded a snapshot): it is
        caught up again from its first row before a search uses these rows."""
        with self._mutex:
            self.covered[slot] = 0
            self._owners[slot] = {}
            self._tags[slot] = {}
            self._visible[slot :: self.slots] = False
            self._times[slot :: self.slots] = np.nan  # the zone map stays wider: still true

    def _grow(self, rows: int) -> None:
        if rows <= len(self._visible):
            return
        size = max(rows, 2 * len(self._visible), 1024)
        size = -(-size // TIME_BLOCK) * TIME_BLOCK
        self._visible = _extended(self._visible, size, False)
        self._times = _extended(self._times, size, np.nan)
        self._block_min = _extended(self._block_min, size // TIME_BLOCK, np.inf)
        self._block_max = _extended(self._block_max, size // TIME_BLOCK, -np.inf)
        self._codes = _extended(self._codes, size, None)

    # ------------------------------------------------------------------- reads

    def current(self, rows_per_slot: Sequence[int]) -> bool:
        """Every slot covers every row of its partition (rows counted under its lock)."""
        return all(have == want for have, want in zip(self.covered, rows_per_slot, strict=True))

    def select(self, where: SearchFilter) -> Selection | None:
        """``where``'s matching rows, bounded first (``None`` for an empty filter:
        every row, no selective search)."""
        return None if where.empty else Selection(self, where)

    def best(self, rows: np.ndarray, queries: np.ndarray, few: int) -> np.ndarray:
        """The sorted distinct ``rows`` among some query's best ``few`` by their codes."""
        return self.scale.best(self._codes, rows, queries, few)

    def split(self, rows: np.ndarray) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
        """``rows`` as their partitions' rows, slot by slot, and per slot that has any,
        (slot, start, end) in that array."""
        slots = rows % self.slots
        order = np.argsort(slots, kind="stable")
        local = rows[order] // self.slots
        spans, start = [], 0
        for slot, count in enumerate(np.bincount(slots, minlength=self.slots).tolist()):
            if count:
                spans.append((slot, start, start + count))
                start += count
        return local, spans

    @property
    def nbytes(self) -> int:
        """Memory of the rows in use, the time column and the posting lists (codes and
        flags past the rows in use were never written, so they take no resident
        memory; the time column's NaN padding does)."""
        used = max(self.covered) * self.slots
        lists = sum(ids.size for per in (*self._owners, *self._tags) for ids in per.values())
        zone_map = self._block_min.nbytes + self._block_max.nbytes
        return int(used * (self.dim + 1) + self._times.nbytes + zone_map + 8 * lists)


_NONE = np.empty(0, dtype=np.int64)


class Selection:
    """The rows of a shard's rows that a filter matches: first a cheap upper bound of
    their count (:attr:`most`, from the posting lists' sizes and the time column's
    zone map), then, if asked, the rows themselves (:meth:`rows`), the zone map's
    stretch found once for both. Read under every partition's read lock."""

    def __init__(self, shard_rows: ShardRows, where: SearchFilter) -> None:
        self._of = shard_rows
        self._where = where
        self._stretch: tuple[int, int] | None = None
        if where.has_time_range:
            touched = touched_blocks(where, shard_rows._block_min, shard_rows._block_max)
            if touched is not None:
                self._stretch = (touched[0] * TIME_BLOCK, touched[1] * TIME_BLOCK)
        self.most = self._bound()
        self._rows: np.ndarray | None = None

    def _bound(self) -> int:
        """At most this many rows match (merging a broad filter's lists to count them
        cost a 1M shard ~0.2 s for a 50 % filter). A time range's stretch overstates
        it: partitions fill at slightly different paces, so a block's times spread
        (about twice for a 1 % window of a 1M shard; 0.1 %: ~9 times)."""
        where, of = self._where, self._of
        bounds = []
        if where.owner_ids:
            bounds.append(_listed(of._owners, where.owner_ids))
        if where.tags_any:
            bounds.append(_listed(of._tags, where.tags_any))
        bounds.extend(_listed(of._tags, (tag,)) for tag in where.tags_all)
        if where.has_time_range:
            bounds.append(0 if self._stretch is None else self._stretch[1] - self._stretch[0])
        return min(bounds)

    def rows(self) -> np.ndarray:
        """The visible matching rows (found once)."""
        if self._rows is None:
            self._rows = self._find()
        return self._rows

    def _find(self) -> np.ndarray:
        where, of = self._where, self._of
        found: np.ndarray | None = None
        if where.owner_ids:
            found = _union(of._owners, where.owner_ids)
        if where.tags_any:
            found = _both(found, _union(of._tags, where.tags_any))
        for tag in where.tags_all:
            found = _both(found, _union(of._tags, (tag,)))
        if where.has_time_range:
            if found is not None:
                found = found[time_mask(where, of._times[found])]
            elif self._stretch is None:
                found = _NONE
            else:  # only the stretch of the zone map's blocks that overlap the range
                start, end = self._stretch
                hit = np.flatnonzero(time_mask(where, of._times[start:end]))
                found = hit.astype(np.int64) + start
        assert found is not None  # the filter is not empty
        return found[of._visible[found]]


def _listed(lists_per_slot: list[dict[str, _Ids]], keys: Iterable[str]) -> int:
    """Rows in the lists of ``keys`` over every slot, a row counted once a list."""
    return sum(lists[key].size for lists in lists_per_slot for key in keys if key in lists)


def _union(lists_per_slot: list[dict[str, _Ids]], keys: Iterable[str]) -> np.ndarray:
    keys = tuple(keys)
    found = [lists[key].view() for lists in lists_per_slot for key in keys if key in lists]
    if not found:
        return _NONE
    if len(found) == 1:
        return found[0]
    rows = np.concatenate(found)
    return np.unique(rows) if len(keys) > 1 else rows  # slots never share a row


def _extended(array: np.ndarray, size: int, fill: object) -> np.ndarray:
    """``array`` copied into the first rows of a new one of ``size`` rows, the rest
    ``fill`` (left unwritten for ``None``: untouched pages take no memory)."""
    grown = np.empty((size, *array.shape[1:]), dtype=array.dtype)
    if fill is not None:
        grown[len(array) :] = fill
    grown[: len(array)] = array
    return grown


def _post(lists: dict[str, _Ids], rows: np.ndarray, keys_per_row: Iterable[Iterable[str]]) -> None:
    """Append each row to the lists of its keys, a key's rows in one call."""
    by_key: dict[str, list[int]] = {}
    for row, keys in zip(rows.tolist(), keys_per_row, strict=True):
        for key in keys:
            by_key.setdefault(key, []).append(row)
    for key, keyed in by_key.items():
        lists.setdefault(key, _Ids()).extend(np.array(keyed, dtype=np.int64))


def _both(found: np.ndarray | None, other: np.ndarray) -> np.ndarray:
    if found is None:
        return other
    return np.intersect1d(found, other, assume_unique=True)

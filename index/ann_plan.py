"""When a group of partitions leaves exact search, and the index they move to.

Search time is paid per query over every partition of a shard, so the exact →
ANN decision is made on the live vectors of the whole group (a shard's
partitions; a lone :class:`~index.partition.Partition` is a group of one), not
per partition: eight partitions of 12,500 exact vectors cost a query eight
12,500-row scans, 5 ms at 256-d on this project's 2-core test machine, while
the same 100,000 vectors behind one IVF quantizer cost 0.3 ms.

The plan trains one empty ANN index (the *template*) on a sample drawn from
every partition, and each partition rebuilds into a copy of it. Copies of one
IVF template share their centroids, so a shard finds a query's cells once and
scans them in each partition (:func:`index.faiss_index.search_preassigned`):
total work is that of one IVF over the shard, whatever the partition count.

The factory may leave the list count open (``IVF{nlist},Flat``): ``nlist`` is
then about 4·√n for the group's n live vectors (the count that balances the
centroid scan against the list scan at nprobe 16), and the plan retrains when
the group has grown enough for ``nlist`` to double. Training and rebuilds run
on one background thread with one OpenMP thread, so a search or an insert
never waits for them; a partition keeps serving its old index until its swap.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import faiss
import numpy as np

from index.defaults import (
    DEFAULT_ANN_THRESHOLD,
    DEFAULT_FACTORY,
    DEFAULT_MIN_SCANNED_ROWS,
    EXACT_FACTORY,
)
from index.faiss_index import (
    SearchParams,
    build_index,
    cell_finder,
    centroids_key_of,
    coarse_quantizer,
    train,
    training_size,
)

if TYPE_CHECKING:
    from index.partition import Partition

log = logging.getLogger(__name__)

# An ANN group goes back to exact search only below this share of the
# threshold, so a group hovering around it does not flip-flop.
EXACT_AGAIN_SHARE = 0.8
MIN_NLIST, MAX_NLIST = 16, 65_536


def nlist_for(live: int) -> int:
    """IVF list count for ``live`` vectors: the power of two nearest 4·√n.

    Per query an IVF scans ``nlist`` centroids and ``nprobe / nlist`` of the
    vectors; at nprobe 16 the sum is smallest near nlist = 4·√n.
    """
    target = 4 * math.sqrt(max(live, 1))
    power = 2 ** round(math.log2(target))
    return int(min(MAX_NLIST, max(MIN_NLIST, power)))


@dataclass(frozen=True)
class Template:
    """An empty, trained index that every partition of a group copies."""

    factory: str
    index: faiss.Index
    # The plain IVF's coarse quantizer (None for other indexes), kept here so a
    # search does not look it up again, and the digest of its centroids.
    quantizer: faiss.Index | None
    key: str | None
    nlist: int | None
    # What a shard finds a query's cells with (a float16 copy of the quantizer's
    # centroids) and how far its centroids may be from the quantizer's
    # (index.faiss_index.cell_finder).
    cell_quantizer: faiss.Index | None = None
    cell_error: float = 0.0

    @classmethod
    def of(cls, factory: str, index: faiss.Index, key: str | None = None) -> Template:
        """The template for an empty trained ``index``; ``key``: its centroids digest,
        when the caller has it already."""
        quantizer = coarse_quantizer(index)
        if key is None:
            key = centroids_key_of(index)
        ivf = faiss.try_extract_index_ivf(index)
        nlist = None if ivf is None else int(ivf.nlist)
        if quantizer is None:
            return cls(factory, index, None, key, nlist)
        return cls(factory, index, quantizer, key, nlist, *cell_finder(quantizer))

    def copy(self) -> faiss.Index:
        return faiss.clone_index(self.index)


class AnnPlan:
    """The index choice shared by a group of partitions; thread-safe."""

    def __init__(
        self,
        dim: int,
        factory: str = DEFAULT_FACTORY,
        threshold: int = DEFAULT_ANN_THRESHOLD,
        background: bool = True,
        min_scanned_rows: int = DEFAULT_MIN_SCANNED_ROWS,
    ) -> None:
        resolved = resolve_factory(factory, threshold)
        build_index(dim, resolved)  # fail now on a factory faiss cannot build
        self.dim = dim
        self.factory = factory
        self.threshold = threshold
        self.background = background
        self.min_scanned_rows = min_scanned_rows
        self.template: Template | None = None
        self.trainings = 0
        self._partitions: list[Partition] = []
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def adaptive(self) -> bool:
        return "{nlist}" in self.factory

    # ------------------------------------------------------------- membership

    def register(self, partition: Partition) -> None:
        with self._lock:
            self._partitions.append(partition)

    def unregister(self, partition: Partition) -> None:
        with self._lock:
            self._partitions = [p for p in self._partitions if p is not partition]

    def partitions(self) -> list[Partition]:
        with self._lock:
            return list(self._partitions)

    def live(self) -> int:
        """Live vectors over the group: O(partitions)."""
        return sum(p.live_rows for p in self.partitions())

    def probing(self, params: SearchParams) -> SearchParams:
        """``params`` with nprobe raised while the IVF's lists are short, so that a
        search scans at least ``min_scanned_rows`` of the group's rows
        (index/defaults.py); as they are otherwise."""
        template = self.template
        if template is None or not template.nlist or self.min_scanned_rows <= 0:
            return params
        wanted = -(-self.min_scanned_rows * template.nlist // max(self.live(), 1))
        nprobe = max(params.nprobe, min(wanted, template.nlist))
        return params if nprobe == params.nprobe else replace(params, nprobe=nprobe)

    # --------------------------------------------------------------- decisions

    def wanted(self, live: int) -> str:
        """The factory the group should use at ``live`` vectors (``Flat``: exact)."""
        if self.factory == EXACT_FACTORY:
            return EXACT_FACTORY
        template = self.template
        if template is None:
            return resolve_factory(self.factory, live) if live >= self.threshold else EXACT_FACTORY
        if live < EXACT_AGAIN_SHARE * self.threshold:
            return EXACT_FACTORY
        if self.adaptive and template.nlist and nlist_for(live) >= 2 * template.nlist:
            return resolve_factory(self.factory, live)  # grown enough to retrain
        return template.factory

    def current(self) -> str:
        template = self.template
        return EXACT_FACTORY if template is None else template.factory

    def stale(self, partition: Partition) -> bool:
        """``partition`` does not run the plan's current index (a rebuild is due)."""
        template = self.template
        if template is None:
            return partition.index_factory != EXACT_FACTORY
        if partition.index_factory != template.factory:
            return True
        return template.key is not None and partition.coarse_key != template.key

    def check(self) -> None:
        """After a write or a recovery: start a re-plan when the group crossed a
        boundary or a partition runs another index than the plan's."""
        if self.wanted(self.live()) == self.current() and not any(
            self.stale(p) for p in self.partitions()
        ):
            return
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            if not self.background:
                thread = None
            else:
                thread = threading.Thread(target=self._replan, name="ann-plan", daemon=True)
                self._thread = thread
        if thread is None:
            self._replan()
        else:
            thread.start()

    def wait_idle(self, timeout_s: float | None = None) -> None:
        thread = self._thread
        if thread is not None:
            thread.join(timeout_s)

    # ---------------------------------------------------------------- re-plans

    def _replan(self) -> None:
        """Train the template the group now wants and rebuild every partition into it,
        again while the group grew past the next boundary meanwhile (a bulk load does)."""
        if self.background:
            faiss.omp_set_num_threads(1)  # this thread only: leave a core to serve
        while True:
            live = self.live()
            target = self.wanted(live)
            if target != self.current():
                if target == EXACT_FACTORY:
                    self.template = None
                else:
                    self.template = self._train(target, live)
                    self.trainings += 1
                log.info("index plan: %d live vectors -> %s", live, target)
            for partition in self.partitions():
                if self.stale(partition):
                    partition.rebuild()
            if self.wanted(self.live()) == self.current():
                return

    def _train(self, factory: str, live: int) -> Template:
        index = build_index(self.dim, factory)
        wanted = training_size(index)
        if wanted:
            train(index, self._sample(wanted, live))
        return Template.of(factory, index)

    def _sample(self, wanted: int, live: int) -> np.ndarray:
        """About ``wanted`` live vectors, drawn from each partition in proportion to its size."""
        rng = np.random.default_rng(self.trainings)
        share = min(1.0, wanted / max(live, 1))
        parts = [p.sample_vectors(share, rng) for p in self.partitions()]
        return np.concatenate(parts) if parts else np.empty((0, self.dim), np.float32)

    def factory_of(self, index: faiss.Index) -> str:
        """The configured factory as ``index`` resolved it (snapshots that did not record it)."""
        ivf = faiss.try_extract_index_ivf(index)
        return resolve_nlist(self.factory, 0 if ivf is None else int(ivf.nlist))

    def adopt(self, index: faiss.Index, factory: str, key: str | None) -> None:
        """Take a loaded partition's index (with its centroids digest) as the template
        (snapshot recovery), when the group has none yet: partitions restored with
        the same centroids share cells again.
        """
        if self.template is not None or factory == EXACT_FACTORY:
            return
        empty = faiss.clone_index(index)
        empty.reset()
        self.template = Template.of(factory, empty, key)


def resolve_nlist(factory: str, nlist: int) -> str:
    return factory.replace("{nlist}", str(nlist))


def resolve_factory(factory: str, live: int) -> str:
    """``factory`` with ``{nlist}`` filled in for ``live`` vectors."""
    return resolve_nlist(factory, nlist_for(live))
